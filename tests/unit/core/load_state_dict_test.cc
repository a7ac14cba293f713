// pytorch-semantics.md §4 (load_state_dict) and §9 (tying and shared modules on load), plus
// paramd's atomicity: a failed load changes nothing.
#include "server/core/load_state_dict.h"

#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/unit/core/test_util.h"

namespace paramd::core {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using testing::Build;
using testing::MakeTensor;
using testing::Values;

// The module's own state_dict as an input, every value replaced by `fill`.
StateDictInput FullInput(const Module& root, double fill) {
  StateDictInput input;
  for (const auto& entry : GetStateDict(root).entries) {
    auto value = Tensor::Full(entry.tensor.dtype(), entry.tensor.shape(), fill);
    input.entries.emplace_back(entry.name, *value);
  }
  return input;
}

std::vector<std::vector<double>> Snapshot(const Module& root) {
  std::vector<std::vector<double>> values;
  for (const auto& entry : GetStateDict(root).entries) values.push_back(Values(entry.tensor));
  return values;
}

// A load polls `cancelled` before each copy, so a cancelled call stops part-way, keeps none
// of the copies it made and leaves the model as it was.
TEST(LoadStateDictTest, ACancelledLoadStopsBetweenTensorsAndChangesNothing) {
  auto mlp = Build(testing::kMlpSpec);
  const auto before = Snapshot(*mlp);
  StateDictInput input = FullInput(*mlp, 3.0);
  for (auto& [name, tensor] : input.entries) {
    tensor = *ConvertTo(tensor, DType::kFloat64, tensor.device());  // so each one is copied
  }
  int polls = 0;
  LoadOptions options;
  options.cancelled = [&] { return ++polls == 2; };
  absl::StatusOr<LoadPlan> plan = PlanLoadStateDict(mlp, input, options);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(plan.status().message(), "the load was cancelled; the model is unchanged");
  EXPECT_EQ(polls, 2);
  EXPECT_EQ(Snapshot(*mlp), before);
}

TEST(LoadStateDictTest, ExampleErrorTextMatchesPyTorch) {  // §4 worked example
  auto mlp = Build(testing::kMlpSpec);
  StateDictInput input;
  input.entries = {{"w2", MakeTensor({1}, {5})},
                   {"linear1.weight", MakeTensor({3, 1}, {1, 2, 3})},
                   {"linear1.bias", MakeTensor({2}, {0, 0})},
                   {"extra", MakeTensor({1}, {0})}};
  auto result = LoadStateDict(mlp, input, {});
  ASSERT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(result.status().message(),
            "Error(s) in loading state_dict for MLP:\n"
            "\tMissing key(s) in state_dict: \"linear2.weight\", \"linear2.bias\". \n"
            "\tUnexpected key(s) in state_dict: \"extra\". \n"
            "\tsize mismatch for linear1.weight: copying a param with shape torch.Size([3, 1]) "
            "from checkpoint, the shape in current model is torch.Size([2, 1]).");
}

TEST(LoadStateDictTest, FailedLoadChangesNothing) {  // paramd: atomic, unlike PyTorch
  auto mlp = Build(testing::kMlpSpec);
  const auto before = Snapshot(*mlp);
  StateDictInput input = FullInput(*mlp, 7.0);
  input.entries[1].second = MakeTensor({3, 1}, {1, 2, 3});  // bad shape in the middle
  EXPECT_FALSE(LoadStateDict(mlp, input, {}).ok());
  EXPECT_FALSE(LoadStateDict(mlp, input, {.strict = false}).ok());
  EXPECT_FALSE(LoadStateDict(mlp, input, {.strict = true, .assign = true}).ok());
  EXPECT_EQ(Snapshot(*mlp), before);  // PyTorch would have written w2 and the later keys
}

TEST(LoadStateDictTest, NonStrictReturnsKeysAndStillRaisesOnSizeMismatch) {  // §4 step 5
  auto mlp = Build(testing::kMlpSpec);
  StateDictInput input;
  input.entries = {{"w2", MakeTensor({1}, {5})},
                   {"linear1.weight", MakeTensor({2, 1}, {1, 2})},
                   {"linear1.bias", MakeTensor({2}, {3, 4})},
                   {"extra", MakeTensor({1}, {0})}};
  auto keys = LoadStateDict(mlp, input, {.strict = false});
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_THAT(keys->missing_keys, ElementsAre("linear2.weight", "linear2.bias"));
  EXPECT_THAT(keys->unexpected_keys, ElementsAre("extra"));
  EXPECT_EQ(IncompatibleKeysRepr(*keys),
            "_IncompatibleKeys(missing_keys=['linear2.weight', 'linear2.bias'], "
            "unexpected_keys=['extra'])");
  EXPECT_THAT(Values((*mlp->parameters().Find("w2"))->data()), ElementsAre(5));

  input.entries[1].second = MakeTensor({3, 1}, {1, 2, 3});
  auto mismatch = LoadStateDict(mlp, input, {.strict = false});
  EXPECT_EQ(mismatch.status().message(),
            "Error(s) in loading state_dict for MLP:\n"
            "\tsize mismatch for linear1.weight: copying a param with shape torch.Size([3, 1]) "
            "from checkpoint, the shape in current model is torch.Size([2, 1]).");
}

TEST(LoadStateDictTest, AllKeysMatchedAndCopyKeepsDestinationDtype) {  // §4 copy_
  auto mlp = Build(testing::kMlpSpec);
  StateDictInput input = FullInput(*mlp, 0.0);
  input.entries[0].second = MakeTensor({1}, {1.5}, DType::kFloat64);
  auto* w2 = mlp->parameters().Find("w2");
  auto identity = w2->get();
  auto keys = LoadStateDict(mlp, input, {}, /*version=*/9);
  ASSERT_TRUE(keys.ok());
  EXPECT_EQ(IncompatibleKeysRepr(*keys), "<All keys matched successfully>");
  EXPECT_EQ(w2->get(), identity);  // same Parameter object
  EXPECT_EQ((*w2)->data().dtype(), DType::kFloat32);
  EXPECT_THAT(Values((*w2)->data()), ElementsAre(1.5));
  EXPECT_EQ((*w2)->version(), 9u);
}

TEST(LoadStateDictTest, UnexpectedKeyRulesAndOrder) {  // §4 step 4 "Unexpected"
  auto mlp = Build(testing::kMlpSpec);
  StateDictInput input = FullInput(*mlp, 0.0);
  for (const char* key : {"nosuch.weight", "linear1", "w2.x", "linear1.extra", "zzz", "_extra_state"}) {
    input.entries.emplace_back(key, MakeTensor({1}, {0}));
  }
  auto keys = LoadStateDict(mlp, input, {.strict = false});
  ASSERT_TRUE(keys.ok());
  // Grouped by module in pre-order (root first), then input order; _extra_state is skipped.
  EXPECT_THAT(keys->unexpected_keys,
              ElementsAre("nosuch.weight", "linear1", "w2.x", "zzz", "linear1.extra"));
  EXPECT_THAT(keys->missing_keys, IsEmpty());
}

TEST(LoadStateDictTest, KeysForNoneSlotsAndNonPersistentBuffersAreUnexpected) {  // §1, §4
  auto net = Build(R"({"type": "Net",
      "parameters": [{"name": "p", "none": true}],
      "buffers": [{"name": "scratch", "shape": [1], "persistent": false}],
      "children": [{"name": "gone", "none": true}]})");
  StateDictInput input;
  input.entries = {{"p", MakeTensor({1}, {1})},
                   {"scratch", MakeTensor({1}, {1})},
                   {"gone.weight", MakeTensor({1}, {1})}};  // a None child takes its keys
  auto keys = LoadStateDict(net, input, {.strict = false});
  ASSERT_TRUE(keys.ok());
  EXPECT_THAT(keys->unexpected_keys, ElementsAre("p", "scratch"));
}

TEST(LoadStateDictTest, ZeroDimParameterTakesFirstElementOfOneDimInput) {  // §4 BC quirk
  auto net = Build(R"({"type": "Net", "parameters": [{"name": "s", "shape": []}]})");
  StateDictInput input;
  input.entries = {{"s", MakeTensor({3}, {4, 5, 6})}};
  ASSERT_TRUE(LoadStateDict(net, input, {}).ok());
  EXPECT_THAT(Values((*net->parameters().Find("s"))->data()), ElementsAre(4));
}

TEST(LoadStateDictTest, BatchNormNumBatchesTrackedRule) {  // §4 [BN]
  auto net = Build(R"({"type": "Sequential", "children": [
      {"type": "BatchNorm1d", "args": {"num_features": 2}}]})");
  StateDictInput input = FullInput(*net, 1.0);
  input.entries.pop_back();  // drop 0.num_batches_tracked
  // A plain dict (no _metadata) never reports it missing.
  auto plain = LoadStateDict(net, input, {});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_THAT(plain->missing_keys, IsEmpty());
  // Version 1 metadata (an old checkpoint) fills it too.
  input.metadata.emplace();
  (*input.metadata)["0"] = 1;
  EXPECT_TRUE(LoadStateDict(net, input, {}).ok());
  // Version 2 metadata reports it.
  (*input.metadata)["0"] = 2;
  auto strict = LoadStateDict(net, input, {});
  EXPECT_EQ(strict.status().message(),
            "Error(s) in loading state_dict for Sequential:\n"
            "\tMissing key(s) in state_dict: \"0.num_batches_tracked\". ");
}

TEST(LoadStateDictTest, TiedParametersNeedBothKeysAndTheLaterWins) {  // §9 tied embedding
  auto lm = Build(testing::kTiedEmbeddingSpec);
  StateDictInput input;
  input.entries = {{"embed.weight", *Tensor::Full(DType::kFloat32, {10, 4}, 1.0)}};
  EXPECT_EQ(LoadStateDict(lm, input, {}).status().message(),
            "Error(s) in loading state_dict for TiedLM:\n"
            "\tMissing key(s) in state_dict: \"lm_head.weight\". ");
  input.entries.emplace_back("lm_head.weight", *Tensor::Full(DType::kFloat32, {10, 4}, 2.0));
  ASSERT_TRUE(LoadStateDict(lm, input, {}).ok());
  auto embed = *GetParameter(lm, "embed.weight");
  EXPECT_EQ(embed, *GetParameter(lm, "lm_head.weight"));  // still tied
  EXPECT_EQ(Values(embed->data())[0], 2.0);                // later key wins
}

TEST(LoadStateDictTest, SharedModuleVisitedOncePerPath) {  // §9 shared module
  auto net = Build(testing::kSharedSpec);
  StateDictInput input = FullInput(*net, 1.0);
  for (auto& [key, value] : input.entries) {
    if (key == "4.weight") value = *Tensor::Full(DType::kFloat32, {8, 8}, 4.0);
  }
  ASSERT_TRUE(LoadStateDict(net, input, {}).ok());
  EXPECT_EQ(Values((*GetParameter(net, "2.weight"))->data())[0], 4.0);
  input.entries.erase(input.entries.begin() + 4);  // drop 4.weight
  EXPECT_EQ(LoadStateDict(net, input, {}).status().message(),
            "Error(s) in loading state_dict for Sequential:\n"
            "\tMissing key(s) in state_dict: \"4.weight\". ");
}

TEST(LoadStateDictTest, AssignTakesCheckpointTensorsAndBreaksTies) {  // §4 assign, §9
  auto lm = Build(testing::kTiedEmbeddingSpec);
  StateDictInput input;
  input.entries = {{"embed.weight", *Tensor::Full(DType::kFloat64, {10, 4}, 1.0)},
                   {"lm_head.weight", *Tensor::Full(DType::kFloat64, {10, 4}, 2.0)}};
  ASSERT_TRUE(LoadStateDict(lm, input, {.strict = true, .assign = true}).ok());
  auto embed = *GetParameter(lm, "embed.weight");
  auto head = *GetParameter(lm, "lm_head.weight");
  EXPECT_NE(embed, head);
  EXPECT_EQ(embed->data().dtype(), DType::kFloat64);  // the checkpoint's dtype
  EXPECT_EQ(embed->data().storage(), input.entries[0].second.storage());
  EXPECT_TRUE(embed->requires_grad());
  EXPECT_EQ(Values(head->data())[0], 2.0);
}

TEST(LoadStateDictTest, DuplicateInputKeysAreRejected) {
  auto mlp = Build(testing::kMlpSpec);
  StateDictInput input = FullInput(*mlp, 0.0);
  input.entries.push_back(input.entries.front());
  auto result = LoadStateDict(mlp, input, {});
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(result.status().message(),
            "key \"w2\" appears twice in the state_dict; each key may appear once");
}

// Each module hands its keys to its children in one pass: a module with 60,000 children
// costs 60,000 key lookups, not 60,000 scans of 60,000 keys.
TEST(LoadStateDictTest, AWideModuleSplitsItsKeysAmongItsChildrenInOnePass) {
  std::string spec = R"({"type": "Wide", "children": [)";
  for (int i = 0; i < 60000; ++i) {
    absl::StrAppend(&spec, i == 0 ? "" : ", ", R"({"name": "m)", i,
                    R"(", "type": "Box", "parameters": [{"name": "p", "shape": [1]}]})");
  }
  spec += "]}";
  auto wide = Build(spec);
  const StateDictInput input = FullInput(*wide, 2.0);
  const absl::Time start = absl::Now();
  auto result = LoadStateDict(wide, input, {});
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_THAT(result->missing_keys, IsEmpty());
  EXPECT_THAT(Values(GetStateDict(*wide).entries.back().tensor), ElementsAre(2.0));
}

// A tensor over memory it does not own, as a checkpoint reader's over a file's mapping.
Tensor Over(const std::shared_ptr<Storage>& wrapped, int64_t offset, Shape shape) {
  Shape strides = ContiguousStrides(shape);
  return Tensor(wrapped, offset, std::move(shape), std::move(strides), DType::kFloat32);
}

template <typename T>
std::shared_ptr<Storage> Wrapping(std::vector<T>& values) {
  return Storage::Wrap(Device::Cpu(), values.data(), values.size() * sizeof(T), [] {});
}

// 0, 1, 2, ...: a file whose values say where each came from.
std::vector<float> Counting(size_t n) {
  std::vector<float> floats(n);
  std::iota(floats.begin(), floats.end(), 0.0f);
  return floats;
}

// Note [Loaded tensors own their memory]: a tensor that views a file is copied into the
// model, so rewriting the file afterwards (here: the memory under it) changes nothing.
TEST(LoadStateDictTest, TensorsOverWrappedMemoryAreCopiedIntoTheModel) {
  auto mlp = Build(testing::kMlpSpec);
  std::vector<float> file = Counting(64);
  const std::shared_ptr<Storage> mapping = Wrapping(file);
  StateDictInput input;
  int64_t at = 0;
  for (const auto& entry : GetStateDict(*mlp).entries) {
    input.entries.emplace_back(entry.name, Over(mapping, at, entry.tensor.shape()));
    at += entry.tensor.numel();
  }
  // One key converts (float64 in, float32 model): straight from the mapping, into owned memory.
  std::vector<double> wide = {7.5};
  input.entries[0].second = Tensor(Wrapping(wide), 0, {1}, {1}, DType::kFloat64);
  ASSERT_TRUE(LoadStateDict(mlp, input, {}).ok());
  const auto loaded = Snapshot(*mlp);
  for (const auto& entry : GetStateDict(*mlp).entries) {
    EXPECT_FALSE(entry.tensor.storage()->wrapped()) << entry.name;
  }
  EXPECT_EQ(loaded[0], std::vector<double>{7.5});
  EXPECT_EQ(loaded[1], std::vector<double>({1, 2}));  // linear1.weight, after w2's one float
  std::fill(file.begin(), file.end(), -1.0f);
  wide[0] = -1.0;
  EXPECT_EQ(Snapshot(*mlp), loaded);
}

// The daemon's own snapshot files are never rewritten in place: their restore keeps the
// mapping (LoadOptions::keep_mapped) instead of copying it.
TEST(LoadStateDictTest, KeepMappedInstallsWrappedTensorsAsTheyAre) {
  auto mlp = Build(testing::kMlpSpec);
  std::vector<float> file(64, 1.0f);
  const std::shared_ptr<Storage> mapping = Wrapping(file);
  StateDictInput input;
  for (const auto& entry : GetStateDict(*mlp).entries) {
    input.entries.emplace_back(entry.name, Over(mapping, 0, entry.tensor.shape()));
  }
  LoadOptions options;
  options.keep_mapped = true;
  ASSERT_TRUE(LoadStateDict(mlp, input, options).ok());
  EXPECT_EQ((*GetParameter(mlp, "linear1.weight"))->data().storage(), mapping);
}

// assign=True installs the checkpoint's tensors themselves; over a file that is a copy of
// each storage, once, so tensors that share one in the file still share it (§4 assign).
TEST(LoadStateDictTest, AssignCopiesAWrappedStorageOnceAndKeepsItShared) {
  auto lm = Build(testing::kTiedEmbeddingSpec);
  std::vector<float> file = Counting(80);
  const std::shared_ptr<Storage> mapping = Wrapping(file);
  StateDictInput input;
  input.entries = {{"embed.weight", Over(mapping, 0, {10, 4})},
                   {"lm_head.weight", Over(mapping, 40, {10, 4})}};
  ASSERT_TRUE(LoadStateDict(lm, input, {.strict = true, .assign = true}).ok());
  const Tensor embed = (*GetParameter(lm, "embed.weight"))->data();
  const Tensor head = (*GetParameter(lm, "lm_head.weight"))->data();
  EXPECT_EQ(embed.storage(), head.storage());
  EXPECT_NE(embed.storage(), mapping);
  EXPECT_FALSE(embed.storage()->wrapped());
  EXPECT_EQ(head.offset(), 40);
  std::fill(file.begin(), file.end(), -1.0f);
  EXPECT_EQ(Values(embed)[1], 1.0);
  EXPECT_EQ(Values(head)[0], 40.0);
}

// A key the model does not take is not copied: a non-strict load of a subset of a large file
// costs the subset.
TEST(LoadStateDictTest, UnexpectedWrappedTensorsAreNotCopied) {
  auto mlp = Build(testing::kMlpSpec);
  std::vector<float> file(size_t{16} << 20, 1.0f);  // 64 MiB
  const std::shared_ptr<Storage> mapping = Wrapping(file);
  StateDictInput input = FullInput(*mlp, 2.0);
  input.entries.emplace_back("extra.weight", Over(mapping, 0, {int64_t{16} << 20}));
  kernels::Backend* cpu = *kernels::GetBackend(Device::Cpu());
  const size_t before = cpu->bytes_in_use();
  absl::StatusOr<LoadPlan> plan = PlanLoadStateDict(mlp, input, {.strict = false});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->keys().unexpected_keys, ElementsAre("extra.weight"));
  EXPECT_LT(cpu->bytes_in_use(), before + (size_t{1} << 20));
}

}  // namespace
}  // namespace paramd::core
