#include "client/cli/region.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace paramd::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

client::Region Resolve(absl::string_view text, const std::vector<int64_t>& shape) {
  absl::StatusOr<KeyRegion> parsed = ParseKeyRegion(text);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  if (!parsed.ok()) return {};
  absl::StatusOr<client::Region> region = ResolveRegion(parsed->subscripts, shape);
  EXPECT_TRUE(region.ok()) << region.status();
  return region.ok() ? *region : client::Region{};
}

TEST(ParseKeyRegionTest, KeyWithoutRegion) {
  auto parsed = ParseKeyRegion("linear1.weight");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->key, "linear1.weight");
  EXPECT_TRUE(parsed->subscripts.empty());
  EXPECT_FALSE(parsed->NeedsShape());
}

TEST(ParseKeyRegionTest, IndicesAndSlices) {
  auto parsed = ParseKeyRegion("2.weight[0, 1:3, :, -1, 2:, :4]");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->key, "2.weight");
  ASSERT_EQ(parsed->subscripts.size(), 6u);
  EXPECT_TRUE(parsed->subscripts[0].is_index);
  EXPECT_EQ(parsed->subscripts[0].index, 0);
  EXPECT_FALSE(parsed->subscripts[1].is_index);
  EXPECT_EQ(parsed->subscripts[1].start, 1);
  EXPECT_EQ(parsed->subscripts[1].stop, 3);
  EXPECT_EQ(parsed->subscripts[2].start, std::nullopt);
  EXPECT_EQ(parsed->subscripts[2].stop, std::nullopt);
  EXPECT_EQ(parsed->subscripts[3].index, -1);
  EXPECT_EQ(parsed->subscripts[4].start, 2);
  EXPECT_EQ(parsed->subscripts[4].stop, std::nullopt);
  EXPECT_EQ(parsed->subscripts[5].start, std::nullopt);
  EXPECT_EQ(parsed->subscripts[5].stop, 4);
  EXPECT_TRUE(parsed->NeedsShape());
}

TEST(ParseKeyRegionTest, ClosedNonNegativeSubscriptsNeedNoShape) {
  auto parsed = ParseKeyRegion("w[0,0]");
  ASSERT_TRUE(parsed.ok());
  EXPECT_FALSE(parsed->NeedsShape());
  auto region = ResolveRegionWithoutShape(parsed->subscripts);
  ASSERT_TRUE(region.ok());
  EXPECT_THAT(*region, ElementsAre(Pair(0, 1), Pair(0, 1)));

  auto open = ParseKeyRegion("w[1:]");
  ASSERT_TRUE(open.ok());
  EXPECT_TRUE(open->NeedsShape());
  EXPECT_FALSE(ResolveRegionWithoutShape(open->subscripts).ok());
}

TEST(ParseKeyRegionTest, RejectsMalformedText) {
  for (absl::string_view bad : {"w[", "w[0", "w]", "w[]", "w[ ]", "[0]", "", "w[0][1]", "w[a]",
                                "w[0:1:2]", "w[1,,2]", "w[0]x", "w[1.5]"}) {
    auto parsed = ParseKeyRegion(bad);
    EXPECT_FALSE(parsed.ok()) << bad;
    if (!parsed.ok()) {
      EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    }
  }
  EXPECT_THAT(ParseKeyRegion("w[0:1:2]").status().message(), HasSubstr("step"));
}

TEST(ResolveRegionTest, IndexSelectsALengthOneRange) {
  EXPECT_THAT(Resolve("w[0,0]", {3, 4}), ElementsAre(Pair(0, 1), Pair(0, 1)));
  EXPECT_THAT(Resolve("w[2]", {3, 4}), ElementsAre(Pair(2, 3)));
}

TEST(ResolveRegionTest, NegativeIndicesCountFromTheEnd) {
  EXPECT_THAT(Resolve("w[-1, -4]", {3, 4}), ElementsAre(Pair(2, 3), Pair(0, 1)));
}

TEST(ResolveRegionTest, OpenEndsSpanTheDimension) {
  EXPECT_THAT(Resolve("w[:, 1:]", {3, 4}), ElementsAre(Pair(0, 3), Pair(1, 4)));
  EXPECT_THAT(Resolve("w[:2]", {3, 4}), ElementsAre(Pair(0, 2)));
  EXPECT_THAT(Resolve("w[-2:]", {3, 4}), ElementsAre(Pair(1, 3)));
}

TEST(ResolveRegionTest, SliceBoundsClampLikePython) {
  EXPECT_THAT(Resolve("w[1:100]", {3}), ElementsAre(Pair(1, 3)));
  EXPECT_THAT(Resolve("w[-100:2]", {3}), ElementsAre(Pair(0, 2)));
  EXPECT_THAT(Resolve("w[2:1]", {3}), ElementsAre(Pair(2, 2)));
}

TEST(ResolveRegionTest, IndexOutOfRangeUsesPyTorchsMessage) {
  auto parsed = ParseKeyRegion("w[0,5]");
  ASSERT_TRUE(parsed.ok());
  auto region = ResolveRegion(parsed->subscripts, {3, 4});
  ASSERT_FALSE(region.ok());
  EXPECT_EQ(region.status().message(), "index 5 is out of bounds for dimension 1 with size 4");
  auto negative = ResolveRegion(ParseKeyRegion("w[-4]")->subscripts, {3});
  ASSERT_FALSE(negative.ok());
  EXPECT_EQ(negative.status().message(), "index -4 is out of bounds for dimension 0 with size 3");
}

TEST(ResolveRegionTest, TooManySubscripts) {
  auto region = ResolveRegion(ParseKeyRegion("w[0,0]")->subscripts, {3});
  ASSERT_FALSE(region.ok());
  EXPECT_EQ(region.status().message(), "too many indices for tensor of dimension 1");
  EXPECT_FALSE(ResolveRegion(ParseKeyRegion("w[0]")->subscripts, {}).ok());
}

TEST(RegionShapeTest, LaterDimensionsStayWhole) {
  EXPECT_THAT(RegionShape({{1, 3}}, {4, 5, 6}), ElementsAre(2, 5, 6));
  EXPECT_THAT(RegionShape({{0, 1}, {2, 4}}, {4, 5}), ElementsAre(1, 2));
  EXPECT_EQ(RegionString({{0, 1}, {2, 4}}), "[0:1, 2:4]");
}

}  // namespace
}  // namespace paramd::cli
