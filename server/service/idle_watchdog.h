// IdleWatchdog: ends client streams that have sent nothing for too long
// (--stream-idle-timeout), so that a client that stalls mid-stream cannot keep the memory
// and the admission its stream holds (Note [Idle write streams]).
//
// Ownership: streams are borrowed; a stream calls Forget before it is destroyed, and keeps
// itself alive while Expire runs (Stream::Ref / Unref). Thread-safety: every method may be
// called from any thread. Expire is called on the watchdog's own thread with no lock of the
// watchdog held, so it may finish its call (and gRPC may run the stream's OnDone) inline.
#pragma once

#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace paramd::service {

// Note [Idle write streams]
// A write stream reserves its tensor's whole size when the tensor's header arrives (the
// bytes are copied straight into place as chunks come), and holds an Executor admission
// from its start. A client that sends a header and then nothing would keep both forever and
// every other large write would fail with RESOURCE_EXHAUSTED. So a write stream that
// receives no frame for the idle timeout is ended with DEADLINE_EXCEEDED; its partial
// tensors are dropped (nothing was applied: writes apply only after the stream's last
// frame) and their memory and admission are freed.
class IdleWatchdog {
 public:
  class Stream {
   public:
    // The stream has received nothing for the timeout. Called at most once per Touch, with
    // the stream's Ref held; may run concurrently with (or just after) a Forget when the
    // watchdog picked the stream first, so the stream must check its own state.
    virtual void Expire() = 0;
    // Keep the stream alive from the moment the watchdog picks it until Expire returned.
    virtual void Ref() = 0;
    virtual void Unref() = 0;

   protected:
    ~Stream() = default;
  };

  // A zero (or infinite) timeout watches nothing: streams may idle forever.
  explicit IdleWatchdog(absl::Duration timeout);
  // Joins the thread; every stream must have been forgotten.
  ~IdleWatchdog();
  IdleWatchdog(const IdleWatchdog&) = delete;
  IdleWatchdog& operator=(const IdleWatchdog&) = delete;

  absl::Duration timeout() const { return timeout_; }

  // Starts (or restarts) the stream's idle clock: call when it starts and on each frame.
  void Touch(Stream* stream);
  // Stops watching the stream (an Expire already under way still runs, see Stream::Expire).
  void Forget(Stream* stream);

 private:
  void Run();

  const absl::Duration timeout_;
  absl::Mutex mu_;
  absl::flat_hash_map<Stream*, absl::Time> last_heard_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace paramd::service
