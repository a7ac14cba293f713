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
// last read and before the finish, so it never overlaps the reactor's other events. The one
// event from elsewhere is a write stream's expiry, on the IdleWatchdog's thread
// (WriteStreamReactor says how it is ordered).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <type_traits>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/server_callback.h"
#include "paramd/v1/parameters.pb.h"
#include "paramd/v1/training.pb.h"
#include "server/core/tensor.h"
#include "server/service/executor.h"
#include "server/service/idle_watchdog.h"
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
  // The same stream behind another first frame (already serialized): a stream of a message
  // whose header and chunk fields are TensorFrame's (OptimizerStateFrame).
  TensorStreamReactor(grpc::ByteBuffer first, std::vector<OutgoingTensor> tensors);

  void OnWriteDone(bool ok) override;
  void OnDone() override { delete this; }

 private:
  // Sends the next frame, or finishes when there is none.
  void Next();

  v1::StreamStart start_;
  grpc::ByteBuffer first_;  // set: sent instead of a start frame
  bool have_first_ = false;
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

// What a client-streamed write carried: its options and every tensor, complete (with
// commit_each_tensor: the complete tensors not committed yet).
template <typename Options>
struct IncomingTensors {
  Options options;
  std::vector<std::pair<v1::TensorHeader, core::Tensor>> tensors;
};
using IncomingWrite = IncomingTensors<v1::WriteOptions>;
using IncomingGradients = IncomingTensors<v1::GradientOptions>;
using IncomingOptimizerState = IncomingTensors<v1::OptimizerStateHead>;

// The object a stream's options name, for the log: the model of a write, the optimizer of a
// push or a state load.
inline const std::string& TargetOf(const v1::WriteOptions& options) { return options.model(); }
inline const std::string& TargetOf(const v1::GradientOptions& options) {
  return options.optimizer();
}
inline const std::string& TargetOf(const v1::OptimizerStateHead& options) {
  return options.optimizer();
}
// The log's key for TargetOf.
inline const char* TargetKey(const v1::WriteOptions&) { return "model"; }
inline const char* TargetKey(const v1::GradientOptions&) { return "optimizer"; }
inline const char* TargetKey(const v1::OptimizerStateHead&) { return "optimizer"; }
// What the stream is and what its target is, for messages: "the write stream to model".
inline const char* StreamTo(const v1::WriteOptions&) { return "the write stream to model"; }
inline const char* StreamTo(const v1::GradientOptions&) {
  return "the gradient stream to optimizer";
}
inline const char* StreamTo(const v1::OptimizerStateHead&) {
  return "the optimizer state stream to optimizer";
}

// A commit_each_tensor write's progress (Note [Tensor-by-tensor writes] in
// parameters_service.h): the first `count` tensors of its stream are committed, the last
// one, `last_name`, at `version`.
struct CommittedPrefix {
  size_t count = 0;
  std::string last_name;
  uint64_t version = 0;
};

// Checks the framing of a client stream of `Frame`s (WriteFrame, GradientFrame,
// OptimizerStateFrame: an `options` first and once, then per tensor a header and its chunks,
// with the same field numbers in each) and assembles it. A WriteFrame stream's
// WriteOptions.reserve_bytes is reserved when the options arrive (Note [Write reservations]
// in server/core/storage.h).
template <typename Frame>
class FrameCollector {
 public:
  using Options = std::decay_t<decltype(std::declval<Frame>().options())>;

  // `commit_each` is whether the call takes commit_each_tensor (INVALID_ARGUMENT for a write
  // that asks for it otherwise); `suggest_commit_each`, whether a refused reservation should
  // suggest it (only where it needs less: a write of several tensors).
  explicit FrameCollector(bool commit_each = false, bool suggest_commit_each = false)
      : commit_each_supported_(commit_each), suggest_commit_each_(suggest_commit_each) {}
  // INVALID_ARGUMENT for a frame out of place or bytes that do not fit the tensor;
  // RESOURCE_EXHAUSTED for a reservation that does not fit (naming the model, the bytes and
  // --max-memory).
  absl::Status Add(const grpc::ByteBuffer& frame);
  // The stream ended: INVALID_ARGUMENT if it carried no options or a tensor ended early.
  absl::StatusOr<IncomingTensors<Options>> Finish();
  // The model or optimizer named by the options frame ("" before it arrives), for the log;
  // kept after Finish has handed the write over.
  const std::string& model() const { return model_; }
  // StreamTo and TargetKey for this kind of stream.
  const char* stream_to() const { return StreamTo(write_.options); }
  const char* target_key() const { return TargetKey(write_.options); }

  // Whether the write asked for commit_each_tensor (and the call takes it).
  bool commit_each() const { return commit_each_; }
  // commit_each_tensor: whether complete tensors wait to be committed.
  bool HasCompleted() const { return commit_each_ && !write_.tensors.empty(); }
  // The write so far: its options and complete tensors, for a commit that takes them.
  IncomingTensors<Options>& pending() { return write_; }
  CommittedPrefix& committed() { return committed_; }
  // Sets aside again, as far as it fits, what the committed tensors took out of the
  // reservation (their old storages were freed by the commit).
  void Refill();

 private:
  absl::Status AddParsed(Frame& frame);
  absl::Status TakeOptions(Options& options);
  // commit_each_tensor: hands a tensor over as soon as its last byte is in, so that the
  // next one is allocated only after it was committed.
  absl::Status CompleteIfDone();

  const bool commit_each_supported_;
  const bool suggest_commit_each_;
  bool commit_each_ = false;
  IncomingTensors<Options> write_;
  std::string model_;
  bool have_options_ = false;
  std::unique_ptr<core::MemoryReservation> reservation_;
  TensorAssembler assembler_;
  CommittedPrefix committed_;
};
using WriteFrameCollector = FrameCollector<v1::WriteFrame>;

// The status of a commit_each_tensor write that failed after committing some tensors:
// `status` with a prefix saying which tensors were committed and stay. OK stays OK and a
// write that committed nothing keeps its status as it is.
grpc::Status WithCommittedPrefix(const CommittedPrefix& committed, const grpc::Status& status);

// The reading half of a write call: admits the call (RESOURCE_EXHAUSTED before reading
// anything when the executor is full), reads the whole write stream, then runs the
// subclass's ApplyWrite on the executor. A call cancelled before ApplyWrite starts is answered
// CANCELLED without applying anything; a stream that sends no frame for the watchdog's
// timeout is answered DEADLINE_EXCEEDED, also without applying anything, and its memory is
// freed (Note [Idle write streams] in idle_watchdog.h). `GrpcReactor` is the gRPC reactor
// kind the answer needs: a single response, or a stream of them.
//
// Thread-safety: gRPC runs the reactions one at a time, but Expire comes from the
// watchdog's thread: `mu_` orders it against OnReadDone, and the reactor is deleted when
// both gRPC (OnDone) and an Expire under way let go of it.
template <typename GrpcReactor, typename Frame = v1::WriteFrame>
class WriteReactorBase : public GrpcReactor, private IdleWatchdog::Stream {
 public:
  void OnReadDone(bool ok) override;
  void OnDone() override;

 protected:
  using Incoming = IncomingTensors<typename FrameCollector<Frame>::Options>;
  // Commits the complete tensors of a commit_each_tensor write (Incoming::tensors, which it
  // empties) and records them in the prefix; on a worker, the stream paused.
  using CommitEach = std::function<absl::Status(Incoming&, CommittedPrefix&)>;

  // Borrows `context` (gRPC's), `executor` and `watchdog`. Subclasses call Start() last in
  // their constructor, once their own members are ready. Without `commit_each` a write that
  // asks for commit_each_tensor is refused, unless `single` (a call that writes one tensor,
  // for which both modes are the same).
  WriteReactorBase(grpc::CallbackServerContext* context, Executor* executor, IdleWatchdog* watchdog,
                   const char* action, CommitEach commit_each = {}, bool single = false)
      : context_(context),
        action_(action),
        collector_(commit_each != nullptr || single, commit_each != nullptr),
        commit_each_(std::move(commit_each)),
        executor_(executor),
        watchdog_(watchdog) {}
  void Start();
  // On a worker, once the stream has ended: assembles and applies the write, then answers.
  virtual void ApplyWrite() = 0;
  // Logs a failure, then answers with it (and no message).
  void Fail(const grpc::Status& status);
  // The call is done with its admission: room for the next call before the answer is out.
  void ReleaseAdmission() { ticket_.reset(); }

  grpc::CallbackServerContext* const context_;  // owned by gRPC
  const char* const action_;
  FrameCollector<Frame> collector_;
  const CommitEach commit_each_;

 private:
  enum class Phase { kReading, kCommitting, kApplying, kFinished };

  // On a worker, reading paused: commits the complete tensors, then reads on.
  void CommitCompleted();
  void Expire() override;
  void Ref() override { refs_.fetch_add(1); }
  void Unref() override;

  Executor* const executor_;     // not owned
  IdleWatchdog* const watchdog_;  // not owned
  std::shared_ptr<Executor::Ticket> ticket_;
  std::atomic<int> refs_{1};  // gRPC's, until OnDone
  absl::Mutex mu_;
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kReading;
  grpc::ByteBuffer frame_;
};

// A write answered with one response: `apply` returns it serialized, or an error.
template <typename Frame>
class BasicWriteStreamReactor final
    : public WriteReactorBase<grpc::ServerReadReactor<grpc::ByteBuffer>, Frame> {
 public:
  using Base = WriteReactorBase<grpc::ServerReadReactor<grpc::ByteBuffer>, Frame>;
  using Incoming = typename Base::Incoming;
  using CommitEach = typename Base::CommitEach;
  using Apply = std::function<absl::StatusOr<grpc::ByteBuffer>(Incoming&)>;
  // Borrows `context` and `response` (gRPC's), `executor` and `watchdog`. With
  // `commit_each` the call takes commit_each_tensor: complete tensors are committed as they
  // arrive, and a write that committed any is answered with the last one's version.
  BasicWriteStreamReactor(grpc::CallbackServerContext* context, Executor* executor,
                          IdleWatchdog* watchdog, grpc::ByteBuffer* response, const char* action,
                          Apply apply, CommitEach commit_each = {}, bool single = false);

 private:
  void ApplyWrite() override;

  grpc::ByteBuffer* response_;  // owned by gRPC
  Apply apply_;
};
using WriteStreamReactor = BasicWriteStreamReactor<v1::WriteFrame>;

// The answer of a write that may come later, from any thread (a synchronous training
// round's step, Note [Synchronous rounds] in server/core/optim/optimizer.h). Shared by the
// reactor and whoever answers, so it may outlive the call; the first Finish answers, later
// ones do nothing.
// Thread-safety: every method may be called from any thread.
class DeferredAnswer {
 public:
  // `finish` answers the call (the reactor's).
  explicit DeferredAnswer(std::function<void(absl::StatusOr<grpc::ByteBuffer>)> finish)
      : finish_(std::move(finish)) {}

  // Answers with `answer` (OK: the serialized response), unless answered already.
  void Finish(absl::StatusOr<grpc::ByteBuffer> answer);
  // While the answer is pending, a client that cancels runs `withdraw` (at once when it
  // cancelled already): true when it took the work back, and the call is answered
  // CANCELLED; false when whoever answers still will.
  void OnCancel(std::function<bool()> withdraw);
  // The client cancelled (the reactor's OnCancel).
  void Cancelled();

 private:
  absl::Mutex mu_;
  std::function<void(absl::StatusOr<grpc::ByteBuffer>)> finish_ ABSL_GUARDED_BY(mu_);
  std::function<bool()> withdraw_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

// A write answered with one response that `apply` may give later (DeferredAnswer): it
// releases the call's admission before `apply` runs, since an answer that waits holds no
// worker. After `apply` has been called the reactor is the answer's alone.
template <typename Frame>
class DeferredWriteStreamReactor final
    : public WriteReactorBase<grpc::ServerReadReactor<grpc::ByteBuffer>, Frame> {
 public:
  using Base = WriteReactorBase<grpc::ServerReadReactor<grpc::ByteBuffer>, Frame>;
  using Incoming = typename Base::Incoming;
  using Apply = std::function<void(Incoming&, const std::shared_ptr<DeferredAnswer>&)>;
  // Borrows `context` and `response` (gRPC's), `executor` and `watchdog`.
  DeferredWriteStreamReactor(grpc::CallbackServerContext* context, Executor* executor,
                             IdleWatchdog* watchdog, grpc::ByteBuffer* response,
                             const char* action, Apply apply);

  void OnCancel() override;

 private:
  void ApplyWrite() override;

  grpc::ByteBuffer* response_;  // owned by gRPC
  Apply apply_;
  absl::Mutex answer_mu_;
  std::shared_ptr<DeferredAnswer> answer_ ABSL_GUARDED_BY(answer_mu_);
};

// A write whose answer is a stream of messages (LoadStateDict, answer_stream.h): `apply`
// returns the serialized messages and the final status; they go out one write at a time,
// then the status.
class WriteAnswerStreamReactor final
    : public WriteReactorBase<grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>> {
 public:
  struct Answer {
    std::vector<grpc::ByteBuffer> messages;
    grpc::Status status;
  };
  using Apply = std::function<Answer(IncomingWrite&)>;
  // Borrows `context` (gRPC's), `executor` and `watchdog`.
  WriteAnswerStreamReactor(grpc::CallbackServerContext* context, Executor* executor,
                           IdleWatchdog* watchdog, const char* action, Apply apply);

  void OnWriteDone(bool ok) override;

 private:
  void ApplyWrite() override;
  // Sends the next message of the answer, or finishes when there is none.
  void Next();

  Apply apply_;
  Answer answer_;
  size_t next_ = 0;
};

}  // namespace paramd::service
