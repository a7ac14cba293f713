// CPU kernels on small hand-computed cases and on the edges the reference sweep does not
// reach: NaN propagation, argument checks, untouched outputs on error, aliasing.
#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/unit/kernels/ops_test_util.h"

namespace paramd::kernels {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::Shape;

TensorView ViewOf(std::vector<float>& data, const Shape& shape) {
  TensorView v;
  v.data = data.data();
  v.rank = static_cast<int>(shape.size());
  const Shape strides = testing::Strides(shape);
  for (int d = 0; d < v.rank; ++d) {
    v.shape[d] = shape[d];
    v.strides[d] = strides[d];
  }
  return v;
}

TEST(CpuOpsTest, GemmLinearWithFusedReluByHand) {
  CpuBackend cpu;
  // x = [[1, 2]], W = [[1, 1], [1, -1], [0, 2]], b = [0, 0, -5]
  std::vector<float> x = {1, 2}, w = {1, 1, 1, -1, 0, 2}, b = {0, 0, -5}, y(3, 99);
  ASSERT_TRUE(cpu.Gemm({.m = 1,
                        .n = 3,
                        .k = 2,
                        .a = x.data(),
                        .lda = 2,
                        .b = w.data(),
                        .ldb = 2,
                        .trans_b = true,
                        .bias = b.data(),
                        .c = y.data(),
                        .ldc = 3,
                        .epilogue = UnaryOp::kReLU})
                  .ok());
  EXPECT_THAT(y, ElementsAre(3, 0, 0));
}

TEST(CpuOpsTest, GemmHonoursLeadingDimensionOfC) {
  CpuBackend cpu;
  std::vector<float> a = {1, 2}, b = {3, 4}, c = {-1, -1, -1, -1};
  // C is the left column of a 2x2 buffer (ldc 2): the right column stays untouched.
  ASSERT_TRUE(cpu.Gemm({.m = 2,
                        .n = 1,
                        .k = 1,
                        .a = a.data(),
                        .lda = 1,
                        .b = b.data(),
                        .ldb = 1,
                        .c = c.data(),
                        .ldc = 2})
                  .ok());
  EXPECT_THAT(c, ElementsAre(3, -1, 6, -1));
}

// Runs C = A·Bᵀ + bias (Linear's layout) with padded rows everywhere (lda > k, ldb > k,
// ldc > n) on several threads at once, as concurrent forwards do, each with its own output;
// checks every element against a double-precision sum and that no padding of C was written.
void ExpectLargeGemmRight(int64_t m, int64_t n, int64_t k) {
  const int64_t lda = k + 5, ldb = k + 2, ldc = n + 3;
  std::vector<float> a(m * lda), b(n * ldb), bias(n);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(static_cast<int>(i * 37 % 101) - 50) / 50.0f;
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(static_cast<int>(i * 53 % 97) - 48) / 48.0f;
  for (size_t i = 0; i < bias.size(); ++i) bias[i] = static_cast<float>(i % 7) - 3.0f;
  std::vector<double> expected(m * n);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double sum = bias[j];
      for (int64_t p = 0; p < k; ++p) sum += double{a[i * lda + p]} * b[j * ldb + p];
      expected[i * n + j] = sum;
    }
  }
  CpuBackend cpu;
  constexpr int kThreads = 4;
  std::vector<std::vector<float>> c(kThreads, std::vector<float>(m * ldc, -7.0f));
  std::vector<absl::Status> status(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int rep = 0; rep < 3 && status[t].ok(); ++rep) {
        status[t] = cpu.Gemm({.m = m, .n = n, .k = k, .a = a.data(), .lda = lda, .b = b.data(),
                              .ldb = ldb, .trans_b = true, .bias = bias.data(),
                              .c = c[t].data(), .ldc = ldc});
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_TRUE(status[t].ok()) << status[t];
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        ASSERT_NEAR(c[t][i * ldc + j], expected[i * n + j], 1e-4 * (1 + std::abs(expected[i * n + j])))
            << "thread " << t << " at " << i << "," << j;
      }
      for (int64_t j = n; j < ldc; ++j) ASSERT_EQ(c[t][i * ldc + j], -7.0f) << "padding touched";
    }
  }
}

TEST(CpuOpsTest, LargeGemmHonoursLeadingDimensionsAndRunsOnManyThreadsAtOnce) {
  // Large enough for oneDNN (docs/kernels.md), run directly.
  ExpectLargeGemmRight(64, 256, 512);
}

TEST(CpuOpsTest, SkinnyGemmRunsTransposedWithTheSameResults) {
  // A batch of 16 against a 1024-wide layer: oneDNN runs Cᵀ = B·Aᵀ and transposes back
  // (Note [Skinny products run transposed]); padding, bias and threads as above.
  ExpectLargeGemmRight(16, 1024, 256);
}

TEST(CpuOpsTest, MaxPoolPropagatesNan) {
  // A NaN anywhere in the window wins, as in ATen, whichever comes after it; both the 2x2
  // stride-2 path and the general one (a 3x3 window).
  CpuBackend cpu;
  for (int64_t k : {2, 3}) {
    for (int64_t at = 0; at < k * k; ++at) {
      std::vector<float> x(k * k), y(1);
      for (int64_t i = 0; i < k * k; ++i) x[i] = static_cast<float>(i);
      x[at] = std::numeric_limits<float>::quiet_NaN();
      ASSERT_TRUE(cpu.MaxPool2d({.input = ViewOf(x, {1, 1, k, k}),
                                 .output = ViewOf(y, {1, 1, 1, 1}),
                                 .kernel = {k, k},
                                 .stride = {k, k}})
                      .ok());
      EXPECT_TRUE(std::isnan(y[0])) << "kernel " << k << ", NaN at " << at;
    }
  }
}

TEST(CpuOpsTest, AvgPoolDivisorsByHand) {
  CpuBackend cpu;
  std::vector<float> x = {1, 2, 3, 4}, y(4);
  // kernel 2, stride 1, padding 1 on a 2x2 image, top-left 2x2 of the 3x3 output.
  AvgPool2dArgs args{.input = ViewOf(x, {1, 2, 2}),
                     .output = ViewOf(y, {1, 2, 2}),
                     .kernel = {2, 2},
                     .stride = {1, 1},
                     .padding = {1, 1}};
  ASSERT_TRUE(cpu.AvgPool2d(args).ok());
  EXPECT_THAT(y, ElementsAre(0.25f, 0.75f, 1.0f, 2.5f));
  args.count_include_pad = false;
  ASSERT_TRUE(cpu.AvgPool2d(args).ok());
  EXPECT_THAT(y, ElementsAre(1.0f, 1.5f, 2.0f, 2.5f));
}

TEST(CpuOpsTest, BatchNormTrainUpdatesRunningStatsWithUnbiasedVariance) {
  CpuBackend cpu;
  std::vector<float> x = {1, 3}, y(2), mean = {10}, var = {20}, new_mean(1), new_var(1);
  ASSERT_TRUE(cpu.BatchNorm({.input = ViewOf(x, {2, 1}),
                             .output = ViewOf(y, {2, 1}),
                             .running_mean = mean.data(),
                             .running_var = var.data(),
                             .use_batch_stats = true,
                             .momentum = 0.5,
                             .eps = 0,
                             .new_running_mean = new_mean.data(),
                             .new_running_var = new_var.data()})
                  .ok());
  EXPECT_THAT(y, ElementsAre(-1, 1));  // biased variance 1 normalises
  EXPECT_FLOAT_EQ(new_mean[0], 6);     // 0.5 * 10 + 0.5 * 2
  EXPECT_FLOAT_EQ(new_var[0], 11);     // 0.5 * 20 + 0.5 * 2 (unbiased)
  EXPECT_THAT(mean, ElementsAre(10));  // the old buffers are never written
  EXPECT_THAT(var, ElementsAre(20));
}

TEST(CpuOpsTest, EmbeddingBadIndexLeavesOutputUntouched) {
  CpuBackend cpu;
  std::vector<float> w = {1, 2, 3, 4}, y = {7, 7, 7, 7};
  std::vector<int64_t> idx = {1, 2};
  ConstTensorView indices;
  indices.data = idx.data();
  indices.dtype = DType::kInt64;
  indices.rank = 1;
  indices.shape[0] = 2;
  indices.strides[0] = 1;
  const absl::Status status =
      cpu.Embedding({.weight = ViewOf(w, {2, 2}), .indices = indices, .output = ViewOf(y, {2, 2})});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "index out of range in self");
  EXPECT_THAT(y, ElementsAre(7, 7, 7, 7));
}

TEST(CpuOpsTest, UnaryInPlaceAndSoftmaxOfInfinity) {
  CpuBackend cpu;
  std::vector<float> x = {-1, 2};
  ASSERT_TRUE(
      cpu.Unary({.op = UnaryOp::kReLU, .input = ViewOf(x, {2}), .output = ViewOf(x, {2})}).ok());
  EXPECT_THAT(x, ElementsAre(0, 2));
  std::vector<float> s = {-std::numeric_limits<float>::infinity(), 0}, p(2);
  ASSERT_TRUE(cpu.Softmax({.input = ViewOf(s, {2}), .output = ViewOf(p, {2}), .dim = 0}).ok());
  EXPECT_THAT(p, ElementsAre(0, 1));
}

TEST(CpuOpsTest, NonContiguousInputIsRefusedWhereContiguityIsRequired) {
  CpuBackend cpu;
  std::vector<float> x(6), y(6);
  TensorView transposed = ViewOf(x, {3, 2});
  transposed.strides[0] = 1;
  transposed.strides[1] = 3;
  const absl::Status status =
      cpu.Unary({.op = UnaryOp::kTanh, .input = transposed, .output = ViewOf(y, {3, 2})});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("must be contiguous"));
}

TEST(CpuOpsTest, AdaptiveAvgPoolOfEmptyPlanesIsRefusedNotNan) {
  // Every output cell would average nothing; PyTorch refuses such an input too.
  CpuBackend cpu;
  std::vector<float> x, y(4, 7.0f);
  const TensorView in = ViewOf(x, {1, 1, 0, 3});
  const absl::Status status = cpu.AdaptiveAvgPool2d({.input = in, .output = ViewOf(y, {1, 1, 2, 2})});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("empty input planes"));
  EXPECT_THAT(y, ElementsAre(7, 7, 7, 7));
}

TEST(CpuOpsTest, ConvertRoundsToNearestEvenAndSaturatesIntegers) {
  CpuBackend cpu;
  std::vector<float> x = {1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f, 1e20f, -2.7f};
  std::vector<uint16_t> half(4);
  TensorView out;
  out.data = half.data();
  out.dtype = DType::kFloat16;
  out.rank = 1;
  out.shape[0] = 4;
  out.strides[0] = 1;
  ASSERT_TRUE(cpu.Convert({.input = ViewOf(x, {4}), .output = out}).ok());
  // 1 + 2^-11 is a tie between 1 and 1 + 2^-10: even is 1. 1 + 3 * 2^-11 rounds up to 1 + 2^-9.
  EXPECT_EQ(half[0], 0x3c00);
  EXPECT_EQ(half[1], 0x3c02);
  EXPECT_EQ(half[2], 0x7c00);  // overflow to infinity
  std::vector<int64_t> ints(4);
  out.data = ints.data();
  out.dtype = DType::kInt64;
  ASSERT_TRUE(cpu.Convert({.input = ViewOf(x, {4}), .output = out}).ok());
  EXPECT_EQ(ints[3], -2);  // toward zero
}

TEST(CpuOpsTest, DropoutMaskIsTheSharedCounterBasedDraw) {
  // Pinned values: every backend must draw exactly these (Note [Dropout mask]).
  EXPECT_FLOAT_EQ(DropoutUniform(0, 0), DropoutUniform(0, 0));
  EXPECT_NE(DropoutUniform(0, 0), DropoutUniform(0, 1));
  EXPECT_NE(DropoutUniform(0, 0), DropoutUniform(1, 0));
  double sum = 0;
  for (uint64_t i = 0; i < 100000; ++i) {
    const float u = DropoutUniform(42, i);
    ASSERT_GE(u, 0.0f);
    ASSERT_LT(u, 1.0f);
    sum += u;
  }
  EXPECT_NEAR(sum / 100000, 0.5, 0.01);
}

}  // namespace
}  // namespace paramd::kernels
