// wire_bench: paramd's transfer speed against plain gRPC on the same machine, same run.
//
// Pull and push of a state_dict (64 tensors of 16 MiB, and 4096 of 256 KiB; 1 GiB each by
// default) through the C++ client against a real paramd process, as ratios to a raw gRPC
// byte stream of the same size (1 MiB messages, the best chunk size on this machine) served
// by another process of this binary; and the p50 latency of a tiny GetTensor as a ratio to
// a raw unary echo. Ratios, not absolute times: the machine is shared and noisy.
//
//   wire_bench [--quick] [--reps N]      (--quick: 64 MiB per case, for smoke runs)
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_util.h"
#include "bench/raw_server.h"
#include "grpcpp/grpcpp.h"
#include "paramd/bench/raw.grpc.pb.h"
#include "paramd/client.h"

namespace {

using paramd::bench::Best;
using paramd::bench::Clock;
using paramd::bench::Median;
using paramd::bench::PinTo;
using paramd::bench::Seconds;
constexpr uint64_t kMiB = uint64_t{1} << 20;

std::string SpecOf(int count, int64_t numel) {
  std::string spec = R"({"type": "Net", "parameters": [)";
  for (int i = 0; i < count; ++i) {
    absl::StrAppend(&spec, i ? "," : "", R"({"name": "p)", i, R"(", "shape": [)", numel, "]}");
  }
  return spec + "]}";
}

struct Case {
  std::string name;
  int count;
  int64_t numel;
};

int Fail(const std::string& what, const absl::Status& status) {
  std::cerr << "wire_bench: " << what << ": " << status << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int reps = 3;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::cerr << "usage: wire_bench [--quick] [--reps N]\n";
      return 2;
    }
  }
  const uint64_t total = quick ? 64 * kMiB : 1024 * kMiB;
  // Fork the raw server before this process creates any gRPC state.
  int raw_port = 0;
  const pid_t raw_pid = paramd::bench::StartRawServer(&raw_port);
  char scratch[] = "/tmp/paramd-bench-XXXXXX";
  std::string address;
  const pid_t paramd_pid = mkdtemp(scratch) != nullptr ? paramd::bench::StartParamd(PARAMD_BINARY, scratch, &address) : -1;
  PinTo(0);
  // Every way out stops both servers.
  absl::Cleanup stop = [&] {
    if (raw_pid > 0) kill(raw_pid, SIGKILL);
    if (paramd_pid > 0) kill(paramd_pid, SIGTERM);
    if (raw_pid > 0) waitpid(raw_pid, nullptr, 0);
    if (paramd_pid > 0) waitpid(paramd_pid, nullptr, 0);
    std::error_code ignored;
    std::filesystem::remove_all(scratch, ignored);
  };
  if (raw_pid <= 0 || paramd_pid <= 0) {
    std::cerr << "wire_bench: could not start the servers\n";
    return 1;
  }

  auto raw_channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", raw_port),
                                         grpc::InsecureChannelCredentials());
  auto raw = paramd::bench::Raw::NewStub(raw_channel);
  auto client = paramd::client::Client::Connect(address);
  if (!client.ok()) return Fail("connect", client.status());

  auto raw_pull = [&] {
    grpc::ClientContext context;
    paramd::bench::PullRequest request;
    request.set_total_bytes(total);
    request.set_chunk_bytes(kMiB);
    auto reader = raw->Pull(&context, request);
    paramd::bench::Blob blob;
    // Counted, not kept: the ceiling is the stream itself (LIMITS.md measures keeping the
    // bytes at about 2% more).
    uint64_t received = 0;
    while (reader->Read(&blob)) received += blob.data().size();
    return reader->Finish().ok() && received == total;
  };
  auto raw_push = [&] {
    grpc::ClientContext context;
    paramd::bench::PushReply reply;
    auto writer = raw->Push(&context, &reply);
    paramd::bench::Blob blob;
    blob.mutable_data()->assign(kMiB, '\x5a');
    for (uint64_t sent = 0; sent < total; sent += kMiB) writer->Write(blob);
    writer->WritesDone();
    return writer->Finish().ok() && reply.received_bytes() == total;
  };

  std::printf("| case | paramd | raw gRPC | ratio (paramd / raw throughput) |\n");
  std::printf("| --- | --- | --- | --- |\n");
  const std::vector<Case> cases = {
      {"64 x 16 MiB", 64, static_cast<int64_t>(total / 64 / 4)},
      {"4096 x 256 KiB", 4096, static_cast<int64_t>(total / 4096 / 4)}};
  for (const Case& c : cases) {
    const std::string name = absl::StrCat("bench", c.count);
    auto created = (*client)->CreateModel(name, SpecOf(c.count, c.numel));
    if (!created.ok()) return Fail("create", created.status());
    auto model = (*client)->Model(name);
    std::vector<double> pull, push, raw_pull_s, raw_push_s;
    paramd::client::StateDictResult state;
    // One untimed round first: steady state is what a worker syncing weights lives in.
    if (absl::Status warm = model.StateDictInto(state); !warm.ok()) return Fail("warm-up", warm);
    if (auto warm = model.LoadStateDict(state.entries); !warm.ok()) {
      return Fail("warm-up", warm.status());
    }
    for (int r = 0; r < reps; ++r) {
      auto t0 = Clock::now();
      if (!raw_pull()) return Fail("raw pull", absl::InternalError("failed"));
      raw_pull_s.push_back(Seconds(Clock::now() - t0));
      t0 = Clock::now();
      // A worker pulling weights repeatedly refills the same buffers.
      absl::Status pulled = model.StateDictInto(state);
      if (!pulled.ok()) return Fail("state_dict", pulled);
      pull.push_back(Seconds(Clock::now() - t0));
      t0 = Clock::now();
      if (!raw_push()) return Fail("raw push", absl::InternalError("failed"));
      raw_push_s.push_back(Seconds(Clock::now() - t0));
      t0 = Clock::now();
      auto loaded = model.LoadStateDict(state.entries);
      if (!loaded.ok()) return Fail("load_state_dict", loaded.status());
      push.push_back(Seconds(Clock::now() - t0));
    }
    const double gb = static_cast<double>(total) / 1e9;
    for (auto [what, mine, ceiling] :
         {std::tuple{"pull", Best(pull), Best(raw_pull_s)},
          std::tuple{"push", Best(push), Best(raw_push_s)}}) {
      std::printf("| %s %s (%.2f GB) | %.2f GB/s | %.2f GB/s | %.2f |\n", what, c.name.c_str(), gb,
                  gb / mine, gb / ceiling, ceiling / mine);
    }
    (void)(*client)->DeleteModel(name);
  }

  // Tiny GetTensor latency against a raw unary echo of the same payload size.
  if (!(*client)->CreateModel("tiny", R"({"type": "Net", "parameters": [{"name": "w", "shape": [1]}]})").ok()) {
    return Fail("create tiny", absl::InternalError("failed"));
  }
  auto tiny = (*client)->Model("tiny");
  const int iterations = quick ? 300 : 3000;
  std::vector<double> get_us, echo_us;
  paramd::bench::Blob small;
  small.set_data(std::string(4, '\0'));
  for (int i = 0; i < iterations; ++i) {
    auto t0 = Clock::now();
    grpc::ClientContext context;
    paramd::bench::Blob reply;
    if (!raw->Echo(&context, small, &reply).ok()) return Fail("echo", absl::InternalError("failed"));
    echo_us.push_back(Seconds(Clock::now() - t0) * 1e6);
    t0 = Clock::now();
    auto value = tiny.GetTensor("w");
    if (!value.ok()) return Fail("get", value.status());
    get_us.push_back(Seconds(Clock::now() - t0) * 1e6);
  }
  std::printf("| tiny GetTensor p50 | %.0f us | %.0f us (unary echo) | %.2fx the echo |\n",
              Median(get_us), Median(echo_us), Median(get_us) / Median(echo_us));
  return 0;
}
