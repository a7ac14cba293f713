// Forward passes against naive reference loops written here, module by module, for the
// seed models, containers and forward programs, train/eval behaviour and PyTorch's errors.
#include "server/core/forward.h"

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "absl/cleanup/cleanup.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/core/model.h"
#include "server/core/traversal.h"
#include "tests/unit/core/test_util.h"

namespace paramd::core {
namespace {

using testing::Build;
using ::testing::HasSubstr;
using testing::MakeTensor;
using testing::Values;

std::vector<double> RandomValues(int64_t n, uint32_t seed, double low = -1, double high = 1) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> dist(low, high);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = static_cast<float>(dist(rng));
  return v;
}

int64_t Numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

Tensor RandomTensor(Shape shape, uint32_t seed, double low = -1, double high = 1) {
  const int64_t n = Numel(shape);
  return MakeTensor(std::move(shape), RandomValues(n, seed, low, high));
}

std::vector<double> Param(const std::shared_ptr<Module>& root, const std::string& name) {
  auto parameter = GetParameter(root, name);
  EXPECT_TRUE(parameter.ok()) << parameter.status();
  return parameter.ok() ? Values((*parameter)->data()) : std::vector<double>{};
}

std::vector<double> Buf(const std::shared_ptr<Module>& root, const std::string& name) {
  auto buffer = GetBuffer(root, name);
  EXPECT_TRUE(buffer.ok()) << buffer.status();
  return buffer.ok() ? Values((*buffer)->data()) : std::vector<double>{};
}

absl::StatusOr<ForwardResult> RunForward(const std::shared_ptr<Module>& root, const Tensor& input,
                                         bool training = false, uint64_t seed = 0) {
  return Forward(*root, {NamedTensor{"input", input}}, ForwardOptions{training, seed});
}

// The output of a forward pass that must succeed.
Tensor Output(const std::shared_ptr<Module>& root, const Tensor& input, bool training = false) {
  auto result = RunForward(root, input, training);
  EXPECT_TRUE(result.ok()) << result.status();
  if (!result.ok()) return Tensor();
  EXPECT_EQ(result->outputs.size(), 1u);
  EXPECT_EQ(result->outputs[0].name, "output");
  return result->outputs[0].tensor;
}

void ExpectNear(const std::vector<double>& actual, const std::vector<double>& expected,
                double tol = 1e-5) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_NEAR(actual[i], expected[i], tol * (1 + std::abs(expected[i]))) << "at " << i;
  }
}

// ----------------------------------------------------------------------------------------
// Naive references

std::vector<double> RefLinear(const std::vector<double>& x, int64_t rows, int64_t in,
                              const std::vector<double>& w, const std::vector<double>& b,
                              int64_t out) {
  std::vector<double> y(static_cast<size_t>(rows * out));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = b.empty() ? 0 : b[o];
      for (int64_t i = 0; i < in; ++i) s += x[r * in + i] * w[o * in + i];
      y[r * out + o] = s;
    }
  return y;
}

std::vector<double> Relu(std::vector<double> v) {
  for (double& x : v) x = std::max(x, 0.0);
  return v;
}

struct Conv {
  int64_t n, c, h, w, o, k;
  int64_t stride = 1, pad_before = 0, pad_after = 0, dilation = 1, groups = 1;
  int64_t out_h() const {
    return (h + pad_before + pad_after - dilation * (k - 1) - 1) / stride + 1;
  }
  int64_t out_w() const {
    return (w + pad_before + pad_after - dilation * (k - 1) - 1) / stride + 1;
  }
};

std::vector<double> RefConv(const Conv& s, const std::vector<double>& x,
                            const std::vector<double>& wt, const std::vector<double>& b) {
  const int64_t oh = s.out_h(), ow = s.out_w(), cg = s.c / s.groups, og = s.o / s.groups;
  std::vector<double> y(static_cast<size_t>(s.n * s.o * oh * ow));
  for (int64_t n = 0; n < s.n; ++n)
    for (int64_t o = 0; o < s.o; ++o)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          double sum = b.empty() ? 0 : b[o];
          for (int64_t ci = 0; ci < cg; ++ci)
            for (int64_t p = 0; p < s.k; ++p)
              for (int64_t q = 0; q < s.k; ++q) {
                const int64_t ih = i * s.stride - s.pad_before + p * s.dilation;
                const int64_t iw = j * s.stride - s.pad_before + q * s.dilation;
                if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
                const int64_t ch = (o / og) * cg + ci;
                sum += x[((n * s.c + ch) * s.h + ih) * s.w + iw] *
                       wt[((o * cg + ci) * s.k + p) * s.k + q];
              }
          y[((n * s.o + o) * oh + i) * ow + j] = sum;
        }
  return y;
}

std::vector<double> RefMaxPool2x2(const std::vector<double>& x, int64_t planes, int64_t h,
                                  int64_t w) {
  std::vector<double> y;
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t i = 0; i < h / 2; ++i)
      for (int64_t j = 0; j < w / 2; ++j) {
        double m = -INFINITY;
        for (int64_t a = 0; a < 2; ++a)
          for (int64_t b = 0; b < 2; ++b) m = std::max(m, x[(p * h + 2 * i + a) * w + 2 * j + b]);
        y.push_back(m);
      }
  return y;
}

// ----------------------------------------------------------------------------------------
// The seed models

TEST(ForwardTest, SeedMlpAsSequentialMatchesReference) {
  auto model = Build(R"({"type": "Sequential", "children": [
      {"type": "Linear", "args": {"in_features": 1, "out_features": 2}},
      {"type": "ReLU"},
      {"type": "Linear", "args": {"in_features": 2, "out_features": 1}}]})",
                     3);
  const Tensor x = MakeTensor({4, 1}, {-2.0, -0.5, 0.25, 3.0});
  const Tensor y = Output(model, x);
  EXPECT_EQ(y.shape(), (Shape{4, 1}));
  const auto h =
      Relu(RefLinear(Values(x), 4, 1, Param(model, "0.weight"), Param(model, "0.bias"), 2));
  ExpectNear(Values(y), RefLinear(h, 4, 2, Param(model, "2.weight"), Param(model, "2.bias"), 1));
}

// PyTorch's Sequential calls each child it holds: a None one is TypeError there.
TEST(ForwardTest, SequentialWithANoneChildFailsAsTorchDoes) {
  auto model = Build(R"({"type": "Sequential", "children": [
      {"type": "ReLU"}, {"name": "1", "none": true}, {"type": "ReLU"}]})");
  auto result = RunForward(model, MakeTensor({2}, {-1.0, 2.0}));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(result.status().message()),
              HasSubstr("'NoneType' object is not callable (child '1'"));
}

// torch 2.15 builds LayerNorm([]) and refuses each forward of it, whatever the input.
TEST(ForwardTest, LayerNormOfAnEmptyShapeRefusesEveryForwardAsTorchDoes) {
  auto model = Build(R"({"type": "LayerNorm", "args": {"normalized_shape": []}})");
  for (const Tensor& input : {MakeTensor({}, {1.0}), MakeTensor({2}, {1.0, 2.0})}) {
    auto result = RunForward(model, input);
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(result.status().message()),
                HasSubstr("Expected normalized_shape to be at least 1-dimensional, i.e., "
                          "containing at least one element, but got normalized_shape = []"));
  }
}

TEST(ForwardTest, SeedMlpCustomContainerRunsItsProgram) {
  auto model = Build(R"({"type": "MLP",
   "children": [
     {"name": "linear1", "type": "Linear", "args": {"in_features": 1, "out_features": 2}},
     {"name": "relu", "type": "ReLU"},
     {"name": "linear2", "type": "Linear", "args": {"in_features": 2, "out_features": 1}}],
   "forward": ["linear1", "relu", "linear2"]})",
                     5);
  const Tensor x = MakeTensor({3, 1}, {1.0, -1.0, 0.5});
  const auto h = Relu(
      RefLinear(Values(x), 3, 1, Param(model, "linear1.weight"), Param(model, "linear1.bias"), 2));
  ExpectNear(Values(Output(model, x)),
             RefLinear(h, 3, 2, Param(model, "linear2.weight"), Param(model, "linear2.bias"), 1));
}

constexpr char kCnnSpec[] = R"({"type": "CNN",
  "children": [
    {"name": "conv1", "type": "Conv2d", "args": {"in_channels": 1, "out_channels": 20, "kernel_size": 5}},
    {"name": "pool", "type": "MaxPool2d", "args": {"kernel_size": 2, "stride": 2}},
    {"name": "fc1", "type": "Linear", "args": {"in_features": 2880, "out_features": 10}}],
  "forward": ["conv1", {"op": "relu"}, "pool", {"op": "view", "args": {"shape": [-1, 2880]}},
              "fc1", {"op": "relu"}]})";

TEST(ForwardTest, SeedCnnMatchesReference) {
  auto model = Build(kCnnSpec, 7);
  const Tensor x = RandomTensor({2, 1, 28, 28}, 1);
  const Tensor y = Output(model, x);
  EXPECT_EQ(y.shape(), (Shape{2, 10}));
  const Conv conv{.n = 2, .c = 1, .h = 28, .w = 28, .o = 20, .k = 5};
  const auto c =
      Relu(RefConv(conv, Values(x), Param(model, "conv1.weight"), Param(model, "conv1.bias")));
  const auto p = RefMaxPool2x2(c, 40, 24, 24);
  ExpectNear(Values(y),
             Relu(RefLinear(p, 2, 2880, Param(model, "fc1.weight"), Param(model, "fc1.bias"), 10)),
             1e-4);
}

TEST(ForwardTest, SeedCnnBatchOfOne) {
  auto model = Build(kCnnSpec, 7);
  const Tensor x = RandomTensor({1, 1, 28, 28}, 2);
  EXPECT_EQ(Output(model, x).shape(), (Shape{1, 10}));
}

TEST(ForwardTest, ResidualBlockThroughNamedValues) {
  auto model = Build(R"({"type": "Residual",
   "children": [
     {"name": "fc1", "type": "Linear", "args": {"in_features": 4, "out_features": 4}},
     {"name": "fc2", "type": "Linear", "args": {"in_features": 4, "out_features": 4}}],
   "forward": [{"call": "fc1", "out": "h"}, {"op": "relu", "out": "h"},
               {"call": "fc2", "in": "h", "out": "y"}, {"op": "add", "in": ["y", "input"]},
               {"op": "relu"}]})",
                     11);
  const Tensor x = RandomTensor({3, 4}, 3);
  const auto h =
      Relu(RefLinear(Values(x), 3, 4, Param(model, "fc1.weight"), Param(model, "fc1.bias"), 4));
  auto y = RefLinear(h, 3, 4, Param(model, "fc2.weight"), Param(model, "fc2.bias"), 4);
  for (size_t i = 0; i < y.size(); ++i) y[i] += Values(x)[i];
  ExpectNear(Values(Output(model, x)), Relu(y));
}

TEST(ForwardTest, SharedModuleCalledTwiceUsesTheSameWeights) {
  auto model = Build(testing::kSharedSpec, 13);
  const Tensor x = RandomTensor({5, 4}, 4);
  auto h = Relu(RefLinear(Values(x), 5, 4, Param(model, "0.weight"), Param(model, "0.bias"), 8));
  // Child 4 is child 2: one set of weights, applied twice.
  h = Relu(RefLinear(h, 5, 8, Param(model, "2.weight"), Param(model, "2.bias"), 8));
  h = Relu(RefLinear(h, 5, 8, Param(model, "2.weight"), Param(model, "2.bias"), 8));
  ExpectNear(Values(Output(model, x)),
             RefLinear(h, 5, 8, Param(model, "6.weight"), Param(model, "6.bias"), 1));
}

TEST(ForwardTest, TiedEmbeddingAndHeadShareOneWeight) {
  auto model = Build(R"({"type": "TiedLM", "children": [
     {"name": "embed", "type": "Embedding", "args": {"num_embeddings": 10, "embedding_dim": 4}},
     {"name": "lm_head", "type": "Linear",
      "args": {"in_features": 4, "out_features": 10, "bias": false},
      "parameters": [{"name": "weight", "tie": "embed.weight"}]}],
   "forward": ["embed", "lm_head"]})",
                     17);
  const Tensor tokens = MakeTensor({2, 3}, {1, 4, 9, 0, 0, 2}, DType::kInt64);
  const Tensor y = Output(model, tokens);
  EXPECT_EQ(y.shape(), (Shape{2, 3, 10}));
  const auto w = Param(model, "embed.weight");
  std::vector<double> e;
  for (double t : Values(tokens)) {
    for (int j = 0; j < 4; ++j) e.push_back(w[static_cast<int>(t) * 4 + j]);
  }
  ExpectNear(Values(y), RefLinear(e, 6, 4, w, {}, 10));
}

// ----------------------------------------------------------------------------------------
// Module by module

TEST(ForwardTest, LinearHandlesLeadingDimensionsAndNoBias) {
  auto model =
      Build(R"({"type": "Linear", "args": {"in_features": 3, "out_features": 2, "bias": false}})");
  const Tensor x = RandomTensor({2, 2, 3}, 5);
  const Tensor y = Output(model, x);
  EXPECT_EQ(y.shape(), (Shape{2, 2, 2}));
  ExpectNear(Values(y), RefLinear(Values(x), 4, 3, Param(model, "weight"), {}, 2));
  // A 1-D input gives a 1-D output, as F.linear does.
  EXPECT_EQ(Output(model, RandomTensor({3}, 6)).shape(), (Shape{2}));
}

TEST(ForwardTest, Conv2dStridePaddingDilationGroups) {
  auto model = Build(R"({"type": "Conv2d", "args": {"in_channels": 4, "out_channels": 6,
      "kernel_size": 3, "stride": 2, "padding": 2, "dilation": 2, "groups": 2}})",
                     19);
  const Tensor x = RandomTensor({2, 4, 9, 8}, 7);
  const Conv conv{.n = 2,
                  .c = 4,
                  .h = 9,
                  .w = 8,
                  .o = 6,
                  .k = 3,
                  .stride = 2,
                  .pad_before = 2,
                  .pad_after = 2,
                  .dilation = 2,
                  .groups = 2};
  const Tensor y = Output(model, x);
  EXPECT_EQ(y.shape(), (Shape{2, 6, conv.out_h(), conv.out_w()}));
  ExpectNear(Values(y), RefConv(conv, Values(x), Param(model, "weight"), Param(model, "bias")));
}

TEST(ForwardTest, Conv2dPaddingSameWithEvenKernelPadsAfterMore) {
  auto model = Build(R"({"type": "Conv2d", "args": {"in_channels": 2, "out_channels": 3,
      "kernel_size": 4, "padding": "same", "bias": false}})",
                     23);
  const Tensor x = RandomTensor({1, 2, 6, 6}, 8);
  const Tensor y = Output(model, x);
  EXPECT_EQ(y.shape(), (Shape{1, 3, 6, 6}));
  const Conv conv{.n = 1, .c = 2, .h = 6, .w = 6, .o = 3, .k = 4, .pad_before = 1, .pad_after = 2};
  ExpectNear(Values(y), RefConv(conv, Values(x), Param(model, "weight"), {}));
}

TEST(ForwardTest, Conv2dUnbatchedInput) {
  auto model = Build(
      R"({"type": "Conv2d", "args": {"in_channels": 1, "out_channels": 2, "kernel_size": 3, "padding": "valid"}})",
      29);
  const Tensor x = RandomTensor({1, 5, 5}, 9);
  const Tensor y = Output(model, x);
  EXPECT_EQ(y.shape(), (Shape{2, 3, 3}));
  const Conv conv{.n = 1, .c = 1, .h = 5, .w = 5, .o = 2, .k = 3};
  ExpectNear(Values(y), RefConv(conv, Values(x), Param(model, "weight"), Param(model, "bias")));
}

TEST(ForwardTest, MaxPool2dCeilModeAndPadding) {
  auto pool = Build(R"({"type": "MaxPool2d", "args": {"kernel_size": 2, "ceil_mode": true}})");
  const Tensor x = MakeTensor({1, 1, 3, 3}, {1, 2, 3, 4, 5, 6, 7, 8, 9});
  const Tensor y = Output(pool, x);
  EXPECT_EQ(y.shape(), (Shape{1, 1, 2, 2}));
  EXPECT_EQ(Values(y), (std::vector<double>{5, 6, 8, 9}));
  auto padded =
      Build(R"({"type": "MaxPool2d", "args": {"kernel_size": 3, "stride": 1, "padding": 1}})");
  EXPECT_EQ(Values(Output(padded, MakeTensor({1, 2, 2}, {1, -2, -3, 4}))),
            (std::vector<double>{4, 4, 4, 4}));
}

TEST(ForwardTest, AvgPool2dCountIncludePadAndDivisorOverride) {
  const Tensor x = MakeTensor({1, 1, 2, 2}, {1, 2, 3, 4});
  auto include =
      Build(R"({"type": "AvgPool2d", "args": {"kernel_size": 2, "stride": 1, "padding": 1}})");
  const Tensor y = Output(include, x);
  EXPECT_EQ(y.shape(), (Shape{1, 1, 3, 3}));
  ExpectNear(Values(y), {0.25, 0.75, 0.5, 1.0, 2.5, 1.5, 0.75, 1.75, 1.0});
  auto exclude = Build(
      R"({"type": "AvgPool2d", "args": {"kernel_size": 2, "stride": 1, "padding": 1, "count_include_pad": false}})");
  ExpectNear(Values(Output(exclude, x)), {1, 1.5, 2, 2, 2.5, 3, 3, 3.5, 4});
  auto divisor =
      Build(R"({"type": "AvgPool2d", "args": {"kernel_size": 2, "divisor_override": 2}})");
  ExpectNear(Values(Output(divisor, x)), {5});
}

TEST(ForwardTest, AdaptiveAvgPool2dWithNoneKeepsThatSize) {
  auto pool = Build(R"({"type": "AdaptiveAvgPool2d", "args": {"output_size": [1, null]}})");
  const Tensor x = MakeTensor({1, 2, 3}, {1, 2, 3, 5, 6, 7});
  const Tensor y = Output(pool, x);
  EXPECT_EQ(y.shape(), (Shape{1, 1, 3}));
  ExpectNear(Values(y), {3, 4, 5});
  auto global = Build(R"({"type": "AdaptiveAvgPool2d", "args": {"output_size": 1}})");
  ExpectNear(Values(Output(global, x)), {4});
}

TEST(ForwardTest, BatchNorm2dEvalUsesRunningStatistics) {
  auto bn = Build(R"({"type": "BatchNorm2d", "args": {"num_features": 2}})");
  const Tensor x = RandomTensor({2, 2, 2, 2}, 10);
  auto result = RunForward(bn, x, /*training=*/false);
  ASSERT_TRUE(result.ok()) << result.status();
  // running_mean 0, running_var 1: y = x / sqrt(1 + eps).
  std::vector<double> expected = Values(x);
  for (double& v : expected) v /= std::sqrt(1 + 1e-5);
  ExpectNear(Values(result->outputs[0].tensor), expected);
  EXPECT_TRUE(result->buffer_updates.empty());
}

TEST(ForwardTest, BatchNorm2dTrainReturnsBufferUpdatesAndLeavesTheModelAlone) {
  auto bn = Build(R"({"type": "Net", "children": [
      {"name": "bn", "type": "BatchNorm2d", "args": {"num_features": 2, "momentum": 0.2}}],
      "forward": ["bn"]})");
  const Tensor x = RandomTensor({3, 2, 2, 2}, 11, -1, 3);
  auto result = RunForward(bn, x, /*training=*/true);
  ASSERT_TRUE(result.ok()) << result.status();
  const auto xv = Values(x);
  std::vector<double> mean(2), var(2), expected(xv.size());
  for (int c = 0; c < 2; ++c) {
    std::vector<double> values;
    for (int n = 0; n < 3; ++n)
      for (int i = 0; i < 4; ++i) values.push_back(xv[(n * 2 + c) * 4 + i]);
    for (double v : values) mean[c] += v / 12;
    for (double v : values) var[c] += (v - mean[c]) * (v - mean[c]);
    for (int n = 0; n < 3; ++n)
      for (int i = 0; i < 4; ++i) {
        const int at = (n * 2 + c) * 4 + i;
        expected[at] = (xv[at] - mean[c]) / std::sqrt(var[c] / 12 + 1e-5);
      }
  }
  ExpectNear(Values(result->outputs[0].tensor), expected, 1e-4);
  ASSERT_EQ(result->buffer_updates.size(), 3u);
  EXPECT_EQ(result->buffer_updates[0].name, "bn.running_mean");
  EXPECT_EQ(result->buffer_updates[1].name, "bn.running_var");
  EXPECT_EQ(result->buffer_updates[2].name, "bn.num_batches_tracked");
  ExpectNear(Values(result->buffer_updates[0].value), {0.2 * mean[0], 0.2 * mean[1]});
  ExpectNear(Values(result->buffer_updates[1].value),
             {0.8 + 0.2 * var[0] / 11, 0.8 + 0.2 * var[1] / 11});
  EXPECT_EQ(result->buffer_updates[2].value.dtype(), DType::kInt64);
  EXPECT_EQ(Values(result->buffer_updates[2].value), (std::vector<double>{1}));
  // The published buffers are untouched.
  EXPECT_EQ(Buf(bn, "bn.running_mean"), (std::vector<double>{0, 0}));
  EXPECT_EQ(Buf(bn, "bn.running_var"), (std::vector<double>{1, 1}));
  EXPECT_EQ(Buf(bn, "bn.num_batches_tracked"), (std::vector<double>{0}));
}

TEST(ForwardTest, BatchNormMomentumNoneAveragesCumulativelyAndSharedCallsChain) {
  // The same BatchNorm1d called twice: the second call sees the first call's update.
  auto net = Build(R"({"type": "Net", "children": [
      {"name": "bn", "type": "BatchNorm1d", "args": {"num_features": 1, "momentum": null, "affine": false}}],
      "forward": ["bn", "bn"]})");
  const Tensor x = MakeTensor({2, 1}, {1, 3});
  auto result = RunForward(net, x, true);
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->buffer_updates.size(), 3u);
  // First call: batch mean 2, unbiased var 2, factor 1/1 -> (2, 2). Its output is (-1, 1)
  // (up to eps); second call: mean 0, unbiased var ~2, factor 1/2 -> (1, ~2).
  ExpectNear(Values(result->buffer_updates[0].value), {1.0}, 1e-4);
  ExpectNear(Values(result->buffer_updates[1].value), {2.0}, 1e-4);
  EXPECT_EQ(Values(result->buffer_updates[2].value), (std::vector<double>{2}));
}

TEST(ForwardTest, BatchNormTrainNeedsMoreThanOneValuePerChannel) {
  auto bn = Build(R"({"type": "BatchNorm1d", "args": {"num_features": 3}})");
  auto result = RunForward(bn, RandomTensor({1, 3}, 12), true);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(result.status().message(),
              HasSubstr("Expected more than 1 value per channel when training, got input size "
                        "torch.Size([1, 3])"));
  EXPECT_TRUE(RunForward(bn, RandomTensor({1, 3}, 12), false).ok());
}

TEST(ForwardTest, BatchNormWithoutTrackingUsesBatchStatisticsInEval) {
  auto bn = Build(
      R"({"type": "BatchNorm1d", "args": {"num_features": 1, "track_running_stats": false, "affine": false}})");
  auto result = RunForward(bn, MakeTensor({2, 1}, {1, 3}), false);
  ASSERT_TRUE(result.ok()) << result.status();
  ExpectNear(Values(result->outputs[0].tensor), {-1, 1}, 1e-4);
  EXPECT_TRUE(result->buffer_updates.empty());
}

TEST(ForwardTest, LayerNormNormalisesTrailingDimensions) {
  auto ln = Build(R"({"type": "LayerNorm", "args": {"normalized_shape": [2, 2]}})");
  const Tensor x = MakeTensor({2, 2, 2}, {1, 2, 3, 4, -1, -1, 1, 1});
  const double s = std::sqrt(1.25 + 1e-5);
  ExpectNear(Values(Output(ln, x)),
             {-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s, -1 / std::sqrt(1 + 1e-5),
              -1 / std::sqrt(1 + 1e-5), 1 / std::sqrt(1 + 1e-5), 1 / std::sqrt(1 + 1e-5)});
}

TEST(ForwardTest, EmbeddingGathersRowsAndRejectsBadIndices) {
  auto emb = Build(
      R"({"type": "Embedding", "args": {"num_embeddings": 5, "embedding_dim": 2, "padding_idx": 0}})",
      31);
  const auto w = Param(emb, "weight");
  const Tensor y = Output(emb, MakeTensor({3}, {4, 0, 4}, DType::kInt64));
  EXPECT_EQ(y.shape(), (Shape{3, 2}));
  EXPECT_EQ(Values(y), (std::vector<double>{w[8], w[9], 0, 0, w[8], w[9]}));
  auto bad = RunForward(emb, MakeTensor({1}, {5}, DType::kInt64));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("index out of range in self"));
  auto floats = RunForward(emb, MakeTensor({1}, {1}));
  EXPECT_THAT(floats.status().message(),
              HasSubstr("Expected tensor for argument #1 'indices' to have one of the following "
                        "scalar types: Long, Int; but got torch.FloatTensor instead"));
}

TEST(ForwardTest, DropoutIsIdentityInEvalAndScaledMaskInTrain) {
  auto drop = Build(R"({"type": "Dropout", "args": {"p": 0.25}})");
  const Tensor x = MakeTensor({1000}, std::vector<double>(1000, 1.0));
  EXPECT_EQ(Values(Output(drop, x)), Values(x));
  auto a = RunForward(drop, x, true, 1), b = RunForward(drop, x, true, 1),
       c = RunForward(drop, x, true, 2);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  const auto va = Values(a->outputs[0].tensor);
  int kept = 0;
  for (double v : va) {
    if (v != 0) {
      EXPECT_FLOAT_EQ(v, 1 / 0.75);
      ++kept;
    }
  }
  EXPECT_GT(kept, 700);
  EXPECT_LT(kept, 800);
  EXPECT_EQ(va, Values(b->outputs[0].tensor)) << "the same seed gives the same mask";
  EXPECT_NE(va, Values(c->outputs[0].tensor));
}

TEST(ForwardTest, Activations) {
  const Tensor x = MakeTensor({5}, {-2, -0.5, 0, 0.5, 2});
  const auto xv = Values(x);
  auto expect = [&](const std::string& spec, auto fn) {
    std::vector<double> expected;
    for (double v : xv) expected.push_back(fn(v));
    ExpectNear(Values(Output(Build(spec), x)), expected, 1e-6);
  };
  expect(R"({"type": "ReLU"})", [](double v) { return std::max(v, 0.0); });
  expect(R"({"type": "GELU"})",
         [](double v) { return 0.5 * v * (1 + std::erf(v / std::sqrt(2.0))); });
  expect(R"({"type": "GELU", "args": {"approximate": "tanh"}})", [](double v) {
    return 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
  });
  expect(R"({"type": "SiLU"})", [](double v) { return v / (1 + std::exp(-v)); });
  expect(R"({"type": "Sigmoid"})", [](double v) { return 1 / (1 + std::exp(-v)); });
  expect(R"({"type": "Tanh"})", [](double v) { return std::tanh(v); });
  expect(R"({"type": "Identity"})", [](double v) { return v; });
}

TEST(ForwardTest, SoftmaxAndLogSoftmaxAlongDim) {
  const Tensor x = MakeTensor({2, 3}, {1, 2, 3, 0, 0, 0});
  const double z = std::exp(1) + std::exp(2) + std::exp(3);
  ExpectNear(Values(Output(Build(R"({"type": "Softmax", "args": {"dim": -1}})"), x)),
             {std::exp(1) / z, std::exp(2) / z, std::exp(3) / z, 1 / 3.0, 1 / 3.0, 1 / 3.0});
  ExpectNear(Values(Output(Build(R"({"type": "LogSoftmax", "args": {"dim": 1}})"), x)),
             {1 - std::log(z), 2 - std::log(z), 3 - std::log(z), -std::log(3), -std::log(3),
              -std::log(3)});
  // dim=None on a 2-D input picks dim 1 (nn.functional._get_softmax_dim).
  ExpectNear(Values(Output(Build(R"({"type": "Softmax"})"), x)),
             {std::exp(1) / z, std::exp(2) / z, std::exp(3) / z, 1 / 3.0, 1 / 3.0, 1 / 3.0});
  auto bad = RunForward(Build(R"({"type": "Softmax", "args": {"dim": 2}})"), x);
  EXPECT_THAT(bad.status().message(),
              HasSubstr("Dimension out of range (expected to be in range of [-2, 1], but got 2)"));
}

TEST(ForwardTest, FlattenAndSequentialNesting) {
  auto model = Build(R"({"type": "Sequential", "children": [
      {"type": "Flatten"},
      {"type": "Sequential", "children": [{"type": "Identity"}, {"type": "ReLU"}]}]})");
  const Tensor x = MakeTensor({2, 2, 2}, {1, -2, 3, -4, 5, -6, 7, -8});
  const Tensor y = Output(model, x);
  EXPECT_EQ(y.shape(), (Shape{2, 4}));
  EXPECT_EQ(Values(y), (std::vector<double>{1, 0, 3, 0, 5, 0, 7, 0}));
  EXPECT_EQ(Output(Build(R"({"type": "Flatten", "args": {"start_dim": 0}})"), x).shape(),
            (Shape{8}));
  EXPECT_EQ(Output(Build(R"({"type": "Sequential"})"), x).shape(), (Shape{2, 2, 2}));
}

TEST(ForwardTest, ModuleListAndModuleDictAreNotCallable) {
  for (const char* type : {"ModuleList", "ModuleDict"}) {
    auto model = Build(
        absl::StrCat(R"({"type": ")", type, R"(", "children": [{"name": "a", "type": "ReLU"}]})"));
    auto result = RunForward(model, MakeTensor({1}, {1}));
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(result.status().message(),
                HasSubstr(absl::StrCat("Module [", type,
                                       "] is missing the required \"forward\" function")));
  }
  // A ModuleList's children are called from the owner's program.
  auto owner = Build(R"({"type": "Net", "children": [
      {"name": "layers", "type": "ModuleList", "children": [{"type": "ReLU"}, {"type": "Tanh"}]}],
      "forward": [{"call": "layers"}]})");
  EXPECT_THAT(RunForward(owner, MakeTensor({1}, {1})).status().message(),
              HasSubstr("module 'layers' (ModuleList): Module [ModuleList] is missing"));
}

TEST(ForwardTest, CustomContainerWithoutProgramIsNotCallable) {
  auto model = Build(R"({"type": "Net", "children": [{"name": "a", "type": "ReLU"}]})");
  EXPECT_THAT(RunForward(model, MakeTensor({1}, {1})).status().message(),
              HasSubstr("Module [Net] is missing the required \"forward\" function"));
}

TEST(ForwardTest, ProgramOpsViewCatMulTranspose) {
  auto model = Build(R"({"type": "Net", "forward": [
      {"op": "transpose", "args": {"dim0": 0, "dim1": 1}, "out": "t"},
      {"op": "mul", "in": "t", "args": {"other": 2.0}, "out": "d"},
      {"op": "cat", "in": ["t", "d"], "args": {"dim": 1}},
      {"op": "reshape", "args": {"shape": [-1]}},
      {"op": "sub", "args": {"other": 1}}]})");
  const Tensor x = MakeTensor({2, 3}, {1, 2, 3, 4, 5, 6});
  // t = [[1,4],[2,5],[3,6]], d = 2t, cat -> [[1,4,2,8],[2,5,4,10],[3,6,6,12]], minus 1.
  EXPECT_EQ(Values(Output(model, x)), (std::vector<double>{0, 3, 1, 7, 1, 4, 3, 9, 2, 5, 5, 11}));
}

TEST(ForwardTest, ProgramBroadcastingAddAndSoftmax) {
  auto model = Build(R"({"type": "Net",
      "parameters": [{"name": "shift", "shape": [3], "init": {"values": [1, 2, 3]}}],
      "forward": [{"op": "add", "in": ["input", "bias"]}, {"op": "log_softmax", "args": {"dim": 1}}]})");
  const Tensor x = MakeTensor({2, 3}, {0, 0, 0, 1, 1, 1});
  const Tensor bias = MakeTensor({3}, {1, 2, 3});
  auto result = Forward(*model, {NamedTensor{"input", x}, NamedTensor{"bias", bias}}, {});
  ASSERT_TRUE(result.ok()) << result.status();
  const double lse = std::log(std::exp(1) + std::exp(2) + std::exp(3));
  ExpectNear(Values(result->outputs[0].tensor),
             {1 - lse, 2 - lse, 3 - lse, 1 - lse, 2 - lse, 3 - lse});
}

// ----------------------------------------------------------------------------------------
// Errors

TEST(ForwardTest, LinearShapeErrorNamesTheModuleAndUsesPyTorchText) {
  auto model = Build(R"({"type": "Sequential", "children": [
      {"type": "Linear", "args": {"in_features": 2, "out_features": 4}}]})");
  auto result = RunForward(model, RandomTensor({1, 3}, 13));
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(result.status().message(),
            "module '0' (Linear): mat1 and mat2 shapes cannot be multiplied (1x3 and 2x4); "
            "expected an input of shape [*, 2]");
}

TEST(ForwardTest, LinearDtypeMismatchUsesPyTorchText) {
  auto model = Build(R"({"type": "Linear", "args": {"in_features": 2, "out_features": 1}})");
  auto result = RunForward(model, MakeTensor({1, 2}, {1, 2}, DType::kFloat64));
  EXPECT_EQ(result.status().message(),
            "the root module (Linear): mat1 and mat2 must have the same dtype, but got Double "
            "and Float");
}

TEST(ForwardTest, Conv2dRankAndChannelErrors) {
  auto model = Build(kCnnSpec);
  auto rank = RunForward(model, RandomTensor({28, 28}, 14));
  EXPECT_EQ(rank.status().message(),
            "module 'conv1' (Conv2d): Expected 3D (unbatched) or 4D (batched) input to conv2d, "
            "but got input of size: [28, 28]");
  auto channels = RunForward(model, RandomTensor({1, 3, 28, 28}, 15));
  EXPECT_THAT(channels.status().message(),
              HasSubstr("Given groups=1, weight of size [20, 1, 5, 5], expected input[1, 3, 28, "
                        "28] to have 1 channels, but got 3 channels instead"));
  auto small = RunForward(model, RandomTensor({1, 1, 4, 4}, 16));
  EXPECT_THAT(small.status().message(),
              HasSubstr("Calculated padded input size per channel: (4 x 4). Kernel size: (5 x 5). "
                        "Kernel size can't be greater than actual input size"));
  // A 32x32 image gives 3920 features, which the program's view cannot make [-1, 2880].
  auto view = RunForward(model, RandomTensor({1, 1, 32, 32}, 17));
  EXPECT_EQ(view.status().message(),
            "the root module (CNN), forward step 3 (op 'view'): shape '[-1, 2880]' is invalid for "
            "input of size 3920");
}

TEST(ForwardTest, BatchNormAndPoolRankErrors) {
  EXPECT_THAT(RunForward(Build(R"({"type": "BatchNorm2d", "args": {"num_features": 2}})"),
                         RandomTensor({2, 2, 3}, 18))
                  .status()
                  .message(),
              HasSubstr("expected 4D input (got 3D input)"));
  EXPECT_THAT(RunForward(Build(R"({"type": "BatchNorm1d", "args": {"num_features": 3}})"),
                         RandomTensor({2, 2}, 18))
                  .status()
                  .message(),
              HasSubstr("running_mean should contain 2 elements not 3"));
  EXPECT_THAT(RunForward(Build(R"({"type": "MaxPool2d", "args": {"kernel_size": 2}})"),
                         RandomTensor({4, 4}, 18))
                  .status()
                  .message(),
              HasSubstr("non-empty 3D or 4D (batch mode) tensor expected for input"));
  EXPECT_THAT(
      RunForward(Build(R"({"type": "MaxPool2d", "args": {"kernel_size": 3}})"),
                 RandomTensor({1, 2, 2}, 18))
          .status()
          .message(),
      HasSubstr(
          "Given input size: (1x2x2). Calculated output size: (1x0x0). Output size is too small"));
  EXPECT_THAT(RunForward(Build(R"({"type": "LayerNorm", "args": {"normalized_shape": 4}})"),
                         RandomTensor({2, 3}, 18))
                  .status()
                  .message(),
              HasSubstr("Given normalized_shape=[4], expected input with shape [*, 4], but got "
                        "input of size[2, 3]"));
}

TEST(ForwardTest, BroadcastErrorUsesPyTorchText) {
  auto model = Build(R"({"type": "Net", "forward": [{"op": "add", "in": ["input", "other"]}]})");
  auto result = Forward(
      *model,
      {NamedTensor{"input", RandomTensor({2, 3}, 1)}, NamedTensor{"other", RandomTensor({4}, 2)}},
      {});
  EXPECT_THAT(result.status().message(),
              HasSubstr("The size of tensor a (3) must match the size of tensor b (4) at "
                        "non-singleton dimension 1"));
}

TEST(ForwardTest, InputsMustIncludeInput) {
  auto model = Build(R"({"type": "ReLU"})");
  EXPECT_EQ(Forward(*model, {NamedTensor{"x", RandomTensor({1}, 1)}}, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Forward(*model,
                    {NamedTensor{"input", RandomTensor({1}, 1)},
                     NamedTensor{"extra", RandomTensor({1}, 1)}},
                    {})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ForwardTest, ProgramReadingAnUnknownValueSaysSo) {
  auto model = Build(R"({"type": "Net", "forward": [{"op": "relu", "in": "h"}]})");
  EXPECT_THAT(RunForward(model, RandomTensor({1}, 1)).status().message(),
              HasSubstr("reads the value 'h', which no earlier step wrote"));
}

TEST(ForwardTest, ValidateForwardProgramChecksOpsAndArguments) {
  Module module("Net");
  ASSERT_TRUE(module.AddModule("fc", std::make_shared<Module>("Leaf")).ok());
  using json = nlohmann::json;
  EXPECT_TRUE(
      ValidateForwardProgram(
          json::parse(R"(["fc", {"op": "relu"}, {"call": "fc", "in": "input", "out": "h"}])"),
          module)
          .ok());
  EXPECT_THAT(ValidateForwardProgram(json::parse(R"([{"op": "rleu"}])"), module).message(),
              HasSubstr("step 0: unknown op 'rleu'"));
  EXPECT_THAT(
      ValidateForwardProgram(json::parse(R"([{"op": "view", "args": {"shape": "x"}}])"), module)
          .message(),
      HasSubstr("argument 'shape' must be a list of integers"));
  EXPECT_THAT(ValidateForwardProgram(json::parse(R"([{"op": "view"}])"), module).message(),
              HasSubstr("needs the argument 'shape'"));
  EXPECT_THAT(ValidateForwardProgram(json::parse(R"([{"op": "relu", "args": {"dim": 1}}])"), module)
                  .message(),
              HasSubstr("op 'relu' has no argument 'dim'"));
  EXPECT_THAT(ValidateForwardProgram(json::parse(R"(["missing"])"), module).message(),
              HasSubstr("Net has no child 'missing'"));
  EXPECT_THAT(ValidateForwardProgram(json::parse(R"([{"op": "add"}])"), module).message(),
              HasSubstr("takes two inputs, or one input and the argument 'other'"));
}

TEST(ForwardTest, SpecLoadRejectsBadForwardPrograms) {
  auto unknown = BuildModuleFromText(R"({"type": "Net", "forward": [{"op": "rleu"}]})", 0);
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.status().message(),
              HasSubstr("spec error at $.forward[0]: unknown op 'rleu'; the ops are relu, gelu"));
  auto bad_arg = BuildModuleFromText(
      R"({"type": "Net", "forward": [{"op": "flatten", "args": {"start_dim": "1"}}]})", 0);
  EXPECT_THAT(bad_arg.status().message(),
              HasSubstr("spec error at $.forward[0]: op 'flatten' argument 'start_dim' must be an "
                        "integer, got \"1\""));
}

TEST(ForwardTest, Float16ModelRunsInFloat16) {
  auto model = Build(
      R"({"type": "Linear", "args": {"in_features": 2, "out_features": 2, "dtype": "float16"}})",
      41);
  const Tensor x = MakeTensor({1, 2}, {0.5, -1}, DType::kFloat16);
  const Tensor y = Output(model, x);
  EXPECT_EQ(y.dtype(), DType::kFloat16);
  ExpectNear(Values(y), RefLinear(Values(x), 1, 2, Param(model, "weight"), Param(model, "bias"), 2),
             2e-3);
}

}  // namespace
}  // namespace paramd::core

namespace paramd::core {
namespace {

// Host memory and the CPU kernels posing as cuda:0, so that a model "in GPU memory" and
// its forward pass take the device path (copies in and out, the device's backend chosen
// from the model's tensors) where no GPU is present.
class HostAsDevice final : public kernels::Backend {
 public:
  Device device() const override { return Device::Cuda(0); }
  absl::StatusOr<void*> Allocate(size_t n) override { return cpu_.Allocate(n); }
  void Free(void* data, size_t n) override { cpu_.Free(data, n); }
  absl::Status CopyFromHost(void* d, const void* s, size_t n) override {
    return cpu_.CopyFromHost(d, s, n);
  }
  absl::Status CopyToHost(void* d, const void* s, size_t n) override {
    return cpu_.CopyToHost(d, s, n);
  }
  absl::Status CopyWithinDevice(void* d, const void* s, size_t n) override {
    return cpu_.CopyWithinDevice(d, s, n);
  }
  size_t bytes_in_use() const override { return cpu_.bytes_in_use(); }
  void SetMemoryLimit(size_t n) override { cpu_.SetMemoryLimit(n); }
  absl::Status Supports(const kernels::OpQuery& q) const override { return cpu_.Supports(q); }
  absl::Status Gemm(const kernels::GemmArgs& a) override { return cpu_.Gemm(a); }
  absl::Status Conv2d(const kernels::Conv2dArgs& a) override { return cpu_.Conv2d(a); }
  absl::Status MaxPool2d(const kernels::MaxPool2dArgs& a) override { return cpu_.MaxPool2d(a); }
  absl::Status Unary(const kernels::UnaryArgs& a) override { return cpu_.Unary(a); }
  absl::Status Binary(const kernels::BinaryArgs& a) override { return cpu_.Binary(a); }
  absl::Status Convert(const kernels::ConvertArgs& a) override { return cpu_.Convert(a); }

 private:
  kernels::CpuBackend cpu_;
};

// The seed's models in GPU memory give the CPU's outputs, and the outputs stay on the GPU.
// On a real GPU where one is present (tests/gpu/run.sh), on HostAsDevice otherwise.
TEST(ForwardOnGpuTest, SeedModelsMatchTheCpu) {
  HostAsDevice stand_in;
  const bool have_gpu = kernels::GetBackend(Device::Cuda(0)).ok();
  if (!have_gpu) kernels::SetBackendForTesting(Device::Cuda(0), &stand_in);
  absl::Cleanup restore = [&] {
    if (!have_gpu) kernels::SetBackendForTesting(Device::Cuda(0), nullptr);
  };
  const std::vector<std::pair<const char*, Tensor>> cases = {
      {kCnnSpec, RandomTensor({8, 1, 28, 28}, 4)},
      {testing::kSharedSpec, RandomTensor({16, 4}, 5)}};
  for (const auto& [spec, input] : cases) {
    auto cpu_model = Build(spec, 7);
    auto gpu_model = Build(spec, 7);
    ASSERT_TRUE(MoveUnpublishedTree(gpu_model, Device::Cuda(0)).ok());
    auto on_cpu = Forward(*cpu_model, {{"input", input}}, ForwardOptions{});
    auto on_gpu = Forward(*gpu_model, {{"input", input}}, ForwardOptions{});
    ASSERT_TRUE(on_cpu.ok()) << on_cpu.status();
    ASSERT_TRUE(on_gpu.ok()) << on_gpu.status();
    const Tensor& out = on_gpu->outputs[0].tensor;
    EXPECT_EQ(out.device(), Device::Cuda(0));
    const std::vector<double> expected = Values(on_cpu->outputs[0].tensor);
    const std::vector<double> actual = Values(out);
    ASSERT_EQ(actual.size(), expected.size());
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_NEAR(actual[i], expected[i], 1e-4 * (1 + std::abs(expected[i]))) << spec << " " << i;
    }
  }
}

}  // namespace
}  // namespace paramd::core
