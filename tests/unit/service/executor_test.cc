// Executor: admission up to workers + max_queued calls, the RESOURCE_EXHAUSTED text past
// it, tasks on `workers` threads at once, and a destructor that runs what was queued.
#include "server/service/executor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"

namespace paramd::service {
namespace {

TEST(ExecutorTest, AdmitsWorkersPlusQueuedCallsThenRefuses) {
  Executor executor(2, 1);
  std::vector<std::shared_ptr<Executor::Ticket>> tickets;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::shared_ptr<Executor::Ticket>> ticket = executor.Admit();
    ASSERT_TRUE(ticket.ok()) << ticket.status();
    tickets.push_back(*ticket);
  }
  EXPECT_EQ(executor.admitted(), 3);
  absl::StatusOr<std::shared_ptr<Executor::Ticket>> refused = executor.Admit();
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(refused.status().message(), "1 calls queued; retry");
  tickets.pop_back();  // a call that ends makes room
  EXPECT_TRUE(executor.Admit().ok());
  EXPECT_EQ(executor.admitted(), 2);  // the ticket just admitted was dropped at once
}

TEST(ExecutorTest, RunsOnAsManyThreadsAsWorkers) {
  Executor executor(2, 4);
  std::atomic<int> running{0};
  std::atomic<int> most{0};
  absl::Notification release;
  std::atomic<int> done{0};
  for (int i = 0; i < 4; ++i) {
    auto ticket = executor.Admit().value();
    ticket->Run([&, ticket] {
      most = std::max(most.load(), ++running);
      release.WaitForNotificationWithTimeout(absl::Seconds(5));
      --running;
      ++done;
    });
  }
  while (most.load() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(most.load(), 2);
  release.Notify();
  // Each task held the last copy of its ticket, released once the task is gone.
  for (int i = 0; i < 1000 && (done.load() < 4 || executor.admitted() > 0); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(done.load(), 4);
  EXPECT_EQ(executor.admitted(), 0);
}

TEST(ExecutorTest, DestructionRunsTheQueuedTasks) {
  std::atomic<int> ran{0};
  {
    Executor executor(1, 8);
    for (int i = 0; i < 8; ++i) {
      executor.Admit().value()->Run([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        ++ran;
      });
    }
  }
  EXPECT_EQ(ran.load(), 8);
}

}  // namespace
}  // namespace paramd::service
