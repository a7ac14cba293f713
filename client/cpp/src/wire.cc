#include "client/cpp/src/wire.h"

#include <algorithm>
#include <exception>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/chunk_frame.h"
#include "base/status_macros.h"
#include "base/version_conflict.h"

namespace paramd::client::internal {
namespace {

absl::string_view FrameName(v1::TensorFrame::FrameCase frame_case) {
  switch (frame_case) {
    case v1::TensorFrame::kStart:
      return "start";
    case v1::TensorFrame::kHeader:
      return "header";
    case v1::TensorFrame::kChunk:
      return "chunk";
    case v1::TensorFrame::FRAME_NOT_SET:
      break;
  }
  return "empty";
}

}  // namespace

absl::Status FromGrpcStatus(const grpc::Status& status, const grpc::ClientContext& context) {
  if (status.ok()) return absl::OkStatus();
  if (status.error_code() == grpc::StatusCode::UNIMPLEMENTED && status.error_message().empty()) {
    // gRPC's own answer, never the daemon's (its UNIMPLEMENTED always says why), to a
    // method the daemon does not serve or a request it could not parse.
    return absl::UnimplementedError(
        "the daemon does not serve this call or could not parse the request (gRPC gives no "
        "more): a daemon older than this client, or a text field (a name, a key, a path) that "
        "is not UTF-8");
  }
  absl::Status result(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  if (!absl::IsAborted(result)) return result;
  const auto& trailers = context.GetServerTrailingMetadata();
  auto it = trailers.find(grpc::string_ref(kCurrentVersionKey.data(), kCurrentVersionKey.size()));
  uint64_t version = 0;
  if (it != trailers.end() &&
      absl::SimpleAtoi(absl::string_view(it->second.data(), it->second.size()), &version)) {
    return VersionConflictError(result.message(), version);
  }
  return result;
}

v1::DType ToProtoDType(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return v1::FLOAT32;
    case DType::kFloat64:
      return v1::FLOAT64;
    case DType::kFloat16:
      return v1::FLOAT16;
    case DType::kBFloat16:
      return v1::BFLOAT16;
    case DType::kInt64:
      return v1::INT64;
    case DType::kInt32:
      return v1::INT32;
    case DType::kInt16:
      return v1::INT16;
    case DType::kInt8:
      return v1::INT8;
    case DType::kUInt8:
      return v1::UINT8;
    case DType::kBool:
      return v1::BOOL;
  }
  return v1::DTYPE_UNSPECIFIED;
}

std::optional<DType> FromProtoDType(v1::DType dtype) {
  switch (dtype) {
    case v1::FLOAT32:
      return DType::kFloat32;
    case v1::FLOAT64:
      return DType::kFloat64;
    case v1::FLOAT16:
      return DType::kFloat16;
    case v1::BFLOAT16:
      return DType::kBFloat16;
    case v1::INT64:
      return DType::kInt64;
    case v1::INT32:
      return DType::kInt32;
    case v1::INT16:
      return DType::kInt16;
    case v1::INT8:
      return DType::kInt8;
    case v1::UINT8:
      return DType::kUInt8;
    case v1::BOOL:
      return DType::kBool;
    default:
      return std::nullopt;
  }
}

void ToProtoRegion(const Region& region, v1::Region* out) {
  for (const auto& [start, stop] : region) {
    v1::Range* range = out->add_ranges();
    range->set_start(start);
    range->set_stop(stop);
  }
}

TensorStreamReceiver::TensorStreamReceiver(bool expect_data, ProgressCallback progress)
    : expect_data_(expect_data), progress_(std::move(progress)) {}

void TensorStreamReceiver::Recycle(std::vector<NamedTensor> previous) {
  for (NamedTensor& entry : previous) recycled_[entry.name] = std::move(entry.tensor.data);
}

absl::Status TensorStreamReceiver::Add(v1::TensorFrame& frame) {
  if (!started_ && frame.frame_case() != v1::TensorFrame::kStart) {
    return absl::DataLossError(absl::StrCat("the server's stream began with a ",
                                            FrameName(frame.frame_case()),
                                            " frame instead of a start frame"));
  }
  switch (frame.frame_case()) {
    case v1::TensorFrame::kStart:
      if (started_) {
        return absl::DataLossError("the server's stream carried a second start frame");
      }
      start_ = std::move(*frame.mutable_start());
      started_ = true;
      return absl::OkStatus();
    case v1::TensorFrame::kHeader:
      return OnHeader(frame.header());
    case v1::TensorFrame::kChunk: {
      std::string& data = *frame.mutable_chunk()->mutable_data();
      const absl::string_view piece = data;
      return OnChunk(frame.chunk().offset(), data.size(), absl::MakeConstSpan(&piece, 1), &data);
    }
    case v1::TensorFrame::FRAME_NOT_SET:
      break;
  }
  return absl::DataLossError("the server's stream carried an empty frame");
}

absl::Status TensorStreamReceiver::CheckComplete() const {
  if (!receiving_ || received_bytes_ == expected_bytes_) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat("tensor '", current_name_, "' ended short: got ",
                                          received_bytes_, " of ", expected_bytes_,
                                          " bytes its dtype and shape need"));
}

absl::Status TensorStreamReceiver::OnHeader(const v1::TensorHeader& header) {
  if (absl::Status status = CheckComplete(); !status.ok()) return status;
  receiving_ = false;
  const std::optional<DType> dtype = FromProtoDType(header.meta().dtype());
  if (!dtype) {
    return absl::DataLossError(absl::StrCat("tensor '", header.name(), "' arrived with dtype ",
                                            static_cast<int>(header.meta().dtype()),
                                            ", which is unset or unknown to this client"));
  }
  // numel * element size, refusing negative dimensions and overflow.
  uint64_t bytes = ElementSize(*dtype);
  for (int64_t dim : header.meta().shape()) {
    if (dim < 0) {
      return absl::DataLossError(
          absl::StrCat("tensor '", header.name(), "' arrived with negative dimension ", dim));
    }
    if (dim != 0 && bytes > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(dim)) {
      return absl::DataLossError(
          absl::StrCat("tensor '", header.name(), "' arrived with a shape too large to hold"));
    }
    bytes *= static_cast<uint64_t>(dim);
  }
  if (bytes > std::numeric_limits<size_t>::max()) {
    return absl::DataLossError(
        absl::StrCat("tensor '", header.name(), "' arrived with a shape too large to hold"));
  }

  NamedTensor streamed;
  NamedTensor& entry = consumer_ != nullptr ? streamed : entries_.emplace_back();
  entry.name = header.name();
  HostTensor& tensor = entry.tensor;
  tensor.dtype = *dtype;
  tensor.shape.assign(header.meta().shape().begin(), header.meta().shape().end());
  tensor.device = header.meta().device();
  tensor.is_parameter = header.meta().is_parameter();
  tensor.requires_grad = header.meta().requires_grad();
  tensor.version = header.meta().version();
  tensor.tied_with.assign(header.tied_with().begin(), header.tied_with().end());
  if (!expect_data_) return absl::OkStatus();

  current_name_ = entry.name;
  expected_bytes_ = static_cast<size_t>(bytes);
  received_bytes_ = 0;
  receiving_ = true;
  if (consumer_ != nullptr) {
    PARAMD_RETURN_IF_ERROR(consumer_->BeginTensor(entry.name, tensor));
    if (bytes == 0) PARAMD_RETURN_IF_ERROR(consumer_->EndTensor());
  } else if (auto it = recycled_.find(entry.name); it != recycled_.end()) {
    tensor.data = std::move(it->second);
    tensor.data.clear();  // keeps the capacity
    recycled_.erase(it);
  }
  total_bytes_ += bytes;
  if (progress_ && bytes == 0) progress_(done_bytes_, total_bytes_);
  return absl::OkStatus();
}

absl::Status TensorStreamReceiver::Add(const grpc::ByteBuffer& frame) {
  std::vector<grpc::Slice> slices;
  if (!frame.Dump(&slices).ok()) {
    return absl::DataLossError("the server sent a frame this client cannot read");
  }
  std::vector<absl::string_view> pieces;
  pieces.reserve(slices.size());
  for (const grpc::Slice& slice : slices) {
    pieces.emplace_back(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  // A chunk is read where gRPC received it (wire::ReadChunkFrame), so its bytes are copied
  // once, to their destination.
  if (started_) {
    if (std::optional<wire::ChunkFrameView> chunk = wire::ReadChunkFrame(pieces)) {
      return OnChunk(chunk->offset, chunk->size, chunk->data, nullptr);
    }
  }
  std::string bytes;
  for (absl::string_view piece : pieces) bytes.append(piece.data(), piece.size());
  v1::TensorFrame parsed;
  if (!parsed.ParseFromString(bytes)) {
    return absl::DataLossError("the server sent a frame that does not parse as a TensorFrame");
  }
  return Add(parsed);
}

absl::Status TensorStreamReceiver::OnChunk(uint64_t offset, uint64_t size,
                                           absl::Span<const absl::string_view> pieces,
                                           std::string* owned) {
  if (!expect_data_) {
    return absl::DataLossError("the server sent tensor data in a metadata-only stream");
  }
  if (!receiving_) {
    return absl::DataLossError(
        current_name_.empty() && entries_.empty()
            ? "the server sent a data chunk before any tensor header"
            : absl::StrCat("the server sent a data chunk past the end of tensor '",
                           current_name_, "'"));
  }
  if (received_bytes_ == expected_bytes_) {
    return absl::DataLossError(absl::StrCat("the server sent a data chunk past the end of tensor '",
                                            current_name_, "' (all ", expected_bytes_,
                                            " bytes had arrived)"));
  }
  if (offset != received_bytes_) {
    return absl::DataLossError(absl::StrCat("tensor '", current_name_, "': a chunk at byte ",
                                            offset, " arrived where byte ", received_bytes_,
                                            " was expected"));
  }
  if (size > expected_bytes_ - received_bytes_) {
    return absl::DataLossError(
        absl::StrCat("tensor '", current_name_, "': ", received_bytes_ + size,
                     " bytes arrived but its dtype and shape give ", expected_bytes_));
  }
  if (consumer_ != nullptr) {
    for (absl::string_view piece : pieces) {
      PARAMD_RETURN_IF_ERROR(consumer_->TensorData(piece));
    }
    received_bytes_ += size;
    if (received_bytes_ == expected_bytes_) PARAMD_RETURN_IF_ERROR(consumer_->EndTensor());
    done_bytes_ += size;
    if (progress_) progress_(done_bytes_, total_bytes_);
    return absl::OkStatus();
  }
  std::string& data = entries_.back().tensor.data;
  if (owned != nullptr && data.empty() && size == expected_bytes_ &&
      data.capacity() < expected_bytes_) {
    // The whole tensor in one parsed chunk and no warm buffer for it: take the bytes
    // instead of copying them.
    data.swap(*owned);
  } else {
    if (data.empty()) {
      // Several chunks: allocate the whole tensor once, then append in place.
      try {
        data.reserve(expected_bytes_);
      } catch (const std::exception&) {  // bad_alloc, length_error
        return absl::ResourceExhaustedError(
            absl::StrCat("tensor '", current_name_, "' needs ", expected_bytes_,
                         " bytes, more than this client can allocate"));
      }
    }
    for (absl::string_view piece : pieces) data.append(piece.data(), piece.size());
  }
  received_bytes_ += size;
  done_bytes_ += size;
  if (progress_) progress_(done_bytes_, total_bytes_);
  return absl::OkStatus();
}

absl::Status TensorStreamReceiver::Finish() {
  if (!started_) {
    return absl::DataLossError("the server's stream ended without a start frame");
  }
  return CheckComplete();
}

absl::Status CheckOutgoing(const std::string& name, const HostTensor& tensor) {
  uint64_t count = 1;
  for (int64_t dim : tensor.shape) {
    if (dim < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "' has negative dimension ", dim));
    }
    count *= static_cast<uint64_t>(dim);
  }
  const uint64_t expected = count * ElementSize(tensor.dtype);
  if (tensor.data.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' holds ", tensor.data.size(),
                                                   " bytes but its dtype ", DTypeName(tensor.dtype),
                                                   " and shape give ", expected));
  }
  return absl::OkStatus();
}

std::string EncodeOptionsFrame(const v1::WriteOptions& options, uint64_t total,
                               uint64_t largest) {
  v1::WriteFrame frame;
  *frame.mutable_options() = options;
  // The daemon sets the memory aside before any byte arrives, and refuses a write that
  // cannot fit at once (docs/wire.md, "Write memory").
  if (options.reserve_bytes() == 0) {
    frame.mutable_options()->set_reserve_bytes(options.commit_each_tensor() ? largest : total);
  }
  return frame.SerializeAsString();
}

std::string EncodeHeaderFrame(const std::string& name, const HostTensor& meta,
                              const OutgoingTensor& flags) {
  v1::WriteFrame frame;
  v1::TensorHeader* header = frame.mutable_header();
  header->set_name(name);
  v1::TensorMeta* proto_meta = header->mutable_meta();
  proto_meta->set_dtype(ToProtoDType(meta.dtype));
  proto_meta->mutable_shape()->Assign(meta.shape.begin(), meta.shape.end());
  proto_meta->set_is_parameter(flags.is_parameter);
  proto_meta->set_requires_grad(flags.requires_grad);
  if (flags.region != nullptr) ToProtoRegion(*flags.region, header->mutable_region());
  return frame.SerializeAsString();
}

bool SendWriteFrames(const v1::WriteOptions& options, const std::vector<OutgoingTensor>& tensors,
                     const ProgressCallback& progress,
                     const std::function<bool(const EncodedFrame&)>& write) {
  uint64_t total = 0, largest = 0;
  for (const OutgoingTensor& item : tensors) {
    total += item.tensor->data.size();
    largest = std::max<uint64_t>(largest, item.tensor->data.size());
  }
  uint64_t done = 0;

  EncodedFrame encoded;
  encoded.head = EncodeOptionsFrame(options, total, largest);
  if (!write(encoded)) return false;
  for (const OutgoingTensor& item : tensors) {
    const HostTensor& tensor = *item.tensor;
    encoded.is_chunk = false;
    encoded.data = {};
    encoded.head = EncodeHeaderFrame(*item.name, tensor, item);
    if (!write(encoded)) return false;

    const absl::string_view bytes = tensor.data;
    encoded.is_chunk = true;
    for (size_t offset = 0; offset < bytes.size(); offset += kChunkBytes) {
      const size_t size = std::min(kChunkBytes, bytes.size() - offset);
      encoded.head = wire::ChunkFramePrefix(offset, size);
      encoded.data = bytes.substr(offset, size);
      if (!write(encoded)) return false;
      done += size;
      if (progress) progress(done, total);
    }
  }
  if (progress && total == 0) progress(0, 0);
  return true;
}

}  // namespace paramd::client::internal
