#include "paramd/tensor.h"

#include <cmath>
#include <cstring>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace paramd::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A tensor of `dtype` and `shape` with no data yet.
HostTensor Meta(DType dtype, std::vector<int64_t> shape) {
  HostTensor tensor;
  tensor.dtype = dtype;
  tensor.shape = std::move(shape);
  return tensor;
}

template <typename T>
T ElementAt(const HostTensor& tensor, size_t index) {
  T value;
  std::memcpy(&value, tensor.data.data() + index * sizeof(T), sizeof(T));
  return value;
}

TEST(DTypeTest, NamesAndSizesMatchPyTorch) {
  EXPECT_EQ(DTypeName(DType::kFloat32), "float32");
  EXPECT_EQ(DTypeName(DType::kBFloat16), "bfloat16");
  EXPECT_EQ(DTypeName(DType::kUInt8), "uint8");
  EXPECT_EQ(DTypeName(DType::kBool), "bool");
  EXPECT_EQ(ElementSize(DType::kFloat64), 8u);
  EXPECT_EQ(ElementSize(DType::kFloat16), 2u);
  EXPECT_EQ(ElementSize(DType::kInt32), 4u);
  EXPECT_EQ(ElementSize(DType::kBool), 1u);
}

TEST(DTypeTest, ParseAcceptsNamesTorchPrefixAndAliases) {
  for (DType dtype :
       {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16, DType::kInt64,
        DType::kInt32, DType::kInt16, DType::kInt8, DType::kUInt8, DType::kBool}) {
    auto parsed = ParseDType(DTypeName(dtype));
    ASSERT_TRUE(parsed.ok()) << DTypeName(dtype);
    EXPECT_EQ(*parsed, dtype);
  }
  EXPECT_EQ(*ParseDType("torch.float16"), DType::kFloat16);
  EXPECT_EQ(*ParseDType("float"), DType::kFloat32);
  EXPECT_EQ(*ParseDType("double"), DType::kFloat64);
  EXPECT_EQ(*ParseDType("half"), DType::kFloat16);
  EXPECT_EQ(*ParseDType("long"), DType::kInt64);
  EXPECT_EQ(*ParseDType("int"), DType::kInt32);
  EXPECT_EQ(*ParseDType("short"), DType::kInt16);
  auto bad = ParseDType("complex64");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("complex64"));
}

TEST(HostTensorTest, NumelAndNbytes) {
  HostTensor scalar;
  EXPECT_EQ(scalar.numel(), 1);
  EXPECT_EQ(scalar.nbytes(), 4u);
  HostTensor matrix = Meta(DType::kFloat16, {2, 3});
  EXPECT_EQ(matrix.numel(), 6);
  EXPECT_EQ(matrix.nbytes(), 12u);
  HostTensor empty = Meta(DType::kInt64, {0, 5});
  EXPECT_EQ(empty.numel(), 0);
  EXPECT_EQ(empty.nbytes(), 0u);
}

TEST(HostTensorTest, FromDoublesRoundTripsEveryDType) {
  const std::vector<double> values = {0, 1, -2, 3};
  for (DType dtype : {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16,
                      DType::kInt64, DType::kInt32, DType::kInt16, DType::kInt8}) {
    auto tensor = HostTensor::FromDoubles(dtype, {2, 2}, values);
    ASSERT_TRUE(tensor.ok()) << DTypeName(dtype);
    EXPECT_EQ(tensor->data.size(), 4 * ElementSize(dtype));
    EXPECT_EQ(tensor->ToDoubles(), values) << DTypeName(dtype);
  }
}

TEST(HostTensorTest, FromDoublesLittleEndianLayout) {
  auto tensor = HostTensor::FromDoubles(DType::kInt32, {2}, {1, 258});
  ASSERT_TRUE(tensor.ok());
  EXPECT_EQ(tensor->data, std::string("\x01\x00\x00\x00\x02\x01\x00\x00", 8));
}

TEST(HostTensorTest, HalfAndBFloat16RoundToNearestEven) {
  // 1 + 2^-11 lies halfway between float16's 1 and 1 + 2^-10: ties go to the even 1.
  auto half = HostTensor::FromDoubles(DType::kFloat16, {3}, {1.0 + 0x1p-11, 0.1, 65504.0});
  ASSERT_TRUE(half.ok());
  EXPECT_EQ(ElementAt<uint16_t>(*half, 0), 0x3c00);
  EXPECT_EQ(ElementAt<uint16_t>(*half, 1), 0x2e66);  // torch.tensor(0.1).half()
  EXPECT_EQ(ElementAt<uint16_t>(*half, 2), 0x7bff);
  auto bf16 = HostTensor::FromDoubles(DType::kBFloat16, {2}, {1.0 + 0x1p-8, 0.1});
  ASSERT_TRUE(bf16.ok());
  EXPECT_EQ(ElementAt<uint16_t>(*bf16, 0), 0x3f80);
  EXPECT_EQ(ElementAt<uint16_t>(*bf16, 1), 0x3dcd);  // torch.tensor(0.1).bfloat16()
  EXPECT_THAT(bf16->ToDoubles(), ElementsAre(1.0, 0.10009765625));
}

TEST(HostTensorTest, IntegerCastsTruncateAndStayDefined) {
  auto ints = HostTensor::FromDoubles(DType::kInt64, {4}, {2.7, -2.7, std::nan(""), 1e300});
  ASSERT_TRUE(ints.ok());
  EXPECT_EQ(ElementAt<int64_t>(*ints, 0), 2);
  EXPECT_EQ(ElementAt<int64_t>(*ints, 1), -2);
  EXPECT_EQ(ElementAt<int64_t>(*ints, 2), 0);
  EXPECT_EQ(ElementAt<int64_t>(*ints, 3), std::numeric_limits<int64_t>::max());
  auto bytes = HostTensor::FromDoubles(DType::kUInt8, {2}, {255, 256});
  ASSERT_TRUE(bytes.ok());
  EXPECT_THAT(bytes->ToDoubles(), ElementsAre(255, 0));  // wraps like an integer cast
}

TEST(HostTensorTest, BoolIsNonZero) {
  auto flags = HostTensor::FromDoubles(DType::kBool, {3}, {0, 0.5, -3});
  ASSERT_TRUE(flags.ok());
  EXPECT_EQ(flags->data, std::string("\x00\x01\x01", 3));
  EXPECT_THAT(flags->ToDoubles(), ElementsAre(0, 1, 1));
}

TEST(HostTensorTest, FromDoublesScalarAndEmpty) {
  auto scalar = HostTensor::FromDoubles(DType::kFloat64, {}, {4.5});
  ASSERT_TRUE(scalar.ok());
  EXPECT_TRUE(scalar->shape.empty());
  EXPECT_THAT(scalar->ToDoubles(), ElementsAre(4.5));
  auto empty = HostTensor::FromDoubles(DType::kFloat32, {0, 3}, {});
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->data.empty());
}

TEST(HostTensorTest, FromDoublesRejectsCountMismatchAndNegativeDims) {
  auto mismatch = HostTensor::FromDoubles(DType::kFloat32, {2, 2}, {1, 2, 3});
  ASSERT_FALSE(mismatch.ok());
  EXPECT_EQ(mismatch.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mismatch.status().message(), HasSubstr("4 elements but 3 values"));
  auto negative = HostTensor::FromDoubles(DType::kFloat32, {-1}, {});
  ASSERT_FALSE(negative.ok());
  EXPECT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(HostTensorTest, ToDoublesReadsNoFurtherThanTheData) {
  HostTensor short_tensor = Meta(DType::kFloat32, {4});
  short_tensor.data = std::string(8, '\0');
  EXPECT_EQ(short_tensor.ToDoubles().size(), 2u);
}

}  // namespace
}  // namespace paramd::client
