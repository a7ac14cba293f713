// Model specs (DESIGN.md section 6): the seed's models, refs and ties, seeding, and errors
// that name the JSON path.
#include "server/core/spec.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/repr.h"
#include "tests/unit/core/test_util.h"

namespace paramd::core {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::Build;
using testing::Names;
using testing::StateDictKeys;
using testing::Values;

absl::Status SpecStatus(const std::string& spec) {
  return BuildModuleFromText(spec, 0).status();
}

TEST(SpecTest, SeedCnnNamesAndShapes) {  // seed MyModel
  auto cnn = Build(R"({"type": "MyModel", "children": [
      {"name": "conv1", "type": "Conv2d", "args": {"in_channels": 1, "out_channels": 20, "kernel_size": 5}},
      {"name": "pool", "type": "MaxPool2d", "args": {"kernel_size": 2, "stride": 2}},
      {"name": "fc1", "type": "Linear", "args": {"in_features": 2880, "out_features": 10}}],
    "forward": ["conv1", {"op": "relu"}, "pool", {"op": "view", "args": {"shape": [-1, 2880]}},
                "fc1", {"op": "relu"}]})");
  auto params = NamedParameters(cnn);
  ASSERT_THAT(Names(params), ElementsAre("conv1.weight", "conv1.bias", "fc1.weight", "fc1.bias"));
  EXPECT_EQ(params[0].second->data().shape(), (Shape{20, 1, 5, 5}));
  EXPECT_EQ(params[1].second->data().shape(), (Shape{20}));
  EXPECT_EQ(params[2].second->data().shape(), (Shape{10, 2880}));
  EXPECT_EQ(params[3].second->data().shape(), (Shape{10}));
  EXPECT_EQ(Repr(*cnn),
            "MyModel(\n"
            "  (conv1): Conv2d(1, 20, kernel_size=(5, 5), stride=(1, 1))\n"
            "  (pool): MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)\n"
            "  (fc1): Linear(in_features=2880, out_features=10, bias=True)\n"
            ")");
  EXPECT_EQ(cnn->forward_program().size(), 6u);
}

TEST(SpecTest, SeedCustomLinearByAttributeAndByRegisterParameter) {  // seed custom Linear
  auto net = Build(R"({"type": "Net", "children": [
      {"name": "attr", "type": "Linear", "custom": true, "parameters": [
        {"name": "w", "shape": [3, 2], "init": "randn"},
        {"name": "b", "shape": [2], "init": "zeros"}]},
      {"name": "registered", "type": "MyLinear", "parameters": [
        {"name": "weight", "shape": [2, 3], "init": "randn"},
        {"name": "bias", "shape": [2]}]},
      {"name": "no_bias", "type": "MyLinear", "parameters": [
        {"name": "weight", "shape": [2, 3], "init": "randn"},
        {"name": "bias", "none": true}]}]})");
  EXPECT_THAT(StateDictKeys(*net),
              ElementsAre("attr.w", "attr.b", "registered.weight", "registered.bias",
                          "no_bias.weight"));
  auto attr = *GetSubmodule(net, "attr");
  EXPECT_EQ(attr->type(), "Linear");
  EXPECT_EQ(attr->layer(), nullptr);  // a user class named Linear, not nn.Linear
  EXPECT_EQ(Repr(*attr), "Linear()");
  EXPECT_THAT(Values((*attr->parameters().Find("b"))->data()), ElementsAre(0, 0));
  EXPECT_TRUE((*GetSubmodule(net, "no_bias"))->parameters().contains("bias"));
}

TEST(SpecTest, SameSeedSameValuesOtherSeedOtherValues) {
  auto a = Build(testing::kSharedSpec, 42);
  auto b = Build(testing::kSharedSpec, 42);
  auto c = Build(testing::kSharedSpec, 43);
  const Tensor a0 = GetStateDict(*a).entries[0].tensor;
  EXPECT_EQ(Values(a0), Values(GetStateDict(*b).entries[0].tensor));
  EXPECT_NE(Values(a0), Values(GetStateDict(*c).entries[0].tensor));
}

TEST(SpecTest, TieReplacesTheSlotInPlaceAndKeepsOrder) {  // §9 lm_head.weight = embed.weight
  auto lm = Build(R"({"type": "Net", "children": [
      {"name": "embed", "type": "Embedding", "args": {"num_embeddings": 10, "embedding_dim": 4}},
      {"name": "head", "type": "Linear", "args": {"in_features": 4, "out_features": 10},
       "parameters": [{"name": "weight", "tie": "embed.weight"}]}]})");
  EXPECT_THAT(StateDictKeys(*lm), ElementsAre("embed.weight", "head.weight", "head.bias"));
  EXPECT_EQ(*GetParameter(lm, "head.weight"), *GetParameter(lm, "embed.weight"));
}

TEST(SpecTest, RefAndTieMayNameModulesDeclaredLater) {
  auto net = Build(R"({"type": "Net",
      "parameters": [{"name": "scale", "tie": "block.w"}],
      "children": [{"name": "alias", "ref": "block"},
                   {"name": "block", "type": "Block", "parameters": [{"name": "w", "shape": [2]}]}]})");
  EXPECT_THAT(StateDictKeys(*net), ElementsAre("scale", "alias.w", "block.w"));
  EXPECT_EQ(*GetSubmodule(net, "alias"), *GetSubmodule(net, "block"));
}

// A chain of ties resolves whatever order it is declared in (docs/specs.md: ties may point
// at later declarations), and a cycle of them is refused, saying so.
TEST(SpecTest, ChainedTiesResolveInAnyOrderAndACycleIsRefused) {
  auto net = Build(R"({"type": "Net", "parameters": [
      {"name": "x", "tie": "y"}, {"name": "y", "tie": "z"}, {"name": "z", "shape": [3]}]})");
  EXPECT_THAT(StateDictKeys(*net), ElementsAre("x", "y", "z"));
  EXPECT_EQ(*GetParameter(net, "x"), *GetParameter(net, "z"));
  EXPECT_EQ(*GetParameter(net, "y"), *GetParameter(net, "z"));
  const absl::Status cycle = SpecStatus(R"({"type": "Net", "parameters": [
      {"name": "x", "tie": "y"}, {"name": "y", "tie": "x"}]})");
  EXPECT_EQ(cycle.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cycle.message(), HasSubstr("ties form a cycle"));
}

struct BadSpec {
  const char* name;
  const char* spec;
  const char* message;
};

class SpecErrorTest : public ::testing::TestWithParam<BadSpec> {};

TEST_P(SpecErrorTest, NamesThePathAndTheProblem) {
  absl::Status status = SpecStatus(GetParam().spec);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(status.message(), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Specs, SpecErrorTest,
    ::testing::Values(
        BadSpec{"NotJson", R"({"type": )", "spec error at $: not valid JSON"},
        BadSpec{"NotObject", R"([1])", "spec error at $: a module spec must be a JSON object"},
        BadSpec{"MissingType", R"({"children": []})", "spec error at $: missing field 'type'"},
        BadSpec{"MisspelledBuiltin",
                R"({"type": "Net", "children": [{"name": "a", "type": "linear", "args": {}}]})",
                "spec error at $.children[0].type: unknown module type 'linear'; did you mean 'Linear'?"},
        BadSpec{"UnknownTypeWithArgs",
                R"({"type": "Net", "children": [{"name": "a", "type": "Linaer", "args": {"in_features": 1}}]})",
                "spec error at $.children[0].type: unknown module type 'Linaer' with args"},
        BadSpec{"MissingArgument",
                R"({"type": "Net", "children": [{"name": "a", "type": "Linear", "args": {"in_features": 1}}]})",
                "$.children[0].args"},
        BadSpec{"IllTypedArgument",
                R"({"type": "Net", "children": [{"name": "a", "type": "Linear", "args": {"in_features": "one", "out_features": 2}}]})",
                "$.children[0].args.in_features"},
        BadSpec{"UnknownArgument",
                R"({"type": "Linear", "args": {"in_features": 1, "out_features": 2, "bais": true}})",
                "unknown argument 'bais'"},
        BadSpec{"DanglingRef",
                R"({"type": "Net", "children": [{"name": "a", "ref": "nothere"}]})",
                "spec error at $.children[0].ref: 'nothere' names no module: Net has no attribute `nothere`"},
        BadSpec{"DanglingTie",
                R"({"type": "Net", "parameters": [{"name": "w", "tie": "x.weight"}]})",
                "spec error at $.parameters[0].tie: 'x.weight' names no parameter"},
        BadSpec{"TieBetweenDifferentShapes",
                R"({"type": "Net", "children": [
                    {"name": "a", "type": "Linear", "args": {"in_features": 2, "out_features": 3}},
                    {"name": "b", "type": "Linear", "args": {"in_features": 3, "out_features": 3},
                     "parameters": [{"name": "weight", "tie": "a.weight"}]}]})",
                "cannot tie 'weight' of shape [3, 3] to 'a.weight' of shape [3, 2]"},
        BadSpec{"DuplicateChild",
                R"({"type": "Net", "children": [{"name": "a", "type": "ReLU"}, {"name": "a", "type": "Tanh"}]})",
                "spec error at $.children[1].name: the name 'a' is declared twice in this module"},
        BadSpec{"DuplicateParameterAndChild",
                R"({"type": "Net", "parameters": [{"name": "a", "shape": [1]}], "children": [{"name": "a", "type": "ReLU"}]})",
                "spec error at $.children[0].name: the name 'a' is declared twice in this module"},
        BadSpec{"NameTakenByBuiltinAttribute",
                R"({"type": "Linear", "args": {"in_features": 1, "out_features": 2},
                    "buffers": [{"name": "in_features", "shape": [1]}]})",
                "spec error at $.buffers[0].name: attribute 'in_features' already exists"},
        BadSpec{"DottedChildName",
                R"({"type": "Net", "children": [{"name": "a.b", "type": "ReLU"}]})",
                "module name can't contain \".\", got: a.b"},
        BadSpec{"DottedParameterName",
                R"({"type": "Net", "parameters": [{"name": "a.b", "shape": [1]}]})",
                "spec error at $.parameters[0].name: parameter name can't contain \".\""},
        BadSpec{"EmptyBufferName",
                R"({"type": "Net", "buffers": [{"name": "", "shape": [1]}]})",
                "buffer name can't be empty string"},
        BadSpec{"Cycle",
                R"({"type": "Net", "children": [{"name": "a", "type": "Block", "children": [{"name": "back", "ref": "a"}]}]})",
                "makes a module its own descendant"},
        BadSpec{"BadShape",
                R"({"type": "Net", "parameters": [{"name": "w", "shape": [2, -1]}]})",
                "spec error at $.parameters[0].shape"},
        BadSpec{"HugeShape",
                R"({"type": "Net", "parameters": [{"name": "w", "shape": [1099511627776, 1099511627776]}]})",
                "too many elements"},
        BadSpec{"BadDtype",
                R"({"type": "Net", "parameters": [{"name": "w", "shape": [1], "dtype": "float128"}]})",
                "spec error at $.parameters[0].dtype: unknown dtype 'float128'"},
        BadSpec{"IntegerParameterRequiringGrad",
                R"({"type": "Net", "parameters": [{"name": "w", "shape": [1], "dtype": "int64"}]})",
                "Only Tensors of floating point and complex dtype can require gradients"},
        BadSpec{"WrongValueCount",
                R"({"type": "Net", "parameters": [{"name": "w", "shape": [2], "init": {"values": [1, 2, 3]}}]})",
                "$.parameters[0].init.values"},
        BadSpec{"UnknownField",
                R"({"type": "Net", "childs": []})", "unknown field 'childs'"},
        BadSpec{"ForwardNamesMissingChild",
                R"({"type": "Net", "forward": ["nope"]})",
                "spec error at $.forward[0]: Net has no child 'nope'"},
        BadSpec{"ArgsOnCustomType",
                R"({"type": "Net", "custom": true, "args": {}})",
                "the custom type 'Net' takes no args"}),
    [](const ::testing::TestParamInfo<BadSpec>& info) { return info.param.name; });

}  // namespace
}  // namespace paramd::core
