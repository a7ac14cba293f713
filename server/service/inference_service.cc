#include "server/service/inference_service.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "base/text.h"
#include "server/core/run_forward.h"
#include "server/service/status_util.h"
#include "server/service/tensor_codec.h"
#include "server/service/unary_call.h"

namespace paramd::service {
namespace {

constexpr char kForwardMethod[] = "/paramd.v1.Inference/Forward";

struct ForwardCall {
  v1::ForwardOptions options;
  std::vector<core::NamedTensor> inputs;
};

// Assembles the request stream frame by frame: options in the first frame, then per input
// a header and its chunks (inference.proto). INVALID_ARGUMENT for a part out of place, a
// region, a repeated name or bytes that do not fit.
class CallCollector {
 public:
  absl::Status Add(v1::ForwardRequest& frame) {
    if (first_ != frame.has_options()) {
      return absl::InvalidArgumentError(
          first_ ? "a Forward stream starts with a frame carrying the ForwardOptions"
                 : "a Forward stream carries its ForwardOptions once, in the first frame");
    }
    if (first_) {
      call_.options = std::move(*frame.mutable_options());
      first_ = false;
    }
    if (frame.has_header()) {
      const v1::TensorHeader& header = frame.header();
      if (header.has_region() && header.region().ranges_size() > 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("input ", QuoteName(header.name()), " has a region; inputs are whole tensors"));
      }
      if (header.name().empty()) {
        return absl::InvalidArgumentError(
            "an input has no name; the positional input is named \"input\"");
      }
      if (!names_.insert(header.name()).second) {
        return absl::InvalidArgumentError(
            absl::StrCat("input ", QuoteName(header.name()), " is sent twice"));
      }
      if (assembler_.active()) PARAMD_RETURN_IF_ERROR(FinishInput());
      PARAMD_RETURN_IF_ERROR(assembler_.Begin(header));
    }
    if (frame.has_chunk()) PARAMD_RETURN_IF_ERROR(assembler_.Add(frame.chunk()));
    return absl::OkStatus();
  }

  // The model and the mode the options name; empty and FORWARD_MODE_MODEL before the first
  // frame.
  const std::string& model() const { return call_.options.model(); }
  v1::ForwardMode mode() const { return call_.options.mode(); }

  // The stream ended.
  absl::StatusOr<ForwardCall> Finish() {
    if (first_) {
      return absl::InvalidArgumentError(
          "the Forward stream ended without the ForwardOptions naming the model");
    }
    if (assembler_.active()) PARAMD_RETURN_IF_ERROR(FinishInput());
    return std::move(call_);
  }

 private:
  absl::Status FinishInput() {
    PARAMD_ASSIGN_OR_RETURN(core::Tensor tensor, assembler_.Finish());
    call_.inputs.push_back({assembler_.header().name(), std::move(tensor)});
    return absl::OkStatus();
  }

  ForwardCall call_;
  bool first_ = true;
  TensorAssembler assembler_;
  absl::flat_hash_set<std::string> names_;
};

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

// The answer's frames: the start and every output (header, then its chunks), packed into
// as few frames as their field order allows, so that a small answer is one frame, which
// leaves with the status. One frame is built at a time, so a large output is never
// copied whole.
class AnswerFrames {
 public:
  // Casts every output for the wire first, so that a failing cast sends nothing.
  static absl::StatusOr<std::unique_ptr<AnswerFrames>> Make(std::string model_name,
                                                            core::ForwardAnswer answer,
                                                            v1::DType wire_dtype) {
    auto frames = std::unique_ptr<AnswerFrames>(new AnswerFrames());
    frames->wire_.reserve(answer.outputs.size());
    for (const core::NamedTensor& output : answer.outputs) {
      PARAMD_ASSIGN_OR_RETURN(core::Tensor tensor, PrepareForWire(output.tensor, wire_dtype));
      frames->wire_.push_back(std::move(tensor));
    }
    frames->model_name_ = std::move(model_name);
    frames->answer_ = std::move(answer);
    return frames;
  }

  // Fills `frame` with the next frame; returns true when it is the last one.
  bool Next(v1::ForwardResponse* frame) {
    frame->Clear();
    if (!started_) {
      started_ = true;
      v1::ForwardStart* start = frame->mutable_start();
      start->set_model(model_name_);
      start->set_version(answer_.version);
      start->set_updated_version(answer_.updated_version);
      start->set_training(answer_.training);
    }
    while (index_ < wire_.size()) {
      const core::Tensor& wire = wire_[index_];
      if (!in_output_) {
        // A header goes after a start in the same frame, never after a chunk or header.
        if (frame->has_header() || frame->has_chunk()) return false;
        const core::NamedTensor& output = answer_.outputs[index_];
        v1::TensorHeader* header = frame->mutable_header();
        header->set_name(output.name);
        FillMeta(wire, header->mutable_meta());
        // Where the model computed it, not the wire copy's CPU.
        header->mutable_meta()->set_device(output.tensor.device().ToString());
        header->mutable_meta()->set_version(answer_.version);
        in_output_ = true;
        offset_ = 0;
        continue;
      }
      if (offset_ < wire.nbytes()) {
        if (frame->has_chunk()) return false;
        v1::TensorChunk* chunk = frame->mutable_chunk();
        chunk->set_offset(offset_);
        const size_t size = std::min(kChunkBytes, wire.nbytes() - offset_);
        chunk->set_data(static_cast<const char*>(wire.data()) + offset_, size);
        offset_ += size;
        continue;
      }
      in_output_ = false;
      ++index_;
    }
    return true;
  }

 private:
  AnswerFrames() = default;

  std::string model_name_;
  core::ForwardAnswer answer_;
  std::vector<core::Tensor> wire_;
  bool started_ = false;
  size_t index_ = 0;        // output being sent
  bool in_output_ = false;  // its header is out
  size_t offset_ = 0;       // its next byte
};

// What fixes a forward's cost besides the model's version (Note [Cheap repeats]): the
// mode, the wire dtype and every input's name, dtype, device and shape.
std::string Signature(const ForwardCall& call) {
  std::string signature = absl::StrCat(call.options.mode(), "/", call.options.wire_dtype());
  for (const core::NamedTensor& input : call.inputs) {
    absl::StrAppend(&signature, "|", input.name, ":", DTypeName(input.tensor.dtype()), "@",
                    input.tensor.device().ToString(), "[",
                    absl::StrJoin(input.tensor.shape(), ","), "]");
  }
  return signature;
}

// One Forward call: the request is assembled on gRPC's threads as it arrives, the
// forward runs on a worker (or inline, for a cheap repeat: Note [Cheap repeats]), and the
// answer goes out one frame at a time.
//
// Thread-safety: gRPC runs the reactions one at a time, but Expire comes from the
// watchdog's thread while the request is read: `mu_` orders it against OnReadDone, and the
// reactor is deleted when both gRPC (OnDone) and an Expire under way let go of it.
class ForwardReactor final
    : public grpc::ServerBidiReactor<v1::ForwardRequest, v1::ForwardResponse>,
      private IdleWatchdog::Stream {
 public:
  ForwardReactor(grpc::CallbackServerContext* context, core::ModelRegistry* registry,
                 Executor* executor, IdleWatchdog* watchdog, CheapRepeats* repeats,
                 Metrics* metrics, const Authenticator* auth)
      : context_(context),
        registry_(registry),
        auth_(auth),
        watchdog_(watchdog),
        repeats_(repeats),
        metrics_(metrics) {
    absl::StatusOr<std::shared_ptr<Executor::Ticket>> ticket = executor->Admit();
    if (!ticket.ok()) {
      {
        absl::MutexLock lock(&mu_);
        phase_ = Phase::kFinished;
      }
      Done(ToGrpcStatus(ticket.status()));
      return;
    }
    ticket_ = *std::move(ticket);
    watchdog_->Touch(this);
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    absl::ReleasableMutexLock lock(&mu_);
    if (phase_ != Phase::kReading) return;  // expired: answered already
    if (ok) {
      watchdog_->Touch(this);
      const grpc::Status added = Guard([&] {
        PARAMD_RETURN_IF_ERROR(collector_.Add(request_));
        return OptionsAllowed();
      });
      if (!added.ok()) {
        phase_ = Phase::kFinished;
        lock.Release();
        return Done(added);
      }
      lock.Release();
      // An Expire between the release and this read answers first; the read then ends at
      // once (ok false) and is ignored above.
      StartRead(&request_);
      return;
    }
    phase_ = Phase::kRunning;
    lock.Release();
    watchdog_->Forget(this);  // running is not idling
    Dispatch();
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      return Done(
          ToGrpcStatus(absl::CancelledError("the client went away before the outputs were sent")));
    }
    SendNext();
  }

  void OnDone() override {
    watchdog_->Forget(this);
    Unref();
  }

 private:
  enum class Phase { kReading, kRunning, kFinished };

  void Expire() override {
    {
      absl::MutexLock lock(&mu_);
      if (phase_ != Phase::kReading) return;
      phase_ = Phase::kFinished;
    }
    // From here on no reaction touches the collector; its inputs go with the reactor.
    model_name_ = collector_.model();
    Done(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                      absl::StrCat("the Forward stream sent nothing for ",
                                   absl::FormatDuration(watchdog_->timeout()),
                                   " (--stream-idle-timeout) and was ended before the forward "
                                   "ran: send the inputs and close the stream without pausing")));
  }
  void Ref() override { refs_.fetch_add(1); }
  void Unref() override {
    if (refs_.fetch_sub(1) == 1) delete this;
  }

  // On gRPC's thread, the request read: runs a cheap repeat inline, anything else on a
  // worker.
  void Dispatch() {
    const grpc::Status ready = Guard([&]() -> absl::Status {
      PARAMD_ASSIGN_OR_RETURN(call_, collector_.Finish());
      model_name_ = call_.options.model();
      PARAMD_ASSIGN_OR_RETURN(model_, registry_->Get(model_name_));
      signature_ = Signature(call_);
      return absl::OkStatus();
    });
    if (!ready.ok()) return Done(ready);
    const uint64_t cheap = repeats_->CheapVersion(model_, signature_);
    const uint64_t asked = call_.options.if_version();
    if (cheap != 0 && (asked == 0 || asked == cheap)) {
      const grpc::Status inline_status = Guard([&] { return Compute(cheap); });
      // Pinned to the measured version: ABORTED means the model moved on (or its
      // statistics could not be committed there), which the worker's unpinned run handles
      // as any forward does. A caller's own pin gets its ABORTED as it would there.
      if (inline_status.error_code() != grpc::StatusCode::ABORTED || asked != 0) {
        return Answer(inline_status);
      }
    }
    ticket_->Run([this] {
      Answer(Guard([&] { return Compute(IfVersion(call_.options.if_version())); }));
    });
  }

  // Runs the forward (pinned to `if_version` when set) and prepares the answer's frames.
  absl::Status Compute(std::optional<uint64_t> if_version) {
    if (context_->IsCancelled()) return absl::CancelledError("the client cancelled the forward");
    PARAMD_ASSIGN_OR_RETURN(core::ForwardMode mode, ModeOf(call_.options.mode()));
    const absl::Time start = absl::Now();
    PARAMD_ASSIGN_OR_RETURN(
        core::ForwardAnswer answer,
        core::RunForward(*model_, call_.inputs,
                         {.mode = mode,
                          .seed = call_.options.seed(),
                          .if_version = if_version,
                          .cancelled = [this] { return context_->IsCancelled(); },
                          .may_train = [this](bool model_mode) { return MayTrain(model_mode); }}));
    const absl::Duration took = absl::Now() - start;
    repeats_->Record(model_, answer.version, signature_, took);
    if (metrics_ != nullptr) metrics_->ObserveForward(model_->name(), absl::ToDoubleSeconds(took));
    PARAMD_ASSIGN_OR_RETURN(frames_, AnswerFrames::Make(model_->name(), std::move(answer),
                                                        call_.options.wire_dtype()));
    return absl::OkStatus();
  }

  // A forward asking for training mode is refused as its options arrive, before its inputs
  // stream in; one left in the model's mode is known to train only when it runs.
  absl::Status OptionsAllowed() {
    if (options_checked_) return absl::OkStatus();
    options_checked_ = true;
    if (collector_.mode() != v1::FORWARD_MODE_TRAIN) return absl::OkStatus();
    return MayTrain(/*model_mode=*/false);
  }

  // A training-mode forward commits, so it needs role `write` (Note [Forward role]).
  // `model_mode`: the mode was left to the model's (model_ is then set).
  absl::Status MayTrain(bool model_mode) {
    const std::string what =
        model_mode ? absl::StrCat(kForwardMethod, " with the mode left unset runs model ",
                                  QuoteName(model_->name()), " in its training mode, which")
                   : absl::StrCat(kForwardMethod, " in training mode (FORWARD_MODE_TRAIN)");
    const grpc::Status allowed = AuthorizeRequest(
        auth_, *context_, kForwardMethod, Role::kWrite,
        absl::StrCat(what, " can commit BatchNorm running statistics, so it"),
        absl::StrCat("ask for FORWARD_MODE_EVAL", model_mode ? " explicitly" : "",
                     " (paramctl forward --eval; Python model.run(..., mode=\"eval\"))"));
    if (allowed.ok()) return absl::OkStatus();
    return absl::Status(static_cast<absl::StatusCode>(allowed.error_code()),
                        allowed.error_message());
  }

  // Starts the answer, or ends the call with `status`.
  void Answer(const grpc::Status& status) {
    ticket_.reset();
    if (!status.ok()) return Done(status);
    SendNext();
  }

  // Sends the next frame; the last one leaves with the status.
  void SendNext() {
    bool last = false;
    const grpc::Status built = Guard([&] {
      last = frames_->Next(&response_);
      return absl::OkStatus();
    });
    if (!built.ok()) return Done(built);
    if (last) {
      StartWriteAndFinish(&response_, grpc::WriteOptions(),
                          Logged("forward", model_name_, grpc::Status::OK));
    } else {
      // No buffer hint: a hinted write may wait for a flush that never comes.
      StartWrite(&response_);
    }
  }

  void Done(const grpc::Status& status) {
    ticket_.reset();
    Finish(Logged("forward", model_name_, status));
  }

  grpc::CallbackServerContext* const context_;
  core::ModelRegistry* const registry_;
  const Authenticator* const auth_;  // may be null
  IdleWatchdog* const watchdog_;     // not owned
  CheapRepeats* const repeats_;
  Metrics* const metrics_;  // may be null
  std::shared_ptr<Executor::Ticket> ticket_;
  std::atomic<int> refs_{1};  // gRPC's, until OnDone
  absl::Mutex mu_;
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kReading;
  v1::ForwardRequest request_;
  CallCollector collector_;
  bool options_checked_ = false;  // OptionsAllowed ran, on the first frame
  ForwardCall call_;
  std::shared_ptr<core::Model> model_;
  std::string model_name_;
  std::string signature_;
  std::unique_ptr<AnswerFrames> frames_;
  v1::ForwardResponse response_;
};

}  // namespace

grpc::ServerBidiReactor<v1::ForwardRequest, v1::ForwardResponse>* InferenceService::Forward(
    grpc::CallbackServerContext* context) {
  if (auto* refused =
          RefuseUnlessAllowed<grpc::ServerBidiReactor<v1::ForwardRequest, v1::ForwardResponse>>(
              auth_, context, kForwardMethod)) {
    return refused;
  }
  return new ForwardReactor(context, registry_, executor_, watchdog_, &repeats_, metrics_, auth_);
}

}  // namespace paramd::service
