// Keepalive (docs/wire.md, "Keepalive"): a client pings while its calls wait, so a frozen
// daemon ends a call that has no deadline with UNAVAILABLE instead of hanging it, a blocked
// lent write included; and the daemon accepts a client's pings down to
// --keepalive-min-interval instead of closing its connection as gRPC's defaults would.
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "grpc/grpc.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "gtest/gtest.h"
#include "paramd/client.h"
#include "paramd/v1/parameters.grpc.pb.h"
#include "tests/integration/daemon.h"
#include "tests/integration/specs.h"
#include "tests/integration/wire.h"

namespace paramd::testing {
namespace {

using Clock = std::chrono::steady_clock;

// A Linear(2048, 2048): a 16 MiB weight, far more than a stopped peer's socket buffers and
// HTTP/2 windows take in before a write blocks.
constexpr char kBigSpec[] =
    R"({"type": "Linear", "args": {"in_features": 2048, "out_features": 2048, "bias": false}})";

// Waits up to `limit` for `call`; on time, its result and how long it took. Past it the
// daemon is resumed and killed, which ends the call, and the test fails.
// Whether every thread of `pid` is stopped: kill(SIGSTOP) returns before the threads stop,
// and a thread still running could answer a call sent right after it.
bool AllThreadsStopped(pid_t pid) {
  const std::filesystem::path tasks = "/proc/" + std::to_string(pid) + "/task";
  std::error_code error;
  for (const auto& task : std::filesystem::directory_iterator(tasks, error)) {
    std::ifstream stat(task.path() / "stat");
    std::string line;
    std::getline(stat, line);
    const size_t end = line.rfind(')');  // the state follows the command name
    if (end == std::string::npos || end + 2 >= line.size()) return false;
    if (line[end + 2] != 'T' && line[end + 2] != 't') return false;
  }
  return !error;
}

template <typename T>
std::pair<T, double> WaitBounded(std::future<T>& call, Daemon& daemon, Clock::time_point start,
                                 std::chrono::seconds limit) {
  if (call.wait_for(limit) != std::future_status::ready) {
    ADD_FAILURE() << "the call still waits " << limit.count()
                  << " s after the daemon froze: nothing noticed the frozen peer";
    kill(daemon.pid(), SIGCONT);
    daemon.Kill();
  }
  T result = call.get();
  return {std::move(result), std::chrono::duration<double>(Clock::now() - start).count()};
}

TEST(KeepaliveTest, FrozenDaemonEndsCallsWithoutDeadlineWithUnavailable) {
  auto daemon = Daemon::Start();
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  client::ConnectOptions options;
  options.unary_deadline = std::chrono::milliseconds(0);  // no deadline anywhere
  options.stream_deadline = std::chrono::milliseconds(0);
  options.keepalive_time = std::chrono::seconds(1);
  options.keepalive_timeout = std::chrono::seconds(1);
  auto client = client::Client::Connect((*daemon)->address(), options);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE((*client)->CreateModel("big", kBigSpec).ok());
  client::TensorWrite write{"weight", {}, std::nullopt};
  write.tensor.shape = {2048, 2048};
  write.tensor.data.assign(size_t{2048} * 2048 * 4, '\0');

  // The daemon stops mid-connection: its kernel still accepts bytes, nobody answers.
  ASSERT_EQ(kill((*daemon)->pid(), SIGSTOP), 0);
  const Clock::time_point stopping = Clock::now();
  while (!AllThreadsStopped((*daemon)->pid()) && Clock::now() - stopping < std::chrono::seconds(5)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ASSERT_TRUE(AllThreadsStopped((*daemon)->pid()));
  const Clock::time_point start = Clock::now();
  auto describe = std::async(std::launch::async, [&] {
    return (*client)->DescribeModel("big").status();
  });
  auto set = std::async(std::launch::async, [&] {
    return (*client)->Model("big").SetTensors({write}).status();
  });
  auto [described, describe_seconds] =
      WaitBounded(describe, **daemon, start, std::chrono::seconds(30));
  auto [written, write_seconds] = WaitBounded(set, **daemon, start, std::chrono::seconds(30));
  kill((*daemon)->pid(), SIGCONT);

  EXPECT_EQ(described.code(), absl::StatusCode::kUnavailable) << described;
  EXPECT_EQ(written.code(), absl::StatusCode::kUnavailable) << written;
  // A ping after 1 s of silence, unanswered for 1 s: about 2 s, far below the bound.
  EXPECT_LT(describe_seconds, 15.0);
  EXPECT_LT(write_seconds, 15.0);
}

TEST(KeepaliveTest, DaemonAcceptsPingsAsOftenAsItsMinimumInterval) {
  auto daemon = Daemon::Start({"--keepalive-min-interval", "1s"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  // A client that pings every 2 s whatever the traffic, holding a write open for 11 s with
  // nothing sent either way: five pings. gRPC's server default (no ping sooner than 5
  // minutes after the last without data) closes the connection at the fourth.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 2000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_HTTP2_MIN_SENT_PING_INTERVAL_WITHOUT_DATA_MS, 2000);
  auto channel = grpc::CreateCustomChannel((*daemon)->address(),
                                           grpc::InsecureChannelCredentials(), args);
  auto models = v1::Models::NewStub(channel);
  {
    grpc::ClientContext context;
    v1::CreateModelRequest request;
    request.set_name("mlp");
    request.set_spec_json(kMlpSpec);
    v1::ModelInfo info;
    ASSERT_TRUE(models->CreateModel(&context, request, &info).ok());
  }
  auto parameters = v1::Parameters::NewStub(channel);
  grpc::ClientContext context;
  v1::WriteResponse response;
  auto writer = parameters->SetTensors(&context, &response);
  ASSERT_TRUE(writer->Write(OptionsFrame("mlp")));
  std::this_thread::sleep_for(std::chrono::seconds(11));
  for (const v1::WriteFrame& frame : FloatTensorFrames("w2", {1}, {5.0f})) {
    ASSERT_TRUE(writer->Write(frame)) << "the daemon closed the connection of a client that pings";
  }
  ASSERT_TRUE(writer->WritesDone());
  const grpc::Status status = writer->Finish();
  EXPECT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  EXPECT_EQ(response.version(), 2u);
}

}  // namespace
}  // namespace paramd::testing
