// CheapRepeats (Note [Cheap repeats]): only an exact repeat of a forward measured cheap, on
// the same model object, matches; a slow run forgets; a deleted model never matches.
#include "server/service/cheap_repeats.h"

#include <gtest/gtest.h>

#include "server/core/spec.h"

namespace paramd::service {
namespace {

std::shared_ptr<core::Model> NewModel(const std::string& name) {
  auto root = core::BuildModuleFromText(R"({"type": "Net", "parameters": [{"name": "w", "shape": [2]}]})", 0);
  EXPECT_TRUE(root.ok()) << root.status();
  return std::make_shared<core::Model>(name, *root, Device::Cpu());
}

TEST(CheapRepeatsTest, RemembersACheapForwardByModelVersionAndSignature) {
  CheapRepeats repeats;
  auto model = NewModel("m");
  EXPECT_EQ(repeats.CheapVersion(model, "sig"), 0u);
  repeats.Record(model, 7, "sig", absl::Microseconds(50));
  EXPECT_EQ(repeats.CheapVersion(model, "sig"), 7u);
  EXPECT_EQ(repeats.CheapVersion(model, "other"), 0u);
  // Another model object under the same name (deleted and created again) is not it.
  EXPECT_EQ(repeats.CheapVersion(NewModel("m"), "sig"), 0u);
}

TEST(CheapRepeatsTest, ASlowForwardForgetsTheModel) {
  CheapRepeats repeats;
  auto model = NewModel("m");
  repeats.Record(model, 3, "sig", CheapRepeats::kCheapForward);
  EXPECT_EQ(repeats.CheapVersion(model, "sig"), 3u);
  repeats.Record(model, 3, "sig", CheapRepeats::kCheapForward + absl::Microseconds(1));
  EXPECT_EQ(repeats.CheapVersion(model, "sig"), 0u);
}

TEST(CheapRepeatsTest, HoldsNoModelAlive) {
  CheapRepeats repeats;
  auto model = NewModel("m");
  repeats.Record(model, 1, "sig", absl::Microseconds(1));
  std::weak_ptr<core::Model> weak = model;
  model.reset();
  EXPECT_TRUE(weak.expired());  // a deleted model is freed, not kept by the memory
}

TEST(CheapRepeatsTest, StaysBoundedUnderAFloodOfModels) {
  CheapRepeats repeats;
  auto first = NewModel("first");
  repeats.Record(first, 1, "sig", absl::Microseconds(1));
  std::vector<std::shared_ptr<core::Model>> models;
  for (size_t i = 0; i < CheapRepeats::kMaxEntries; ++i) {
    models.push_back(NewModel("m" + std::to_string(i)));
    repeats.Record(models.back(), 1, "sig", absl::Microseconds(1));
  }
  // Full, it started over: the oldest entry is gone, the newest is there.
  EXPECT_EQ(repeats.CheapVersion(first, "sig"), 0u);
  EXPECT_EQ(repeats.CheapVersion(models.back(), "sig"), 1u);
}

}  // namespace
}  // namespace paramd::service
