#include "server/service/tensor_stream.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "server/service/status_util.h"
#include "server/service/tensor_codec.h"

namespace paramd::service {
namespace {

void AppendVarint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

size_t VarintSize(uint64_t value) {
  size_t size = 1;
  while (value >= 0x80) {
    value >>= 7;
    ++size;
  }
  return size;
}

void ReleaseStorage(void* holder) { delete static_cast<std::shared_ptr<core::Storage>*>(holder); }

}  // namespace

grpc::ByteBuffer EncodeChunkFrame(const core::Tensor& tensor, size_t offset, size_t size) {
  // TensorFrame field 3 (chunk, length-delimited) holding TensorChunk field 1 (offset,
  // varint) and field 2 (data, length-delimited).
  const size_t chunk_size = 1 + VarintSize(offset) + 1 + VarintSize(size) + size;
  std::string prefix;
  prefix.push_back(static_cast<char>((3 << 3) | 2));
  AppendVarint(chunk_size, &prefix);
  prefix.push_back(static_cast<char>((1 << 3) | 0));
  AppendVarint(offset, &prefix);
  prefix.push_back(static_cast<char>((2 << 3) | 2));
  AppendVarint(size, &prefix);
  char* data = static_cast<char*>(tensor.mutable_data()) + offset;
  grpc::Slice slices[2] = {
      grpc::Slice(prefix),
      grpc::Slice(data, size, &ReleaseStorage, new std::shared_ptr<core::Storage>(tensor.storage()))};
  return grpc::ByteBuffer(slices, 2);
}

grpc::ByteBuffer Serialize(const google::protobuf::MessageLite& message) {
  grpc::Slice slice(message.SerializeAsString());
  return grpc::ByteBuffer(&slice, 1);
}

absl::Status Parse(const grpc::ByteBuffer& buffer, google::protobuf::MessageLite* message) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return absl::InvalidArgumentError("unreadable request");
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  if (!message->ParseFromString(bytes)) {
    return absl::InvalidArgumentError("the request does not parse as " + message->GetTypeName());
  }
  return absl::OkStatus();
}

TensorStreamReactor::TensorStreamReactor(const absl::Status& status) {
  Finish(ToGrpcStatus(status));
}

TensorStreamReactor::TensorStreamReactor(v1::StreamStart start, std::vector<OutgoingTensor> tensors,
                                         bool with_data, v1::DType wire_dtype)
    : start_(std::move(start)),
      tensors_(std::move(tensors)),
      with_data_(with_data),
      wire_dtype_(wire_dtype) {
  Next();
}

void TensorStreamReactor::OnWriteDone(bool ok) {
  if (!ok) {
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client went away"));
    return;
  }
  Next();
}

void TensorStreamReactor::Next() {
  if (!started_) {
    started_ = true;
    v1::TensorFrame frame;
    *frame.mutable_start() = start_;
    buffer_ = Serialize(frame);
    StartWrite(&buffer_);
    return;
  }
  while (index_ < tensors_.size()) {
    const OutgoingTensor& item = tensors_[index_];
    if (!header_sent_) {
      if (with_data_) {
        absl::StatusOr<core::Tensor> wire = PrepareForWire(item.tensor, wire_dtype_);
        if (!wire.ok()) {
          Finish(ToGrpcStatus(wire.status()));
          return;
        }
        wire_ = *std::move(wire);
      }
      v1::TensorFrame frame;
      v1::TensorHeader* header = frame.mutable_header();
      header->set_name(item.name);
      FillMeta(item.tensor, header->mutable_meta());
      if (with_data_) header->mutable_meta()->set_dtype(ToProtoDType(wire_.dtype()));
      header->mutable_meta()->set_is_parameter(item.is_parameter);
      header->mutable_meta()->set_requires_grad(item.requires_grad);
      header->mutable_meta()->set_version(item.version);
      for (const std::string& other : item.tied_with) header->add_tied_with(other);
      header_sent_ = true;
      offset_ = 0;
      buffer_ = Serialize(frame);
      // A header is small and its data follows at once: let gRPC coalesce the two.
      StartWrite(&buffer_, with_data_ && wire_.nbytes() > 0 ? grpc::WriteOptions().set_buffer_hint()
                                                            : grpc::WriteOptions());
      return;
    }
    if (with_data_ && offset_ < wire_.nbytes()) {
      const size_t size = std::min(kChunkBytes, wire_.nbytes() - offset_);
      buffer_ = EncodeChunkFrame(wire_, offset_, size);
      offset_ += size;
      StartWrite(&buffer_);
      return;
    }
    ++index_;
    header_sent_ = false;
    wire_ = core::Tensor();
  }
  Finish(grpc::Status::OK);
}

}  // namespace paramd::service
