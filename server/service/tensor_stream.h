// Server-side streaming of tensors without copying their bytes through protobuf strings.
//
// Reads: a chunk frame goes out as a gRPC ByteBuffer of two slices: a few bytes of hand-encoded
// protobuf framing (TensorFrame.chunk = TensorChunk{offset, data}) and a slice that points
// straight into the tensor's storage, holding a reference to that storage until gRPC has
// sent it. Storages reachable from a published version are never written again (Note
// [Snapshot publication] in server/core/model.h), so the bytes cannot change underneath.
//
// Writes: a chunk frame that arrives is decoded by hand and its bytes copied from gRPC's
// buffers straight into the tensor being assembled; other frames parse as protobuf.
//
// Thread-safety: the reactors are driven by gRPC's callback threads, one event at a time,
// as gRPC guarantees for a reactor; a write's apply step runs on the Executor, after the
// last read and before the finish, so it never overlaps the reactor's other events.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "paramd/v1/parameters.pb.h"
#include "server/core/tensor.h"
#include "server/service/executor.h"
#include "server/service/tensor_codec.h"

namespace paramd::service {

// One tensor to stream: its name, the tensor of the pinned version, and header extras.
struct OutgoingTensor {
  std::string name;
  core::Tensor tensor;
  bool is_parameter = false;
  bool requires_grad = false;
  uint64_t version = 0;
  std::vector<std::string> tied_with;
  // Set: the earlier name in the stream whose tensor this is; its header says so and no
  // chunks follow.
  std::string alias_of;
};

// The TensorFrame {chunk {offset, data = bytes [offset, offset + size) of tensor}} as a
// ByteBuffer whose data slice references the tensor's storage. `tensor` must be a
// contiguous CPU tensor.
grpc::ByteBuffer EncodeChunkFrame(const core::Tensor& tensor, size_t offset, size_t size);

// Serializes a protobuf message into a ByteBuffer.
grpc::ByteBuffer Serialize(const google::protobuf::MessageLite& message);
// Parses a request from a ByteBuffer; INVALID_ARGUMENT when it does not parse.
absl::Status Parse(const grpc::ByteBuffer& buffer, google::protobuf::MessageLite* message);

// Writes a start frame, then each tensor's header and (with_data) its chunks, one write in
// flight at a time. Finishes with the first error (a wire cast that fails) or OK.
class TensorStreamReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  // Finishes at once with `status` (the read could not even start).
  explicit TensorStreamReactor(const absl::Status& status);
  TensorStreamReactor(v1::StreamStart start, std::vector<OutgoingTensor> tensors, bool with_data,
                      v1::DType wire_dtype);

  void OnWriteDone(bool ok) override;
  void OnDone() override { delete this; }

 private:
  // Sends the next frame, or finishes when there is none.
  void Next();

  v1::StreamStart start_;
  std::vector<OutgoingTensor> tensors_;
  bool with_data_ = false;
  v1::DType wire_dtype_ = v1::DTYPE_UNSPECIFIED;
  bool started_ = false;
  size_t index_ = 0;          // tensor being sent
  bool header_sent_ = false;  // its header is out
  // The wire dtype each tied tensor's first name went out with, for its aliases.
  absl::flat_hash_map<std::string, v1::DType> sent_dtypes_;
  core::Tensor wire_;         // its bytes as they travel (cast, contiguous)
  size_t offset_ = 0;         // next byte of wire_ to send
  grpc::ByteBuffer buffer_;   // the write in flight
};

// What a client-streamed write carried: its options and every tensor, complete.
struct IncomingWrite {
  v1::WriteOptions options;
  std::vector<std::pair<v1::TensorHeader, core::Tensor>> tensors;
};

// Checks the framing of a write stream (options first and once, then per tensor a header
// and its chunks) and assembles it.
class WriteFrameCollector {
 public:
  // INVALID_ARGUMENT for a frame out of place or bytes that do not fit the tensor.
  absl::Status Add(const grpc::ByteBuffer& frame);
  // The stream ended: INVALID_ARGUMENT if it carried no options or a tensor ended early.
  absl::StatusOr<IncomingWrite> Finish();
  // The model named by the options frame ("" before it arrives), for the log; kept after
  // Finish has handed the write over.
  const std::string& model() const { return model_; }

 private:
  absl::Status AddParsed(v1::WriteFrame& frame);

  IncomingWrite write_;
  std::string model_;
  bool have_options_ = false;
  TensorAssembler assembler_;
};

// Admits the call (RESOURCE_EXHAUSTED before reading anything when the executor is full),
// reads the whole write stream, then runs `apply` on it on the executor and answers with
// the response it returns (serialized), or with the first error of the stream or of
// `apply`, which it logs under `action`. A call cancelled before `apply` starts is
// answered CANCELLED without applying anything.
class WriteStreamReactor final : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  using Apply = std::function<absl::StatusOr<grpc::ByteBuffer>(IncomingWrite&)>;
  // Borrows `context` and `response` (gRPC's) and `executor`.
  WriteStreamReactor(grpc::CallbackServerContext* context, Executor* executor,
                     grpc::ByteBuffer* response, const char* action, Apply apply);

  void OnReadDone(bool ok) override;
  void OnDone() override { delete this; }

 private:
  // Logs a failure, then answers with it.
  void Fail(const grpc::Status& status);
  // On a worker: assembles the write and applies it, then finishes the call.
  void ApplyAndFinish();

  grpc::CallbackServerContext* context_;  // owned by gRPC
  std::shared_ptr<Executor::Ticket> ticket_;
  grpc::ByteBuffer* response_;  // owned by gRPC
  const char* action_;
  Apply apply_;
  grpc::ByteBuffer frame_;
  WriteFrameCollector collector_;
};

}  // namespace paramd::service
