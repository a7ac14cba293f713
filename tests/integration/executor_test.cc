// The daemon under heavy calls: Health keeps answering quickly while every worker is busy
// loading large checkpoints, and a call past the executor's queue is refused with
// RESOURCE_EXHAUSTED before any of its stream is read (Note [Call admission] in
// server/service/executor.h).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "paramd/v1/checkpoints.grpc.pb.h"
#include "paramd/v1/models.grpc.pb.h"
#include "tests/integration/daemon.h"
#include "tests/integration/wire.h"

namespace paramd::testing {
namespace {

using Clock = std::chrono::steady_clock;

// 64 Mi float32 elements: 256 MiB checkpoints. Each load reads one into a float16 model of
// the same shape, so it checks the CRC of every byte and converts every element into a
// fresh 128 MiB storage. (1 GiB files made this test take over 30 s and 9 GB of memory on
// a 2-core machine, most of it creating and saving the models, so it stays at 256 MiB.)
constexpr char kLargeSpec[] = R"({"type": "Net", "parameters": [
   {"name": "big", "shape": [8192, 8192], "init": {"constant": 0.5}}]})";
constexpr char kHalfSpec[] = R"({"type": "Net", "parameters": [
   {"name": "big", "shape": [8192, 8192], "dtype": "float16", "init": {"constant": 0}}]})";

std::unique_ptr<Daemon> StartDaemon(std::vector<std::string> args) {
  auto daemon = Daemon::Start(std::move(args));
  EXPECT_TRUE(daemon.ok()) << daemon.status();
  return daemon.ok() ? *std::move(daemon) : nullptr;
}

grpc::Status CreateModel(v1::Models::Stub& models, const std::string& name,
                         const std::string& spec) {
  grpc::ClientContext context;
  v1::CreateModelRequest request;
  request.set_name(name);
  request.set_spec_json(spec);
  v1::ModelInfo info;
  return models.CreateModel(&context, request, &info);
}

void DeleteModel(v1::Models::Stub& models, const std::string& name) {
  grpc::ClientContext context;
  v1::DeleteModelRequest request;
  request.set_name(name);
  v1::DeleteModelResponse response;
  EXPECT_TRUE(models.DeleteModel(&context, request, &response).ok());
}

TEST(ExecutorTest, HealthAnswersQuicklyWhileEveryWorkerLoadsLargeCheckpoints) {
  constexpr int kWorkers = 2;
  std::unique_ptr<Daemon> daemon =
      StartDaemon({"--workers", std::to_string(kWorkers), "--max-queued-calls", "2"});
  ASSERT_NE(daemon, nullptr);
  auto models = v1::Models::NewStub(daemon->channel());
  auto checkpoints = v1::Checkpoints::NewStub(daemon->channel());
  auto health = grpc::health::v1::Health::NewStub(daemon->channel());
  for (int i = 0; i < kWorkers; ++i) {
    const std::string name = "large" + std::to_string(i);
    ASSERT_TRUE(CreateModel(*models, name, kLargeSpec).ok());
    grpc::ClientContext context;
    v1::SaveRequest request;
    request.set_model(name);
    request.set_path(name + ".pt");
    v1::SaveResponse response;
    ASSERT_TRUE(checkpoints->Save(&context, request, &response).ok());
    ASSERT_TRUE(CreateModel(*models, "half" + std::to_string(i), kHalfSpec).ok());
    DeleteModel(*models, name);  // only its file is needed
  }

  // One more loader than workers, so a load always waits and no worker is ever idle.
  std::atomic<bool> stop{false};
  std::atomic<int> loads{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> loaders;
  for (int i = 0; i <= kWorkers; ++i) {
    loaders.emplace_back([&, i] {
      const std::string name = std::to_string(i % kWorkers);
      while (!stop.load()) {
        grpc::ClientContext context;
        v1::LoadRequest request;
        request.set_model("half" + name);
        request.set_path("large" + name + ".pt");
        const grpc::Status status = LoadCheckpoint(*checkpoints, &context, request);
        (status.ok() ? loads : failures).fetch_add(1);
      }
    });
  }
  // Let the loads reach the workers, then probe while they run.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  std::vector<double> latencies_ms;
  const Clock::time_point probing = Clock::now();
  while (Clock::now() - probing < std::chrono::seconds(4)) {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckRequest request;
    grpc::health::v1::HealthCheckResponse response;
    const Clock::time_point start = Clock::now();
    ASSERT_TRUE(health->Check(&context, request, &response).ok());
    latencies_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - start).count());
    EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const int loads_during_probes = loads.load();
  stop = true;
  for (std::thread& loader : loaders) loader.join();
  ASSERT_EQ(loaders.size(), kWorkers + 1u);

  std::sort(latencies_ms.begin(), latencies_ms.end());
  ASSERT_GE(latencies_ms.size(), 100u);
  const double p50 = latencies_ms[latencies_ms.size() / 2];
  const double p99 = latencies_ms[latencies_ms.size() * 99 / 100];
  std::printf(
      "health under load: %zu probes, p50 %.2f ms, p99 %.2f ms, max %.2f ms; "
      "%d loads of 256 MiB done\n",
      latencies_ms.size(), p50, p99, latencies_ms.back(), loads_during_probes);
  EXPECT_LT(p99, 50.0);
  // Every loader finished at least one load, so the workers were busy throughout.
  EXPECT_GE(loads.load(), kWorkers + 1);
  EXPECT_EQ(failures.load(), 0);
}

TEST(ExecutorTest, ACallPastTheQueueIsRefusedBeforeItsStreamIsRead) {
  std::unique_ptr<Daemon> daemon = StartDaemon({"--workers", "1", "--max-queued-calls", "1"});
  ASSERT_NE(daemon, nullptr);
  auto models = v1::Models::NewStub(daemon->channel());
  auto parameters = v1::Parameters::NewStub(daemon->channel());
  ASSERT_TRUE(
      CreateModel(*models, "m", R"({"type": "Net", "parameters": [{"name": "w", "shape": [2]}]})")
          .ok());

  // Two writes that never finish sending hold the one worker's slot and the one queue
  // slot while their streams are open.
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientWriter<v1::WriteFrame>>> open;
  v1::WriteResponse ignored;
  for (int i = 0; i < 2; ++i) {
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    open.push_back(parameters->SetTensors(contexts.back().get(), &ignored));
    ASSERT_TRUE(open.back()->Write(OptionsFrame("m")));
  }
  // The third is refused at once, whatever it would have sent.
  std::vector<v1::WriteFrame> write = {OptionsFrame("m")};
  for (v1::WriteFrame& frame : FloatTensorFrames("w", {2}, {1, 2})) write.push_back(frame);
  grpc::Status refused;
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(5);
  do {
    refused = SetTensors(*parameters, write, &ignored);
  } while (refused.ok() && Clock::now() < deadline);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(refused.error_message(), "1 calls queued; retry");
  // Cheap calls are never queued.
  {
    grpc::ClientContext context;
    v1::DescribeModelRequest request;
    request.set_name("m");
    v1::ModelInfo info;
    EXPECT_TRUE(models->DescribeModel(&context, request, &info).ok());
    EXPECT_EQ(info.version(), 1u);  // and the refused write changed nothing
  }
  // Once the open writes end, writes are admitted again.
  for (auto& context : contexts) context->TryCancel();
  for (auto& writer : open) writer->Finish().IgnoreError();
  grpc::Status admitted;
  do {
    admitted = SetTensors(*parameters, write, &ignored);
  } while (!admitted.ok() && Clock::now() < deadline + std::chrono::seconds(5));
  EXPECT_TRUE(admitted.ok()) << admitted.error_message();
}

// A call whose deadline passes while it waits for a worker never runs: the load queued
// behind a busy worker leaves its model at the version it had.
TEST(ExecutorTest, ACallPastItsDeadlineWhileQueuedNeverRuns) {
  std::unique_ptr<Daemon> daemon = StartDaemon({"--workers", "1", "--max-queued-calls", "4"});
  ASSERT_NE(daemon, nullptr);
  auto models = v1::Models::NewStub(daemon->channel());
  auto checkpoints = v1::Checkpoints::NewStub(daemon->channel());
  ASSERT_TRUE(CreateModel(*models, "large", kLargeSpec).ok());
  ASSERT_TRUE(CreateModel(*models, "half", kHalfSpec).ok());
  {
    grpc::ClientContext context;
    v1::SaveRequest request;
    request.set_model("large");
    request.set_path("large.pt");
    v1::SaveResponse response;
    ASSERT_TRUE(checkpoints->Save(&context, request, &response).ok());
  }
  auto load = [&](std::chrono::milliseconds timeout) {
    grpc::ClientContext context;
    if (timeout.count() > 0) context.set_deadline(std::chrono::system_clock::now() + timeout);
    v1::LoadRequest request;
    request.set_model("half");
    request.set_path("large.pt");
    return LoadCheckpoint(*checkpoints, &context, request);
  };
  std::thread busy([&] { EXPECT_TRUE(load(std::chrono::milliseconds(0)).ok()); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the worker takes it
  EXPECT_EQ(load(std::chrono::milliseconds(100)).error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  busy.join();
  // Give the expired call the worker; it must find itself cancelled and load nothing.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  grpc::ClientContext context;
  v1::DescribeModelRequest request;
  request.set_name("half");
  v1::ModelInfo info;
  ASSERT_TRUE(models->DescribeModel(&context, request, &info).ok());
  EXPECT_EQ(info.version(), 2u);  // created at 1, the one load that ran made 2
  EXPECT_THAT(daemon->Log(), ::testing::HasSubstr("cancelled (or passed its deadline)"));
}

}  // namespace
}  // namespace paramd::testing
