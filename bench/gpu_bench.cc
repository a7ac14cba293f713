// gpu_bench: GEMM rate of the CUDA backend against raw cuBLAS, in the same run.
//
// For float32 (full float32 math, no TF32, as both PyTorch's default and the backend use)
// and bfloat16 (float32 accumulation): C = A · Bᵀ on m = n = k = size square matrices, the
// Linear layout, timed as the best of `reps` batches of `inner` products each (host clock
// around a batch and one synchronize, so launch overhead counts for both). The backend runs
// through Backend::Gemm (cuBLASLt, plans cached); the ceiling is cublasGemmEx with the same
// types. Also reported: the backend's product with the bias and ReLU fused. The check
// fails (exit 1) when the backend falls below --min-ratio of cuBLAS, or when the two
// results differ beyond rounding. Exit 77 (ctest's skip) without a GPU.
//
// Then forward passes of models in GPU memory (created on the host, moved with the same
// copies as MoveModel): the seed CNN at batch 64 and the large MLP (four Linear(4096, 4096)
// + ReLU, batch 64), the input already on the GPU, each call ending when the device is done.
// Reported: time per forward, the large MLP's TFLOP/s as a fraction of the float32 cuBLAS
// rate above, the largest difference from the CPU backend's answer (a failure beyond
// rounding), and PyTorch CUDA eager on the same inputs when the interop environment exists
// (bench/forward_peers.py with cuda:0).
//
// Last, the Adam step over a 1 GiB float32 group (256 MiB with --quick) in 16 tensors, as
// bytes moved per second against the device's copy rate measured in the same run.
//
//   gpu_bench [--quick] [--reps N] [--size N] [--min-ratio R]
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/bench_util.h"
#include "kernels/backend.h"
#include "nlohmann/json.hpp"
#include "server/core/forward.h"
#include "base/half.h"
#include "server/core/model.h"
#include "server/core/spec.h"

namespace {

using paramd::DType;
using paramd::kernels::Backend;
using paramd::kernels::GemmArgs;
using paramd::kernels::UnaryOp;
using Clock = std::chrono::steady_clock;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "gpu_bench: %s\n", what.c_str());
  std::exit(1);
}

void Check(bool ok, const std::string& what) {
  if (!ok) Die(what);
}

// Best seconds per call over `reps` batches of `inner` calls, after one warm-up batch.
template <typename Issue, typename Wait>
double BestSecondsPerCall(int reps, int inner, Issue&& issue, Wait&& wait) {
  for (int i = 0; i < inner; ++i) issue();
  wait();
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto start = Clock::now();
    for (int i = 0; i < inner; ++i) issue();
    wait();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - start).count() / inner);
  }
  return best;
}

struct DeviceBuffer {
  Backend* backend;
  void* data = nullptr;
  size_t bytes = 0;
  DeviceBuffer(Backend* b, size_t n) : backend(b), bytes(n) {
    auto allocated = backend->Allocate(n);
    Check(allocated.ok(), std::string(allocated.status().message()));
    data = *allocated;
  }
  ~DeviceBuffer() { backend->Free(data, bytes); }
};

std::vector<uint8_t> RandomBytes(DType dtype, int64_t count, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const size_t element = dtype == DType::kFloat32 ? 4 : 2;
  std::vector<uint8_t> bytes(static_cast<size_t>(count) * element);
  for (int64_t i = 0; i < count; ++i) {
    const float v = dist(rng);
    if (dtype == DType::kFloat32) {
      std::memcpy(&bytes[i * 4], &v, 4);
    } else {
      const uint16_t bits = paramd::FloatToBFloat16Bits(v);
      std::memcpy(&bytes[i * 2], &bits, 2);
    }
  }
  return bytes;
}

std::vector<float> Download(Backend* backend, DType dtype, const void* data, int64_t count) {
  const size_t element = dtype == DType::kFloat32 ? 4 : 2;
  std::vector<uint8_t> bytes(static_cast<size_t>(count) * element);
  Check(backend->CopyToHost(bytes.data(), data, bytes.size()).ok(), "download");
  std::vector<float> values(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    if (dtype == DType::kFloat32) {
      std::memcpy(&values[i], &bytes[i * 4], 4);
    } else {
      uint16_t bits;
      std::memcpy(&bits, &bytes[i * 2], 2);
      values[i] = paramd::BFloat16BitsToFloat(bits);
    }
  }
  return values;
}

struct Result {
  double backend_tflops, fused_tflops, cublas_tflops, max_diff;
};

Result Measure(Backend* backend, cublasHandle_t handle, cudaStream_t stream, DType dtype,
               int64_t size, int reps, int inner) {
  const int64_t count = size * size;
  const size_t element = dtype == DType::kFloat32 ? 4 : 2;
  DeviceBuffer a(backend, count * element), b(backend, count * element);
  DeviceBuffer c(backend, count * element), c_ref(backend, count * element);
  DeviceBuffer bias(backend, size * element);
  const auto a_host = RandomBytes(dtype, count, 1), b_host = RandomBytes(dtype, count, 2);
  const auto bias_host = RandomBytes(dtype, size, 3);
  Check(backend->CopyFromHost(a.data, a_host.data(), a_host.size()).ok(), "upload a");
  Check(backend->CopyFromHost(b.data, b_host.data(), b_host.size()).ok(), "upload b");
  Check(backend->CopyFromHost(bias.data, bias_host.data(), bias_host.size()).ok(), "upload bias");

  GemmArgs args{.dtype = dtype, .m = size, .n = size, .k = size, .a = a.data, .lda = size,
                .b = b.data, .ldb = size, .trans_b = true, .c = c.data, .ldc = size};
  auto issue_backend = [&] {
    const absl::Status status = backend->Gemm(args);
    Check(status.ok(), std::string(status.message()));
  };
  auto wait_backend = [&] { Check(backend->Synchronize().ok(), "synchronize"); };
  const double flop = 2.0 * size * size * size;
  Result result{};
  result.backend_tflops = flop / BestSecondsPerCall(reps, inner, issue_backend, wait_backend) / 1e12;

  GemmArgs fused = args;
  fused.bias = bias.data;
  fused.epilogue = UnaryOp::kReLU;
  result.fused_tflops =
      flop /
      BestSecondsPerCall(
          reps, inner,
          [&] { Check(backend->Gemm(fused).ok(), "fused gemm"); }, wait_backend) /
      1e12;
  // The last product left in c is the plain one, for the comparison below.
  issue_backend();
  wait_backend();

  // Row-major C = A · Bᵀ is column-major Cᵀ = B · Aᵀ: B read transposed, A as stored.
  const cudaDataType_t type = dtype == DType::kFloat32 ? CUDA_R_32F : CUDA_R_16BF;
  const float alpha = 1.0f, beta = 0.0f;
  const int n = static_cast<int>(size);
  auto issue_cublas = [&] {
    const cublasStatus_t status =
        cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &alpha, b.data, type, n, a.data,
                     type, n, &beta, c_ref.data, type, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    Check(status == CUBLAS_STATUS_SUCCESS, absl::StrFormat("cublasGemmEx: %d", status));
  };
  auto wait_cublas = [&] { Check(cudaStreamSynchronize(stream) == cudaSuccess, "cuBLAS sync"); };
  result.cublas_tflops = flop / BestSecondsPerCall(reps, inner, issue_cublas, wait_cublas) / 1e12;

  const auto got = Download(backend, dtype, c.data, count);
  const auto want = Download(backend, dtype, c_ref.data, count);
  for (int64_t i = 0; i < count; ++i) {
    const double diff = std::abs(got[i] - want[i]) / (1.0 + std::abs(want[i]));
    result.max_diff = std::max(result.max_diff, diff);
  }
  return result;
}

// Forward passes of the seed CNN and the large MLP in GPU memory (see the top of the file).
// Returns false when an answer differs from the CPU backend's beyond rounding.
bool MeasureForwards(double cublas_f32_tflops, int reps, bool quick) {
  using paramd::Device;
  using paramd::core::Tensor;
  const int64_t width = quick ? 1024 : 4096, batch = 64;
  struct Case {
    const char* key;  // the peer's name for it, and its input file
    std::string label, spec;
    paramd::core::Shape shape;
    double flop;
  };
  const std::vector<Case> cases = {
      {"cnn64", "seed CNN batch 64", paramd::bench::SeedSpec(PARAMD_EXAMPLE_SPECS, "cnn"),
       {batch, 1, 28, 28}, 0},
      {"large", absl::StrCat("large MLP 4x Linear(", width, ",", width, ")+ReLU batch ", batch),
       paramd::bench::LargeMlpSpec(static_cast<int>(width)), {batch, width},
       4 * 2.0 * batch * width * width}};
  char scratch[] = "/tmp/paramd-gpu-bench-XXXXXX";
  Check(mkdtemp(scratch) != nullptr, "cannot make a scratch directory");
  absl::Cleanup remove_scratch = [&] {
    std::error_code ignored;
    std::filesystem::remove_all(scratch, ignored);
  };

  bool ok = true;
  std::vector<double> seconds;
  std::vector<std::string> notes;
  for (const Case& c : cases) {
    auto on_cpu = paramd::core::BuildModuleFromText(c.spec, 1);
    auto on_gpu = paramd::core::BuildModuleFromText(c.spec, 1);
    Check(on_cpu.ok() && on_gpu.ok(), "cannot build " + c.label);
    const absl::Status moved = paramd::core::MoveUnpublishedTree(*on_gpu, Device::Cuda(0));
    Check(moved.ok(), std::string(moved.message()));
    int64_t count = 1;
    for (int64_t extent : c.shape) count *= extent;
    const std::vector<uint8_t> bytes = RandomBytes(DType::kFloat32, count, 11);
    auto input = Tensor::FromBytes(DType::kFloat32, c.shape, bytes);
    Check(input.ok(), "input");
    std::ofstream(absl::StrCat(scratch, "/", c.key, ".bin"), std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()),
               static_cast<std::streamsize>(bytes.size()));
    auto device_input = paramd::core::ConvertTo(*input, DType::kFloat32, Device::Cuda(0));
    Check(device_input.ok(), "input to the GPU");
    const std::vector<paramd::core::NamedTensor> host_inputs = {{"input", *input}};
    const std::vector<paramd::core::NamedTensor> gpu_inputs = {{"input", *device_input}};
    auto run = [&](const paramd::core::Module& model,
                   const std::vector<paramd::core::NamedTensor>& inputs) {
      auto result = paramd::core::Forward(model, inputs, paramd::core::ForwardOptions{});
      Check(result.ok(), std::string(result.status().message()));
      return std::move(result->outputs[0].tensor);
    };
    auto want = paramd::core::ToDoubles(run(**on_cpu, host_inputs));
    auto got = paramd::core::ToDoubles(run(**on_gpu, gpu_inputs));
    Check(want.ok() && got.ok() && want->size() == got->size(), "outputs");
    double max_diff = 0;
    for (size_t i = 0; i < want->size(); ++i) {
      const double expected = (*want)[i];
      max_diff = std::max(max_diff, std::abs((*got)[i] - expected) / (1.0 + std::abs(expected)));
    }
    const bool pass = max_diff <= 1e-3;
    ok = ok && pass;
    // Forward ends with the backend's Synchronize, so each call is complete on return; the
    // best single call, as the peer measures.
    seconds.push_back(
        BestSecondsPerCall(reps * 10, 1, [&] { run(**on_gpu, gpu_inputs); }, [] {}));
    notes.push_back(absl::StrFormat("max diff from the CPU backend %.2g %s", max_diff,
                                    pass ? "ok" : "FAIL"));
  }

  nlohmann::json peer;
  if (std::optional<std::string> python = paramd::bench::PeerPython(PARAMD_SETUP_VENV)) {
    absl::StatusOr<std::string> out = paramd::bench::Capture(
        {*python, PARAMD_FORWARD_PEERS, scratch, absl::StrCat(reps * 10), "1", "cuda:0"});
    if (out.ok()) peer = nlohmann::json::parse(*out, nullptr, /*allow_exceptions=*/false);
  }
  const bool have_peer = peer.is_object() && !peer.contains("skipped");
  std::printf("\nforward passes on cuda:0, float32 (peer: %s)\n",
              have_peer ? absl::StrCat("PyTorch ", peer["torch"].get<std::string>(),
                                       " CUDA eager, no TF32").c_str()
                        : "PyTorch CUDA not available here");
  std::printf("| case | paramd | PyTorch | PyTorch time / paramd time | check |\n");
  std::printf("| --- | --- | --- | --- | --- |\n");
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    std::string theirs = "-", ratio = "-";
    if (have_peer && peer.contains(c.key)) {
      const double t = peer[c.key].get<double>();
      theirs = absl::StrFormat("%.4f ms", t * 1e3);
      ratio = absl::StrFormat("%.2f", t / seconds[i]);
    }
    std::printf("| %s | %.4f ms | %s | %s | %s |\n", c.label.c_str(), seconds[i] * 1e3,
                theirs.c_str(), ratio.c_str(), notes[i].c_str());
  }
  const double tflops = cases.back().flop / seconds.back() / 1e12;
  std::printf("large MLP: %.1f TFLOP/s = %.2f of float32 cuBLAS (%.1f TFLOP/s above)\n", tflops,
              tflops / cublas_f32_tflops, cublas_f32_tflops);
  return ok;
}

// Adam (out of place, as an optimizer step runs it) over `elements` float32 elements cut into
// `tensors` tensors of one group, against the device's own copy rate: a device-to-device
// copy of as many bytes through the same backend, counted as read plus written. Adam moves
// 28 bytes per element (reads parameter, gradient and two moments; writes parameter and
// two moments).
void MeasureAdam(Backend* backend, int64_t elements, int tensors, int reps) {
  using paramd::kernels::FillArgs;
  using paramd::kernels::OptimizerStepArgs;
  using paramd::kernels::OptimizerTensor;
  using paramd::kernels::TensorView;
  const size_t bytes = static_cast<size_t>(elements) * 4;
  std::vector<std::unique_ptr<DeviceBuffer>> buffers;
  float value = 0.25f;
  for (int i = 0; i < 7; ++i) {
    buffers.push_back(std::make_unique<DeviceBuffer>(backend, bytes));
    TensorView view;
    view.data = buffers.back()->data;
    view.rank = 1;
    view.shape[0] = elements;
    view.strides[0] = 1;
    Check(backend->Fill(FillArgs{.output = view, .value = value}).ok(), "fill");
    value *= 0.5f;
  }
  auto at = [&](int buffer, int64_t element) {
    return static_cast<float*>(buffers[buffer]->data) + element;
  };
  OptimizerStepArgs args{.algorithm = paramd::kernels::OptimizerAlgorithm::kAdam, .lr = 1e-3};
  const int64_t per = (elements + tensors - 1) / tensors;
  for (int64_t begin = 0; begin < elements; begin += per) {
    OptimizerTensor t;
    t.numel = std::min(per, elements - begin);
    t.param = at(0, begin);
    t.grad = at(1, begin);
    t.state_in[0] = at(2, begin);
    t.state_in[1] = at(3, begin);
    t.param_out = at(4, begin);
    t.state_out[0] = at(5, begin);
    t.state_out[1] = at(6, begin);
    t.step_size = 1e-3 / (1 - 0.9);
    t.bias_correction2_sqrt = std::sqrt(1 - 0.999);
    args.tensors.push_back(t);
  }
  auto wait = [&] { Check(backend->Synchronize().ok(), "synchronize"); };
  const double step_s = BestSecondsPerCall(
      reps, 5, [&] { Check(backend->OptimizerStep(args).ok(), "optimizer step"); }, wait);
  const double copy_s = BestSecondsPerCall(
      reps, 5,
      [&] { Check(backend->CopyWithinDevice(at(4, 0), at(0, 0), bytes).ok(), "copy"); }, wait);
  const double adam_rate = 28.0 * elements / step_s, copy_rate = 2.0 * bytes / copy_s;
  std::printf("\nAdam step on cuda:0, %.2f GiB float32 in %zu tensors of one group:\n",
              bytes / 1073741824.0, args.tensors.size());
  std::printf("  %.3f ms, %.1f GB/s moved (28 bytes per element) = %.2f of the device's copy "
              "rate (%.1f GB/s read + written)\n",
              step_s * 1e3, adam_rate / 1e9, adam_rate / copy_rate, copy_rate / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int reps = 5;
  int64_t size = 8192;
  double min_ratio = 0.8;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      quick = true;
    } else if (arg == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--size" && i + 1 < argc) {
      size = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--min-ratio" && i + 1 < argc) {
      min_ratio = std::atof(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: gpu_bench [--quick] [--reps N] [--size N] [--min-ratio R]\n");
      return 2;
    }
  }
  if (quick) size = std::min<int64_t>(size, 2048);
  auto cuda = paramd::kernels::GetBackend(paramd::Device::Cuda(0));
  if (!cuda.ok()) {
    std::printf("gpu_bench: skipped: %s\n", std::string(cuda.status().message()).c_str());
    return 77;
  }
  Backend* backend = *cuda;
  auto gpus = paramd::kernels::QueryGpus();
  std::printf("gpu_bench on %s, m = n = k = %lld, best of %d\n",
              gpus.ok() ? (*gpus)[0].name.c_str() : "cuda:0", static_cast<long long>(size), reps);

  Check(cudaSetDevice(0) == cudaSuccess, "cudaSetDevice");
  cublasHandle_t handle = nullptr;
  cudaStream_t stream = nullptr;
  Check(cublasCreate(&handle) == CUBLAS_STATUS_SUCCESS, "cublasCreate");
  Check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking) == cudaSuccess, "stream");
  Check(cublasSetStream(handle, stream) == CUBLAS_STATUS_SUCCESS, "cublasSetStream");
  // Full float32 for float32, as the backend computes it.
  Check(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH) == CUBLAS_STATUS_SUCCESS, "math mode");

  bool ok = true;
  double cublas_f32_tflops = 0;
  std::printf("%-9s %14s %20s %13s %7s %10s\n", "dtype", "backend TF/s", "bias+relu fused TF/s",
              "cuBLAS TF/s", "ratio", "max diff");
  for (const DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    // Enough products per timed batch that a batch lasts a few milliseconds at least.
    const int inner = dtype == DType::kFloat32 ? 3 : 10;
    const Result r = Measure(backend, handle, stream, dtype, size, reps, inner);
    const double ratio = r.backend_tflops / r.cublas_tflops;
    if (dtype == DType::kFloat32) cublas_f32_tflops = r.cublas_tflops;
    // Both sides use float32 accumulation; only the order of the sums may differ.
    const double tolerance = dtype == DType::kFloat32 ? 1e-3 : 2e-2;
    const bool pass = ratio >= min_ratio && r.max_diff <= tolerance;
    ok = ok && pass;
    std::printf("%-9s %14.1f %20.1f %13.1f %7.2f %10.2g %s\n",
                std::string(paramd::DTypeName(dtype)).c_str(), r.backend_tflops,
                r.fused_tflops, r.cublas_tflops, ratio, r.max_diff, pass ? "ok" : "FAIL");
  }
  cublasDestroy(handle);
  cudaStreamDestroy(stream);
  ok = MeasureForwards(cublas_f32_tflops, reps, quick) && ok;
  MeasureAdam(backend, quick ? (int64_t{64} << 20) : (int64_t{256} << 20), 16, reps);
  std::printf("gpu_bench: %s (backend at least %.2f of cuBLAS, results within rounding)\n",
              ok ? "PASS" : "FAIL", min_ratio);
  return ok ? 0 : 1;
}
