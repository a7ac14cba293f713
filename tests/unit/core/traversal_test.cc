// pytorch-semantics.md §2 (state_dict), §3 (iterators), §8 (the seed MLP) and §9 (tying and
// shared modules), including every seed example.
#include "server/core/traversal.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/repr.h"
#include "tests/unit/core/test_util.h"

namespace paramd::core {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;
using testing::Build;
using testing::Names;
using testing::StateDictKeys;

TEST(StateDictTest, SeedMlpPutsOwnParameterFirstAndSkipsPlainAttribute) {  // §8
  auto mlp = Build(testing::kMlpSpec);
  EXPECT_THAT(StateDictKeys(*mlp),
              ElementsAre("w2", "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"));
  EXPECT_THAT(Names(NamedParameters(mlp)),
              ElementsAre("w2", "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"));
  StateDict sd = GetStateDict(*mlp);
  EXPECT_THAT(sd.metadata, ElementsAre(Pair("", 1), Pair("linear1", 1), Pair("relu", 1),
                                       Pair("linear2", 1)));
  EXPECT_THAT(testing::Values(sd.entries[0].tensor), ElementsAre(2.0));
  EXPECT_TRUE(mlp->HasAttribute("w1"));
  for (const auto& entry : sd.entries) EXPECT_EQ(entry.name.find("w1"), std::string::npos);
}

TEST(StateDictTest, SeedSequentialKeysShapesAndIndexing) {  // §2, seed Sequential
  auto seq = Build(R"({"type": "Sequential", "children": [
      {"type": "Linear", "args": {"in_features": 1, "out_features": 2}},
      {"type": "ReLU"},
      {"type": "Linear", "args": {"in_features": 2, "out_features": 1}}]})");
  StateDict sd = GetStateDict(*seq);
  EXPECT_THAT(StateDictKeys(*seq), ElementsAre("0.weight", "0.bias", "2.weight", "2.bias"));
  EXPECT_EQ(sd.entries[1].tensor.shape(), Shape{2});  // state_dict()['0.bias'].shape
  auto first = GetSubmodule(seq, "0");
  ASSERT_TRUE(first.ok());
  EXPECT_EQ((*first)->type(), "Linear");
  EXPECT_EQ(Repr(**first), "Linear(in_features=1, out_features=2, bias=True)");
  auto params = NamedParameters(seq);
  ASSERT_EQ(params.size(), 4u);
  EXPECT_EQ(params[0].second->data().shape(), (Shape{2, 1}));
  EXPECT_EQ(params[1].second->data().shape(), (Shape{2}));
  EXPECT_EQ(params[2].second->data().shape(), (Shape{1, 2}));
  EXPECT_EQ(params[3].second->data().shape(), (Shape{1}));
}

TEST(StateDictTest, PrefixAndMetadataKeys) {  // §2 prefix
  auto mlp = Build(testing::kMlpSpec);
  StateDict sd = GetStateDict(*mlp, "model.");
  EXPECT_EQ(sd.entries.front().name, "model.w2");
  EXPECT_EQ(sd.entries.back().name, "model.linear2.bias");
  EXPECT_THAT(sd.metadata, ElementsAre(Pair("model", 1), Pair("model.linear1", 1),
                                       Pair("model.relu", 1), Pair("model.linear2", 1)));
}

TEST(StateDictTest, SharesStorageWithTheModuleAndSkipsNoneAndNonPersistent) {  // §2
  auto net = Build(R"({"type": "Net",
      "parameters": [{"name": "a", "shape": [2]}, {"name": "gone", "none": true}],
      "buffers": [{"name": "kept", "shape": [1]},
                  {"name": "scratch", "shape": [1], "persistent": false},
                  {"name": "empty", "none": true}]})");
  EXPECT_THAT(StateDictKeys(*net), ElementsAre("a", "kept"));
  EXPECT_THAT(Names(NamedBuffers(net)), ElementsAre("kept", "scratch"));
  StateDict sd = GetStateDict(*net);
  EXPECT_EQ(sd.entries[0].tensor.storage(), (*net->parameters().Find("a"))->data().storage());
  EXPECT_TRUE(sd.entries[0].is_parameter);
  EXPECT_FALSE(sd.entries[1].is_parameter);
}

TEST(StateDictTest, BatchNormBuffersAndVersion) {  // §1 built-ins, §2 BatchNorm version 2
  auto net = Build(R"({"type": "Sequential", "children": [
      {"type": "Conv2d", "args": {"in_channels": 1, "out_channels": 2, "kernel_size": 3}},
      {"type": "BatchNorm2d", "args": {"num_features": 2}}]})");
  EXPECT_THAT(StateDictKeys(*net),
              ElementsAre("0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                          "1.running_var", "1.num_batches_tracked"));
  StateDict sd = GetStateDict(*net);
  EXPECT_EQ(sd.entries.back().tensor.dtype(), DType::kInt64);
  EXPECT_EQ(sd.entries.back().tensor.shape(), Shape{});
  EXPECT_THAT(sd.metadata, ElementsAre(Pair("", 1), Pair("0", 1), Pair("1", 2)));
}

TEST(TyingTest, SeedSharedLinearAppearsAtBothPathsInStateDictOnceInParameters) {  // §9
  auto net = Build(testing::kSharedSpec);
  EXPECT_THAT(StateDictKeys(*net),
              ElementsAre("0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias",
                          "6.weight", "6.bias"));
  EXPECT_THAT(Names(NamedParameters(net)),
              ElementsAre("0.weight", "0.bias", "2.weight", "2.bias", "6.weight", "6.bias"));
  EXPECT_THAT(Names(NamedParameters(net, "", true, /*remove_duplicate=*/false)),
              ElementsAre("0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias",
                          "6.weight", "6.bias"));
  EXPECT_THAT(Names(NamedModules(net)), ElementsAre("", "0", "1", "2", "3", "5", "6"));
  EXPECT_THAT(Names(NamedModules(net, "", /*remove_duplicate=*/false)),
              ElementsAre("", "0", "1", "2", "3", "4", "5", "6"));
  EXPECT_THAT(Names(NamedChildren(*net)), ElementsAre("0", "1", "2", "3", "5", "6"));
  EXPECT_EQ(*GetSubmodule(net, "2"), *GetSubmodule(net, "4"));
  StateDict sd = GetStateDict(*net);
  EXPECT_EQ(sd.entries[2].slot, sd.entries[4].slot);
  EXPECT_THAT(sd.metadata, ElementsAre(Pair("", 1), Pair("0", 1), Pair("1", 1), Pair("2", 1),
                                       Pair("3", 1), Pair("4", 1), Pair("5", 1), Pair("6", 1)));
}

TEST(TyingTest, TiedEmbeddingListedOnceUnderFirstName) {  // §9 tied embedding
  auto lm = Build(testing::kTiedEmbeddingSpec);
  EXPECT_THAT(StateDictKeys(*lm), ElementsAre("embed.weight", "lm_head.weight"));
  EXPECT_THAT(Names(NamedParameters(lm)), ElementsAre("embed.weight"));
  EXPECT_THAT(Names(NamedParameters(lm, "", true, false)),
              ElementsAre("embed.weight", "lm_head.weight"));
  StateDict sd = GetStateDict(*lm);
  EXPECT_EQ(sd.entries[0].tensor.storage(), sd.entries[1].tensor.storage());
  EXPECT_EQ(*GetParameter(lm, "embed.weight"), *GetParameter(lm, "lm_head.weight"));
}

TEST(IteratorTest, PrefixRecurseAndOwnParametersFirst) {  // §3
  auto mlp = Build(testing::kMlpSpec);
  EXPECT_THAT(Names(NamedParameters(mlp, "model")),
              ElementsAre("model.w2", "model.linear1.weight", "model.linear1.bias",
                          "model.linear2.weight", "model.linear2.bias"));
  EXPECT_THAT(Names(NamedParameters(mlp, "", /*recurse=*/false)), ElementsAre("w2"));
  EXPECT_THAT(Names(NamedModules(mlp, "model")),
              ElementsAre("model", "model.linear1", "model.relu", "model.linear2"));
  EXPECT_THAT(Names(NamedChildren(*mlp)), ElementsAre("linear1", "relu", "linear2"));
}

TEST(IteratorTest, DifferentTensorsSharingStorageAreBothListed) {  // §3
  Module root("Net");
  auto base = testing::MakeTensor({4}, {1, 2, 3, 4});
  ASSERT_TRUE(root.RegisterParameter("a", std::make_shared<Parameter>(base)).ok());
  ASSERT_TRUE(root.RegisterParameter("b", std::make_shared<Parameter>(*base.Select(1))).ok());
  auto shared_root = std::make_shared<Module>(std::move(root));
  EXPECT_THAT(Names(NamedParameters(shared_root)), ElementsAre("a", "b"));
}

TEST(IteratorTest, NoneChildrenAreSkipped) {  // §1 add_module(None)
  auto net = Build(R"({"type": "Net", "children": [
      {"name": "a", "none": true}, {"name": "b", "type": "ReLU"}]})");
  EXPECT_THAT(Names(NamedModules(net)), ElementsAre("", "b"));
  EXPECT_THAT(Names(NamedChildren(*net)), ElementsAre("b"));
  EXPECT_TRUE(net->children().contains("a"));
}

TEST(LookupTest, GetSubmoduleParameterBufferWithPyTorchErrors) {  // §1 path lookups
  auto mlp = Build(testing::kMlpSpec);
  EXPECT_EQ((*GetSubmodule(mlp, ""))->type(), "MLP");
  EXPECT_EQ((*GetSubmodule(mlp, "linear1"))->type(), "Linear");
  auto missing = GetSubmodule(mlp, "linear3");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(), "MLP has no attribute `linear3`");
  EXPECT_EQ(GetSubmodule(mlp, "linear1.weight").status().message(),
            "`weight` is not an nn.Module");
  EXPECT_EQ(GetSubmodule(mlp, "linear1.nope").status().message(),
            "Linear has no attribute `nope`");
  EXPECT_TRUE(GetParameter(mlp, "linear1.weight").ok());
  EXPECT_TRUE(GetParameter(mlp, "w2").ok());
  EXPECT_EQ(GetParameter(mlp, "linear1.nope").status().message(),
            "Linear has no attribute `nope`");
  EXPECT_EQ(GetParameter(mlp, "w1").status().message(), "`w1` is not an nn.Parameter");
  EXPECT_EQ(GetParameter(mlp, "relu").status().message(), "`relu` is not an nn.Parameter");
  EXPECT_EQ(GetBuffer(mlp, "linear1.weight").status().message(), "`weight` is not a buffer");

  auto bn = Build(R"({"type": "BatchNorm1d", "args": {"num_features": 3}})");
  auto tracked = GetBuffer(bn, "num_batches_tracked");
  ASSERT_TRUE(tracked.ok());
  EXPECT_EQ((*tracked)->data().dtype(), DType::kInt64);
}

TEST(LookupTest, NoneParameterSlotIsNotAParameter) {  // §1 register_parameter(None)
  auto lin = Build(R"({"type": "Linear", "args": {"in_features": 2, "out_features": 3, "bias": false}})");
  EXPECT_EQ(GetParameter(lin, "bias").status().message(), "`bias` is not an nn.Parameter");
  EXPECT_THAT(StateDictKeys(*lin), ElementsAre("weight"));
  EXPECT_THAT(Repr(*lin), HasSubstr("bias=False"));
}

}  // namespace
}  // namespace paramd::core
