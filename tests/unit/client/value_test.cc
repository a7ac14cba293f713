#include "client/cli/value.h"

#include <cmath>
#include <cstring>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace paramd::cli {
namespace {

using client::DType;
using client::HostTensor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ParseValueJsonTest, ScalarIsZeroDim) {
  auto tensor = ParseValueJson("100", DType::kFloat32);
  ASSERT_TRUE(tensor.ok()) << tensor.status();
  EXPECT_TRUE(tensor->shape.empty());
  EXPECT_EQ(tensor->dtype, DType::kFloat32);
  EXPECT_THAT(tensor->ToDoubles(), ElementsAre(100.0));
}

TEST(ParseValueJsonTest, NestedListsGiveTheShape) {
  auto tensor = ParseValueJson("[[1, 2.5], [-3, 4]]", DType::kFloat64);
  ASSERT_TRUE(tensor.ok()) << tensor.status();
  EXPECT_THAT(tensor->shape, ElementsAre(2, 2));
  EXPECT_THAT(tensor->ToDoubles(), ElementsAre(1, 2.5, -3, 4));
}

TEST(ParseValueJsonTest, EmptyLists) {
  auto empty = ParseValueJson("[]", DType::kFloat32);
  ASSERT_TRUE(empty.ok());
  EXPECT_THAT(empty->shape, ElementsAre(0));
  auto rows = ParseValueJson("[[], []]", DType::kFloat32);
  ASSERT_TRUE(rows.ok());
  EXPECT_THAT(rows->shape, ElementsAre(2, 0));
  EXPECT_TRUE(rows->data.empty());
}

TEST(ParseValueJsonTest, ConvertsToTheTargetDType) {
  auto half = ParseValueJson("[0.1]", DType::kFloat16);
  ASSERT_TRUE(half.ok());
  uint16_t bits;
  std::memcpy(&bits, half->data.data(), 2);
  EXPECT_EQ(bits, 0x2e66);
  auto truncated = ParseValueJson("[2.9, -2.9]", DType::kInt32);
  ASSERT_TRUE(truncated.ok());
  EXPECT_THAT(truncated->ToDoubles(), ElementsAre(2, -2));
  auto flags = ParseValueJson("[true, false, 2]", DType::kBool);
  ASSERT_TRUE(flags.ok());
  EXPECT_EQ(flags->data, std::string("\x01\x00\x01", 3));
  auto floats = ParseValueJson("[true, 3]", DType::kFloat32);
  ASSERT_TRUE(floats.ok());
  EXPECT_THAT(floats->ToDoubles(), ElementsAre(1, 3));
}

TEST(ParseValueJsonTest, LargeIntegersStayExact) {
  auto tensor = ParseValueJson("[9007199254740993, -9223372036854775808]", DType::kInt64);
  ASSERT_TRUE(tensor.ok());
  int64_t values[2];
  std::memcpy(values, tensor->data.data(), sizeof(values));
  EXPECT_EQ(values[0], int64_t{9007199254740993});
  EXPECT_EQ(values[1], std::numeric_limits<int64_t>::min());
}

TEST(ParseValueJsonTest, NanAndInfinityAsStrings) {
  auto tensor = ParseValueJson(R"(["nan", "inf", "-inf"])", DType::kFloat32);
  ASSERT_TRUE(tensor.ok()) << tensor.status();
  std::vector<double> values = tensor->ToDoubles();
  EXPECT_TRUE(std::isnan(values[0]));
  EXPECT_EQ(values[1], INFINITY);
  EXPECT_EQ(values[2], -INFINITY);
}

TEST(ParseValueJsonTest, RejectsBadInput) {
  for (absl::string_view bad : {"", "[1, 2", "abc", "[1, [2]]", "[[1], 2]", "[[1, 2], [3]]",
                                "[[], [1]]", "[[1], []]", R"(["x"])", R"({"a": 1})", "null"}) {
    auto tensor = ParseValueJson(bad, DType::kFloat32);
    EXPECT_FALSE(tensor.ok()) << bad;
    if (!tensor.ok()) {
      EXPECT_EQ(tensor.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    }
  }
  EXPECT_THAT(ParseValueJson("[1, [2]]", DType::kFloat32).status().message(), HasSubstr("ragged"));
  EXPECT_THAT(ParseValueJson("nope", DType::kFloat32).status().message(), HasSubstr("is not JSON"));
}

TEST(TensorValuesJsonTest, NestsByShape) {
  auto matrix = HostTensor::FromDoubles(DType::kFloat32, {2, 2}, {1, 2.5, -3, 4});
  ASSERT_TRUE(matrix.ok());
  EXPECT_EQ(TensorValuesJson(*matrix).dump(), "[[1.0,2.5],[-3.0,4.0]]");
  auto scalar = HostTensor::FromDoubles(DType::kInt64, {}, {7});
  ASSERT_TRUE(scalar.ok());
  EXPECT_EQ(TensorValuesJson(*scalar).dump(), "7");
  auto flags = HostTensor::FromDoubles(DType::kBool, {2}, {1, 0});
  ASSERT_TRUE(flags.ok());
  EXPECT_EQ(TensorValuesJson(*flags).dump(), "[true,false]");
  auto special = HostTensor::FromDoubles(DType::kFloat64, {2}, {NAN, -INFINITY});
  ASSERT_TRUE(special.ok());
  EXPECT_EQ(TensorValuesJson(*special).dump(), R"(["nan","-inf"])");
  auto empty = HostTensor::FromDoubles(DType::kFloat32, {0, 2}, {});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(TensorValuesJson(*empty).dump(), "[]");
}

TEST(TensorValuesJsonTest, UInt8ValuesWrapLikeAnIntegerCast) {
  auto original = ParseValueJson("[[1, -2], [3, 255]]", DType::kUInt8);
  ASSERT_TRUE(original.ok());
  EXPECT_EQ(TensorValuesJson(*original).dump(), "[[1,254],[3,255]]");
}

}  // namespace
}  // namespace paramd::cli
