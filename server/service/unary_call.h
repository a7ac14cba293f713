// The two ways a unary callback handler finishes: inline on gRPC's callback thread (cheap
// calls), or on the Executor (heavy ones, Note [Call admission] in executor.h).
//
// Thread-safety: `fn` runs once, on one thread; the request and response gRPC handed the
// handler stay valid until the reactor finishes, which happens after `fn` returns.
#pragma once

#include <memory>
#include <utility>

#include "grpcpp/server_context.h"
#include "grpcpp/support/server_callback.h"
#include "server/service/executor.h"
#include "server/service/status_util.h"

namespace paramd::service {

// Runs `fn` (returning grpc::Status) now and finishes the call with its status.
template <typename Fn>
grpc::ServerUnaryReactor* FinishInline(grpc::CallbackServerContext* context, Fn&& fn) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(fn());
  return reactor;
}

// The status of a call cancelled (by its client or its deadline) before a worker took it.
inline grpc::Status CancelledBeforeRunning() {
  return grpc::Status(grpc::StatusCode::CANCELLED,
                      "the call was cancelled (or passed its deadline) before it ran");
}

// Admits the call and runs `fn` (returning grpc::Status) on a worker, then finishes the
// call with its status. RESOURCE_EXHAUSTED at once, logged under `action`, when the
// executor's queue is full; CANCELLED without running `fn` when the call was cancelled
// while it waited.
template <typename Fn>
grpc::ServerUnaryReactor* FinishOnExecutor(grpc::CallbackServerContext* context, Executor& executor,
                                           const char* action, const std::string& model, Fn fn) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::shared_ptr<Executor::Ticket>> ticket = executor.Admit();
  if (!ticket.ok()) {
    reactor->Finish(Logged(action, model, ToGrpcStatus(ticket.status())));
    return reactor;
  }
  // The task holds the only reference: a copy kept here until this function returns could
  // outlive the answer (a preempted callback thread), and the client's next call would find
  // its own finished call still admitted.
  Executor::Ticket* runner = ticket->get();
  runner->Run([context, reactor, admitted = *std::move(ticket), action, model,
               fn = std::move(fn)]() mutable {
    grpc::Status status =
        context->IsCancelled() ? Logged(action, model, CancelledBeforeRunning()) : fn();
    admitted.reset();  // room for the next call before this one's answer goes out
    reactor->Finish(status);
  });
  return reactor;
}

}  // namespace paramd::service
