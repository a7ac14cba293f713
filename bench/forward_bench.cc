// forward_bench: forward passes on the CPU backend, against their peers in the same run.
//
// In process: the seed MLP (Linear(1,2), ReLU, Linear(2,1)) and the seed CNN (Conv2d(1,20,5),
// ReLU, MaxPool2d(2,2), view, Linear(2880,10), ReLU) at batch 1 and 64, and the large MLP
// (four Linear(4096,4096)+ReLU, batch 64): time per forward as a ratio to PyTorch CPU eager
// on the same inputs (bench/forward_peers.py in the interop environment, with
// torch.set_num_threads equal to paramd's BLAS threads); the large MLP also as GFLOP/s and
// a fraction of the square n=4096 sgemm of both GEMM libraries the CPU backend uses
// (OpenBLAS and oneDNN), the ceiling a GEMM-bound forward can reach on this machine. Over
// the wire: the p50 latency of Inference.Forward on the seed MLP (batch 1) through the C++
// client against a real paramd process, as a ratio to a raw gRPC unary echo of the same
// payload served by another process of this binary.
// Ratios, not absolute times: the machine is shared and noisy (LIMITS.md), so each
// in-process figure is the best of the repetitions.
//
//   forward_bench [--quick] [--reps N]     (--quick: the large MLP at width 1024, n=1024
//                                           ceiling, fewer RPCs, for smoke runs)
#include <cblas.h>
#include <oneapi/dnnl/dnnl.h>
#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_util.h"
#include "bench/raw_server.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "paramd/bench/raw.grpc.pb.h"
#include "paramd/client.h"
#include "server/core/forward.h"
#include "server/core/spec.h"

namespace {

using paramd::DType;
using paramd::core::Forward;
using paramd::core::ForwardOptions;
using paramd::core::Module;
using paramd::core::NamedTensor;
using paramd::core::Shape;
using paramd::core::Tensor;
using paramd::bench::Clock;
using paramd::bench::Median;
using paramd::bench::PinTo;
using paramd::bench::Seconds;

// Best of `reps` timed calls after one warm-up call (first-touch page faults, BLAS
// thread start-up).
template <typename Fn>
double BestSeconds(int reps, Fn&& fn) {
  fn();
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto start = Clock::now();
    fn();
    best = std::min(best, Seconds(Clock::now() - start));
  }
  return best;
}

std::shared_ptr<Module> BuildOrDie(const std::string& spec) {
  auto module = paramd::core::BuildModuleFromText(spec, 0);
  if (!module.ok()) {
    std::fprintf(stderr, "spec: %s\n", std::string(module.status().message()).c_str());
    std::exit(1);
  }
  return *module;
}

Tensor RandomInput(Shape shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  std::vector<double> values(static_cast<size_t>(n));
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> dist(-1, 1);
  for (double& v : values) v = dist(rng);
  auto tensor = Tensor::FromDoubles(DType::kFloat32, std::move(shape), values);
  if (!tensor.ok()) std::exit(1);
  return *tensor;
}

// Seconds per forward of `model` on `input`.
double TimeForward(const Module& model, const Tensor& input, int reps) {
  const std::vector<NamedTensor> inputs = {{"input", input}};
  return BestSeconds(reps, [&] {
    auto result = Forward(model, inputs, ForwardOptions{});
    if (!result.ok()) {
      std::fprintf(stderr, "forward: %s\n", std::string(result.status().message()).c_str());
      std::exit(1);
    }
  });
}

// OpenBLAS's sgemm on n×n matrices, in GFLOP/s.
double SgemmGflops(int n, int reps) {
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a), c(a);
  const double seconds = BestSeconds(reps, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
  });
  return 2.0 * n * n * n / seconds / 1e9;
}

// oneDNN's sgemm on n×n matrices, in GFLOP/s: on this kind of machine the highest square
// rate of any library here, so the honest peak.
double OneDnnSgemmGflops(int n, int reps) {
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a), c(a);
  const double seconds = BestSeconds(reps, [&] {
    dnnl_sgemm('N', 'N', n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f, c.data(), n);
  });
  return 2.0 * n * n * n / seconds / 1e9;
}

// OpenBLAS's sgemm with one Linear layer's shapes, x (m×n) times Wᵀ (W n×n, as nn.Linear
// stores it), in GFLOP/s: the ceiling of a forward at batch m, where each weight element
// serves only m rows.
double LinearSgemmGflops(int m, int n, int reps) {
  std::vector<float> x(static_cast<size_t>(m) * n, 0.5f), w(static_cast<size_t>(n) * n, 0.5f),
      y(x);
  const double seconds = BestSeconds(reps, [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, n, 1.0f, x.data(), n, w.data(), n,
                0.0f, y.data(), n);
  });
  return 2.0 * m * n * n / seconds / 1e9;
}

std::string SeedSpec(const std::string& name) {
  return paramd::bench::SeedSpec(PARAMD_EXAMPLE_SPECS, name);
}

using paramd::bench::LargeMlpSpec;

// Writes a float32 tensor's bytes (little-endian, C order) for the peer to read.
bool WriteRaw(const std::string& path, const Tensor& tensor) {
  std::ofstream file(path, std::ios::binary);
  file.write(static_cast<const char*>(tensor.data()), static_cast<std::streamsize>(tensor.nbytes()));
  return static_cast<bool>(file);
}

// The p50 latencies (microseconds) of Forward on the seed MLP at batch 1 and of a raw
// unary echo of the same 4 bytes, interleaved so that both see the same machine.
int MeasureRpc(const std::string& scratch, int iterations) {
  int echo_port = 0;
  const pid_t echo_pid = paramd::bench::StartRawServer(&echo_port);
  std::string address;
  const pid_t paramd_pid = paramd::bench::StartParamd(PARAMD_BINARY, scratch, &address);
  absl::Cleanup stop = [&] {
    if (echo_pid > 0) kill(echo_pid, SIGKILL);
    if (paramd_pid > 0) kill(paramd_pid, SIGTERM);
    if (echo_pid > 0) waitpid(echo_pid, nullptr, 0);
    if (paramd_pid > 0) waitpid(paramd_pid, nullptr, 0);
  };
  if (echo_pid <= 0 || paramd_pid <= 0) {
    std::fprintf(stderr, "forward_bench: could not start the servers\n");
    return 1;
  }
  PinTo(0);
  auto echo = paramd::bench::Raw::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", echo_port), grpc::InsecureChannelCredentials()));
  auto client = paramd::client::Client::Connect(address);
  if (!client.ok() || !(*client)->CreateModel("mlp", SeedSpec("mlp")).ok()) {
    std::fprintf(stderr, "forward_bench: could not create the model in paramd\n");
    return 1;
  }
  auto model = (*client)->Model("mlp");
  auto input = paramd::client::HostTensor::FromDoubles(paramd::client::DType::kFloat32, {1, 1},
                                                       {0.5});
  paramd::bench::Blob small;
  small.set_data(std::string(4, '\0'));
  std::vector<double> forward_us, echo_us;
  for (int i = 0; i < iterations + 50; ++i) {
    auto t0 = Clock::now();
    grpc::ClientContext context;
    paramd::bench::Blob reply;
    if (!echo->Echo(&context, small, &reply).ok()) {
      std::fprintf(stderr, "forward_bench: echo failed\n");
      return 1;
    }
    const double echo_s = Seconds(Clock::now() - t0);
    t0 = Clock::now();
    auto result = model.Forward(*input);
    if (!result.ok()) {
      std::fprintf(stderr, "forward_bench: Forward: %s\n",
                   std::string(result.status().message()).c_str());
      return 1;
    }
    const double forward_s = Seconds(Clock::now() - t0);
    if (i >= 50) {  // the first calls set up connections and threads
      echo_us.push_back(echo_s * 1e6);
      forward_us.push_back(forward_s * 1e6);
    }
  }
  const double forward_p50 = Median(forward_us), echo_p50 = Median(echo_us);
  std::printf("| Forward RPC, seed MLP batch 1, p50 | %.0f us | %.0f us (raw unary echo) | %.2fx "
              "the echo (target <= 2) |\n",
              forward_p50, echo_p50, forward_p50 / echo_p50);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int reps = 5;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else {
      std::fprintf(stderr, "usage: forward_bench [--quick] [--reps N]\n");
      return 2;
    }
  }
  const int threads = openblas_get_num_threads();
  std::printf("forward_bench: CPU backend, OpenBLAS with %d threads\n", threads);
  char scratch[] = "/tmp/paramd-forward-bench-XXXXXX";
  if (mkdtemp(scratch) == nullptr) {
    std::fprintf(stderr, "forward_bench: cannot make a scratch directory\n");
    return 1;
  }
  absl::Cleanup remove_scratch = [&] {
    std::error_code ignored;
    std::filesystem::remove_all(scratch, ignored);
  };

  const int width = quick ? 1024 : 4096;
  const int64_t large_batch = 64;
  struct Case {
    const char* key;  // the peer's name for it, and its input file
    std::string label;
    std::shared_ptr<Module> model;
    Tensor input;
    int reps;
    double seconds = 0;
  };
  const auto mlp = BuildOrDie(SeedSpec("mlp"));
  const auto cnn = BuildOrDie(SeedSpec("cnn"));
  const auto large = BuildOrDie(LargeMlpSpec(width));
  const int small_reps = reps * 20;
  std::vector<Case> cases = {
      {"mlp1", "seed MLP batch 1", mlp, RandomInput({1, 1}), small_reps},
      {"mlp64", "seed MLP batch 64", mlp, RandomInput({64, 1}), small_reps},
      {"cnn1", "seed CNN batch 1", cnn, RandomInput({1, 1, 28, 28}), small_reps},
      {"cnn64", "seed CNN batch 64", cnn, RandomInput({64, 1, 28, 28}), small_reps},
      {"large", absl::StrCat("large MLP 4x Linear(", width, ",", width, ")+ReLU batch ",
                             large_batch),
       large, RandomInput({large_batch, width}), reps},
  };
  for (Case& c : cases) {
    if (!WriteRaw(absl::StrCat(scratch, "/", c.key, ".bin"), c.input)) {
      std::fprintf(stderr, "forward_bench: cannot write the inputs to %s\n", scratch);
      return 1;
    }
    c.seconds = TimeForward(*c.model, c.input, c.reps);
  }

  nlohmann::json peer;
  if (std::optional<std::string> python = paramd::bench::PeerPython(PARAMD_SETUP_VENV)) {
    absl::StatusOr<std::string> out = paramd::bench::Capture(
        {*python, PARAMD_FORWARD_PEERS, scratch, absl::StrCat(reps), absl::StrCat(threads)});
    if (out.ok()) peer = nlohmann::json::parse(*out, nullptr, /*allow_exceptions=*/false);
  }
  const bool have_peer = peer.is_object() && !peer.contains("skipped");
  if (have_peer) {
    std::printf("peer: PyTorch %s CPU eager, torch.set_num_threads(%d), no_grad\n",
                peer["torch"].get<std::string>().c_str(), peer["threads"].get<int>());
  } else {
    std::printf("peer: PyTorch not available (make it with tests/interop/setup-venv)\n");
  }
  std::printf("| case | paramd | PyTorch | speed vs PyTorch (PyTorch time / paramd time) |\n");
  std::printf("| --- | --- | --- | --- |\n");
  for (const Case& c : cases) {
    if (have_peer && peer.contains(c.key)) {
      const double theirs = peer[c.key].get<double>();
      std::printf("| %s | %.4f ms | %.4f ms | %.2f |\n", c.label.c_str(), c.seconds * 1e3,
                  theirs * 1e3, theirs / c.seconds);
    } else {
      std::printf("| %s | %.4f ms | - | - |\n", c.label.c_str(), c.seconds * 1e3);
    }
  }

  const double t = cases.back().seconds;
  const double flops = 4 * 2.0 * large_batch * width * width;
  const double gflops = flops / t / 1e9;
  const double openblas_peak = SgemmGflops(width, reps);
  const double onednn_peak = OneDnnSgemmGflops(width, reps);
  std::printf(
      "large MLP 4x Linear(%d,%d)+ReLU batch %lld: %9.3f ms/forward, %.1f GFLOP/s = %.2f of "
      "OpenBLAS sgemm n=%d (%.1f GFLOP/s), %.2f of oneDNN sgemm n=%d (%.1f GFLOP/s); "
      "%.2f of the higher peak (target >= 0.85)\n",
      width, width, static_cast<long long>(large_batch), t * 1e3, gflops, gflops / openblas_peak,
      width, openblas_peak, gflops / onednn_peak, width, onednn_peak,
      gflops / std::max(openblas_peak, onednn_peak));
  const double linear_peak = LinearSgemmGflops(static_cast<int>(large_batch), width, reps);
  std::printf("  OpenBLAS alone on one layer's shape (%lldx%dx%d): %.1f GFLOP/s; the forward "
              "(oneDNN's matmul on this shape) reaches %.2fx that\n",
              static_cast<long long>(large_batch), width, width, linear_peak,
              gflops / linear_peak);

  return MeasureRpc(scratch, quick ? 200 : 2000);
}
