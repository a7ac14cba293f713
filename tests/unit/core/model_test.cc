// Model: versions, conditional writes, region writes, tying through writes, and readers
// that keep the version they pinned (DESIGN.md section 4).
#include "server/core/model.h"

#include <thread>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/core/test_util.h"

namespace paramd::core {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::Build;
using testing::MakeTensor;
using testing::Values;

std::vector<double> Read(const Model& model, const std::string& key) {
  return model.Read([&](const std::shared_ptr<Module>& root, uint64_t) {
    return Values((*FindTensorSlot(root, key))->data());
  });
}

TEST(ModelTest, SeedTyingWriteThroughOneNameIsSeenThroughTheOther) {  // seed, §9
  Model model("net", Build(testing::kSharedSpec), Device{});
  EXPECT_EQ(model.version(), 1u);
  // net[2].weight[0][0] = 100
  auto version = model.SetTensor("2.weight", Region{{0, 1}, {0, 1}}, MakeTensor({}, {100}), {});
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(*version, 2u);
  EXPECT_EQ(Read(model, "4.weight")[0], 100.0);  // net[4].weight[0][0]
  EXPECT_EQ(Read(model, "2.weight")[1], Read(model, "4.weight")[1]);
  model.Read([](const std::shared_ptr<Module>& root, uint64_t) {
    EXPECT_EQ((*GetParameter(root, "4.weight"))->version(), 2u);
  });
}

TEST(ModelTest, TiedEmbeddingWriteIsSeenThroughBothNames) {  // §9
  Model model("lm", Build(testing::kTiedEmbeddingSpec), Device{});
  ASSERT_TRUE(model.SetTensor("lm_head.weight", Region{{3, 4}}, MakeTensor({4}, {1, 2, 3, 4}), {})
                  .ok());
  std::vector<double> embed = Read(model, "embed.weight");
  EXPECT_THAT(std::vector<double>(embed.begin() + 12, embed.begin() + 16), ElementsAre(1, 2, 3, 4));
}

TEST(ModelTest, IfVersionMakesWritesConditional) {
  Model model("mlp", Build(testing::kMlpSpec), Device{});
  ASSERT_TRUE(model.SetTensor("w2", {}, MakeTensor({1}, {3}), 1).ok());
  auto stale = model.SetTensor("w2", {}, MakeTensor({1}, {4}), 1);
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(stale.status().message(), HasSubstr("model 'mlp' is at version 2, not 1"));
  EXPECT_THAT(Read(model, "w2"), ElementsAre(3));
  EXPECT_EQ(model.version(), 2u);
}

TEST(ModelTest, BadWritesChangeNothing) {
  Model model("mlp", Build(testing::kMlpSpec), Device{});
  const auto before = Read(model, "linear1.weight");
  EXPECT_EQ(model.SetTensor("linear1.weight", {}, MakeTensor({3}, {1, 2, 3}), {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(model.SetTensor("linear1.weight", Region{{0, 3}}, MakeTensor({}, {1}), {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto unknown = model.SetTensor("linear9.weight", {}, MakeTensor({1}, {1}), {});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(unknown.status().message(), "MLP has no attribute `linear9`");
  EXPECT_EQ(model.SetTensor("linear1.nope", {}, MakeTensor({1}, {1}), {}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Read(model, "linear1.weight"), before);
  EXPECT_EQ(model.version(), 1u);
}

TEST(ModelTest, RegionWriteConvertsDtypeAndAcceptsSqueezedShapes) {
  Model model("net", Build(R"({"type": "Net", "parameters": [{"name": "t", "shape": [2, 3]}]})"),
              Device{});
  // t[1, 0:2] = [7, 8] given as shape [2] for region shape [1, 2].
  ASSERT_TRUE(model.SetTensor("t", Region{{1, 2}, {0, 2}}, MakeTensor({2}, {7, 8}, DType::kInt64), {})
                  .ok());
  EXPECT_THAT(Read(model, "t"), ElementsAre(0, 0, 0, 7, 8, 0));
}

TEST(ModelTest, ReaderKeepsThePinnedVersionWhileWritersWrite) {  // Note [Snapshot publication]
  Model model("mlp", Build(testing::kMlpSpec), Device{});
  Tensor pinned = model.Read([](const std::shared_ptr<Module>& root, uint64_t) {
    return (*FindTensorSlot(root, "w2"))->data();
  });
  ASSERT_TRUE(model.SetTensor("w2", {}, MakeTensor({1}, {9}), {}).ok());
  EXPECT_THAT(Values(pinned), ElementsAre(2));
  EXPECT_THAT(Read(model, "w2"), ElementsAre(9));
}

TEST(ModelTest, ConcurrentReadersSeeWholeVersions) {
  Model model("net", Build(R"({"type": "Net", "parameters": [
      {"name": "a", "shape": [64]}, {"name": "b", "shape": [64]}]})"), Device{});
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (int i = 0; i < 200; ++i) {
      StateDictInput input;
      input.entries = {{"a", *Tensor::Full(DType::kFloat32, {64}, i)},
                       {"b", *Tensor::Full(DType::kFloat32, {64}, i)}};
      ASSERT_TRUE(model.LoadStateDict(input, {}, {}).ok());
    }
    done = true;
  });
  int reads = 0;
  while (!done || reads == 0) {
    auto sd = model.Read([](const std::shared_ptr<Module>& root, uint64_t) { return GetStateDict(*root); });
    std::vector<double> a = Values(sd.entries[0].tensor);
    std::vector<double> b = Values(sd.entries[1].tensor);
    for (double value : a) ASSERT_EQ(value, a[0]);
    ASSERT_EQ(a, b);
    ++reads;
  }
  writer.join();
  EXPECT_EQ(model.version(), 201u);
}

TEST(ModelTest, LoadStateDictThroughTheModelBumpsVersionOnlyOnSuccess) {
  Model model("mlp", Build(testing::kMlpSpec), Device{});
  StateDictInput input;
  input.entries = {{"w2", MakeTensor({1}, {5})}};
  auto failed = model.LoadStateDict(input, {}, {});
  EXPECT_FALSE(failed.ok());
  EXPECT_EQ(model.version(), 1u);
  auto loaded = model.LoadStateDict(input, {.strict = false}, {});
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->first, 2u);
  EXPECT_EQ(loaded->second.missing_keys.size(), 4u);
}

TEST(ModelTest, SetTrainingReachesEveryModule) {
  Model model("net", Build(testing::kSharedSpec), Device{});
  EXPECT_TRUE(model.training());
  ASSERT_TRUE(model.SetTraining(false, {}).ok());
  EXPECT_FALSE(model.training());
  model.Read([](const std::shared_ptr<Module>& root, uint64_t) {
    for (const auto& [name, module] : NamedModules(root)) EXPECT_FALSE(module->training()) << name;
  });
}

}  // namespace
}  // namespace paramd::core
