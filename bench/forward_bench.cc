// forward_bench: in-process forward passes on the CPU backend.
//
// The seed MLP (Linear(1,2), ReLU, Linear(2,1)) and the seed CNN (Conv2d(1,20,5), ReLU,
// MaxPool2d(2,2), view, Linear(2880,10), ReLU) at batch 1 and 64: time per forward. The
// large MLP (four Linear(4096,4096)+ReLU, batch 64): time per forward and GFLOP/s as a
// fraction of OpenBLAS's own sgemm on n=4096 square matrices measured in the same run, the
// ceiling a GEMM-bound forward can reach on this machine. Ratios, not absolute times: the
// machine is shared and noisy (LIMITS.md), so each figure is the best of the repetitions.
//
//   forward_bench [--quick] [--reps N]     (--quick: the large MLP at width 1024, n=1024
//                                           ceiling, for smoke runs)
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/core/forward.h"
#include "server/core/spec.h"

namespace {

using paramd::core::DType;
using paramd::core::Forward;
using paramd::core::ForwardOptions;
using paramd::core::Module;
using paramd::core::NamedTensor;
using paramd::core::Shape;
using paramd::core::Tensor;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

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

constexpr char kSeedMlp[] = R"({"type": "MLP", "children": [
  {"name": "linear1", "type": "Linear", "args": {"in_features": 1, "out_features": 2}},
  {"name": "relu", "type": "ReLU"},
  {"name": "linear2", "type": "Linear", "args": {"in_features": 2, "out_features": 1}}],
  "forward": ["linear1", "relu", "linear2"]})";

constexpr char kSeedCnn[] = R"({"type": "CNN", "children": [
  {"name": "conv1", "type": "Conv2d", "args": {"in_channels": 1, "out_channels": 20, "kernel_size": 5}},
  {"name": "pool", "type": "MaxPool2d", "args": {"kernel_size": 2, "stride": 2}},
  {"name": "fc1", "type": "Linear", "args": {"in_features": 2880, "out_features": 10}}],
  "forward": ["conv1", {"op": "relu"}, "pool", {"op": "view", "args": {"shape": [-1, 2880]}},
              "fc1", {"op": "relu"}]})";

std::string LargeMlpSpec(int width) {
  std::string children;
  for (int i = 0; i < 4; ++i) {
    absl::StrAppend(&children, i ? ", " : "", R"({"type": "Linear", "args": {"in_features": )",
                    width, R"(, "out_features": )", width, R"(}}, {"type": "ReLU"})");
  }
  return absl::StrCat(R"({"type": "Sequential", "children": [)", children, "]}");
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
  std::printf("forward_bench: CPU backend, OpenBLAS with %d threads\n", openblas_get_num_threads());

  const auto mlp = BuildOrDie(kSeedMlp);
  const auto cnn = BuildOrDie(kSeedCnn);
  const int small_reps = reps * 20;
  for (int64_t batch : {1, 64}) {
    const double t = TimeForward(*mlp, RandomInput({batch, 1}), small_reps);
    std::printf("seed MLP  batch %2lld: %9.4f ms/forward\n", static_cast<long long>(batch),
                t * 1e3);
  }
  for (int64_t batch : {1, 64}) {
    const double t = TimeForward(*cnn, RandomInput({batch, 1, 28, 28}), small_reps);
    std::printf("seed CNN  batch %2lld: %9.4f ms/forward\n", static_cast<long long>(batch),
                t * 1e3);
  }

  const int width = quick ? 1024 : 4096;
  const int64_t batch = 64;
  const auto large = BuildOrDie(LargeMlpSpec(width));
  const double t = TimeForward(*large, RandomInput({batch, width}), reps);
  const double flops = 4 * 2.0 * batch * width * width;
  const double gflops = flops / t / 1e9;
  const double peak = SgemmGflops(width, reps);
  std::printf(
      "large MLP 4x Linear(%d,%d)+ReLU batch %lld: %9.3f ms/forward, %.1f GFLOP/s = %.2f "
      "of sgemm n=%d (%.1f GFLOP/s)\n",
      width, width, static_cast<long long>(batch), t * 1e3, gflops, gflops / peak, width, peak);
  return 0;
}
