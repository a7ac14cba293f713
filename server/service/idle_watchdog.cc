#include "server/service/idle_watchdog.h"

#include <algorithm>
#include <vector>

namespace paramd::service {

IdleWatchdog::IdleWatchdog(absl::Duration timeout)
    : timeout_(timeout == absl::InfiniteDuration() ? absl::ZeroDuration() : timeout) {
  if (timeout_ > absl::ZeroDuration()) thread_ = std::thread([this] { Run(); });
}

IdleWatchdog::~IdleWatchdog() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void IdleWatchdog::Touch(Stream* stream) {
  if (timeout_ == absl::ZeroDuration()) return;
  absl::MutexLock lock(&mu_);
  last_heard_[stream] = absl::Now();
}

void IdleWatchdog::Forget(Stream* stream) {
  if (timeout_ == absl::ZeroDuration()) return;
  absl::MutexLock lock(&mu_);
  last_heard_.erase(stream);
}

void IdleWatchdog::Run() {
  // Checking a few times per timeout ends a stream at most a quarter late.
  const absl::Duration tick = std::clamp(timeout_ / 4, absl::Milliseconds(10), absl::Seconds(1));
  std::vector<Stream*> expired;
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&stopping_), tick)) {
    const absl::Time now = absl::Now();
    for (auto it = last_heard_.begin(); it != last_heard_.end();) {
      if (now - it->second < timeout_) {
        ++it;
        continue;
      }
      it->first->Ref();
      expired.push_back(it->first);
      last_heard_.erase(it++);
    }
    if (expired.empty()) continue;
    // Expire finishes the call; gRPC may run its OnDone (and so Forget) on this thread.
    mu_.Unlock();
    for (Stream* stream : expired) {
      stream->Expire();
      stream->Unref();
    }
    expired.clear();
    mu_.Lock();
  }
}

}  // namespace paramd::service
