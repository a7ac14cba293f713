#include "server/service/inference_service.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/core/run_forward.h"
#include "server/service/status_util.h"
#include "server/service/tensor_codec.h"

namespace paramd::service {
namespace {

struct ForwardCall {
  v1::ForwardOptions options;
  std::vector<core::NamedTensor> inputs;
};

// Reads the whole request stream: options in the first frame, then per input a header and
// its chunks (inference.proto). INVALID_ARGUMENT for a part out of place, a region, a
// repeated name or bytes that do not fit.
absl::StatusOr<ForwardCall> ReadCall(
    grpc::ServerReaderWriter<v1::ForwardResponse, v1::ForwardRequest>* stream) {
  ForwardCall call;
  bool first = true;
  TensorAssembler assembler;
  absl::flat_hash_set<std::string> names;
  auto finish_input = [&]() -> absl::Status {
    PARAMD_ASSIGN_OR_RETURN(core::Tensor tensor, assembler.Finish());
    call.inputs.push_back({assembler.header().name(), std::move(tensor)});
    return absl::OkStatus();
  };
  v1::ForwardRequest frame;
  while (stream->Read(&frame)) {
    if (first != frame.has_options()) {
      return absl::InvalidArgumentError(
          first ? "a Forward stream starts with a frame carrying the ForwardOptions"
                : "a Forward stream carries its ForwardOptions once, in the first frame");
    }
    if (first) {
      call.options = std::move(*frame.mutable_options());
      first = false;
    }
    if (frame.has_header()) {
      const v1::TensorHeader& header = frame.header();
      if (header.has_region() && header.region().ranges_size() > 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("input '", header.name(), "' has a region; inputs are whole tensors"));
      }
      if (header.name().empty()) {
        return absl::InvalidArgumentError(
            "an input has no name; the positional input is named \"input\"");
      }
      if (!names.insert(header.name()).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("input '", header.name(), "' is sent twice"));
      }
      if (assembler.active()) PARAMD_RETURN_IF_ERROR(finish_input());
      PARAMD_RETURN_IF_ERROR(assembler.Begin(header));
    }
    if (frame.has_chunk()) PARAMD_RETURN_IF_ERROR(assembler.Add(frame.chunk()));
  }
  if (first) {
    return absl::InvalidArgumentError(
        "the Forward stream ended without the ForwardOptions naming the model");
  }
  if (assembler.active()) PARAMD_RETURN_IF_ERROR(finish_input());
  return call;
}

// The core's mode for the proto's; INVALID_ARGUMENT for a value this daemon does not know.
absl::StatusOr<core::ForwardMode> ModeOf(v1::ForwardMode mode) {
  switch (mode) {
    case v1::FORWARD_MODE_TRAIN:
      return core::ForwardMode::kTrain;
    case v1::FORWARD_MODE_EVAL:
      return core::ForwardMode::kEval;
    case v1::FORWARD_MODE_MODEL:
      return core::ForwardMode::kModel;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown forward mode ", static_cast<int>(mode),
                       "; use FORWARD_MODE_MODEL, FORWARD_MODE_TRAIN or FORWARD_MODE_EVAL"));
  }
}

// Sends the start and every output (header, then its chunks), packing parts into as few
// frames as their field order allows: a small answer is one frame, which leaves with the
// status. One frame is held at a time, so a large output is never copied whole.
absl::Status WriteAnswer(
    const std::string& model_name, const core::ForwardAnswer& answer, v1::DType wire_dtype,
    grpc::ServerReaderWriter<v1::ForwardResponse, v1::ForwardRequest>* stream) {
  // Cast and gather first, so that a failing cast sends nothing.
  std::vector<core::Tensor> wire;
  wire.reserve(answer.outputs.size());
  for (const core::NamedTensor& output : answer.outputs) {
    PARAMD_ASSIGN_OR_RETURN(core::Tensor tensor, PrepareForWire(output.tensor, wire_dtype));
    wire.push_back(std::move(tensor));
  }
  v1::ForwardResponse frame;
  // No buffer hint: a synchronous Write waits for its message to be sent, and a hinted one
  // may wait for a flush that never comes. The last frame leaves with the status.
  auto send = [&](bool last) -> absl::Status {
    grpc::WriteOptions write_options;
    if (last) write_options.set_last_message();
    if (!stream->Write(frame, write_options)) {
      return absl::CancelledError("the client went away before the outputs were sent");
    }
    frame.Clear();
    return absl::OkStatus();
  };
  v1::ForwardStart* start = frame.mutable_start();
  start->set_model(model_name);
  start->set_version(answer.version);
  start->set_updated_version(answer.updated_version);
  start->set_training(answer.training);
  for (size_t i = 0; i < wire.size(); ++i) {
    // A header goes after a start in the same frame, never after a chunk or header.
    if (frame.has_header() || frame.has_chunk()) PARAMD_RETURN_IF_ERROR(send(false));
    v1::TensorHeader* header = frame.mutable_header();
    header->set_name(answer.outputs[i].name);
    FillMeta(wire[i], header->mutable_meta());
    // Where the model computed it, not the wire copy's CPU.
    header->mutable_meta()->set_device(answer.outputs[i].tensor.device().ToString());
    header->mutable_meta()->set_version(answer.version);
    const char* bytes = static_cast<const char*>(wire[i].data());
    const size_t nbytes = wire[i].nbytes();
    for (size_t offset = 0; offset < nbytes; offset += kChunkBytes) {
      if (frame.has_chunk()) PARAMD_RETURN_IF_ERROR(send(false));
      v1::TensorChunk* chunk = frame.mutable_chunk();
      chunk->set_offset(offset);
      chunk->set_data(bytes + offset, std::min(kChunkBytes, nbytes - offset));
    }
  }
  return send(true);
}

}  // namespace

grpc::Status InferenceService::Forward(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<v1::ForwardResponse, v1::ForwardRequest>* stream) {
  std::string model_name;
  const grpc::Status status = Guard([&]() -> absl::Status {
    PARAMD_ASSIGN_OR_RETURN(ForwardCall call, ReadCall(stream));
    model_name = call.options.model();
    if (context->IsCancelled()) return absl::CancelledError("the client cancelled the forward");
    PARAMD_ASSIGN_OR_RETURN(auto model, registry_->Get(model_name));
    PARAMD_ASSIGN_OR_RETURN(core::ForwardMode mode, ModeOf(call.options.mode()));
    PARAMD_ASSIGN_OR_RETURN(core::ForwardAnswer answer,
                            core::RunForward(*model, call.inputs,
                                             {.mode = mode,
                                              .seed = call.options.seed(),
                                              .if_version = IfVersion(call.options.if_version())}));
    return WriteAnswer(model->name(), answer, call.options.wire_dtype(), stream);
  });
  return Logged("forward", model_name, status);
}

}  // namespace paramd::service
