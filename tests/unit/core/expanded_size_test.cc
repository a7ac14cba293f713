// Note [Expanded size]: counting a tree's path-expanded state_dict keys and module paths in
// time linear in its distinct modules, and refusing trees and changes past the limit.
#include "server/core/expanded_size.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "server/core/registry.h"
#include "tests/unit/core/test_util.h"

namespace paramd::core {
namespace {

using ::testing::HasSubstr;
using testing::Build;
using testing::MakeTensor;
using testing::SharedChainSpec;

constexpr uint64_t kNoLimit = std::numeric_limits<uint64_t>::max();

std::shared_ptr<Module> BuildUnlimited(const std::string& spec) {
  auto module = BuildModuleFromText(spec, 0, kNoLimit);
  EXPECT_TRUE(module.ok()) << module.status();
  return module.ok() ? *module : std::make_shared<Module>("Invalid");
}

// Level `depth` of a SharedChainSpec: the Linear at "0.0...0".
std::shared_ptr<Module> Level(const std::shared_ptr<Module>& root, int depth) {
  std::vector<std::string> zeros(static_cast<size_t>(depth), "0");
  auto module = GetSubmodule(root, absl::StrJoin(zeros, "."));
  EXPECT_TRUE(module.ok()) << module.status();
  return module.ok() ? *module : root;
}

TEST(ExpandedSizeTest, MatchesWhatTheWalksListOnSmallTrees) {
  for (const char* spec : {testing::kMlpSpec, testing::kSharedSpec, testing::kTiedEmbeddingSpec}) {
    auto root = Build(spec);
    const ExpandedSize size = CountExpandedSize(*root);
    EXPECT_EQ(size.state_dict_keys, GetStateDict(*root).entries.size()) << spec;
    EXPECT_EQ(size.module_paths, GetStateDict(*root).metadata.size()) << spec;
    EXPECT_EQ(size.module_paths, NamedModules(root, "", false).size()) << spec;
  }
  for (int depth = 0; depth <= 8; ++depth) {
    auto root = Build(SharedChainSpec(depth));
    const ExpandedSize size = CountExpandedSize(*root);
    EXPECT_EQ(size.state_dict_keys, uint64_t{2} << depth);
    EXPECT_EQ(size.state_dict_keys, GetStateDict(*root).entries.size()) << depth;
    EXPECT_EQ(size.module_paths, NamedModules(root, "", false).size()) << depth;
  }
}

TEST(ExpandedSizeTest, NonePersistentAndNoneSlotsCountAsStateDictDoes) {
  auto root = Build(R"({"type": "Net",
    "parameters": [{"name": "p", "shape": [1]}, {"name": "q", "none": true}],
    "buffers": [{"name": "kept", "shape": [1]}, {"name": "dropped", "shape": [1], "persistent": false},
                {"name": "empty", "none": true}],
    "children": [{"name": "a", "type": "Linear", "args": {"in_features": 1, "out_features": 1}},
                 {"name": "b", "ref": "a"}, {"name": "c", "none": true}]})");
  const ExpandedSize size = CountExpandedSize(*root);
  EXPECT_EQ(size.state_dict_keys, 6u);  // p, kept, a.weight, a.bias, b.weight, b.bias
  EXPECT_EQ(size.state_dict_keys, GetStateDict(*root).entries.size());
  EXPECT_EQ(size.module_paths, 3u);
}

// The depth-40 chain has 2^41 keys: counted at once, never listed.
TEST(ExpandedSizeTest, CountsADepth40ChainWithoutWalkingIt) {
  auto root = BuildUnlimited(SharedChainSpec(40));
  const absl::Time start = absl::Now();
  const ExpandedSize size = CountExpandedSize(*root);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_EQ(size.state_dict_keys, uint64_t{1} << 41);  // 2^40 paths x (weight, bias)
  EXPECT_EQ(size.module_paths, (uint64_t{1} << 41) - 1);
}

TEST(ExpandedSizeTest, SaturatesInsteadOfOverflowing) {
  // Depth 200, 2^201 keys: built by hand, as no spec may nest modules that deep.
  auto root = std::make_shared<Module>("Linear");
  ASSERT_TRUE(root->RegisterParameter("w", std::make_shared<Parameter>(MakeTensor({1}, {1}))).ok());
  for (int level = 0; level < 200; ++level) {
    auto parent = std::make_shared<Module>("Pair");
    ASSERT_TRUE(parent->AddModule("0", root).ok());
    ASSERT_TRUE(parent->AddModule("1", root).ok());
    root = parent;
  }
  const ExpandedSize size = CountExpandedSize(*root);
  EXPECT_EQ(size.state_dict_keys, kNoLimit);
  EXPECT_EQ(size.module_paths, kNoLimit);
  EXPECT_EQ(size.depth, 201u);
  const absl::Status status = CheckExpandedSize(size, kDefaultMaxStateDictKeys, "spec expands to");
  EXPECT_THAT(status.message(), HasSubstr("spec expands to 18446744073709551615 or more"));
  // Just past 64 bits, too.
  auto root64 = BuildModuleFromText(SharedChainSpec(64), 0, kNoLimit);
  ASSERT_TRUE(root64.ok()) << root64.status();
  EXPECT_EQ(CountExpandedSize(**root64).state_dict_keys, kNoLimit);
  EXPECT_EQ(CountExpandedSize(*Level(*root64, 1)).state_dict_keys, kNoLimit);
  EXPECT_EQ(CountExpandedSize(*Level(*root64, 2)).state_dict_keys, uint64_t{1} << 63);
}

TEST(ExpandedSizeTest, SpecsPastTheLimitAreRefusedWithTheCountTheLimitAndTheFlag) {
  auto refused = BuildModuleFromText(SharedChainSpec(40), 0);
  ASSERT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_EQ(refused.status().message(),
            "spec expands to 2199023255552 state_dict keys (shared modules are listed once per "
            "path, as in PyTorch); the limit is 1048576 (--max-state-dict-keys)");
  // The limit is the caller's: 2^13 keys pass a limit of 2^13 and not one of 2^13 - 1.
  EXPECT_TRUE(BuildModuleFromText(SharedChainSpec(12), 0, 8192).ok());
  EXPECT_EQ(BuildModuleFromText(SharedChainSpec(12), 0, 8191).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Module paths count against the same limit: 2^20 ReLU paths hold no key at all.
  std::string relus = R"({"type": "ReLU"})";
  for (int level = 19; level >= 0; --level) {
    std::vector<std::string> zeros(static_cast<size_t>(level) + 1, "0");
    relus = absl::StrCat(R"({"type": "Sequential", "children": [)", relus, R"(, {"ref": ")",
                         absl::StrJoin(zeros, "."), R"("}]})");
  }
  auto paths = BuildModuleFromText(relus, 0);
  ASSERT_EQ(paths.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(paths.status().message(),
              HasSubstr("spec expands to 2097151 module paths (shared modules are listed once "
                        "per path by named_modules(remove_duplicate=False)"));
}

// Refs can chain modules past what a spec nests: such a chain is refused by its depth (or,
// longer, by its paths), and checking it never recurses once per level.
TEST(ExpandedSizeTest, RefChainsDeeperThanTheDepthLimitAreRefusedWithoutRecursing) {
  // Chain: l0 -> l1 -> ... each a root child holding the next one by ref.
  auto chain = [](int length) {
    std::string spec = R"({"type": "Chain", "children": [)";
    for (int i = 0; i < length; ++i) {
      absl::StrAppend(&spec, i == 0 ? "" : ", ", R"({"name": "l)", i, R"(", "type": "Sequential")",
                      i + 1 < length ? absl::StrCat(R"(, "children": [{"ref": "l)", i + 1, R"("}])")
                                     : std::string(),
                      "}");
    }
    return spec + "]}";
  };
  EXPECT_TRUE(BuildModuleFromText(chain(127), 0).ok());  // 128 levels with the root
  auto deep = BuildModuleFromText(chain(128), 0);
  ASSERT_EQ(deep.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(deep.status().message(),
            "spec error at $: refs nest modules 129 deep; at most 128 levels are allowed (a "
            "module's path may have at most 127 names)");
  // 40,000 levels, 2.5 MB of spec: refused, not a stack overflow.
  auto deeper = BuildModuleFromText(chain(40000), 0);
  EXPECT_EQ(deeper.status().code(), absl::StatusCode::kInvalidArgument);
  // A cycle that deep is found without recursing too, and named as before.
  std::string cyclic = chain(40000);
  cyclic.replace(cyclic.rfind(R"("type": "Sequential")"), 20,
                 R"("type": "Sequential", "children": [{"ref": "l0"}])");
  auto cycle = BuildModuleFromText(cyclic, 0);
  ASSERT_EQ(cycle.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cycle.status().message(), HasSubstr("makes a module its own descendant"));
  EXPECT_THAT(cycle.status().message(), HasSubstr("spec error at $: the ref at 'l0.0.0.0.0"));
}

// RegisterParameter / RegisterBuffer / TieParameters check a planned copy of the module
// before they commit: a tensor added to a module at 2^20 paths adds 2^20 keys.
TEST(ExpandedSizeTest, ARegistrationOnADeeplySharedModuleIsCountedBeforeItIsMade) {
  auto root = Build(SharedChainSpec(19));  // 2^20 keys: exactly the default limit
  ASSERT_TRUE(CheckExpandedSize(CountExpandedSize(*root), kDefaultMaxStateDictKeys, "x").ok());
  std::shared_ptr<Module> leaf = Level(root, 19);
  ASSERT_EQ(leaf->type(), "Linear");

  Module planned = *leaf;
  ASSERT_TRUE(planned.RegisterParameter("extra", std::make_shared<Parameter>(MakeTensor({1}, {1}))).ok());
  const ExpandedSize grown = CountExpandedSize(*root, leaf.get(), &planned);
  EXPECT_EQ(grown.state_dict_keys, (uint64_t{3} << 19));
  EXPECT_EQ(CheckExpandedSize(grown, kDefaultMaxStateDictKeys, "registering").code(),
            absl::StatusCode::kInvalidArgument);
  // Nothing was changed: the module and the tree count as before.
  EXPECT_FALSE(leaf->parameters().contains("extra"));
  EXPECT_EQ(CountExpandedSize(*root).state_dict_keys, uint64_t{1} << 20);

  // A None parameter or a non-persistent buffer adds no key, so it is allowed.
  Module none = *leaf;
  ASSERT_TRUE(none.RegisterParameter("nothing", nullptr).ok());
  ASSERT_TRUE(none.RegisterBuffer("scratch", std::make_shared<Buffer>(MakeTensor({1}, {0})),
                                  /*persistent=*/false).ok());
  EXPECT_EQ(CountExpandedSize(*root, leaf.get(), &none).state_dict_keys, uint64_t{1} << 20);

  // A tie that gives the shared Linear a new name (`module.w = other.weight`) adds a key
  // per path too; one that replaces its existing weight adds none.
  Module tied = *leaf;
  ASSERT_TRUE(tied.AssignParameter("w", *leaf->parameters().Find("weight")).ok());
  EXPECT_EQ(CountExpandedSize(*root, leaf.get(), &tied).state_dict_keys, (uint64_t{3} << 19));
  Module retied = *leaf;
  ASSERT_TRUE(retied.AssignParameter("bias", *leaf->parameters().Find("bias")).ok());
  EXPECT_EQ(CountExpandedSize(*root, leaf.get(), &retied).state_dict_keys, uint64_t{1} << 20);
  EXPECT_FALSE(leaf->parameters().contains("w"));
}

// Note [Structure memory]
std::string ReLUs(int count) {
  std::string spec = R"({"type": "Sequential", "children": [)";
  for (int i = 0; i < count; ++i) absl::StrAppend(&spec, i > 0 ? ", " : "", R"({"type": "ReLU"})");
  return spec + "]}";
}

TEST(StructureMemoryTest, CountsEachDistinctModuleOnceWithItsSlotsAndNames) {
  EXPECT_EQ(CountExpandedSize(*BuildUnlimited(ReLUs(3))).structure_bytes,
            4 * kModuleBytes + 3 * (kChildSlotBytes + 1));
  // A chain whose paths double per level grows by the same few modules per level.
  auto bytes = [](int depth) {
    return CountExpandedSize(*BuildUnlimited(SharedChainSpec(depth))).structure_bytes;
  };
  EXPECT_EQ(bytes(31) - bytes(30), bytes(30) - bytes(29));
  EXPECT_LT(bytes(30), uint64_t{100} << 10);
}

TEST(StructureMemoryTest, IsChargedAgainstTheHostLimitForAsLongAsTheModelLives) {
  kernels::Backend* host = *kernels::GetBackend(Device::Cpu());
  const size_t before = host->bytes_in_use();
  host->SetMemoryLimit(before + (size_t{1} << 20));
  // A spec whose modules alone pass the limit is refused as it is built, and what its
  // build counted is given back.
  auto refused = BuildModuleFromText(ReLUs(2000), 0, kNoLimit);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), HasSubstr("--max-memory"));
  EXPECT_EQ(host->bytes_in_use(), before);

  std::shared_ptr<Module> root = BuildUnlimited(ReLUs(100));
  EXPECT_EQ(host->bytes_in_use(), before);
  const uint64_t structure = CountExpandedSize(*root).structure_bytes;
  {
    ModelRegistry registry;
    ASSERT_TRUE(registry.Add(std::make_shared<Model>("m", root, Device::Cpu())).ok());
    EXPECT_EQ(host->bytes_in_use(), before + structure);
    auto model = *registry.Get("m");
    // More than fits changes nothing; less gives the difference back.
    absl::Status grown = model->ChargeStructure(size_t{2} << 20);
    EXPECT_EQ(grown.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_THAT(grown.message(), HasSubstr("model 'm'"));
    EXPECT_EQ(host->bytes_in_use(), before + structure);
    ASSERT_TRUE(model->ChargeStructure(structure / 2).ok());
    EXPECT_EQ(host->bytes_in_use(), before + structure / 2);
    ASSERT_TRUE(model->ChargeStructure(structure).ok());
    // A second model whose structure does not fit is not added.
    auto big = std::make_shared<Model>("big", BuildUnlimited(ReLUs(100)), Device::Cpu());
    ASSERT_TRUE(big->ChargeStructure(0).ok());
    host->SetMemoryLimit(before + structure + structure / 2);
    EXPECT_EQ(registry.Add(big).code(), absl::StatusCode::kResourceExhausted);
    EXPECT_FALSE(registry.Get("big").ok());
    EXPECT_EQ(host->bytes_in_use(), before + structure);
    ASSERT_TRUE(registry.Remove("m", std::nullopt).ok());
    model.reset();
  }
  EXPECT_EQ(host->bytes_in_use(), before);
  host->SetMemoryLimit(0);
}

// A lease that refuses every reservation, as a full disk would.
class RefusingLease : public VersionLease {
 public:
  absl::StatusOr<uint64_t> Reserve(const std::string&, uint64_t) override {
    return absl::UnavailableError("no space left on device");
  }
};

TEST(StructureMemoryTest, AWriteThatFailsAfterItsPrepareChargedGivesTheChargeBack) {
  kernels::Backend* host = *kernels::GetBackend(Device::Cpu());
  const size_t before = host->bytes_in_use();
  auto model = std::make_shared<Model>("m", BuildUnlimited(ReLUs(3)), Device::Cpu());
  ASSERT_TRUE(model->ChargeStructure(4096).ok());
  ASSERT_EQ(host->bytes_in_use(), before + 4096);
  // Failing in the prepare, after charging (as CheckPlanned charges last).
  auto refused = model->Write(std::nullopt,
                              [&](const std::shared_ptr<Module>&) -> absl::StatusOr<Model::Commit> {
                                EXPECT_TRUE(model->ChargeStructure(8192).ok());
                                return absl::InvalidArgumentError("refused");
                              });
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(host->bytes_in_use(), before + 4096);
  // Failing after the prepare, when no version can be reserved.
  model->set_version_lease(std::make_shared<RefusingLease>());
  bool committed = false;
  auto unreserved = model->Write(
      std::nullopt, [&](const std::shared_ptr<Module>&) -> absl::StatusOr<Model::Commit> {
        EXPECT_TRUE(model->ChargeStructure(8192).ok());
        return Model::Commit([&](uint64_t) { committed = true; });
      });
  EXPECT_EQ(unreserved.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(committed);
  EXPECT_EQ(model->version(), 1u);
  EXPECT_EQ(host->bytes_in_use(), before + 4096);
  model.reset();
  EXPECT_EQ(host->bytes_in_use(), before);
}

}  // namespace
}  // namespace paramd::core
