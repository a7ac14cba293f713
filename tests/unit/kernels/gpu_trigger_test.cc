// The CUDA backend at the sizes where its kernels change path, each case named so that
// tests/gpu/run.sh runs them on their own (GpuTriggerSizes.*, GpuThreads.*), in every math
// dtype, against the CPU backend, outputs poisoned with NaN first:
//   - softmax and layer norm rows wider than 1024 (256 threads, multi-warp reductions);
//   - more than 65,535 rows (the grid is capped at 65,536 blocks and loops);
//   - more than 2^31 elements (element-wise and broadcast kernels' index math);
//   - a convolution whose im2col columns take at least two chunks of 256 MiB, plain, with
//     more groups than images per chunk (batched over groups) and fewer (over images);
//   - softmax along a non-last dimension: more than 65,536 blocks of columns, few long
//     columns (32 threads each), inner = 1 past 65,535 rows, and past 2^31 elements;
//   - a 16-bit GEMM with an epilogue whose float32 staging takes two row blocks of 64 MiB;
//   - several threads issuing ops on the one device at once, each on its own stream, one of
//     them hitting bad embedding indices that must not reach the others.
// Without a GPU every case skips.
#include <cmath>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "base/half.h"
#include "kernels/backend.h"
#include "tests/unit/kernels/ops_test_util.h"

#ifdef PARAMD_WITH_CUDA
#include "absl/cleanup/cleanup.h"
#include "kernels/cuda/cudnn_conv.h"
#endif

namespace paramd::kernels {
namespace {

using testing::AllClose;
using testing::DeviceTensor;
using testing::HostTensor;
using testing::Random;
using testing::Shape;

Backend* CudaOrNull() {
  absl::StatusOr<Backend*> backend = GetBackend(Device::Cuda(0));
  return backend.ok() ? *backend : nullptr;
}

Backend* Cpu() { return *GetBackend(Device::Cpu()); }

double Tolerance(DType dtype) {
  return dtype == DType::kFloat32 ? 1e-4 : (dtype == DType::kFloat16 ? 4e-3 : 3e-2);
}

// Runs `op` on the GPU and on the CPU over the same inputs into poisoned outputs: the GPU's
// output, then the CPU's (empty after a failure, which is reported).
template <typename Op>
std::vector<HostTensor> RunOnGpuAndCpu(Backend* gpu, DType dtype,
                                       const std::vector<HostTensor>& inputs,
                                       const Shape& out_shape, Op&& op) {
  std::vector<HostTensor> results;
  for (Backend* backend : {gpu, Cpu()}) {
    std::vector<std::unique_ptr<DeviceTensor>> in;
    for (const HostTensor& t : inputs) in.push_back(DeviceTensor::Upload(backend, t));
    DeviceTensor out(backend, dtype, out_shape);
    out.Poison();
    const absl::Status status = op(*backend, in, out);
    EXPECT_TRUE(status.ok()) << status;
    if (!status.ok()) return {};
    results.push_back(out.Download());
  }
  return results;
}

// RunOnGpuAndCpu, then every output element compared.
template <typename Op>
void CompareWithCpu(Backend* gpu, DType dtype, const std::vector<HostTensor>& inputs,
                    const Shape& out_shape, Op&& op) {
  const std::vector<HostTensor> results =
      RunOnGpuAndCpu(gpu, dtype, inputs, out_shape, std::forward<Op>(op));
  if (results.size() != 2) return;
  const double tol = Tolerance(dtype);
  EXPECT_TRUE(AllClose(results[0].values, results[1].values, tol, tol));
}

class GpuTriggerSizes : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    gpu_ = CudaOrNull();
    if (gpu_ == nullptr) GTEST_SKIP() << "no usable GPU: " << GetBackend(Device::Cuda(0)).status();
  }
  Backend* gpu_ = nullptr;
};

using In = std::vector<std::unique_ptr<DeviceTensor>>;

TEST_P(GpuTriggerSizes, SoftmaxWiderThan1024) {
  const DType dtype = GetParam();
  for (bool log : {false, true}) {
    CompareWithCpu(gpu_, dtype, {Random(dtype, {33, 4099}, 1, -4, 4)}, {33, 4099},
                   [&](Backend& b, const In& in, DeviceTensor& out) {
                     return b.Softmax(
                         {.input = in[0]->view(), .output = out.view(), .dim = 1, .log = log});
                   });
  }
}

TEST_P(GpuTriggerSizes, SoftmaxAndLayerNormOverMoreThan65535Rows) {
  const DType dtype = GetParam();
  const int64_t rows = 70001;
  CompareWithCpu(gpu_, dtype, {Random(dtype, {rows, 12}, 2, -4, 4)}, {rows, 12},
                 [&](Backend& b, const In& in, DeviceTensor& out) {
                   return b.Softmax({.input = in[0]->view(), .output = out.view(), .dim = 1});
                 });
  // Along a non-last dimension: rows = outer * inner.
  CompareWithCpu(gpu_, dtype, {Random(dtype, {3, 5, 23335}, 3, -4, 4)}, {3, 5, 23335},
                 [&](Backend& b, const In& in, DeviceTensor& out) {
                   return b.Softmax({.input = in[0]->view(), .output = out.view(), .dim = 1});
                 });
  CompareWithCpu(gpu_, dtype,
                 {Random(dtype, {rows, 40}, 4, -3, 3), Random(dtype, {40}, 5),
                  Random(dtype, {40}, 6)},
                 {rows, 40}, [&](Backend& b, const In& in, DeviceTensor& out) {
                   return b.LayerNorm({.input = in[0]->view(),
                                       .output = out.view(),
                                       .normalized_size = 40,
                                       .weight = in[1]->data(),
                                       .bias = in[2]->data()});
                 });
}

TEST_P(GpuTriggerSizes, LayerNormWiderThan1024) {
  const DType dtype = GetParam();
  CompareWithCpu(gpu_, dtype,
                 {Random(dtype, {17, 3000}, 7, -3, 3), Random(dtype, {3000}, 8),
                  Random(dtype, {3000}, 9)},
                 {17, 3000}, [&](Backend& b, const In& in, DeviceTensor& out) {
                   return b.LayerNorm({.input = in[0]->view(),
                                       .output = out.view(),
                                       .normalized_size = 3000,
                                       .weight = in[1]->data(),
                                       .bias = in[2]->data()});
                 });
}

// Element i of a ramp that depends on the position (so a wrapped or truncated index shows),
// as stored in `dtype`, and the raw bytes of such tensors: at 2^31 elements a vector of
// doubles per tensor would take 17 GB of host memory.
double RampValue(DType dtype, int64_t i) {
  return testing::RoundTo(dtype, static_cast<double>(i % 2003) - 1000.0);
}

std::vector<uint8_t> Encode(DType dtype, double v) {
  return HostTensor{dtype, {1}, {v}}.Bytes();
}

double Decode(DType dtype, const uint8_t* bytes) {
  if (dtype == DType::kFloat32) {
    float f;
    std::memcpy(&f, bytes, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, bytes, 2);
  return dtype == DType::kFloat16 ? HalfBitsToFloat(h) : BFloat16BitsToFloat(h);
}

TEST_P(GpuTriggerSizes, ElementwiseOverMoreThan2e31Elements) {
  const DType dtype = GetParam();
  const size_t element = ElementSize(dtype);
  const int64_t cols = 4096, rows = (int64_t{1} << 31) / cols + 3;  // 2^31 + 12288 elements
  const int64_t n = rows * cols;
  // The ramp repeats every 2003 elements: encode one period and tile it.
  std::vector<uint8_t> period;
  std::vector<double> ramp;
  for (int64_t i = 0; i < 2003; ++i) {
    ramp.push_back(RampValue(dtype, i));
    const std::vector<uint8_t> e = Encode(dtype, ramp.back());
    period.insert(period.end(), e.begin(), e.end());
  }
  std::vector<uint8_t> host(static_cast<size_t>(n) * element);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(&host[i * element], &period[(i % 2003) * element], element);
  }
  DeviceTensor a(gpu_, dtype, {rows, cols}), b(gpu_, dtype, {cols}), out(gpu_, dtype, {rows, cols});
  ASSERT_TRUE(gpu_->CopyFromHost(a.data(), host.data(), host.size()).ok());
  ASSERT_TRUE(gpu_->CopyFromHost(b.data(), host.data(), cols * element).ok());  // b[j] = ramp(j)

  // Contiguous: relu, every element checked.
  out.Poison();
  ASSERT_TRUE(gpu_->Unary({.op = UnaryOp::kReLU, .input = a.view(), .output = out.view()}).ok());
  ASSERT_TRUE(gpu_->Synchronize().ok());
  ASSERT_TRUE(gpu_->CopyToHost(host.data(), out.data(), host.size()).ok());
  int64_t wrong = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (Decode(dtype, &host[i * element]) != std::max(ramp[i % 2003], 0.0)) ++wrong;
  }
  EXPECT_EQ(wrong, 0) << "relu over " << n << " elements";

  // Broadcast (the strided kernel, 64-bit index path): out = a + b broadcast over rows.
  out.Poison();
  ASSERT_TRUE(gpu_->Binary({.op = BinaryOp::kAdd,
                            .a = a.view(),
                            .b = b.ViewOf({rows, cols}, {0, 1}),
                            .output = out.view()})
                  .ok());
  ASSERT_TRUE(gpu_->Synchronize().ok());
  ASSERT_TRUE(gpu_->CopyToHost(host.data(), out.data(), host.size()).ok());
  wrong = 0;
  // Every 7th element, and every element of the last 2^20 (past 2^31, where a wrapped
  // index would read the start).
  for (int64_t i = 0; i < n; i += (i < n - (int64_t{1} << 20) ? 7 : 1)) {
    const double want = testing::RoundTo(dtype, ramp[i % 2003] + ramp[(i % cols) % 2003]);
    if (Decode(dtype, &host[i * element]) != want) ++wrong;
  }
  EXPECT_EQ(wrong, 0) << "broadcast add over " << n << " elements";
}

TEST_P(GpuTriggerSizes, Im2ColOfTwoChunks) {
  const DType dtype = GetParam();
  // One image's columns: 64 * 3 * 3 * 64 * 64 elements; enough images for two 256 MiB chunks.
  const int64_t c = 64, h = 64, w = 64, o = 8;
  const int64_t image_bytes = c * 9 * h * w * static_cast<int64_t>(ElementSize(dtype));
  const int64_t n = (int64_t{256} << 20) / image_bytes + 3;
#ifdef PARAMD_WITH_CUDA
  // Where cuDNN is built in it takes convolutions; the chunk loop is im2col's.
  cuda::ForceIm2ColConvForTesting(true);
  absl::Cleanup restore = [] { cuda::ForceIm2ColConvForTesting(false); };
#endif
  CompareWithCpu(gpu_, dtype,
                 {Random(dtype, {n, c, h, w}, 10), Random(dtype, {o, c, 3, 3}, 11, -0.1, 0.1),
                  Random(dtype, {o}, 12)},
                 {n, o, h, w}, [&](Backend& b, const In& in, DeviceTensor& out) {
                   return b.Conv2d({.input = in[0]->view(),
                                    .weight = in[1]->view(),
                                    .bias = in[2]->data(),
                                    .output = out.view(),
                                    .padding = {1, 1}});
                 });
}

// Note [Grouped conv as batched GEMMs] in kernels/cuda/cuda_backend.cc, over two im2col
// chunks: depthwise with more channels than images per chunk (one GEMM per image, batched
// over the groups), and two groups with many images per chunk (batched over the images).
TEST_P(GpuTriggerSizes, GroupedIm2ColOfTwoChunks) {
  const DType dtype = GetParam();
  const int64_t element = static_cast<int64_t>(ElementSize(dtype));
  struct Spec {
    int64_t c, hw, o, groups;
  };
  for (const Spec s : {Spec{64, 64, 64, 64}, Spec{8, 128, 6, 2}}) {
    const int64_t image_bytes = s.c * 9 * s.hw * s.hw * element;
    const int64_t per_chunk = (int64_t{256} << 20) / image_bytes;
    const int64_t n = per_chunk + 3;
    SCOPED_TRACE(absl::StrCat("groups ", s.groups, ", ", per_chunk, " images per chunk"));
    CompareWithCpu(gpu_, dtype,
                   {Random(dtype, {n, s.c, s.hw, s.hw}, 13),
                    Random(dtype, {s.o, s.c / s.groups, 3, 3}, 14, -0.3, 0.3),
                    Random(dtype, {s.o}, 15)},
                   {n, s.o, s.hw, s.hw}, [&](Backend& b, const In& in, DeviceTensor& out) {
                     return b.Conv2d({.input = in[0]->view(),
                                      .weight = in[1]->view(),
                                      .bias = in[2]->data(),
                                      .output = out.view(),
                                      .padding = {1, 1},
                                      .groups = s.groups});
                   });
  }
}

// Note [Softmax over columns] in kernels/cuda/softmax.cu at the sizes where it changes
// shape: more than 65,536 blocks of 8 tiles of 32 columns (the grid strides), few long
// columns (32 threads per column), inner = 1000, and inner = 1 past 65,535 rows along a
// middle dimension.
TEST_P(GpuTriggerSizes, SoftmaxAlongNonLastDimensions) {
  const DType dtype = GetParam();
  struct Spec {
    Shape shape;
    int dim;
  };
  // The first, at 17 million elements, once; the others as softmax and log_softmax.
  for (const Spec& s : {Spec{{530000, 1, 32}, 1}, Spec{{5000, 7}, 0}, Spec{{2, 100, 1000}, 1},
                        Spec{{70001, 12, 1}, 1}}) {
    for (bool log : {false, true}) {
      if (log && s.shape[0] == 530000) continue;
      SCOPED_TRACE(absl::StrCat("dim ", s.dim, " of ", s.shape[0], "x", s.shape[1],
                                s.shape.size() > 2 ? absl::StrCat("x", s.shape[2]) : "",
                                log ? ", log" : ""));
      CompareWithCpu(gpu_, dtype, {Random(dtype, s.shape, 16, -4, 4)}, s.shape,
                     [&](Backend& b, const In& in, DeviceTensor& out) {
                       return b.Softmax({.input = in[0]->view(),
                                         .output = out.view(),
                                         .dim = s.dim,
                                         .log = log});
                     });
    }
  }
}

// Note [16-bit epilogues round once] in kernels/cuda/gemm.cc: a product whose float32
// staging passes 64 MiB runs in row blocks (4,096 rows of 4,096 here, then the rest), with A
// stored either way; 16-bit results are the CPU's rounded once.
TEST_P(GpuTriggerSizes, GemmEpilogueStagedInRowBlocks) {
  const DType dtype = GetParam();
  // float32 products are not staged (their pass runs in place); backend_ops_test covers it.
  if (dtype == DType::kFloat32) return;
  const int64_t m = 4500, n = 4096, k = 64;
  for (const bool trans_a : {false, true}) {
    SCOPED_TRACE(trans_a ? "A stored k x m" : "A stored m x k");
    const std::vector<HostTensor> results = RunOnGpuAndCpu(
        gpu_, dtype,
        {Random(dtype, trans_a ? Shape{k, m} : Shape{m, k}, 17), Random(dtype, {n, k}, 18),
         Random(dtype, {n}, 19, -2, 2)},
        {m, n}, [&](Backend& b, const In& in, DeviceTensor& out) {
          return b.Gemm({.dtype = dtype,
                         .m = m,
                         .n = n,
                         .k = k,
                         .a = in[0]->data(),
                         .lda = trans_a ? m : k,
                         .trans_a = trans_a,
                         .b = in[1]->data(),
                         .ldb = k,
                         .trans_b = true,
                         .bias = in[2]->data(),
                         .c = out.data(),
                         .ldc = n,
                         .epilogue = UnaryOp::kGELU});
        });
    if (results.size() != 2) continue;
    EXPECT_TRUE(testing::SameAtOneRounding(dtype, results[0].values, results[1].values));
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GpuTriggerSizes,
                         ::testing::Values(DType::kFloat32, DType::kFloat16, DType::kBFloat16),
                         [](const ::testing::TestParamInfo<DType>& info) {
                           return std::string(DTypeName(info.param));
                         });

// Softmax along dim 0 of a float16 [3, 715,828,882] tensor: 2^31 + 1,462 elements through
// the column kernel, whose offsets must be 64-bit. x[k, c] = (k - 1) * (c % 7) / 4, so each
// column's answer is one of seven, computed here in double and rounded once.
TEST(GpuTriggerSizes2e31, SoftmaxAlongDim0PastTwoToThe31Elements) {
  Backend* gpu = CudaOrNull();
  if (gpu == nullptr) GTEST_SKIP() << "no usable GPU: " << GetBackend(Device::Cuda(0)).status();
  const DType dtype = DType::kFloat16;
  const int64_t cols = (int64_t{1} << 31) / 3 + 1000, n = 3 * cols;
  uint16_t input[3][7], want[3][7];
  for (int r = 0; r < 7; ++r) {
    double x[3], sum = 0;
    for (int k = 0; k < 3; ++k) {
      x[k] = testing::RoundTo(dtype, (k - 1) * r * 0.25);
      sum += std::exp(x[k]);
    }
    for (int k = 0; k < 3; ++k) {
      input[k][r] = FloatToHalfBits(static_cast<float>(x[k]));
      want[k][r] = FloatToHalfBits(static_cast<float>(std::exp(x[k]) / sum));
    }
  }
  std::vector<uint16_t> host(static_cast<size_t>(n));
  for (int64_t k = 0; k < 3; ++k) {
    for (int64_t c = 0, r = 0; c < cols; ++c, r = r == 6 ? 0 : r + 1) {
      host[k * cols + c] = input[k][r];
    }
  }
  DeviceTensor x(gpu, dtype, {3, cols}), y(gpu, dtype, {3, cols});
  const size_t bytes = host.size() * sizeof(uint16_t);
  ASSERT_TRUE(gpu->CopyFromHost(x.data(), host.data(), bytes).ok());
  // Poisoned on the device: a host-side poison of 4 GiB would take longer than the softmax.
  ASSERT_TRUE(gpu->Fill({.output = y.view(), .value = std::nan("")}).ok());
  ASSERT_TRUE(gpu->Softmax({.input = x.view(), .output = y.view(), .dim = 0}).ok());
  ASSERT_TRUE(gpu->Synchronize().ok());
  ASSERT_TRUE(gpu->CopyToHost(host.data(), y.data(), bytes).ok());
  int64_t wrong = 0, first = -1;
  for (int64_t k = 0; k < 3; ++k) {
    for (int64_t c = 0, r = 0; c < cols; ++c, r = r == 6 ? 0 : r + 1) {
      const uint16_t got = host[k * cols + c], expected = want[k][r];
      // One float16 unit apart at most (expf against exp), same sign.
      if (got != expected && got != expected + 1 && got + 1 != expected) {
        if (first < 0) first = k * cols + c;
        ++wrong;
      }
    }
  }
  EXPECT_EQ(wrong, 0) << "first wrong element " << first << " of " << n;
}

// Eight threads issue GEMMs and softmaxes on cuda:0 at once, each checking its own answers
// against the CPU's: the streams, plan cache, per-stream workspaces and pool under
// contention.
TEST(GpuThreads, ConcurrentOpsFromEightThreads) {
  Backend* gpu = CudaOrNull();
  if (gpu == nullptr) GTEST_SKIP() << "no usable GPU: " << GetBackend(Device::Cuda(0)).status();
  constexpr int kThreads = 8;
  std::vector<std::thread> threads;
  std::vector<int> failures(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const DType dtype = t % 2 == 0 ? DType::kFloat32 : DType::kBFloat16;
      const int64_t m = 16 + t, n = 96, k = 64 + 8 * t;
      const HostTensor a = Random(dtype, {m, k}, 100 + t), w = Random(dtype, {n, k}, 200 + t),
                       bias = Random(dtype, {n}, 300 + t);
      std::vector<HostTensor> answers;
      for (Backend* backend : {Cpu(), gpu}) {
        for (int rep = 0; rep < (backend == gpu ? 20 : 1); ++rep) {
          auto da = DeviceTensor::Upload(backend, a);
          auto dw = DeviceTensor::Upload(backend, w);
          auto db = DeviceTensor::Upload(backend, bias);
          DeviceTensor y(backend, dtype, {m, n}), s(backend, dtype, {m, n});
          y.Poison();
          s.Poison();
          const absl::Status gemm = backend->Gemm(
              {.dtype = dtype, .m = m, .n = n, .k = k, .a = da->data(), .lda = k,
               .b = dw->data(), .ldb = k, .trans_b = true, .bias = db->data(), .c = y.data(),
               .ldc = n, .epilogue = UnaryOp::kGELU});
          const absl::Status softmax =
              backend->Softmax({.input = y.view(), .output = s.view(), .dim = 1});
          if (!gemm.ok() || !softmax.ok()) {
            ++failures[t];
            continue;
          }
          answers.push_back(s.Download());
        }
      }
      const double tol = Tolerance(dtype);
      for (size_t i = 1; i < answers.size(); ++i) {
        if (!AllClose(answers[i].values, answers[0].values, tol, tol)) ++failures[t];
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
}

// Fault isolation (Note [Deferred index check] in kernels/cuda/context.h): thread 0 keeps
// running embeddings with a bad index and must get INVALID_ARGUMENT from every Synchronize,
// while seven threads run embeddings, GEMMs and softmaxes at the same time, each on its own
// stream, and must get OK and the CPU's answers every time.
TEST(GpuThreads, BadIndexOnOneThreadLeavesTheOthersCorrect) {
  Backend* gpu = CudaOrNull();
  if (gpu == nullptr) GTEST_SKIP() << "no usable GPU: " << GetBackend(Device::Cuda(0)).status();
  constexpr int kThreads = 8, kReps = 30;
  constexpr int64_t kRows = 50, kDim = 64, kCount = 24, kOut = 40;
  std::vector<std::thread> threads;
  std::vector<std::string> failures(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      const DType dtype = t % 2 == 0 ? DType::kFloat32 : DType::kBFloat16;
      const HostTensor table = Random(dtype, {kRows, kDim}, 400 + t);
      const HostTensor w = Random(dtype, {kOut, kDim}, 500 + t);
      HostTensor indices{DType::kInt64, {kCount}, {}};
      for (int64_t i = 0; i < kCount; ++i) indices.values.push_back((i * 7 + t) % kRows);
      if (t == 0) indices.values[kCount / 2] = kRows;  // one past the end
      std::vector<HostTensor> answers;
      for (Backend* backend : {Cpu(), gpu}) {
        for (int rep = 0; rep < (backend == gpu ? kReps : 1); ++rep) {
          auto dt = DeviceTensor::Upload(backend, table);
          auto di = DeviceTensor::Upload(backend, indices);
          auto dw = DeviceTensor::Upload(backend, w);
          DeviceTensor e(backend, dtype, {kCount, kDim}), y(backend, dtype, {kCount, kOut}),
              s(backend, dtype, {kCount, kOut});
          y.Poison();
          s.Poison();
          absl::Status status =
              backend->Embedding({.weight = dt->view(), .indices = di->view(), .output = e.view()});
          if (t == 0 && backend == Cpu()) {
            if (status.code() != absl::StatusCode::kInvalidArgument) failures[t] += " cpu";
            continue;
          }
          if (status.ok()) {
            status = backend->Gemm({.dtype = dtype, .m = kCount, .n = kOut, .k = kDim,
                                    .a = e.data(), .lda = kDim, .b = dw->data(), .ldb = kDim,
                                    .trans_b = true, .c = y.data(), .ldc = kOut});
          }
          if (status.ok()) {
            status = backend->Softmax({.input = y.view(), .output = s.view(), .dim = 1});
          }
          if (status.ok()) status = backend->Synchronize();
          if (t == 0) {
            if (status.code() != absl::StatusCode::kInvalidArgument ||
                status.message() != "index out of range in self") {
              failures[t] += absl::StrCat(" rep ", rep, ": ", status.ToString());
            }
            continue;
          }
          if (!status.ok()) {
            failures[t] += absl::StrCat(" rep ", rep, ": ", status.ToString());
            continue;
          }
          answers.push_back(s.Download());
        }
      }
      const double tol = Tolerance(dtype);
      for (size_t i = 1; i < answers.size(); ++i) {
        if (!AllClose(answers[i].values, answers[0].values, tol, tol)) {
          failures[t] += absl::StrCat(" answer ", i, " differs from the cpu");
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], "") << "thread " << t;
}

}  // namespace
}  // namespace paramd::kernels
