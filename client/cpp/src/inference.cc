// Client calls of paramd.v1.Inference.
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "client/cpp/src/client_impl.h"

namespace paramd::client {
namespace {

v1::ForwardMode ToProto(ForwardMode mode) {
  switch (mode) {
    case ForwardMode::kTrain:
      return v1::FORWARD_MODE_TRAIN;
    case ForwardMode::kEval:
      return v1::FORWARD_MODE_EVAL;
    case ForwardMode::kModel:
      break;
  }
  return v1::FORWARD_MODE_MODEL;
}

// Sends the request: options, then per input its header and chunks, packed into as few
// frames as inference.proto's field order allows (options, header and first chunk share a
// frame), so that a small forward is one message. The last frame half-closes the stream.
// No buffer hint: a synchronous Write waits for its message to be sent. Returns false once
// the stream is broken (Finish then says why).
bool SendForward(grpc::ClientReaderWriter<v1::ForwardRequest, v1::ForwardResponse>& stream,
                 const std::string& model, const std::vector<NamedTensor>& inputs,
                 const ForwardOptions& options) {
  v1::ForwardRequest frame;
  bool pending = true;  // `frame` holds parts not sent yet
  auto flush = [&](bool last) {
    const bool ok =
        stream.Write(frame, last ? grpc::WriteOptions().set_last_message() : grpc::WriteOptions());
    frame.Clear();
    pending = false;
    return ok;
  };
  v1::ForwardOptions* proto_options = frame.mutable_options();
  proto_options->set_model(model);
  proto_options->set_mode(ToProto(options.mode));
  proto_options->set_seed(options.seed);
  proto_options->set_if_version(options.if_version);
  if (options.wire_dtype) {
    proto_options->set_wire_dtype(internal::ToProtoDType(*options.wire_dtype));
  }
  for (size_t i = 0; i < inputs.size(); ++i) {
    const HostTensor& tensor = inputs[i].tensor;
    const std::string& bytes = tensor.data;
    if (pending && (frame.has_header() || frame.has_chunk()) && !flush(false)) return false;
    v1::TensorHeader* header = frame.mutable_header();
    pending = true;
    header->set_name(inputs[i].name);
    v1::TensorMeta* meta = header->mutable_meta();
    meta->set_dtype(internal::ToProtoDType(tensor.dtype));
    meta->mutable_shape()->Assign(tensor.shape.begin(), tensor.shape.end());
    for (size_t offset = 0; offset < bytes.size(); offset += kChunkBytes) {
      if (pending && frame.has_chunk() && !flush(false)) return false;
      const size_t size = std::min(kChunkBytes, bytes.size() - offset);
      v1::TensorChunk* chunk = frame.mutable_chunk();
      pending = true;
      chunk->set_offset(offset);
      chunk->mutable_data()->assign(bytes.data() + offset, size);
    }
  }
  return flush(/*last=*/true);
}

}  // namespace

absl::StatusOr<ForwardResult> RemoteModel::Forward(const std::vector<NamedTensor>& inputs,
                                                   const ForwardOptions& options) const {
  if (inputs.empty()) {
    return absl::InvalidArgumentError(
        "Forward needs at least the positional input, named \"input\"");
  }
  for (const NamedTensor& input : inputs) {
    PARAMD_RETURN_IF_ERROR(internal::CheckOutgoing(input.name, input.tensor));
  }
  const Client::Impl& impl = *client_->impl_;
  grpc::ClientContext context;
  impl.PrepareStream(&context);
  auto stream = impl.inference->Forward(&context);
  SendForward(*stream, name_, inputs, options);

  // Each response frame is a start, header and chunk in that order, any of them present;
  // the receiver takes them as the separate frames every read stream carries.
  TensorStreamReceiver receiver(/*expect_data=*/true);
  ForwardResult result;
  absl::Status local;
  v1::ForwardResponse response;
  v1::TensorFrame frame;
  while (local.ok() && stream->Read(&response)) {
    bool empty = true;
    if (response.has_start()) {
      empty = false;
      const v1::ForwardStart& start = response.start();
      result.version = start.version();
      result.updated_version = start.updated_version();
      result.training = start.training();
      v1::StreamStart* stream_start = frame.mutable_start();
      stream_start->set_model(start.model());
      stream_start->set_version(start.version());
      local = receiver.Add(frame);
    }
    if (local.ok() && response.has_header()) {
      empty = false;
      frame.mutable_header()->Swap(response.mutable_header());
      local = receiver.Add(frame);
    }
    if (local.ok() && response.has_chunk()) {
      empty = false;
      frame.mutable_chunk()->Swap(response.mutable_chunk());
      local = receiver.Add(frame);
    }
    if (empty) local = absl::DataLossError("the server's stream carried an empty frame");
  }
  if (!local.ok()) {
    context.TryCancel();
    while (stream->Read(&response)) {
    }
  }
  const grpc::Status status = stream->Finish();
  PARAMD_RETURN_IF_ERROR(local);
  PARAMD_RETURN_IF_ERROR(FromGrpcStatus(status, context));
  PARAMD_RETURN_IF_ERROR(receiver.Finish());
  result.outputs = std::move(receiver.entries());
  return result;
}

absl::StatusOr<ForwardResult> RemoteModel::Forward(const HostTensor& input,
                                                   const ForwardOptions& options) const {
  return Forward(std::vector<NamedTensor>{{"input", input}}, options);
}

}  // namespace paramd::client
