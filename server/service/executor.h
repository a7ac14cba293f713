// Executor: the bounded pool of worker threads the services run their heavy work on
// (writes that copy tensors, checkpoint saves and loads, uploads, forwards, snapshots), so
// that gRPC's callback threads only ever translate and stay free for cheap calls such as
// Health (Note [Call admission]).
//
// Ownership: a Ticket holds one admission and shares the executor's state, so a ticket
// may outlive the Executor object (its tasks then never run). Thread-safety: every method
// may be called from any thread; the tasks of one ticket are run one at a time only if
// the caller submits the next one after the previous ended (as a reactor does).
#pragma once

#include <functional>
#include <memory>

#include "absl/status/statusor.h"

namespace paramd::service {

// Note [Call admission]
// A heavy call is admitted when it starts, before any byte of its stream is read, and
// holds its admission until its work is done. At most `workers` admitted calls run; at
// most `max_queued` more wait (for a worker, or while their request stream arrives). Past
// that a call gets RESOURCE_EXHAUSTED ("N calls queued; retry") at once, so that a flood
// of writes is refused cheaply instead of buffering their payloads in memory. Cheap calls
// (metadata, listings, Health) are never admitted: they run inline on gRPC's threads, and
// so does a forward whose cost is known to be small (Note [Cheap repeats]).
class Executor {
 public:
  struct State;

  // One admitted call. Destroying it (or its last copy) ends the admission.
  class Ticket {
   public:
    explicit Ticket(std::shared_ptr<State> state) : state_(std::move(state)) {}
    ~Ticket();
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;

    // Runs `task` on a worker, after the tasks queued before it. The task must not block
    // on another call's work.
    void Run(std::function<void()> task);

   private:
    std::shared_ptr<State> state_;
  };

  // `workers` threads (at least 1); `max_queued` calls may wait beyond them (0 or more).
  Executor(int workers, int max_queued);
  // Runs the tasks already queued, then joins the workers. Call after the gRPC server
  // has shut down, so that no reactor waits on a task that will not run.
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Admits one call, or RESOURCE_EXHAUSTED when `workers + max_queued` are admitted.
  absl::StatusOr<std::shared_ptr<Ticket>> Admit();

  int workers() const;
  int max_queued() const;
  // Calls admitted now (running, waiting or receiving their request).
  int admitted() const;
  // Tasks a worker is running now, and tasks waiting for a worker.
  int running() const;
  int queued() const;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace paramd::service
