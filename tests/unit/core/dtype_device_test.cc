#include <cmath>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "base/device.h"
#include "base/dtype.h"
#include "base/half.h"

namespace paramd::core {
namespace {

using ::testing::HasSubstr;

TEST(DTypeTest, AllTenDtypesHavePyTorchNamesAndSizes) {
  const std::pair<DType, std::pair<const char*, size_t>> expected[] = {
      {DType::kFloat32, {"float32", 4}}, {DType::kFloat64, {"float64", 8}},
      {DType::kFloat16, {"float16", 2}}, {DType::kBFloat16, {"bfloat16", 2}},
      {DType::kInt64, {"int64", 8}},     {DType::kInt32, {"int32", 4}},
      {DType::kInt16, {"int16", 2}},     {DType::kInt8, {"int8", 1}},
      {DType::kUInt8, {"uint8", 1}},     {DType::kBool, {"bool", 1}}};
  ASSERT_EQ(std::size(kAllDTypes), 10u);
  for (const auto& [dtype, info] : expected) {
    EXPECT_EQ(DTypeName(dtype), info.first);
    EXPECT_EQ(ElementSize(dtype), info.second);
    EXPECT_EQ(*ParseDType(info.first), dtype);
    EXPECT_EQ(*ParseDType(std::string("torch.") + info.first), dtype);
  }
}

TEST(DTypeTest, ParsesPyTorchAliasesAndRejectsUnknown) {
  EXPECT_EQ(*ParseDType("float"), DType::kFloat32);
  EXPECT_EQ(*ParseDType("double"), DType::kFloat64);
  EXPECT_EQ(*ParseDType("half"), DType::kFloat16);
  EXPECT_EQ(*ParseDType("long"), DType::kInt64);
  EXPECT_EQ(*ParseDType("int"), DType::kInt32);
  EXPECT_EQ(*ParseDType("short"), DType::kInt16);
  auto bad = ParseDType("float8");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("unknown dtype 'float8'"));
}

TEST(HalfTest, EveryHalfRoundTripsThroughFloat) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const uint16_t half = static_cast<uint16_t>(bits);
    const float value = HalfBitsToFloat(half);
    if (std::isnan(value)) {
      EXPECT_TRUE(std::isnan(HalfBitsToFloat(FloatToHalfBits(value)))) << bits;
      continue;
    }
    EXPECT_EQ(FloatToHalfBits(value), half) << bits;
  }
}

TEST(HalfTest, RoundsToNearestEven) {
  // 1 + 2^-11 lies halfway between 1 and the next half (1 + 2^-10): ties go to even (1).
  EXPECT_EQ(FloatToHalfBits(1.0f + 0x1p-11f), 0x3c00);
  // 1 + 3 * 2^-11 lies halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even).
  EXPECT_EQ(FloatToHalfBits(1.0f + 3 * 0x1p-11f), 0x3c02);
  // Just above the halfway point rounds up.
  EXPECT_EQ(FloatToHalfBits(1.0f + 0x1p-11f + 0x1p-20f), 0x3c01);
  EXPECT_EQ(FloatToHalfBits(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalfBits(65519.0f), 0x7bff);
  EXPECT_EQ(FloatToHalfBits(65520.0f), 0x7c00);  // halfway to 65536 rounds to inf
  EXPECT_EQ(FloatToHalfBits(-1e10f), 0xfc00);
  EXPECT_EQ(FloatToHalfBits(0x1p-24f), 0x0001);        // smallest subnormal
  EXPECT_EQ(FloatToHalfBits(0x1p-25f), 0x0000);        // halfway to zero: even
  EXPECT_EQ(FloatToHalfBits(0x1p-25f * 3.0f), 0x0002); // 1.5 ulp: ties to even (2)
  EXPECT_EQ(FloatToHalfBits(-0.0f), 0x8000);
}

TEST(HalfTest, KeepsInfinityAndNan) {
  EXPECT_EQ(FloatToHalfBits(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(FloatToHalfBits(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_TRUE(std::isnan(HalfBitsToFloat(FloatToHalfBits(std::nanf("")))));
  EXPECT_TRUE(std::isinf(HalfBitsToFloat(0x7c00)));
}

TEST(BFloat16Test, RoundsToNearestEvenAndKeepsSpecials) {
  for (uint32_t bits = 0; bits <= 0xffff; ++bits) {
    const float value = BFloat16BitsToFloat(static_cast<uint16_t>(bits));
    if (std::isnan(value)) continue;
    EXPECT_EQ(FloatToBFloat16Bits(value), bits);
  }
  EXPECT_EQ(FloatToBFloat16Bits(1.0f + 0x1p-8f), 0x3f80);           // tie to even (1.0)
  EXPECT_EQ(FloatToBFloat16Bits(1.0f + 3 * 0x1p-8f), 0x3f82);       // tie to even (up)
  EXPECT_EQ(FloatToBFloat16Bits(1.0f + 0x1p-8f + 0x1p-20f), 0x3f81);
  EXPECT_EQ(FloatToBFloat16Bits(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(FloatToBFloat16Bits(std::numeric_limits<float>::max()), 0x7f80);  // rounds to inf
  EXPECT_TRUE(std::isnan(BFloat16BitsToFloat(FloatToBFloat16Bits(std::nanf("")))));
}

TEST(DeviceTest, ParsesAndPrintsAsTorchDevice) {
  EXPECT_EQ(ParseDevice("cpu")->ToString(), "cpu");
  EXPECT_EQ(ParseDevice("cuda")->ToString(), "cuda");
  EXPECT_EQ(ParseDevice("cuda:1")->ToString(), "cuda:1");
  EXPECT_EQ(ParseDevice("cuda:1")->index, 1);
  EXPECT_TRUE(ParseDevice("cuda")->is_cuda());
  EXPECT_EQ(ParseDevice("cuda")->index, -1);
  EXPECT_EQ(ParseDevice("cpu:0")->ToString(), "cpu:0");
}

TEST(DeviceTest, RejectsMalformedDevices) {
  for (const char* text : {"gpu", "cuda:-1", "cuda:", "cuda:x", "CUDA", "", "cuda:1:2"}) {
    auto device = ParseDevice(text);
    EXPECT_EQ(device.status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
  EXPECT_THAT(ParseDevice("gpu").status().message(),
              HasSubstr("Expected one of cpu, cuda device type at start of device string: gpu"));
}

}  // namespace
}  // namespace paramd::core
