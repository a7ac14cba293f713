// Raw wire helpers for integration tests: speak paramd.v1 through the generated stubs,
// frame by frame, so tests can send exactly the (good or bad) streams they mean to.
#pragma once

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "paramd/v1/checkpoints.grpc.pb.h"
#include "paramd/v1/models.grpc.pb.h"
#include "paramd/v1/parameters.grpc.pb.h"

namespace paramd::testing {

struct WireTensor {
  std::string name;
  v1::TensorMeta meta;
  std::vector<std::string> tied_with;
  std::string alias_of;
  std::string data;
};

struct WireRead {
  grpc::Status status;
  uint64_t version = 0;
  std::map<std::string, int> metadata;
  // StreamStart.ordered_metadata's paths, in the order sent.
  std::vector<std::string> metadata_order;
  std::vector<WireTensor> tensors;
};

// Reads a TensorFrame stream, checking the framing as a client must.
template <typename Reader>
WireRead ReadFrames(Reader& reader) {
  WireRead out;
  v1::TensorFrame frame;
  bool started = false;
  while (reader->Read(&frame)) {
    if (frame.has_start()) {
      EXPECT_FALSE(started) << "two start frames";
      started = true;
      out.version = frame.start().version();
      for (const auto& [k, v] : frame.start().metadata()) out.metadata[k] = v;
      for (const auto& entry : frame.start().ordered_metadata()) {
        out.metadata_order.push_back(entry.path());
        EXPECT_EQ(out.metadata[entry.path()], entry.version()) << entry.path();
      }
    } else if (frame.has_header()) {
      EXPECT_TRUE(started) << "header before start";
      WireTensor tensor;
      tensor.name = frame.header().name();
      tensor.meta = frame.header().meta();
      tensor.tied_with.assign(frame.header().tied_with().begin(), frame.header().tied_with().end());
      tensor.alias_of = frame.header().alias_of();
      out.tensors.push_back(std::move(tensor));
    } else if (frame.has_chunk()) {
      EXPECT_FALSE(out.tensors.empty()) << "chunk before header";
      if (out.tensors.empty()) continue;
      EXPECT_EQ(frame.chunk().offset(), out.tensors.back().data.size()) << "chunk out of order";
      out.tensors.back().data += frame.chunk().data();
    }
  }
  out.status = reader->Finish();
  return out;
}

inline WireRead StateDict(v1::Parameters::Stub& stub, const std::string& model,
                          const std::string& prefix = "", bool metadata_only = false) {
  grpc::ClientContext context;
  v1::StateDictRequest request;
  request.set_model(model);
  request.set_prefix(prefix);
  request.set_metadata_only(metadata_only);
  auto reader = stub.StateDict(&context, request);
  return ReadFrames(reader);
}

inline WireRead GetTensor(v1::Parameters::Stub& stub, const std::string& model,
                          const std::string& name) {
  grpc::ClientContext context;
  v1::GetTensorRequest request;
  request.set_model(model);
  request.set_name(name);
  auto reader = stub.GetTensor(&context, request);
  return ReadFrames(reader);
}

inline std::vector<float> Floats(const std::string& bytes) {
  std::vector<float> values(bytes.size() / sizeof(float));
  std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
  return values;
}

inline std::string FloatBytes(const std::vector<float>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

inline v1::WriteFrame OptionsFrame(const std::string& model, uint64_t if_version = 0) {
  v1::WriteFrame frame;
  frame.mutable_options()->set_model(model);
  frame.mutable_options()->set_if_version(if_version);
  return frame;
}

inline v1::WriteFrame HeaderFrame(const std::string& name, v1::DType dtype,
                                  std::vector<int64_t> shape) {
  v1::WriteFrame frame;
  frame.mutable_header()->set_name(name);
  frame.mutable_header()->mutable_meta()->set_dtype(dtype);
  for (int64_t d : shape) frame.mutable_header()->mutable_meta()->add_shape(d);
  return frame;
}

inline v1::WriteFrame ChunkFrame(uint64_t offset, std::string data) {
  v1::WriteFrame frame;
  frame.mutable_chunk()->set_offset(offset);
  frame.mutable_chunk()->set_data(std::move(data));
  return frame;
}

// Header plus 1 MiB chunks for float32 `values`.
inline std::vector<v1::WriteFrame> FloatTensorFrames(const std::string& name,
                                                     std::vector<int64_t> shape,
                                                     const std::vector<float>& values) {
  std::vector<v1::WriteFrame> frames = {HeaderFrame(name, v1::FLOAT32, std::move(shape))};
  const std::string bytes = FloatBytes(values);
  for (size_t offset = 0; offset < bytes.size(); offset += 1 << 20) {
    frames.push_back(ChunkFrame(offset, bytes.substr(offset, 1 << 20)));
  }
  return frames;
}

// Sends `frames` on a client-streaming write method (SetTensors, LoadStateDict, ...).
template <typename Response, typename Open>
grpc::Status SendFrames(Open&& open, const std::vector<v1::WriteFrame>& frames,
                        Response* response) {
  grpc::ClientContext context;
  auto writer = open(&context, response);
  for (const auto& frame : frames) {
    if (!writer->Write(frame)) break;
  }
  writer->WritesDone();
  return writer->Finish();
}

inline grpc::Status SetTensors(v1::Parameters::Stub& stub, const std::vector<v1::WriteFrame>& frames,
                               v1::WriteResponse* response) {
  return SendFrames(
      [&](grpc::ClientContext* c, v1::WriteResponse* r) { return stub.SetTensors(c, r); }, frames,
      response);
}

// Sends `frames` on LoadStateDict and reads its streamed answer: `response` gets the last
// message's version and every message's keys and error text, concatenated.
inline grpc::Status LoadStateDict(v1::Parameters::Stub& stub,
                                  const std::vector<v1::WriteFrame>& frames,
                                  v1::LoadStateDictResponse* response,
                                  int* messages = nullptr) {
  grpc::ClientContext context;
  auto stream = stub.LoadStateDict(&context);
  for (const auto& frame : frames) {
    if (!stream->Write(frame)) break;
  }
  stream->WritesDone();
  response->Clear();
  v1::LoadStateDictResponse message;
  int count = 0;
  while (stream->Read(&message)) {
    ++count;
    response->set_version(message.version());
    response->mutable_missing_keys()->MergeFrom(message.missing_keys());
    response->mutable_unexpected_keys()->MergeFrom(message.unexpected_keys());
    response->mutable_error_text()->append(message.error_text());
  }
  if (messages != nullptr) *messages = count;
  return stream->Finish();
}

// Models.CreateModel of `name` from `spec`; the call's status.
inline grpc::Status CreateModel(v1::Models::Stub& stub, const std::string& name,
                                const std::string& spec) {
  grpc::ClientContext context;
  v1::CreateModelRequest request;
  request.set_name(name);
  request.set_spec_json(spec);
  v1::ModelInfo info;
  return stub.CreateModel(&context, request, &info);
}

// Runs Checkpoints.Load on `context` and reads its whole streamed answer; the call's status.
inline grpc::Status LoadCheckpoint(v1::Checkpoints::Stub& stub, grpc::ClientContext* context,
                                   const v1::LoadRequest& request,
                                   v1::LoadResponse* response = nullptr) {
  auto reader = stub.Load(context, request);
  v1::LoadResponse message;
  v1::LoadResponse whole;
  while (reader->Read(&message)) {
    whole.set_version(message.version());
    whole.set_created(message.created());
    whole.set_format(message.format());
    whole.mutable_missing_keys()->MergeFrom(message.missing_keys());
    whole.mutable_unexpected_keys()->MergeFrom(message.unexpected_keys());
    whole.mutable_error_text()->append(message.error_text());
  }
  if (response != nullptr) *response = std::move(whole);
  return reader->Finish();
}

}  // namespace paramd::testing
