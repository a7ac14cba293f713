#include "server/service/tensor_stream.h"

#include <cstring>
#include <memory>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "base/text.h"
#include "base/chunk_frame.h"
#include "base/status_macros.h"
#include "server/service/status_util.h"
#include "server/service/tensor_codec.h"
#include "server/service/unary_call.h"

namespace paramd::service {
namespace {

void ReleaseStorage(void* holder) { delete static_cast<std::shared_ptr<core::Storage>*>(holder); }

}  // namespace

grpc::ByteBuffer EncodeChunkFrame(const core::Tensor& tensor, size_t offset, size_t size) {
  char* data = static_cast<char*>(tensor.mutable_data()) + offset;
  grpc::Slice slices[2] = {grpc::Slice(wire::ChunkFramePrefix(offset, size)),
                           grpc::Slice(data, size, &ReleaseStorage,
                                       new std::shared_ptr<core::Storage>(tensor.storage()))};
  return grpc::ByteBuffer(slices, 2);
}

grpc::ByteBuffer Serialize(const google::protobuf::MessageLite& message) {
  grpc::Slice slice(message.SerializeAsString());
  return grpc::ByteBuffer(&slice, 1);
}

namespace {

// The bytes of a message as pieces of the slices gRPC received it in (which `slices` keeps).
std::vector<absl::string_view> Pieces(const std::vector<grpc::Slice>& slices) {
  std::vector<absl::string_view> pieces;
  pieces.reserve(slices.size());
  for (const grpc::Slice& slice : slices) {
    pieces.emplace_back(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return pieces;
}

absl::Status ParsePieces(const std::vector<absl::string_view>& pieces,
                         google::protobuf::MessageLite* message) {
  std::string bytes;
  for (absl::string_view piece : pieces) bytes.append(piece.data(), piece.size());
  if (!message->ParseFromString(bytes)) {
    return absl::InvalidArgumentError("the request does not parse as " + message->GetTypeName());
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Parse(const grpc::ByteBuffer& buffer, google::protobuf::MessageLite* message) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return absl::InvalidArgumentError("unreadable request");
  return ParsePieces(Pieces(slices), message);
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

TensorStreamReactor::TensorStreamReactor(grpc::ByteBuffer first,
                                         std::vector<OutgoingTensor> tensors)
    : first_(std::move(first)), have_first_(true), tensors_(std::move(tensors)), with_data_(true) {
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
    if (have_first_) {
      buffer_ = first_;
      StartWrite(&buffer_);
      return;
    }
    v1::TensorFrame frame;
    *frame.mutable_start() = start_;
    buffer_ = Serialize(frame);
    StartWrite(&buffer_);
    return;
  }
  while (index_ < tensors_.size()) {
    const OutgoingTensor& item = tensors_[index_];
    // An alias's bytes went with its first name: it sends a header alone.
    const bool carries_data = with_data_ && item.alias_of.empty();
    if (!header_sent_) {
      if (carries_data) {
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
      if (with_data_) {
        // An alias's tensor is its first name's, so it travels as that one did.
        if (item.alias_of.empty() && !item.tied_with.empty()) {
          sent_dtypes_[item.name] = ToProtoDType(wire_.dtype());
        }
        header->mutable_meta()->set_dtype(item.alias_of.empty() ? ToProtoDType(wire_.dtype())
                                                                : sent_dtypes_[item.alias_of]);
      }
      header->set_alias_of(item.alias_of);
      header->mutable_meta()->set_is_parameter(item.is_parameter);
      header->mutable_meta()->set_requires_grad(item.requires_grad);
      header->mutable_meta()->set_version(item.version);
      for (const std::string& other : item.tied_with) header->add_tied_with(other);
      header_sent_ = true;
      offset_ = 0;
      buffer_ = Serialize(frame);
      // A header is small and its data follows at once: let gRPC coalesce the two.
      StartWrite(&buffer_, carries_data && wire_.nbytes() > 0
                               ? grpc::WriteOptions().set_buffer_hint()
                               : grpc::WriteOptions());
      return;
    }
    if (carries_data && offset_ < wire_.nbytes()) {
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

template <typename Frame>
absl::Status FrameCollector<Frame>::Add(const grpc::ByteBuffer& frame) {
  std::vector<grpc::Slice> slices;
  if (!frame.Dump(&slices).ok()) return absl::InvalidArgumentError("unreadable write frame");
  // The common case, a chunk encoded as protobuf encoders write it, is read in place so
  // its bytes are copied once, into the tensor.
  const std::vector<absl::string_view> pieces = Pieces(slices);
  if (std::optional<wire::ChunkFrameView> chunk = wire::ReadChunkFrame(pieces)) {
    PARAMD_ASSIGN_OR_RETURN(char* destination, assembler_.Claim(chunk->offset, chunk->size));
    for (absl::string_view piece : chunk->data) {
      std::memcpy(destination, piece.data(), piece.size());
      destination += piece.size();
    }
    return CompleteIfDone();
  }
  Frame parsed;
  PARAMD_RETURN_IF_ERROR(ParsePieces(pieces, &parsed));
  PARAMD_RETURN_IF_ERROR(AddParsed(parsed));
  return CompleteIfDone();
}

template <typename Frame>
absl::Status FrameCollector<Frame>::CompleteIfDone() {
  if (!commit_each_ || !assembler_.complete()) return absl::OkStatus();
  PARAMD_ASSIGN_OR_RETURN(core::Tensor done, assembler_.Finish());
  write_.tensors.emplace_back(assembler_.header(), std::move(done));
  return absl::OkStatus();
}

template <typename Frame>
absl::Status FrameCollector<Frame>::AddParsed(Frame& frame) {
  const std::string options_name = Options().GetTypeName();
  switch (frame.frame_case()) {
    case Frame::kOptions:
      if (have_options_) {
        return absl::InvalidArgumentError(absl::StrCat(
            options_name.substr(options_name.rfind('.') + 1), " was sent twice; send it once, first"));
      }
      return TakeOptions(*frame.mutable_options());
    case Frame::kHeader:
      if (!have_options_) {
        return absl::InvalidArgumentError(absl::StrCat("the first frame of a write must be ",
                                                       options_name.substr(options_name.rfind('.') + 1)));
      }
      if (assembler_.active()) {
        PARAMD_ASSIGN_OR_RETURN(core::Tensor done, assembler_.Finish());
        write_.tensors.emplace_back(assembler_.header(), std::move(done));
      }
      // Refused at its header, before its bytes: only a write takes part of a tensor.
      if constexpr (!std::is_same_v<Options, v1::WriteOptions>) {
        if (frame.header().has_region() && frame.header().region().ranges_size() > 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              std::is_same_v<Options, v1::GradientOptions> ? "the gradient of "
                                                           : "the optimizer state tensor ",
              QuoteName(frame.header().name()),
              " names a region; send whole tensors (a region is for SetTensors)"));
        }
      }
      return assembler_.Begin(frame.header(), reservation_.get());
    case Frame::kChunk:
      return assembler_.Add(frame.chunk());
    default: {
      const std::string frame_name = Frame().GetTypeName();
      return absl::InvalidArgumentError(absl::StrCat(
          "empty ", frame_name.substr(frame_name.rfind('.') + 1), "; set options, header or chunk"));
    }
  }
}

template <typename Frame>
absl::Status FrameCollector<Frame>::TakeOptions(Options& options) {
  write_.options = std::move(options);
  model_ = TargetOf(write_.options);
  have_options_ = true;
  // Gradient pushes and optimizer state loads are all-or-nothing and reserve as they go.
  if constexpr (std::is_same_v<Options, v1::WriteOptions>) {
    if (write_.options.commit_each_tensor() && !commit_each_supported_) {
      return absl::InvalidArgumentError(
          "commit_each_tensor is for SetTensors (and single-tensor writes); this call is "
          "all-or-nothing: send the write without it");
    }
    commit_each_ = write_.options.commit_each_tensor();
    const uint64_t reserve = write_.options.reserve_bytes();
    if (reserve == 0) return absl::OkStatus();
    absl::StatusOr<std::unique_ptr<core::MemoryReservation>> reservation =
        core::MemoryReservation::Make(Device::Cpu(), reserve);
    if (!reservation.ok()) {
      return absl::Status(
          reservation.status().code(),
          absl::StrCat("the write to model ", QuoteName(model_), " needs ", reserve,
                       " bytes at once (WriteOptions.reserve_bytes) and was refused before its "
                       "data was sent, nothing written: ",
                       reservation.status().message(),
                       commit_each_ || !suggest_commit_each_
                           ? ""
                           : "; SetTensors with commit_each_tensor needs only the "
                             "largest tensor"));
    }
    reservation_ = *std::move(reservation);
  }
  return absl::OkStatus();
}

template <typename Frame>
void FrameCollector<Frame>::Refill() {
  if constexpr (std::is_same_v<Options, v1::WriteOptions>) {
    if (reservation_ == nullptr) return;
    const uint64_t target = write_.options.reserve_bytes();
    if (reservation_->remaining() < target) reservation_->Grow(target - reservation_->remaining());
  }
}

grpc::Status WithCommittedPrefix(const CommittedPrefix& committed, const grpc::Status& status) {
  if (status.ok() || committed.count == 0) return status;
  return grpc::Status(
      status.error_code(),
      TruncateText(absl::StrCat("commit_each_tensor: the first ", committed.count,
                                " tensors of the write were committed and stay (the last, ",
                                QuoteName(committed.last_name), ", at version ",
                                committed.version, "); the rest failed: ",
                                status.error_message()),
                   kMaxStatusMessageBytes),
      status.error_details());
}

template <typename Frame>
absl::StatusOr<IncomingTensors<typename FrameCollector<Frame>::Options>>
FrameCollector<Frame>::Finish() {
  if (!have_options_) {
    const std::string options_name = Options().GetTypeName();
    return absl::InvalidArgumentError(absl::StrCat("the write stream carried no ",
                                                   options_name.substr(options_name.rfind('.') + 1),
                                                   " frame"));
  }
  if (assembler_.active()) {
    PARAMD_ASSIGN_OR_RETURN(core::Tensor done, assembler_.Finish());
    write_.tensors.emplace_back(assembler_.header(), std::move(done));
  }
  return std::move(write_);
}

template <typename GrpcReactor, typename Frame>
void WriteReactorBase<GrpcReactor, Frame>::Start() {
  absl::StatusOr<std::shared_ptr<Executor::Ticket>> ticket = executor_->Admit();
  if (!ticket.ok()) {
    {
      absl::MutexLock lock(&mu_);
      phase_ = Phase::kFinished;
    }
    Fail(ToGrpcStatus(ticket.status()));
    return;
  }
  ticket_ = *std::move(ticket);
  watchdog_->Touch(this);
  this->StartRead(&frame_);
}

template <typename GrpcReactor, typename Frame>
void WriteReactorBase<GrpcReactor, Frame>::Fail(const grpc::Status& failure) {
  const grpc::Status status = WithCommittedPrefix(collector_.committed(), failure);
  LogCall(action_, collector_.model(), FromGrpcStatus(status), false, collector_.target_key());
  ticket_.reset();
  this->Finish(status);
}

template <typename GrpcReactor, typename Frame>
void WriteReactorBase<GrpcReactor, Frame>::CommitCompleted() {
  const grpc::Status committed = Guard([&]() -> absl::Status {
    if (context_->IsCancelled()) return absl::CancelledError("the client cancelled the write");
    absl::Status status = commit_each_(collector_.pending(), collector_.committed());
    collector_.pending().tensors.clear();
    collector_.Refill();
    return status;
  });
  absl::ReleasableMutexLock lock(&mu_);
  if (!committed.ok()) {
    phase_ = Phase::kFinished;
    lock.Release();
    Fail(committed);
    return;
  }
  phase_ = Phase::kReading;
  lock.Release();
  watchdog_->Touch(this);
  this->StartRead(&frame_);
}

template <typename GrpcReactor, typename Frame>
void WriteReactorBase<GrpcReactor, Frame>::OnReadDone(bool ok) {
  absl::ReleasableMutexLock lock(&mu_);
  if (phase_ != Phase::kReading) return;  // expired: answered already
  if (!ok) {
    // The client finished sending (or went away: then nobody reads the answer).
    phase_ = Phase::kApplying;
    lock.Release();
    watchdog_->Forget(this);  // applying is not idling
    ticket_->Run([this] {
      if (context_->IsCancelled()) {
        // Cancelled mid-stream or while queued: either way the rest was not applied.
        return Fail(grpc::Status(
            grpc::StatusCode::CANCELLED,
            absl::StrCat("the call was cancelled (or passed its deadline) before it was applied; ",
                         collector_.committed().count == 0 ? "nothing was written"
                                                           : "the rest was not written")));
      }
      ApplyWrite();
    });
    return;
  }
  watchdog_->Touch(this);
  const grpc::Status added = Guard([&] { return collector_.Add(frame_); });
  if (!added.ok()) {
    // Answer at once; gRPC discards whatever the client still sends.
    phase_ = Phase::kFinished;
    lock.Release();
    Fail(added);
    return;
  }
  if (commit_each_ && collector_.HasCompleted()) {
    // Commit what is complete before reading on, so that the stream holds at most one
    // tensor (Note [Tensor-by-tensor writes] in parameters_service.h).
    phase_ = Phase::kCommitting;
    lock.Release();
    watchdog_->Forget(this);  // committing is not idling
    ticket_->Run([this] { CommitCompleted(); });
    return;
  }
  lock.Release();
  // An Expire between the release and this read finishes the call first; the read then
  // ends at once (ok false) and is ignored above.
  this->StartRead(&frame_);
}

template <typename GrpcReactor, typename Frame>
void WriteReactorBase<GrpcReactor, Frame>::Expire() {
  {
    absl::MutexLock lock(&mu_);
    if (phase_ != Phase::kReading) return;
    phase_ = Phase::kFinished;
  }
  // From here on no reaction touches the collector; its partial tensors go with the reactor.
  const std::string& model = collector_.model();
  const std::string stream = model.empty()
                                 ? "the write stream"
                                 : absl::StrCat(collector_.stream_to(), " ", QuoteName(model));
  const bool none_committed = collector_.committed().count == 0;
  Fail(grpc::Status(
      grpc::StatusCode::DEADLINE_EXCEEDED,
      absl::StrCat(stream, " sent nothing for ", absl::FormatDuration(watchdog_->timeout()),
                   " (--stream-idle-timeout) and was ended; ",
                   none_committed ? "nothing was written" : "the rest was not written",
                   ": send the whole write again without pausing mid-stream")));
}

template <typename GrpcReactor, typename Frame>
void WriteReactorBase<GrpcReactor, Frame>::OnDone() {
  watchdog_->Forget(this);
  Unref();
}

template <typename GrpcReactor, typename Frame>
void WriteReactorBase<GrpcReactor, Frame>::Unref() {
  if (refs_.fetch_sub(1) == 1) delete this;
}

template class FrameCollector<v1::WriteFrame>;
template class FrameCollector<v1::GradientFrame>;
template class FrameCollector<v1::OptimizerStateFrame>;
template class WriteReactorBase<grpc::ServerReadReactor<grpc::ByteBuffer>>;
template class WriteReactorBase<grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>>;
template class WriteReactorBase<grpc::ServerReadReactor<grpc::ByteBuffer>, v1::GradientFrame>;
template class WriteReactorBase<grpc::ServerReadReactor<grpc::ByteBuffer>, v1::OptimizerStateFrame>;

template <typename Frame>
BasicWriteStreamReactor<Frame>::BasicWriteStreamReactor(grpc::CallbackServerContext* context,
                                                        Executor* executor, IdleWatchdog* watchdog,
                                                        grpc::ByteBuffer* response,
                                                        const char* action, Apply apply,
                                                        CommitEach commit_each, bool single)
    : Base(context, executor, watchdog, action, std::move(commit_each), single),
      response_(response),
      apply_(std::move(apply)) {
  this->Start();
}

template <typename Frame>
void BasicWriteStreamReactor<Frame>::ApplyWrite() {
  const grpc::Status status = Guard([&]() -> absl::Status {
    PARAMD_ASSIGN_OR_RETURN(Incoming write, this->collector_.Finish());
    CommittedPrefix& committed = this->collector_.committed();
    if (this->commit_each_ && this->collector_.commit_each()) {
      PARAMD_RETURN_IF_ERROR(this->commit_each_(write, committed));
      write.tensors.clear();
    }
    if (committed.count > 0) {
      // Answered with the last tensor's version; the first call saw the if_version.
      v1::WriteResponse response;
      response.set_version(committed.version);
      *response_ = Serialize(response);
      return absl::OkStatus();
    }
    PARAMD_ASSIGN_OR_RETURN(*response_, apply_(write));
    return absl::OkStatus();
  });
  if (!status.ok()) return this->Fail(status);
  this->ReleaseAdmission();
  this->Finish(status);
}

template class BasicWriteStreamReactor<v1::WriteFrame>;
template class BasicWriteStreamReactor<v1::GradientFrame>;
template class BasicWriteStreamReactor<v1::OptimizerStateFrame>;

void DeferredAnswer::Finish(absl::StatusOr<grpc::ByteBuffer> answer) {
  std::function<void(absl::StatusOr<grpc::ByteBuffer>)> finish;
  {
    absl::MutexLock lock(&mu_);
    finish.swap(finish_);
    withdraw_ = nullptr;
  }
  if (finish) finish(std::move(answer));
}

void DeferredAnswer::OnCancel(std::function<bool()> withdraw) {
  {
    absl::MutexLock lock(&mu_);
    if (!finish_) return;  // answered already
    if (!cancelled_) {
      withdraw_ = std::move(withdraw);
      return;
    }
  }
  if (withdraw()) Finish(absl::CancelledError("the client cancelled the call while it waited"));
}

void DeferredAnswer::Cancelled() {
  std::function<bool()> withdraw;
  {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    withdraw.swap(withdraw_);
  }
  if (withdraw && withdraw()) {
    Finish(absl::CancelledError("the client cancelled the call while it waited"));
  }
}

template <typename Frame>
DeferredWriteStreamReactor<Frame>::DeferredWriteStreamReactor(
    grpc::CallbackServerContext* context, Executor* executor, IdleWatchdog* watchdog,
    grpc::ByteBuffer* response, const char* action, Apply apply)
    : Base(context, executor, watchdog, action), response_(response), apply_(std::move(apply)) {
  this->Start();
}

template <typename Frame>
void DeferredWriteStreamReactor<Frame>::OnCancel() {
  std::shared_ptr<DeferredAnswer> answer;
  {
    absl::MutexLock lock(&answer_mu_);
    answer = answer_;
  }
  // Before the answer exists the read or the apply step notices the cancellation itself.
  if (answer != nullptr) answer->Cancelled();
}

template <typename Frame>
void DeferredWriteStreamReactor<Frame>::ApplyWrite() {
  absl::StatusOr<Incoming> write;
  const grpc::Status assembled = Guard([&]() -> absl::Status {
    write = this->collector_.Finish();
    return write.status();
  });
  if (!assembled.ok()) return this->Fail(assembled);
  auto answer = std::make_shared<DeferredAnswer>([this](absl::StatusOr<grpc::ByteBuffer> result) {
    if (!result.ok()) return this->Fail(ToGrpcStatus(result.status()));
    *response_ = *std::move(result);
    this->Finish(grpc::Status::OK);
  });
  {
    absl::MutexLock lock(&answer_mu_);
    answer_ = answer;
  }
  // A cancellation that came before the answer existed is not seen by OnCancel.
  if (this->context_->IsCancelled()) answer->Cancelled();
  this->ReleaseAdmission();
  // From here on the answer may finish the call (and gRPC delete this) on any thread.
  // `apply` is moved out of the reactor first: the call it answers may delete the reactor
  // before it returns.
  Apply apply = std::move(apply_);
  const grpc::Status applied = Guard([&]() -> absl::Status {
    apply(*write, answer);
    return absl::OkStatus();
  });
  if (!applied.ok()) answer->Finish(FromGrpcStatus(applied));
}

template class DeferredWriteStreamReactor<v1::GradientFrame>;

WriteAnswerStreamReactor::WriteAnswerStreamReactor(grpc::CallbackServerContext* context,
                                                   Executor* executor, IdleWatchdog* watchdog,
                                                   const char* action, Apply apply)
    : WriteReactorBase(context, executor, watchdog, action), apply_(std::move(apply)) {
  Start();
}

void WriteAnswerStreamReactor::ApplyWrite() {
  const grpc::Status assembled = Guard([&]() -> absl::Status {
    PARAMD_ASSIGN_OR_RETURN(IncomingWrite write, collector_.Finish());
    answer_ = apply_(write);
    return absl::OkStatus();
  });
  if (!assembled.ok()) return Fail(assembled);
  LogCall(action_, collector_.model(), FromGrpcStatus(answer_.status), /*log_success=*/true,
          collector_.target_key());
  ReleaseAdmission();
  Next();
}

void WriteAnswerStreamReactor::OnWriteDone(bool ok) {
  if (!ok) {
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client stopped reading"));
    return;
  }
  Next();
}

void WriteAnswerStreamReactor::Next() {
  if (next_ < answer_.messages.size()) {
    StartWrite(&answer_.messages[next_++]);
    return;
  }
  Finish(answer_.status);
}

}  // namespace paramd::service
