// ExportSpec: a live tree's spec rebuilds the same tree (names, shapes, dtypes, ties,
// shared modules, None slots, later registrations), which is what lets checkpoints and
// snapshots recreate a model (pytorch-semantics.md §2, §9).
#include "server/core/spec_export.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/repr.h"
#include "server/core/spec.h"
#include "server/core/traversal.h"
#include "tests/unit/core/test_util.h"

namespace paramd::core {
namespace {

using testing::Build;
using testing::StateDictKeys;

// Everything a rebuilt tree must share with the original, values aside.
void ExpectSameTree(const std::shared_ptr<Module>& a, const std::shared_ptr<Module>& b) {
  EXPECT_EQ(Repr(*a), Repr(*b));
  EXPECT_EQ(StateDictKeys(*a), StateDictKeys(*b));
  const StateDict sa = GetStateDict(*a);
  const StateDict sb = GetStateDict(*b);
  ASSERT_EQ(sa.entries.size(), sb.entries.size());
  for (size_t i = 0; i < sa.entries.size(); ++i) {
    SCOPED_TRACE(sa.entries[i].name);
    EXPECT_EQ(sa.entries[i].tensor.shape(), sb.entries[i].tensor.shape());
    EXPECT_EQ(sa.entries[i].tensor.dtype(), sb.entries[i].tensor.dtype());
    EXPECT_EQ(sa.entries[i].is_parameter, sb.entries[i].is_parameter);
    for (size_t j = 0; j < i; ++j) {
      // Ties and shared modules: the same slot object in both trees, or in neither.
      EXPECT_EQ(sa.entries[i].slot == sa.entries[j].slot, sb.entries[i].slot == sb.entries[j].slot)
          << "and " << sa.entries[j].name;
    }
  }
  EXPECT_EQ(sa.metadata, sb.metadata);
  auto names = [](const Named<Module>& modules) {
    std::vector<std::string> out;
    for (const auto& [name, module] : modules) out.push_back(name);
    return out;
  };
  EXPECT_EQ(names(NamedModules(a, "", false)), names(NamedModules(b, "", false)));
  EXPECT_EQ(names(NamedModules(a)), names(NamedModules(b)));
}

std::shared_ptr<Module> RoundTrip(const std::shared_ptr<Module>& root) {
  const nlohmann::ordered_json spec = ExportSpec(root);
  absl::StatusOr<std::shared_ptr<Module>> rebuilt = BuildModule(spec, 7);
  EXPECT_TRUE(rebuilt.ok()) << rebuilt.status() << "\n" << spec.dump(2);
  return rebuilt.ok() ? *rebuilt : root;
}

TEST(SpecExportTest, SeedMlpRebuildsTheSameTree_PytorchSemantics8) {
  auto mlp = Build(testing::kMlpSpec);
  ExpectSameTree(mlp, RoundTrip(mlp));
}

// Found by fuzz_parsers: a custom class named like a built-in up to case builds with
// "custom": true, and its export must say so again.
TEST(SpecExportTest, ACustomTypeNamedLikeABuiltinUpToCaseRoundTrips) {
  auto net = Build(R"({"type": "Net", "children": [{"name": "fc", "type": "linear", "custom": true,
      "parameters": [{"name": "weight", "shape": [2, 2]}]}]})");
  EXPECT_EQ(ExportSpec(net)["children"][0].value("custom", false), true);
  ExpectSameTree(net, RoundTrip(net));
}

TEST(SpecExportTest, SharedModulesComeBackShared_PytorchSemantics9) {
  auto net = Build(testing::kSharedSpec);
  auto rebuilt = RoundTrip(net);
  ExpectSameTree(net, rebuilt);
  EXPECT_EQ(*GetSubmodule(rebuilt, "2"), *GetSubmodule(rebuilt, "4"));
  EXPECT_EQ(ExportSpec(net)["children"][4], (nlohmann::ordered_json{{"name", "4"}, {"ref", "2"}}));
}

TEST(SpecExportTest, TiedParametersComeBackTied_PytorchSemantics9) {
  auto lm = Build(testing::kTiedEmbeddingSpec);
  auto rebuilt = RoundTrip(lm);
  ExpectSameTree(lm, rebuilt);
  EXPECT_EQ(*GetParameter(rebuilt, "embed.weight"), *GetParameter(rebuilt, "lm_head.weight"));
}

TEST(SpecExportTest, KeepsLaterRegistrationsNoneSlotsAndFlags_PytorchSemantics1) {
  auto root = Build(R"({"type": "Net", "children": [
      {"name": "bn", "type": "BatchNorm1d", "args": {"num_features": 3}},
      {"name": "fc", "type": "Linear", "args": {"in_features": 3, "out_features": 2, "bias": false}},
      {"name": "seq", "type": "Sequential"}],
    "forward": ["bn", "fc"]})");
  ASSERT_TRUE(root->RegisterParameter("scale", std::make_shared<Parameter>(
                                                   testing::MakeTensor({2}, {1, 2}), false))
                  .ok());
  ASSERT_TRUE(root->RegisterParameter("gone", nullptr).ok());
  ASSERT_TRUE(root->RegisterBuffer("steps",
                                   std::make_shared<Buffer>(testing::MakeTensor(
                                       {}, {3}, DType::kInt64)),
                                   /*persistent=*/false)
                  .ok());
  ASSERT_TRUE(root->AddModule("spare", nullptr).ok());
  auto rebuilt = RoundTrip(root);
  ExpectSameTree(root, rebuilt);
  EXPECT_FALSE((*GetParameter(rebuilt, "scale"))->requires_grad());
  EXPECT_FALSE(rebuilt->IsPersistentBuffer("steps"));
  EXPECT_TRUE(rebuilt->parameters().contains("gone"));
  EXPECT_TRUE(rebuilt->children().contains("spare"));
  EXPECT_EQ(rebuilt->forward_program(), root->forward_program());
  EXPECT_EQ(GetStateDict(*rebuilt).metadata, GetStateDict(*root).metadata);
}

}  // namespace
}  // namespace paramd::core
