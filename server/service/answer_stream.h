// Answers too long for one message, sent as a stream of bounded ones (docs/wire.md, "Pages
// and streamed lists"): a load's missing and unexpected keys, a refused load's whole error
// text, a long repr, NamedModules, the checkpoint files, the snapshots taken. A client's default receive limit is 4 MiB per message; each message
// here carries at most kMaxListBytesPerMessage of text, so none comes near it, however long
// the whole answer.
//
// Thread-safety: the helpers are pure; an AnswerStreamReactor is driven by gRPC's callback
// threads one event at a time, and its work runs once on the Executor before its first write.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/server_callback.h"
#include "server/core/load_state_dict.h"
#include "server/service/executor.h"
#include "server/service/status_util.h"
#include "server/service/unary_call.h"

namespace paramd::service {

// The most bytes of keys (or of text) one streamed message carries; a single key longer
// than this travels alone (a key arrived in a request frame, so it is under 4 MiB).
inline constexpr size_t kMaxListBytesPerMessage = size_t{1} << 20;

// The longest prefix of the UTF-8 `text` of at most `max_bytes` that ends on a character
// boundary (a proto3 string must stay valid UTF-8 when cut).
inline size_t Utf8Prefix(absl::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text.size();
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return cut;
}

// `text` in pieces of at most kMaxListBytesPerMessage, cut at character boundaries.
inline std::vector<absl::string_view> TextPieces(absl::string_view text) {
  std::vector<absl::string_view> pieces;
  while (!text.empty()) {
    size_t cut = Utf8Prefix(text, kMaxListBytesPerMessage);
    if (cut == 0) cut = text.size();  // not UTF-8 after all: never loop
    pieces.push_back(text.substr(0, cut));
    text.remove_prefix(cut);
  }
  return pieces;
}

// Builds a list answer as several messages: copies of a head message (the version, say),
// each holding items of at most kMaxListBytesPerMessage bytes in all, or one larger item.
template <typename Message>
class MessageSplitter {
 public:
  explicit MessageSplitter(Message head) : head_(std::move(head)), messages_(1, head_) {}

  // The message an item of about `bytes` bytes goes into: the last one, or a new copy of
  // the head when the item would take the last one past the limit.
  Message* Room(size_t bytes) {
    if (bytes_ > 0 && bytes_ + bytes > kMaxListBytesPerMessage) {
      messages_.push_back(head_);
      bytes_ = 0;
    }
    bytes_ += bytes;
    return &messages_.back();
  }
  // At least one message.
  std::vector<Message> Take() && { return std::move(messages_); }

 private:
  const Message head_;
  std::vector<Message> messages_;
  size_t bytes_ = 0;
};

// The messages of a load's answer: copies of `head` (version, created, format) that carry,
// in order, the missing keys, the unexpected keys, then `error_text` in pieces, each at most
// kMaxListBytesPerMessage of them (or one longer key). At least one message.
template <typename Message>
std::vector<Message> SplitLoadAnswer(const Message& head, const core::IncompatibleKeys& keys,
                                     absl::string_view error_text) {
  MessageSplitter<Message> out(head);
  for (const std::string& key : keys.missing_keys) out.Room(key.size())->add_missing_keys(key);
  for (const std::string& key : keys.unexpected_keys) {
    out.Room(key.size())->add_unexpected_keys(key);
  }
  for (absl::string_view piece : TextPieces(error_text)) {
    out.Room(piece.size())->set_error_text(std::string(piece));
  }
  return std::move(out).Take();
}

// What a streamed answer sends: its messages, then its status.
template <typename Message>
struct StreamedAnswer {
  std::vector<Message> messages;
  grpc::Status status;
};

// The answer of a load whose body returned `status` (OK: the keys of the committed load,
// under `head`). A load refused by its checks (INVALID_ARGUMENT, PyTorch's "Error(s) in
// loading state_dict" among them) sends its whole error text and the keys it found, since
// the status message is cut at kMaxStatusMessageBytes; other errors send no message.
template <typename Message>
StreamedAnswer<Message> LoadAnswer(const Message& head, const core::IncompatibleKeys& keys,
                                   const absl::Status& status) {
  if (status.ok()) return {SplitLoadAnswer(head, keys, ""), grpc::Status::OK};
  if (status.code() != absl::StatusCode::kInvalidArgument) return {{}, ToGrpcStatus(status)};
  return {SplitLoadAnswer(Message(), keys, status.message()), ToGrpcStatus(status)};
}

// A server-streaming call answered by work on the Executor: admits the call (RESOURCE_
// EXHAUSTED at once when the executor is full), runs `fn` (returning StreamedAnswer) on a
// worker, then writes its messages one at a time and finishes with its status, logged under
// `action`. A call cancelled before `fn` starts is answered CANCELLED without running it.
template <typename Message>
class AnswerStreamReactor final : public grpc::ServerWriteReactor<Message> {
 public:
  template <typename Fn>
  AnswerStreamReactor(grpc::CallbackServerContext* context, Executor& executor, const char* action,
                      std::string model, Fn fn, bool log_success = false) {
    absl::StatusOr<std::shared_ptr<Executor::Ticket>> ticket = executor.Admit();
    if (!ticket.ok()) {
      this->Finish(Logged(action, model, ToGrpcStatus(ticket.status())));
      return;
    }
    // The task holds the only reference (why: FinishOnExecutor in unary_call.h).
    Executor::Ticket* runner = ticket->get();
    runner->Run([this, context, admitted = *std::move(ticket), action, model, fn = std::move(fn),
                 log_success]() mutable {
      if (context->IsCancelled()) {
        admitted.reset();
        this->Finish(Logged(action, model, CancelledBeforeRunning()));
        return;
      }
      answer_ = fn();
      Logged(action, model, answer_.status, log_success);
      admitted.reset();  // room for the next call before this one's answer goes out
      Next();
    });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      this->Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client stopped reading"));
      return;
    }
    Next();
  }
  void OnDone() override { delete this; }

 private:
  void Next() {
    if (next_ < answer_.messages.size()) {
      this->StartWrite(&answer_.messages[next_++]);
      return;
    }
    this->Finish(answer_.status);
  }

  StreamedAnswer<Message> answer_;
  size_t next_ = 0;
};

}  // namespace paramd::service
