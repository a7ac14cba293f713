#include "server/service/executor.h"

#include <deque>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace paramd::service {

struct Executor::State {
  State(int workers, int max_queued) : workers(workers), max_queued(max_queued) {}

  const int workers;
  const int max_queued;
  absl::Mutex mu;
  std::deque<std::function<void()>> tasks ABSL_GUARDED_BY(mu);
  int admitted ABSL_GUARDED_BY(mu) = 0;
  int running ABSL_GUARDED_BY(mu) = 0;
  bool stopping ABSL_GUARDED_BY(mu) = false;
  std::vector<std::thread> threads;  // set by the constructor, joined by the destructor

  void Work() {
    while (true) {
      std::function<void()> task;
      {
        absl::MutexLock lock(&mu);
        mu.Await(absl::Condition(
            +[](State* state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(state->mu) {
              return state->stopping || !state->tasks.empty();
            },
            this));
        if (tasks.empty()) return;  // stopping, and nothing left to run
        task = std::move(tasks.front());
        tasks.pop_front();
        ++running;
      }
      task();
      task = nullptr;  // what the task held is released before it counts as done
      absl::MutexLock lock(&mu);
      --running;
    }
  }
};

Executor::Ticket::~Ticket() {
  absl::MutexLock lock(&state_->mu);
  --state_->admitted;
}

void Executor::Ticket::Run(std::function<void()> task) {
  absl::MutexLock lock(&state_->mu);
  if (state_->stopping && state_->threads.empty()) return;  // joined: nobody would run it
  state_->tasks.push_back(std::move(task));
}

Executor::Executor(int workers, int max_queued)
    : state_(std::make_shared<State>(workers < 1 ? 1 : workers, max_queued < 0 ? 0 : max_queued)) {
  state_->threads.reserve(state_->workers);
  for (int i = 0; i < state_->workers; ++i) {
    state_->threads.emplace_back([state = state_.get()] { state->Work(); });
  }
}

Executor::~Executor() {
  {
    absl::MutexLock lock(&state_->mu);
    state_->stopping = true;
  }
  for (std::thread& thread : state_->threads) thread.join();
  absl::MutexLock lock(&state_->mu);
  state_->threads.clear();
  state_->tasks.clear();
}

absl::StatusOr<std::shared_ptr<Executor::Ticket>> Executor::Admit() {
  {
    absl::MutexLock lock(&state_->mu);
    if (state_->admitted >= state_->workers + state_->max_queued) {
      return absl::ResourceExhaustedError(
          absl::StrCat(state_->admitted - state_->workers, " calls queued; retry"));
    }
    ++state_->admitted;
  }
  return std::make_shared<Ticket>(state_);
}

int Executor::workers() const { return state_->workers; }
int Executor::max_queued() const { return state_->max_queued; }

int Executor::admitted() const {
  absl::MutexLock lock(&state_->mu);
  return state_->admitted;
}

int Executor::running() const {
  absl::MutexLock lock(&state_->mu);
  return state_->running;
}

int Executor::queued() const {
  absl::MutexLock lock(&state_->mu);
  return static_cast<int>(state_->tasks.size());
}

}  // namespace paramd::service
