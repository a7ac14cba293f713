#include "server/core/tensor.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/core/test_util.h"

namespace paramd::core {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::MakeTensor;
using testing::Values;

TEST(TensorTest, EmptyIsContiguousWithRowMajorStrides) {
  auto tensor = Tensor::Empty(DType::kFloat32, {2, 3, 4});
  ASSERT_TRUE(tensor.ok());
  EXPECT_EQ(tensor->strides(), (Shape{12, 4, 1}));
  EXPECT_EQ(tensor->numel(), 24);
  EXPECT_EQ(tensor->nbytes(), 96u);
  EXPECT_TRUE(tensor->is_contiguous());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(tensor->data()) % 64, 0u);
}

TEST(TensorTest, ScalarAndZeroSizeShapes) {
  auto scalar = Tensor::Full(DType::kInt64, {}, 7);
  ASSERT_TRUE(scalar.ok());
  EXPECT_EQ(scalar->numel(), 1);
  EXPECT_EQ(scalar->dim(), 0);
  EXPECT_THAT(Values(*scalar), ElementsAre(7));
  auto empty = Tensor::Empty(DType::kFloat32, {0, 5});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(empty->numel(), 0);
  EXPECT_TRUE(Values(*empty).empty());
}

TEST(TensorTest, HugeShapesAreRejectedNotAllocated) {
  auto huge = Tensor::Empty(DType::kFloat32, {int64_t{1} << 40, int64_t{1} << 40});
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument);
  auto negative = Tensor::Empty(DType::kFloat32, {2, -1});
  EXPECT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TensorTest, FromBytesChecksTheByteCount) {
  std::vector<uint8_t> bytes(7);
  auto tensor = Tensor::FromBytes(DType::kFloat32, {2}, bytes);
  EXPECT_EQ(tensor.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tensor.status().message(), HasSubstr("needs 8 bytes, got 7"));
}

TEST(TensorTest, SelectAndSliceAreViews) {
  Tensor t = MakeTensor({2, 3}, {0, 1, 2, 3, 4, 5});
  auto row = t.Select(1);
  ASSERT_TRUE(row.ok());
  EXPECT_EQ(row->storage(), t.storage());
  EXPECT_THAT(Values(*row), ElementsAre(3, 4, 5));
  auto block = t.Slice({{0, 2}, {1, 3}});
  ASSERT_TRUE(block.ok());
  EXPECT_FALSE(block->is_contiguous());
  EXPECT_THAT(Values(*block), ElementsAre(1, 2, 4, 5));
  EXPECT_EQ(t.Select(2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.Slice({{0, 3}}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(t.Slice({{0, 1}, {0, 1}, {0, 1}}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TensorTest, CopyConvertCastsAsCopyDoes) {
  Tensor floats = MakeTensor({5}, {-1.7, -0.2, 0.0, 2.9, 300.5}, DType::kFloat64);
  auto ints = ConvertTo(floats, DType::kInt64, Device{});
  ASSERT_TRUE(ints.ok());
  EXPECT_THAT(Values(*ints), ElementsAre(-1, 0, 0, 2, 300));  // truncation toward zero
  auto bools = ConvertTo(floats, DType::kBool, Device{});
  EXPECT_THAT(Values(*bools), ElementsAre(1, 1, 0, 1, 1));
  auto bytes = ConvertTo(MakeTensor({1}, {300}, DType::kInt32), DType::kUInt8, Device{});
  EXPECT_THAT(Values(*bytes), ElementsAre(44));  // integer narrowing wraps
  auto halves = ConvertTo(MakeTensor({2}, {1.0 + 0x1p-11, 65520.0}), DType::kFloat16, Device{});
  EXPECT_THAT(Values(*halves), ElementsAre(1.0, INFINITY));
  auto nan_to_int = ConvertTo(MakeTensor({1}, {NAN}), DType::kInt32, Device{});
  EXPECT_THAT(Values(*nan_to_int), ElementsAre(0));
}

TEST(TensorTest, CopyConvertHandlesStridesAndBroadcastsOneElement) {
  Tensor source = MakeTensor({2, 2}, {1, 2, 3, 4});
  Tensor transposed(source.storage(), 0, {2, 2}, {1, 2}, DType::kFloat32);
  auto copy = Clone(transposed);
  ASSERT_TRUE(copy.ok());
  EXPECT_TRUE(copy->is_contiguous());
  EXPECT_THAT(Values(*copy), ElementsAre(1, 3, 2, 4));

  Tensor destination = MakeTensor({2, 3}, {0, 0, 0, 0, 0, 0});
  ASSERT_TRUE(CopyConvert(MakeTensor({}, {9}), *destination.Slice({{1, 2}, {1, 3}})).ok());
  EXPECT_THAT(Values(destination), ElementsAre(0, 0, 0, 0, 9, 9));
  EXPECT_EQ(CopyConvert(MakeTensor({3}, {1, 2, 3}), destination).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TensorTest, TorchSizeStringMatchesPyTorch) {
  EXPECT_EQ(TorchSizeString({3, 4}), "torch.Size([3, 4])");
  EXPECT_EQ(TorchSizeString({}), "torch.Size([])");
}

}  // namespace
}  // namespace paramd::core
