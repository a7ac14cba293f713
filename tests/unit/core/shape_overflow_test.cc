// Products of client-given dimensions never wrap: view/reshape/flatten/cat in forward
// programs, tensor shapes (spec parameters, headers), with PyTorch's text where it has one.
#include <cstdint>
#include <limits>

#include "base/checked_math.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/forward.h"
#include "server/core/spec.h"
#include "server/core/tensor.h"
#include "tests/unit/core/test_util.h"

namespace paramd::core {
namespace {

using testing::Build;
using ::testing::HasSubstr;
using testing::MakeTensor;

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

absl::StatusOr<ForwardResult> RunProgram(const std::string& steps, const Tensor& input) {
  auto model = Build(absl::StrCat(R"({"type": "Net", "forward": )", steps, "}"));
  return Forward(*model, {NamedTensor{"input", input}}, ForwardOptions{});
}

TEST(CheckedMathTest, ProductsDetectOverflowAndZeroWins) {
  EXPECT_EQ(CheckedMul(3, 4), 12);
  EXPECT_EQ(CheckedMul(kMax, 2), std::nullopt);
  EXPECT_EQ(CheckedAdd(kMax, 1), std::nullopt);
  EXPECT_EQ(CheckedProduct({}), 1);
  EXPECT_EQ(CheckedProduct({2, 3, 4}), 24);
  EXPECT_EQ(CheckedProduct({int64_t{1} << 62, 8}), std::nullopt);
  EXPECT_EQ(CheckedProduct({int64_t{2305843009213693953}, 8}), std::nullopt);
  // The exact product is 0 wherever the zero stands.
  EXPECT_EQ(CheckedProduct({int64_t{1} << 62, int64_t{1} << 62, 0}), 0);
  EXPECT_EQ(CheckedProduct({0, int64_t{1} << 62, int64_t{1} << 62}), 0);
}

// 2305843009213693953 * 8 wraps to 8 in 64 bits: the view used to turn 8 elements into
// shape [2305843009213693953, 8].
TEST(ShapeOverflowTest, ViewAndReshapeWithHugeDimsAreRefusedWithPyTorchText) {
  const Tensor x = MakeTensor({8}, {1, 2, 3, 4, 5, 6, 7, 8});
  for (const char* op : {"view", "reshape"}) {
    auto result = RunProgram(
        absl::StrCat(R"([{"op": ")", op, R"(", "args": {"shape": [2305843009213693953, 8]}}])"), x);
    ASSERT_FALSE(result.ok()) << op << " gave shape "
                              << ShapeString(result->outputs[0].tensor.shape());
    EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(result.status().message(),
                HasSubstr("shape '[2305843009213693953, 8]' is invalid for input of size 8"));
  }
  // With an inferred dimension: the known part overflows to 0 or a divisor of the size.
  auto inferred = RunProgram(
      R"([{"op": "view", "args": {"shape": [4611686018427387904, 4, -1]}}])", x);
  ASSERT_FALSE(inferred.ok());
  EXPECT_THAT(inferred.status().message(),
              HasSubstr("shape '[4611686018427387904, 4, -1]' is invalid for input of size 8"));
  auto wrapped_to_two = RunProgram(
      R"([{"op": "view", "args": {"shape": [4611686018427387905, 2, -1]}}])", x);
  ASSERT_FALSE(wrapped_to_two.ok());
  EXPECT_EQ(wrapped_to_two.status().code(), absl::StatusCode::kInvalidArgument);
  // Ordinary views still work.
  auto fine = RunProgram(R"([{"op": "view", "args": {"shape": [2, -1]}}])", x);
  ASSERT_TRUE(fine.ok()) << fine.status();
  EXPECT_EQ(fine->outputs[0].tensor.shape(), (Shape{2, 4}));
}

TEST(ShapeOverflowTest, EmptyInputCannotTakeDimsWhoseStridesOverflow) {
  auto empty = Tensor::Empty(DType::kFloat32, {0});
  ASSERT_TRUE(empty.ok());
  auto result = RunProgram(
      R"([{"op": "view", "args": {"shape": [0, 4611686018427387904, 4611686018427387904]}}])",
      *empty);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(result.status().message(), HasSubstr("Stride calculation overflowed"));
  // A small empty view is fine.
  auto fine = RunProgram(R"([{"op": "view", "args": {"shape": [0, 3]}}])", *empty);
  ASSERT_TRUE(fine.ok()) << fine.status();
}

TEST(ShapeOverflowTest, CheckedNumelIsExactWhateverTheOrder) {
  EXPECT_EQ(CheckedNumel({2305843009213693953, 8}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckedNumel({8, 2305843009213693953}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*CheckedNumel({0, 5, 7}), 0);
  EXPECT_EQ(*CheckedNumel({5, 7, 0}), 0);
  EXPECT_THAT(CheckedNumel({int64_t{1} << 62, int64_t{1} << 62, 0}).status().message(),
              HasSubstr("Stride calculation overflowed"));
  EXPECT_EQ(CheckedNumel({int64_t{1} << 61}, 8).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*CheckedNumel({int64_t{1} << 40, 4}, 4), int64_t{1} << 42);
}

TEST(ShapeOverflowTest, SpecParameterShapesThatOverflowAreRefused) {
  auto built = BuildModuleFromText(
      R"({"type": "Net", "parameters": [{"name": "w", "shape": [2305843009213693953, 8]}]})", 0);
  ASSERT_FALSE(built.ok());
  EXPECT_EQ(built.status().code(), absl::StatusCode::kInvalidArgument);
  built = BuildModuleFromText(
      R"({"type": "Net", "parameters": [{"name": "w", "shape": [4611686018427387904, 4611686018427387904, 0]}]})",
      0);
  ASSERT_FALSE(built.ok());
  EXPECT_EQ(built.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ShapeOverflowTest, CatOfEmptyTensorsWhoseSizesAddPast63BitsIsRefused) {
  auto empty = Tensor::Empty(DType::kFloat32, {0});
  ASSERT_TRUE(empty.ok());
  auto result = RunProgram(R"([
      {"op": "view", "args": {"shape": [0, 4611686018427387904]}, "out": "a"},
      {"op": "cat", "in": ["a", "a"], "args": {"dim": 1}}])",
                           *empty);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
}

// Output sizes multiply and add kernel, stride, padding and dilation: values past 2^31 are
// refused when the layer is built, before any arithmetic on them can wrap.
TEST(ShapeOverflowTest, HugeWindowArgumentsAreRefusedAtConstruction) {
  for (const char* spec :
       {R"({"type": "MaxPool2d", "args": {"kernel_size": 4611686018427387904, "dilation": 4}})",
        R"({"type": "AvgPool2d", "args": {"kernel_size": 2, "stride": 9223372036854775807}})",
        R"({"type": "Conv2d", "args": {"in_channels": 1, "out_channels": 1, "kernel_size": 1,
            "dilation": 4611686018427387904}})",
        R"({"type": "Conv1d", "args": {"in_channels": 1, "out_channels": 1, "kernel_size": 1,
            "padding": 9223372036854775807}})"}) {
    auto built = BuildModuleFromText(spec, 0);
    ASSERT_FALSE(built.ok()) << spec;
    EXPECT_EQ(built.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(built.status().message(), HasSubstr("window sizes go up to 2147483647"));
  }
  EXPECT_TRUE(BuildModuleFromText(R"({"type": "MaxPool2d", "args": {"kernel_size": 3}})", 0).ok());
}

TEST(ShapeOverflowTest, FlattenOfAnOrdinaryTensorStillWorks) {
  const Tensor x = MakeTensor({2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  auto result = RunProgram(R"([{"op": "flatten", "args": {"start_dim": 1}}])", x);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->outputs[0].tensor.shape(), (Shape{2, 4}));
}

}  // namespace
}  // namespace paramd::core
