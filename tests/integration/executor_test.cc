// The daemon under heavy calls: Health keeps answering quickly while every worker is busy
// loading large checkpoints, and a call past the executor's queue is refused with
// RESOURCE_EXHAUSTED before any of its stream is read (Note [Call admission] in
// server/service/executor.h).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "paramd/client.h"
#include "paramd/v1/checkpoints.grpc.pb.h"
#include "paramd/v1/models.grpc.pb.h"
#include "tests/integration/daemon.h"
#include "tests/integration/wire.h"

namespace paramd::testing {
namespace {

using Clock = std::chrono::steady_clock;

// Checkpoints of 1 GiB are written as sparse safetensors files (a header, then a hole the
// size of the data: zeros), so that the test spends its time loading them, not making
// them. Each load reads every byte through the mapping and converts every element into a
// fresh float16 storage.
constexpr int64_t kSide = 16384;  // [16384, 16384] float32: 1 GiB
constexpr char kHalfSpec[] = R"({"type": "Net", "parameters": [
   {"name": "big", "shape": [16384, 16384], "dtype": "float16", "init": {"constant": 0}}]})";

// Writes a safetensors file of float32 zeros: `count` tensors named t0, t1, ... (or "big"
// when count is 1) of shape [rows, cols].
void WriteZeroSafetensors(const std::string& path, int count, int64_t rows, int64_t cols) {
  const int64_t bytes = rows * cols * 4;
  std::string header = "{";
  for (int i = 0; i < count; ++i) {
    const std::string name = count == 1 ? "big" : "t" + std::to_string(i);
    header += absl::StrCat(i == 0 ? "" : ",", "\"", name, "\":{\"dtype\":\"F32\",\"shape\":[",
                           rows, ",", cols, "],\"data_offsets\":[", i * bytes, ",",
                           (i + 1) * bytes, "]}");
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  std::ofstream file(path, std::ios::binary);
  const uint64_t length = header.size();
  char prefix[8];
  for (int i = 0; i < 8; ++i) prefix[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  file.write(prefix, 8);
  file.write(header.data(), static_cast<std::streamsize>(header.size()));
  file.close();
  std::filesystem::resize_file(path, 8 + header.size() + static_cast<uint64_t>(count * bytes));
}

// The daemon's resident set in MiB (VmRSS), or -1.
int64_t ResidentMiB(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (absl::StartsWith(line, "VmRSS:")) return std::stoll(line.substr(6)) / 1024;
  }
  return -1;
}

std::unique_ptr<Daemon> StartDaemon(std::vector<std::string> args) {
  auto daemon = Daemon::Start(std::move(args));
  EXPECT_TRUE(daemon.ok()) << daemon.status();
  return daemon.ok() ? *std::move(daemon) : nullptr;
}

TEST(ExecutorTest, HealthAnswersQuicklyWhileEveryWorkerLoadsLargeCheckpoints) {
  constexpr int kWorkers = 2;
  std::unique_ptr<Daemon> daemon =
      StartDaemon({"--workers", std::to_string(kWorkers), "--max-queued-calls", "2"});
  ASSERT_NE(daemon, nullptr);
  auto models = v1::Models::NewStub(daemon->channel());
  auto checkpoints = v1::Checkpoints::NewStub(daemon->channel());
  auto health = grpc::health::v1::Health::NewStub(daemon->channel());
  std::filesystem::create_directories(daemon->checkpoint_dir());
  for (int i = 0; i < kWorkers; ++i) {
    WriteZeroSafetensors(daemon->checkpoint_dir() + "/large" + std::to_string(i) + ".safetensors",
                         1, kSide, kSide);
    ASSERT_TRUE(CreateModel(*models, "half" + std::to_string(i), kHalfSpec).ok());
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
        request.set_path("large" + name + ".safetensors");
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
      "%d loads of 1 GiB done\n",
      latencies_ms.size(), p50, p99, latencies_ms.back(), loads_during_probes);
  // A probe queued behind a load would wait for it: seconds (a 1 GiB load takes longer than
  // the 4 s of probing here). The bound leaves room for a 2-core machine that also runs
  // other tests, where a probe's thread can be preempted for tens of milliseconds.
  EXPECT_LT(p99, 250.0);
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
  // slot while their streams are open. The daemon admits calls on several threads, so a
  // write sent right after them may be admitted before the second of them, which is then
  // the one refused, and every later write gets in; then both are opened again.
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<grpc::ClientWriter<v1::WriteFrame>>> open;
  v1::WriteResponse ignored;
  auto close_open = [&] {
    for (auto& context : contexts) context->TryCancel();
    for (auto& writer : open) writer->Finish().IgnoreError();
    open.clear();
    contexts.clear();
  };
  // The third is refused at once, whatever it would have sent.
  std::vector<v1::WriteFrame> write = {OptionsFrame("m")};
  for (v1::WriteFrame& frame : FloatTensorFrames("w", {2}, {1, 2})) write.push_back(frame);
  grpc::Status refused;
  uint64_t written = 0;
  for (int attempt = 0; attempt < 10; ++attempt) {
    for (int i = 0; i < 2; ++i) {
      contexts.push_back(std::make_unique<grpc::ClientContext>());
      open.push_back(parameters->SetTensors(contexts.back().get(), &ignored));
      ASSERT_TRUE(open.back()->Write(OptionsFrame("m")));
    }
    // Until the daemon has admitted both open streams (their first frames may still be on
    // the way), a write may get in and succeed; each one that does makes a version.
    const Clock::time_point deadline = Clock::now() + std::chrono::seconds(2);
    do {
      refused = SetTensors(*parameters, write, &ignored);
      if (refused.ok()) ++written;
    } while (refused.ok() && Clock::now() < deadline);
    if (!refused.ok()) break;
    close_open();
  }
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << written << " writes got in; the daemon's log:\n" << daemon->Log();
  EXPECT_EQ(refused.error_message(), "1 calls queued; retry");
  // Cheap calls are never queued.
  {
    grpc::ClientContext context;
    v1::DescribeModelRequest request;
    request.set_name("m");
    v1::ModelInfo info;
    EXPECT_TRUE(models->DescribeModel(&context, request, &info).ok());
    EXPECT_EQ(info.version(), 1 + written);  // and the refused write changed nothing
  }
  // Once the open writes end, writes are admitted again.
  close_open();
  grpc::Status admitted;
  const Clock::time_point deadline = Clock::now() + std::chrono::seconds(5);
  do {
    admitted = SetTensors(*parameters, write, &ignored);
  } while (!admitted.ok() && Clock::now() < deadline);
  EXPECT_TRUE(admitted.ok()) << admitted.error_message();
}

// A call whose deadline passes while it waits for a worker never runs: the load queued
// behind a busy worker leaves its model at the version it had.
TEST(ExecutorTest, ACallPastItsDeadlineWhileQueuedNeverRuns) {
  std::unique_ptr<Daemon> daemon = StartDaemon({"--workers", "1", "--max-queued-calls", "4"});
  ASSERT_NE(daemon, nullptr);
  auto models = v1::Models::NewStub(daemon->channel());
  auto checkpoints = v1::Checkpoints::NewStub(daemon->channel());
  std::filesystem::create_directories(daemon->checkpoint_dir());
  WriteZeroSafetensors(daemon->checkpoint_dir() + "/large.safetensors", 1, kSide, kSide);
  ASSERT_TRUE(CreateModel(*models, "half", kHalfSpec).ok());
  auto load = [&](std::chrono::milliseconds timeout) {
    grpc::ClientContext context;
    if (timeout.count() > 0) context.set_deadline(std::chrono::system_clock::now() + timeout);
    v1::LoadRequest request;
    request.set_model("half");
    request.set_path("large.safetensors");
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


// A cancelled load of 1 GiB stops at the next tensor, changes nothing and gives back the
// memory it had taken (Note [Call admission]: cancellation reaches the work).
TEST(ExecutorTest, ACancelledLargeLoadStopsAndFreesItsMemory) {
  std::unique_ptr<Daemon> daemon = StartDaemon({"--workers", "1"});
  ASSERT_NE(daemon, nullptr);
  auto models = v1::Models::NewStub(daemon->channel());
  auto checkpoints = v1::Checkpoints::NewStub(daemon->channel());
  // 16 tensors of 64 MiB: the load converts them one by one, polling between them.
  constexpr int kTensors = 16;
  std::string spec = R"({"type": "Net", "parameters": [)";
  for (int i = 0; i < kTensors; ++i) {
    absl::StrAppend(&spec, i == 0 ? "" : ",", R"({"name": "t)", i,
                    R"(", "shape": [4096, 4096], "dtype": "float16", "init": {"constant": 0}})");
  }
  spec += "]}";
  ASSERT_TRUE(CreateModel(*models, "half", spec).ok());
  std::filesystem::create_directories(daemon->checkpoint_dir());
  WriteZeroSafetensors(daemon->checkpoint_dir() + "/large.safetensors", kTensors, 4096, 4096);
  const int64_t before = ResidentMiB(daemon->pid());
  ASSERT_GT(before, 0);

  grpc::ClientContext context;
  grpc::Status status;
  std::thread load([&] {
    v1::LoadRequest request;
    request.set_model("half");
    request.set_path("large.safetensors");
    status = LoadCheckpoint(*checkpoints, &context, request);
  });
  // Cancel once the load has visibly started converting (its copies hold memory).
  const Clock::time_point start = Clock::now();
  while (ResidentMiB(daemon->pid()) < before + 128 && Clock::now() - start < std::chrono::seconds(20)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  context.TryCancel();
  const Clock::time_point cancelled = Clock::now();
  load.join();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::CANCELLED) << status.error_message();

  // The daemon notices at the next tensor and says so.
  while (daemon->Log().find("the load was cancelled; the model is unchanged") == std::string::npos &&
         Clock::now() - cancelled < std::chrono::seconds(5)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const double stopped_ms =
      std::chrono::duration<double, std::milli>(Clock::now() - cancelled).count();
  EXPECT_THAT(daemon->Log(), ::testing::HasSubstr("the load was cancelled; the model is unchanged"));
  EXPECT_LT(stopped_ms, 2000.0);
  // Its copies and the file's mapping are gone: the mapping at once, the copies' blocks
  // once the CPU backend's cache has held them idle for 5 s (checked once a second,
  // docs/daemon.md "Memory").
  int64_t after = ResidentMiB(daemon->pid());
  while (after > before + 64 && Clock::now() - cancelled < std::chrono::seconds(8)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    after = ResidentMiB(daemon->pid());
  }
  std::printf("cancelled load: stopped %.0f ms after the cancel; RSS %lld MiB before, %lld after\n",
              stopped_ms, static_cast<long long>(before), static_cast<long long>(after));
  EXPECT_LE(after, before + 64);
  grpc::ClientContext describe;
  v1::DescribeModelRequest request;
  request.set_name("half");
  v1::ModelInfo info;
  ASSERT_TRUE(models->DescribeModel(&describe, request, &info).ok());
  EXPECT_EQ(info.version(), 1u);
}

// Note [Cheap repeats] in server/service/cheap_repeats.h: with the one worker busy on a
// 1 GiB load, a forward that repeats one measured cheap (same model version and input
// shapes) answers at once, on gRPC's thread, while one not seen before waits its turn.
TEST(ExecutorTest, ACheapRepeatedForwardAnswersWhileTheWorkerIsBusy) {
  std::unique_ptr<Daemon> daemon = StartDaemon({"--workers", "1"});
  ASSERT_NE(daemon, nullptr);
  auto models = v1::Models::NewStub(daemon->channel());
  auto checkpoints = v1::Checkpoints::NewStub(daemon->channel());
  ASSERT_TRUE(CreateModel(*models, "mlp", R"({"type": "MLP", "children": [
     {"name": "linear1", "type": "Linear", "args": {"in_features": 1, "out_features": 2}},
     {"name": "relu", "type": "ReLU"},
     {"name": "linear2", "type": "Linear", "args": {"in_features": 2, "out_features": 1}}],
   "forward": ["linear1", "relu", "linear2"]})").ok());
  ASSERT_TRUE(CreateModel(*models, "half", kHalfSpec).ok());
  std::filesystem::create_directories(daemon->checkpoint_dir());
  WriteZeroSafetensors(daemon->checkpoint_dir() + "/large.safetensors", 1, kSide, kSide);
  auto client = client::Client::Connect(daemon->address());
  ASSERT_TRUE(client.ok()) << client.status();
  client::RemoteModel mlp = (*client)->Model("mlp");
  const auto one = client::HostTensor::FromDoubles(client::DType::kFloat32, {1, 1}, {0.5});
  ASSERT_TRUE(one.ok());
  auto half_version = [&] {
    grpc::ClientContext context;
    v1::DescribeModelRequest request;
    request.set_name("half");
    v1::ModelInfo info;
    EXPECT_TRUE(models->DescribeModel(&context, request, &info).ok());
    return info.version();
  };
  // A forward measured slower than the bound (the machine busy with other tests) is not
  // remembered and goes to the worker like any other, so the scenario gets a few tries; it
  // never succeeds with every forward on the worker.
  absl::StatusOr<client::ForwardResult> first;
  bool answered_while_busy = false;
  for (int attempt = 0; attempt < 4 && !answered_while_busy; ++attempt) {
    first = mlp.Forward(*one);  // measured on the worker
    ASSERT_TRUE(first.ok()) << first.status();
    const uint64_t loaded = half_version();
    std::thread load([&] {
      grpc::ClientContext context;
      v1::LoadRequest request;
      request.set_model("half");
      request.set_path("large.safetensors");
      EXPECT_TRUE(LoadCheckpoint(*checkpoints, &context, request).ok());
    });
    // A load of 1 GiB takes the worker for a second or more.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    auto repeat = mlp.Forward(*one);
    ASSERT_TRUE(repeat.ok()) << repeat.status();
    answered_while_busy = half_version() == loaded;  // the load still held the worker
    EXPECT_EQ(repeat->outputs[0].tensor.ToDoubles(), first->outputs[0].tensor.ToDoubles());
    EXPECT_EQ(repeat->version, first->version);
    // A shape not seen before: measured on the worker, so answered after the load.
    const int64_t rows = 2 + attempt;
    auto other = mlp.Forward(*client::HostTensor::FromDoubles(
        client::DType::kFloat32, {rows, 1}, std::vector<double>(static_cast<size_t>(rows), 0.5)));
    ASSERT_TRUE(other.ok()) << other.status();
    EXPECT_EQ(half_version(), loaded + 1);
    load.join();
  }
  EXPECT_TRUE(answered_while_busy);

  // A write moves the version: the next call is measured again, and sees the write.
  auto bias = mlp.GetTensor("linear2.bias");
  ASSERT_TRUE(bias.ok()) << bias.status();
  const double old_bias = bias->ToDoubles()[0];
  ASSERT_TRUE(mlp.SetTensor("linear2.bias",
                            *client::HostTensor::FromDoubles(client::DType::kFloat32, {1}, {100}))
                  .ok());
  auto written = mlp.Forward(*one);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->version, first->version + 1);
  EXPECT_NEAR(written->outputs[0].tensor.ToDoubles()[0],
              first->outputs[0].tensor.ToDoubles()[0] - old_bias + 100.0, 1e-4);
}

}  // namespace
}  // namespace paramd::testing
