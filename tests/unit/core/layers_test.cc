// The built-in layers (DESIGN.md section 6): PyTorch's constructor arguments and checks, the
// parameters and buffers each registers (pytorch-semantics.md §1: names, order, shapes,
// dtypes, None slots) and their default initialisation.
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "base/status_macros.h"
#include "server/core/forward.h"
#include "server/core/init.h"
#include "server/core/layers/layer.h"
#include "server/core/module.h"
#include "server/core/repr.h"
#include "tests/unit/core/test_util.h"

namespace paramd::core {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Builds one layer as the spec builder does: a Module with empty arguments, then the
// layer's build with an ArgReader over `args_text`.
absl::StatusOr<std::shared_ptr<Module>> BuildLayer(const std::string& type,
                                                   const std::string& args_text = "{}",
                                                   uint64_t seed = 0) {
  const LayerDef* layer = FindLayer(type);
  if (layer == nullptr) return absl::NotFoundError(absl::StrCat("no layer ", type));
  const nlohmann::json args = nlohmann::json::parse(args_text);
  ArgReader reader(type, args, "$.args");
  auto module = std::make_shared<Module>(layer, nlohmann::ordered_json::object());
  InitRng rng(seed);
  PARAMD_RETURN_IF_ERROR(layer->build(reader, *module, rng));
  return module;
}

std::shared_ptr<Module> MustBuild(const std::string& type, const std::string& args_text = "{}",
                                  uint64_t seed = 0) {
  auto module = BuildLayer(type, args_text, seed);
  EXPECT_TRUE(module.ok()) << type << " " << args_text << ": " << module.status();
  return module.ok() ? *module : std::make_shared<Module>("Invalid");
}

// The error message of a build that must fail.
std::string BuildError(const std::string& type, const std::string& args_text) {
  auto module = BuildLayer(type, args_text);
  EXPECT_FALSE(module.ok()) << type << " " << args_text << " unexpectedly built";
  if (module.ok()) return "";
  EXPECT_EQ(module.status().code(), absl::StatusCode::kInvalidArgument) << module.status();
  return std::string(module.status().message());
}

// One registry slot as "name:shape:dtype", or "name:None".
template <typename Slot>
std::vector<std::string> Slots(const OrderedMap<std::shared_ptr<Slot>>& map) {
  std::vector<std::string> slots;
  for (const auto& [name, slot] : map) {
    if (slot == nullptr) {
      slots.push_back(absl::StrCat(name, ":None"));
      continue;
    }
    const Tensor& t = slot->data();
    slots.push_back(absl::StrCat(name, ":", ShapeString(t.shape()), ":", DTypeName(t.dtype())));
  }
  return slots;
}

std::vector<double> ValuesOf(const Module& module, const std::string& name) {
  const std::shared_ptr<Parameter>* parameter = module.parameters().Find(name);
  if (parameter != nullptr && *parameter != nullptr) {
    auto values = ToDoubles((*parameter)->data());
    EXPECT_TRUE(values.ok());
    return values.ok() ? *values : std::vector<double>{};
  }
  const std::shared_ptr<Buffer>* buffer = module.buffers().Find(name);
  if (buffer != nullptr && *buffer != nullptr) {
    auto values = ToDoubles((*buffer)->data());
    EXPECT_TRUE(values.ok());
    return values.ok() ? *values : std::vector<double>{};
  }
  ADD_FAILURE() << "no tensor " << name;
  return {};
}

std::string ExtraRepr(const Module& module) {
  return module.layer()->extra_repr == nullptr ? "" : module.layer()->extra_repr(module);
}

// ---- The table ----

TEST(LayersRegistryTest, EveryBuiltInIsListedInDesignOrder) {
  std::vector<std::string> types;
  for (const LayerDef* layer : AllLayers()) types.emplace_back(layer->type);
  EXPECT_THAT(types, ElementsAre("Linear", "Conv1d", "Conv2d", "MaxPool2d", "AvgPool2d",
                                 "AdaptiveAvgPool2d", "BatchNorm1d", "BatchNorm2d", "LayerNorm",
                                 "Embedding", "Dropout", "ReLU", "GELU", "SiLU", "Sigmoid", "Tanh",
                                 "Softmax", "LogSoftmax", "Flatten", "Identity", "Sequential",
                                 "ModuleList", "ModuleDict"));
  for (const LayerDef* layer : AllLayers()) {
    EXPECT_EQ(FindLayer(layer->type), layer);
    EXPECT_NE(layer->build, nullptr) << layer->type;
  }
  EXPECT_EQ(FindLayer("linear"), nullptr);  // names are case-sensitive, as Python's are
  EXPECT_EQ(FindLayer("MLP"), nullptr);
}

TEST(LayersRegistryTest, ContainersAndVersions) {  // pytorch-semantics.md §1: _version
  for (const char* type : {"Sequential", "ModuleList", "ModuleDict"}) {
    EXPECT_TRUE(FindLayer(type)->is_container) << type;
  }
  EXPECT_FALSE(FindLayer("Linear")->is_container);
  EXPECT_EQ(FindLayer("Linear")->module_version, 1);
  for (const char* type : {"BatchNorm1d", "BatchNorm2d"}) {
    EXPECT_EQ(FindLayer(type)->module_version, 2) << type;
    EXPECT_TRUE(FindLayer(type)->fills_num_batches_tracked) << type;
  }
  EXPECT_FALSE(FindLayer("LayerNorm")->fills_num_batches_tracked);
}

TEST(LayersRegistryTest, ConstructorAttributesAreVisibleToHasattr) {
  auto linear = MustBuild("Linear", R"({"in_features": 1, "out_features": 2})");
  EXPECT_TRUE(linear->HasAttribute("in_features"));
  EXPECT_TRUE(linear->HasAttribute("out_features"));
  EXPECT_FALSE(linear->HasAttribute("dtype"));
  auto conv = MustBuild("Conv2d", R"({"in_channels": 1, "out_channels": 2, "kernel_size": 3})");
  for (const char* name : {"in_channels", "out_channels", "kernel_size", "stride", "padding",
                           "dilation", "transposed", "output_padding", "groups", "padding_mode"}) {
    EXPECT_TRUE(conv->HasAttribute(name)) << name;
  }
  auto bn = MustBuild("BatchNorm2d", R"({"num_features": 3})");
  for (const char* name : {"num_features", "eps", "momentum", "affine", "track_running_stats"}) {
    EXPECT_TRUE(bn->HasAttribute(name)) << name;
  }
}

// ---- ArgReader ----

TEST(LayersArgReaderTest, TypeChecksNameThePathAndTheValue) {
  EXPECT_EQ(BuildError("Linear", R"({"in_features": "a", "out_features": 2})"),
            "$.args.in_features: Linear expected an integer for 'in_features', got \"a\"");
  EXPECT_THAT(BuildError("Linear", R"({"in_features": 1.5, "out_features": 2})"),
              HasSubstr("expected an integer for 'in_features', got 1.5"));
  // JSON 2.0 is a float: PyTorch's torch.empty((3, 2.0)) refuses it too.
  EXPECT_THAT(BuildError("Linear", R"({"in_features": 2.0, "out_features": 2})"),
              HasSubstr("expected an integer"));
  EXPECT_THAT(BuildError("Linear", R"({"in_features": true, "out_features": 2})"),
              HasSubstr("expected an integer for 'in_features', got true"));
  EXPECT_THAT(BuildError("Linear", R"({"in_features": 18446744073709551615, "out_features": 2})"),
              HasSubstr("expected an integer"));
  EXPECT_THAT(BuildError("Linear", R"({"in_features": 1, "out_features": 2, "bias": 1})"),
              HasSubstr("$.args.bias: Linear expected a boolean for 'bias', got 1"));
  EXPECT_THAT(BuildError("BatchNorm2d", R"({"num_features": 1, "eps": "small"})"),
              HasSubstr("$.args.eps: BatchNorm2d expected a number for 'eps', got \"small\""));
  EXPECT_THAT(BuildError("BatchNorm2d", R"({"num_features": 1, "momentum": false})"),
              HasSubstr("expected a number or null for 'momentum'"));
  EXPECT_THAT(BuildError("Softmax", R"({"dim": 0.5})"),
              HasSubstr("$.args.dim: Softmax expected an integer or null for 'dim', got 0.5"));
  EXPECT_THAT(BuildError("GELU", R"({"approximate": 1})"),
              HasSubstr("expected a string for 'approximate', got 1"));
}

TEST(LayersArgReaderTest, MissingRequiredArgument) {
  EXPECT_THAT(BuildError("Linear", R"({"out_features": 2})"),
              HasSubstr("$.args.in_features: missing required argument 'in_features'"));
  EXPECT_THAT(BuildError("Conv2d", R"({"in_channels": 1, "out_channels": 2})"),
              HasSubstr("missing required argument 'kernel_size'"));
  EXPECT_THAT(BuildError("MaxPool2d", "{}"), HasSubstr("missing required argument 'kernel_size'"));
  EXPECT_THAT(BuildError("AdaptiveAvgPool2d", "{}"),
              HasSubstr("missing required argument 'output_size'"));
  EXPECT_THAT(BuildError("Embedding", R"({"num_embeddings": 3})"),
              HasSubstr("missing required argument 'embedding_dim'"));
}

TEST(LayersArgReaderTest, UnknownArgumentListsTheAcceptedOnes) {
  EXPECT_EQ(BuildError("Linear", R"({"in_features": 1, "out_features": 2, "foo": 3})"),
            "$.args.foo: unknown argument 'foo' for Linear; it takes in_features, out_features, "
            "bias, dtype");
  EXPECT_EQ(BuildError("Sequential", R"({"modules": []})"),
            "$.args.modules: unknown argument 'modules' for Sequential; it takes no arguments");
  EXPECT_THAT(BuildError("ReLU", R"({"inplace": false, "negative_slope": 0.1})"),
              HasSubstr("unknown argument 'negative_slope' for ReLU; it takes inplace"));
}

TEST(LayersArgReaderTest, ArgsMustBeAnObject) {
  EXPECT_EQ(BuildError("Linear", "[1, 2]"),
            "$.args: Linear expected an object of arguments, got [1,2]");
  EXPECT_THAT(BuildError("ReLU", "3"), HasSubstr("expected an object of arguments"));
  // Absent args (null) are no arguments.
  EXPECT_TRUE(BuildLayer("ReLU", "null").ok());
  EXPECT_THAT(BuildError("Linear", "null"), HasSubstr("missing required argument"));
}

TEST(LayersArgReaderTest, NormalisedArgumentsFollowConstructorOrderWithDefaults) {
  auto linear = MustBuild("Linear", R"({"out_features": 2, "in_features": 1})");
  EXPECT_EQ(linear->args().dump(), R"({"in_features":1,"out_features":2,"bias":true})");
  auto conv =
      MustBuild("Conv2d", R"({"in_channels": 1, "out_channels": 2, "kernel_size": [3, 5]})");
  EXPECT_EQ(conv->args().dump(),
            R"({"in_channels":1,"out_channels":2,"kernel_size":[3,5],"stride":1,"padding":0,)"
            R"("dilation":1,"groups":1,"bias":true,"padding_mode":"zeros"})");
  // dtype is recorded only when given, by its canonical name.
  auto half =
      MustBuild("Linear", R"({"in_features": 1, "out_features": 2, "dtype": "torch.half"})");
  EXPECT_EQ(half->args()["dtype"], "float16");
  EXPECT_THAT(BuildError("Linear", R"({"in_features": 1, "out_features": 2, "dtype": "complex"})"),
              HasSubstr("$.args.dtype: unknown dtype 'complex'"));
  EXPECT_THAT(BuildError("Linear", R"({"in_features": 1, "out_features": 2, "dtype": 32})"),
              HasSubstr("expected a dtype name"));
}

TEST(LayersArgReaderTest, IntOrTupleAcceptsAnIntOrAListOfTheRightLength) {
  EXPECT_TRUE(
      BuildLayer("Conv2d", R"({"in_channels": 1, "out_channels": 1, "kernel_size": 3})").ok());
  EXPECT_TRUE(
      BuildLayer("Conv2d", R"({"in_channels": 1, "out_channels": 1, "kernel_size": [3, 1]})").ok());
  EXPECT_THAT(
      BuildError("Conv2d", R"({"in_channels": 1, "out_channels": 1, "kernel_size": [3, 1, 1]})"),
      HasSubstr(
          "Conv2d expected an integer or a list of 2 integers for 'kernel_size', got [3,1,1]"));
  EXPECT_THAT(
      BuildError("Conv2d", R"({"in_channels": 1, "out_channels": 1, "kernel_size": [3, null]})"),
      HasSubstr("expected an integer or a list of 2 integers"));
  EXPECT_THAT(
      BuildError("Conv2d", R"({"in_channels": 1, "out_channels": 1, "kernel_size": [3, 1.5]})"),
      HasSubstr("expected an integer or a list of 2 integers"));
}

// ---- Linear ----

TEST(LayersLinearTest, RegistersWeightThenBias) {  // pytorch-semantics.md §1 built-ins
  auto linear = MustBuild("Linear", R"({"in_features": 3, "out_features": 2})");
  EXPECT_EQ(linear->type(), "Linear");
  EXPECT_THAT(Slots(linear->parameters()),
              ElementsAre("weight:[2, 3]:float32", "bias:[2]:float32"));
  EXPECT_TRUE(linear->buffers().empty());
  EXPECT_TRUE(linear->children().empty());
  EXPECT_TRUE((*linear->parameters().Find("weight"))->requires_grad());
}

TEST(LayersLinearTest, BiasFalseLeavesANoneSlot) {  // pytorch-semantics.md §1
  auto linear = MustBuild("Linear", R"({"in_features": 3, "out_features": 2, "bias": false})");
  EXPECT_THAT(Slots(linear->parameters()), ElementsAre("weight:[2, 3]:float32", "bias:None"));
}

TEST(LayersLinearTest, DtypeApplies) {
  auto linear = MustBuild("Linear", R"({"in_features": 3, "out_features": 2, "dtype": "float64"})");
  EXPECT_THAT(Slots(linear->parameters()),
              ElementsAre("weight:[2, 3]:float64", "bias:[2]:float64"));
  EXPECT_THAT(BuildError("Linear", R"({"in_features": 3, "out_features": 2, "dtype": "int64"})"),
              HasSubstr("needs a floating-point dtype, got int64"));
}

TEST(LayersLinearTest, InitStaysWithinKaimingAndFanInBounds) {
  auto linear = MustBuild("Linear", R"({"in_features": 16, "out_features": 64})", 7);
  const double bound = 1.0 / std::sqrt(16.0);
  std::vector<double> weight = ValuesOf(*linear, "weight");
  ASSERT_EQ(weight.size(), 1024u);
  double max_abs = 0;
  for (double w : weight) max_abs = std::max(max_abs, std::abs(w));
  EXPECT_LE(max_abs, bound);
  EXPECT_GT(max_abs, 0.9 * bound);  // uniform over the whole range, not a narrower one
  for (double b : ValuesOf(*linear, "bias")) EXPECT_LE(std::abs(b), bound);
}

TEST(LayersLinearTest, SameSeedSameValuesOtherSeedOtherValues) {
  const std::string args = R"({"in_features": 4, "out_features": 3})";
  auto a = MustBuild("Linear", args, 1);
  auto b = MustBuild("Linear", args, 1);
  auto c = MustBuild("Linear", args, 2);
  EXPECT_EQ(ValuesOf(*a, "weight"), ValuesOf(*b, "weight"));
  EXPECT_EQ(ValuesOf(*a, "bias"), ValuesOf(*b, "bias"));
  EXPECT_NE(ValuesOf(*a, "weight"), ValuesOf(*c, "weight"));
}

TEST(LayersLinearTest, WeightIsDrawnBeforeBias) {
  // Without a bias, the weight takes the same first draws.
  auto with_bias = MustBuild("Linear", R"({"in_features": 4, "out_features": 3})", 5);
  auto without = MustBuild("Linear", R"({"in_features": 4, "out_features": 3, "bias": false})", 5);
  EXPECT_EQ(ValuesOf(*with_bias, "weight"), ValuesOf(*without, "weight"));
}

TEST(LayersLinearTest, NegativeSizeUsesTorchEmptyMessage) {
  EXPECT_THAT(BuildError("Linear", R"({"in_features": -1, "out_features": 2})"),
              HasSubstr("Trying to create tensor with negative dimension -1: [2, -1]"));
  // Zero sizes are legal (an empty weight).
  auto empty = MustBuild("Linear", R"({"in_features": 0, "out_features": 2})");
  EXPECT_THAT(Slots(empty->parameters()), ElementsAre("weight:[2, 0]:float32", "bias:[2]:float32"));
}

TEST(LayersLinearTest, ExtraRepr) {
  EXPECT_EQ(ExtraRepr(*MustBuild("Linear", R"({"in_features": 1, "out_features": 2})")),
            "in_features=1, out_features=2, bias=True");
  EXPECT_EQ(
      ExtraRepr(*MustBuild("Linear", R"({"in_features": 1, "out_features": 2, "bias": false})")),
      "in_features=1, out_features=2, bias=False");
}

// ---- Conv2d ----

TEST(LayersConv2dTest, WeightShapeAndGroups) {  // pytorch-semantics.md §1 built-ins
  auto conv = MustBuild("Conv2d", R"({"in_channels": 1, "out_channels": 20, "kernel_size": 5})");
  EXPECT_THAT(Slots(conv->parameters()),
              ElementsAre("weight:[20, 1, 5, 5]:float32", "bias:[20]:float32"));
  auto grouped = MustBuild(
      "Conv2d",
      R"({"in_channels": 4, "out_channels": 6, "kernel_size": [3, 2], "groups": 2, "bias": false})");
  EXPECT_THAT(Slots(grouped->parameters()),
              ElementsAre("weight:[6, 2, 3, 2]:float32", "bias:None"));
}

TEST(LayersConv2dTest, InitBoundsUseFanInOfTheGroupedWeight) {
  auto conv = MustBuild(
      "Conv2d", R"({"in_channels": 4, "out_channels": 8, "kernel_size": 3, "groups": 2})", 3);
  const double bound = 1.0 / std::sqrt(2.0 * 3 * 3);
  for (double w : ValuesOf(*conv, "weight")) EXPECT_LE(std::abs(w), bound);
  for (double b : ValuesOf(*conv, "bias")) EXPECT_LE(std::abs(b), bound);
}

TEST(LayersConv2dTest, ConstructorChecksWithPyTorchText) {
  const std::string base = R"("in_channels": 4, "out_channels": 6, "kernel_size": 3)";
  EXPECT_THAT(BuildError("Conv2d", "{" + base + R"(, "groups": 0})"),
              HasSubstr("$.args.groups: groups must be a positive integer"));
  EXPECT_THAT(BuildError("Conv2d", "{" + base + R"(, "groups": 3})"),
              HasSubstr("in_channels must be divisible by groups"));
  EXPECT_THAT(BuildError("Conv2d", "{" + base + R"(, "groups": 4})"),
              HasSubstr("out_channels must be divisible by groups"));
  EXPECT_THAT(BuildError("Conv2d", "{" + base + R"(, "padding": "full"})"),
              HasSubstr("Invalid padding string 'full', should be one of {'same', 'valid'}"));
  EXPECT_THAT(BuildError("Conv2d", "{" + base + R"(, "padding": "same", "stride": 2})"),
              HasSubstr("padding='same' is not supported for strided convolutions"));
  EXPECT_THAT(BuildError("Conv2d", "{" + base + R"(, "padding_mode": "mirror"})"),
              HasSubstr("padding_mode must be one of {'zeros', 'reflect', 'replicate', "
                        "'circular'}, but got padding_mode='mirror'"));
  EXPECT_THAT(BuildError("Conv2d", "{" + base + R"(, "padding": 1.5})"),
              HasSubstr("expected an integer or a list of 2 integers for 'padding', got 1.5"));
  EXPECT_THAT(BuildError("Conv2d", R"({"in_channels": 4, "out_channels": 6, "kernel_size": -3})"),
              HasSubstr("Trying to create tensor with negative dimension -3: [6, 4, -3, -3]"));
  EXPECT_THAT(BuildError("Conv2d", "{" + base + R"(, "stride": [1, 0]})"),
              HasSubstr("non-positive stride is not supported"));
  EXPECT_THAT(BuildError("Conv2d", "{" + base + R"(, "padding": -1})"),
              HasSubstr("negative padding is not supported"));
  EXPECT_THAT(BuildError("Conv2d", "{" + base + R"(, "dilation": 0})"),
              HasSubstr("dilation should be greater than zero"));
}

TEST(LayersConv2dTest, PaddingMayBeSameOrValid) {
  for (const char* padding : {"same", "valid"}) {
    auto conv = BuildLayer(
        "Conv2d",
        absl::StrCat(R"({"in_channels": 1, "out_channels": 1, "kernel_size": 3, "padding": ")",
                     padding, R"("})"));
    ASSERT_TRUE(conv.ok()) << conv.status();
    EXPECT_EQ((*conv)->args()["padding"], padding);
  }
}

TEST(LayersConv2dTest, ExtraReprShowsTuplesAndOnlyNonDefaults) {
  auto repr = [](const std::string& args) { return ExtraRepr(*MustBuild("Conv2d", args)); };
  EXPECT_EQ(repr(R"({"in_channels": 1, "out_channels": 20, "kernel_size": 5})"),
            "1, 20, kernel_size=(5, 5), stride=(1, 1)");
  EXPECT_EQ(repr(R"({"in_channels": 4, "out_channels": 8, "kernel_size": [3, 1], "stride": 2,
                    "padding": [1, 0], "dilation": 2, "groups": 2, "bias": false,
                    "padding_mode": "reflect"})"),
            "4, 8, kernel_size=(3, 1), stride=(2, 2), padding=(1, 0), dilation=(2, 2), groups=2, "
            "bias=False, padding_mode=reflect");
  EXPECT_EQ(repr(R"({"in_channels": 1, "out_channels": 1, "kernel_size": 3, "padding": "same"})"),
            "1, 1, kernel_size=(3, 3), stride=(1, 1), padding=same");
  EXPECT_EQ(repr(R"({"in_channels": 1, "out_channels": 1, "kernel_size": 3, "padding": "valid"})"),
            "1, 1, kernel_size=(3, 3), stride=(1, 1), padding=valid");
  EXPECT_EQ(repr(R"({"in_channels": 1, "out_channels": 1, "kernel_size": 3, "padding": [0, 0],
                    "dilation": [1, 1], "padding_mode": "zeros"})"),
            "1, 1, kernel_size=(3, 3), stride=(1, 1)");
}

// ---- Conv1d ----

TEST(LayersConv1dTest, WeightShapeBiasAndInitBounds) {  // pytorch-semantics.md §1 built-ins
  auto conv = MustBuild("Conv1d", R"({"in_channels": 4, "out_channels": 6, "kernel_size": 3})");
  EXPECT_THAT(Slots(conv->parameters()),
              ElementsAre("weight:[6, 4, 3]:float32", "bias:[6]:float32"));
  auto grouped = MustBuild(
      "Conv1d",
      R"({"in_channels": 4, "out_channels": 6, "kernel_size": [5], "groups": 2, "bias": false})",
      3);
  EXPECT_THAT(Slots(grouped->parameters()), ElementsAre("weight:[6, 2, 5]:float32", "bias:None"));
  // kaiming_uniform_(a=sqrt(5)) and the bias both bound by 1 / sqrt(fan_in).
  const double bound = 1.0 / std::sqrt(2.0 * 5);
  for (double w : ValuesOf(*grouped, "weight")) EXPECT_LE(std::abs(w), bound);
  for (double b : ValuesOf(*conv, "bias")) EXPECT_LE(std::abs(b), 1.0 / std::sqrt(4.0 * 3));
  for (const char* name : {"in_channels", "kernel_size", "padding_mode"}) {
    EXPECT_TRUE(conv->HasAttribute(name)) << name;
  }
}

TEST(LayersConv1dTest, ConstructorChecksWithPyTorchText) {
  const std::string base = R"("in_channels": 4, "out_channels": 6, "kernel_size": 3)";
  EXPECT_THAT(BuildError("Conv1d", R"({"in_channels": 4, "out_channels": 6})"),
              HasSubstr("missing required argument 'kernel_size' for Conv1d"));
  EXPECT_THAT(BuildError("Conv1d", "{" + base + R"(, "stride": [1, 1]})"),
              HasSubstr("Conv1d expected an integer or a list of 1 integers for 'stride', got "
                        "[1,1]"));
  EXPECT_THAT(BuildError("Conv1d", "{" + base + R"(, "groups": 4})"),
              HasSubstr("out_channels must be divisible by groups"));
  EXPECT_THAT(BuildError("Conv1d", "{" + base + R"(, "padding": "same", "stride": 2})"),
              HasSubstr("padding='same' is not supported for strided convolutions"));
  EXPECT_THAT(BuildError("Conv1d", "{" + base + R"(, "dtype": "int64"})"),
              HasSubstr("Conv1d initialises its parameters with random values and needs a "
                        "floating-point dtype, got int64"));
  EXPECT_THAT(BuildError("Conv1d", R"({"in_channels": 4, "out_channels": 6, "kernel_size": -3})"),
              HasSubstr("Trying to create tensor with negative dimension -3: [6, 4, -3]"));
}

TEST(LayersConv1dTest, ReprPrintsOneElementTuples) {
  EXPECT_EQ(Repr(*MustBuild("Conv1d", R"({"in_channels": 3, "out_channels": 8,
                                          "kernel_size": 3})")),
            "Conv1d(3, 8, kernel_size=(3,), stride=(1,))");
  auto repr = [](const std::string& args) { return ExtraRepr(*MustBuild("Conv1d", args)); };
  EXPECT_EQ(repr(R"({"in_channels": 4, "out_channels": 6, "kernel_size": [3], "stride": 2,
                    "padding": 1, "dilation": [2], "groups": 2, "bias": false})"),
            "4, 6, kernel_size=(3,), stride=(2,), padding=(1,), dilation=(2,), groups=2, "
            "bias=False");
  EXPECT_EQ(repr(R"({"in_channels": 1, "out_channels": 1, "kernel_size": 4, "padding": "same"})"),
            "1, 1, kernel_size=(4,), stride=(1,), padding=same");
}

// F.conv1d, written out: out[n][o][l] = bias[o] + sum over the group's channels and the
// kernel of w[o][c][k] * x[n][g * cg + c][l * stride + k * dilation - pad_before].
std::vector<double> RefConv1d(const std::vector<double>& x, const std::vector<double>& w,
                              const std::vector<double>& bias, int64_t n, int64_t c, int64_t len,
                              int64_t o, int64_t k, int64_t stride, int64_t pad_before,
                              int64_t pad_after, int64_t dilation, int64_t groups) {
  const int64_t out_len = (len + pad_before + pad_after - dilation * (k - 1) - 1) / stride + 1;
  const int64_t cg = c / groups, og = o / groups;
  std::vector<double> out;
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t oc = 0; oc < o; ++oc) {
      for (int64_t l = 0; l < out_len; ++l) {
        double sum = bias.empty() ? 0.0 : bias[oc];
        for (int64_t ic = 0; ic < cg; ++ic) {
          for (int64_t kk = 0; kk < k; ++kk) {
            const int64_t at = l * stride + kk * dilation - pad_before;
            if (at < 0 || at >= len) continue;
            const int64_t channel = (oc / og) * cg + ic;
            sum += w[(oc * cg + ic) * k + kk] * x[(b * c + channel) * len + at];
          }
        }
        out.push_back(sum);
      }
    }
  }
  return out;
}

absl::StatusOr<Tensor> Conv1dForward(const std::shared_ptr<Module>& conv, const Tensor& x) {
  PARAMD_ASSIGN_OR_RETURN(ForwardResult result, Forward(*conv, {NamedTensor{"input", x}}, {}));
  return result.outputs.front().tensor;
}

void ExpectConv1dMatchesReference(const std::string& args, Shape input_shape, int64_t stride,
                                  int64_t pad_before, int64_t pad_after, int64_t dilation,
                                  int64_t groups) {
  auto conv = MustBuild("Conv1d", args, 5);
  const bool batched = input_shape.size() == 3;
  const int64_t n = batched ? input_shape[0] : 1;
  const int64_t c = input_shape[input_shape.size() - 2], len = input_shape.back();
  std::vector<double> values;
  for (int64_t i = 0; i < n * c * len; ++i) values.push_back(std::sin(0.7 * i) * 2);
  const Tensor x = testing::MakeTensor(input_shape, values);
  absl::StatusOr<Tensor> y = Conv1dForward(conv, x);
  ASSERT_TRUE(y.ok()) << y.status();
  const std::vector<double> weight = ValuesOf(*conv, "weight");
  const Tensor& w = (*conv->parameters().Find("weight"))->data();
  const std::shared_ptr<Parameter>* bias_slot = conv->parameters().Find("bias");
  const std::vector<double> bias =
      *bias_slot == nullptr ? std::vector<double>{} : ValuesOf(*conv, "bias");
  const std::vector<double> expected =
      RefConv1d(values, weight, bias, n, c, len, w.shape()[0], w.shape()[2], stride, pad_before,
                pad_after, dilation, groups);
  const int64_t out_len = static_cast<int64_t>(expected.size()) / (n * w.shape()[0]);
  EXPECT_EQ(y->shape(),
            batched ? Shape({n, w.shape()[0], out_len}) : Shape({w.shape()[0], out_len}));
  const std::vector<double> got = testing::Values(*y);
  ASSERT_EQ(got.size(), expected.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], expected[i], 1e-5) << i;
}

TEST(LayersConv1dTest, ForwardMatchesReference) {
  ExpectConv1dMatchesReference(R"({"in_channels": 3, "out_channels": 4, "kernel_size": 3})",
                               {2, 3, 10}, 1, 0, 0, 1, 1);
  ExpectConv1dMatchesReference(R"({"in_channels": 4, "out_channels": 6, "kernel_size": 3,
                                   "stride": 2, "padding": 2, "dilation": 2, "groups": 2})",
                               {2, 4, 11}, 2, 2, 2, 2, 2);
  // 'same' with an even kernel pads one more after than before, as F.conv1d does.
  ExpectConv1dMatchesReference(R"({"in_channels": 2, "out_channels": 3, "kernel_size": 4,
                                   "padding": "same", "bias": false})",
                               {1, 2, 7}, 1, 1, 2, 1, 1);
  ExpectConv1dMatchesReference(R"({"in_channels": 2, "out_channels": 3, "kernel_size": 3})", {2, 9},
                               1, 0, 0, 1, 1);  // unbatched
}

TEST(LayersConv1dTest, ForwardErrorsUsePyTorchText) {
  auto conv = MustBuild("Conv1d", R"({"in_channels": 3, "out_channels": 4, "kernel_size": 5})");
  EXPECT_EQ(Conv1dForward(conv, testing::MakeTensor({1, 3, 4, 4}, std::vector<double>(48)))
                .status()
                .message(),
            "the root module (Conv1d): Expected 2D (unbatched) or 3D (batched) input to conv1d, "
            "but got input of size: [1, 3, 4, 4]");
  EXPECT_THAT(
      std::string(Conv1dForward(conv, testing::MakeTensor({2, 2, 9}, std::vector<double>(36)))
                      .status()
                      .message()),
      HasSubstr("Given groups=1, weight of size [4, 3, 5], expected input[2, 2, 9] to have "
                "3 channels, but got 2 channels instead"));
  EXPECT_THAT(std::string(Conv1dForward(conv, testing::MakeTensor({3, 4}, std::vector<double>(12)))
                              .status()
                              .message()),
              HasSubstr("Calculated padded input size per channel: (4). Kernel size: (5). "
                        "Kernel size can't be greater than actual input size"));
}

// ---- Pools ----

TEST(LayersPoolTest, PoolsHoldNoTensors) {
  for (const auto& [type, args] : std::vector<std::pair<std::string, std::string>>{
           {"MaxPool2d", R"({"kernel_size": 2})"},
           {"AvgPool2d", R"({"kernel_size": 2})"},
           {"AdaptiveAvgPool2d", R"({"output_size": 1})"}}) {
    auto pool = MustBuild(type, args);
    EXPECT_TRUE(pool->parameters().empty()) << type;
    EXPECT_TRUE(pool->buffers().empty()) << type;
  }
}

TEST(LayersPoolTest, StrideDefaultsToKernelSizeAsGiven) {
  auto max_pool = MustBuild("MaxPool2d", R"({"kernel_size": 2})");
  EXPECT_EQ(max_pool->args()["stride"], 2);
  EXPECT_EQ(ExtraRepr(*max_pool),
            "kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False");
  auto tuple = MustBuild("MaxPool2d", R"({"kernel_size": [2, 3], "stride": null})");
  EXPECT_EQ(ExtraRepr(*tuple),
            "kernel_size=(2, 3), stride=(2, 3), padding=0, dilation=1, ceil_mode=False");
  auto explicit_stride =
      MustBuild("MaxPool2d", R"({"kernel_size": 3, "stride": 1, "padding": 1, "ceil_mode": true})");
  EXPECT_EQ(ExtraRepr(*explicit_stride),
            "kernel_size=3, stride=1, padding=1, dilation=1, ceil_mode=True");
  EXPECT_EQ(ExtraRepr(*MustBuild("AvgPool2d", R"({"kernel_size": 2})")),
            "kernel_size=2, stride=2, padding=0");
  EXPECT_EQ(ExtraRepr(*MustBuild("AvgPool2d", R"({"kernel_size": [2, 2], "stride": [1, 1]})")),
            "kernel_size=(2, 2), stride=(1, 1), padding=0");
}

TEST(LayersPoolTest, SizeChecksUsePoolingText) {
  EXPECT_THAT(BuildError("MaxPool2d", R"({"kernel_size": 0})"),
              HasSubstr("kernel size should be greater than zero, but got kH: 0 kW: 0"));
  EXPECT_THAT(BuildError("MaxPool2d", R"({"kernel_size": 2, "stride": [1, 0]})"),
              HasSubstr("stride should be greater than zero, but got dH: 1 dW: 0"));
  EXPECT_THAT(BuildError("MaxPool2d", R"({"kernel_size": 2, "dilation": 0})"),
              HasSubstr("dilation should be greater than zero"));
  EXPECT_THAT(BuildError("MaxPool2d", R"({"kernel_size": 2, "padding": -1})"),
              HasSubstr("pad must be non-negative, but got pad: -1"));
  EXPECT_THAT(BuildError("MaxPool2d", R"({"kernel_size": 2, "padding": 2})"),
              HasSubstr("pad should be at most half of effective kernel size, but got pad=2, "
                        "kernel_size=2 and dilation=1"));
  EXPECT_THAT(BuildError("MaxPool2d", R"({"kernel_size": 2, "stride": [2, null]})"),
              HasSubstr("$.args.stride"));
  EXPECT_THAT(BuildError("AvgPool2d", R"({"kernel_size": 2, "divisor_override": 0})"),
              HasSubstr("divisor must be not zero"));
  EXPECT_THAT(BuildError("AvgPool2d", R"({"kernel_size": 2, "dilation": 1})"),
              HasSubstr("unknown argument 'dilation' for AvgPool2d"));
  EXPECT_THAT(BuildError("AdaptiveAvgPool2d", R"({"output_size": [-1, 7]})"),
              HasSubstr("elements of output_size must be greater than or equal to 0 but received "
                        "{-1, 7}"));
  EXPECT_THAT(BuildError("AdaptiveAvgPool2d", R"({"output_size": [1, 2, 3]})"),
              HasSubstr("expected an integer or a list of 2 integers"));
}

TEST(LayersPoolTest, AdaptiveOutputSizeMayHoldNone) {
  EXPECT_EQ(ExtraRepr(*MustBuild("AdaptiveAvgPool2d", R"({"output_size": [1, 1]})")),
            "output_size=(1, 1)");
  EXPECT_EQ(ExtraRepr(*MustBuild("AdaptiveAvgPool2d", R"({"output_size": 1})")), "output_size=1");
  EXPECT_EQ(ExtraRepr(*MustBuild("AdaptiveAvgPool2d", R"({"output_size": [null, 7]})")),
            "output_size=(None, 7)");
}

// ---- Normalization ----

TEST(LayersBatchNormTest, ParametersAndBuffers) {  // pytorch-semantics.md §1 BatchNorm2d
  for (const char* type : {"BatchNorm1d", "BatchNorm2d"}) {
    auto bn = MustBuild(type, R"({"num_features": 3})");
    EXPECT_THAT(Slots(bn->parameters()), ElementsAre("weight:[3]:float32", "bias:[3]:float32"));
    EXPECT_THAT(Slots(bn->buffers()),
                ElementsAre("running_mean:[3]:float32", "running_var:[3]:float32",
                            "num_batches_tracked:[]:int64"));
    EXPECT_THAT(ValuesOf(*bn, "weight"), ElementsAre(1, 1, 1));
    EXPECT_THAT(ValuesOf(*bn, "bias"), ElementsAre(0, 0, 0));
    EXPECT_THAT(ValuesOf(*bn, "running_mean"), ElementsAre(0, 0, 0));
    EXPECT_THAT(ValuesOf(*bn, "running_var"), ElementsAre(1, 1, 1));
    EXPECT_THAT(ValuesOf(*bn, "num_batches_tracked"), ElementsAre(0));
    for (const char* name : {"running_mean", "running_var", "num_batches_tracked"}) {
      EXPECT_TRUE(bn->IsPersistentBuffer(name)) << name;
    }
  }
}

TEST(LayersBatchNormTest, NumBatchesTrackedStaysInt64UnderDtype) {
  auto bn = MustBuild("BatchNorm2d", R"({"num_features": 2, "dtype": "float64"})");
  EXPECT_THAT(Slots(bn->buffers()),
              ElementsAre("running_mean:[2]:float64", "running_var:[2]:float64",
                          "num_batches_tracked:[]:int64"));
}

TEST(LayersBatchNormTest, NoAffineNoRunningStatsLeaveNoneSlots) {  // pytorch-semantics.md §1
  auto bn = MustBuild("BatchNorm2d",
                      R"({"num_features": 3, "affine": false, "track_running_stats": false})");
  EXPECT_THAT(Slots(bn->parameters()), ElementsAre("weight:None", "bias:None"));
  EXPECT_THAT(Slots(bn->buffers()),
              ElementsAre("running_mean:None", "running_var:None", "num_batches_tracked:None"));
  EXPECT_THAT(BuildError("BatchNorm1d", R"({"num_features": -2})"),
              HasSubstr("Trying to create tensor with negative dimension -2: [-2]"));
}

TEST(LayersBatchNormTest, ExtraRepr) {
  EXPECT_EQ(ExtraRepr(*MustBuild("BatchNorm2d", R"({"num_features": 20})")),
            "20, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True");
  EXPECT_EQ(ExtraRepr(*MustBuild("BatchNorm1d", R"({"num_features": 4, "eps": 0.001,
                                  "momentum": null, "affine": false})")),
            "4, eps=0.001, momentum=None, affine=False, bias=False, track_running_stats=True");
  // Python prints an int as given.
  EXPECT_EQ(ExtraRepr(*MustBuild("BatchNorm1d", R"({"num_features": 4, "momentum": 1})")),
            "4, eps=1e-05, momentum=1, affine=True, bias=True, track_running_stats=True");
  // torch 2.15's keyword-only bias: `bias=` reports the slot (self.bias is not None).
  EXPECT_EQ(ExtraRepr(*MustBuild("BatchNorm1d", R"({"num_features": 4, "bias": false})")),
            "4, eps=1e-05, momentum=0.1, affine=True, bias=False, track_running_stats=True");
}

TEST(LayersBatchNormTest, BiasFalseKeepsWeightAndLeavesBiasNone) {  // torch 2.15
  auto bn = MustBuild("BatchNorm1d", R"({"num_features": 3, "bias": false})");
  EXPECT_THAT(Slots(bn->parameters()), ElementsAre("weight:[3]:float32", "bias:None"));
  EXPECT_THAT(ValuesOf(*bn, "weight"), ElementsAre(1, 1, 1));
  EXPECT_THAT(Slots(bn->buffers()),
              ElementsAre("running_mean:[3]:float32", "running_var:[3]:float32",
                          "num_batches_tracked:[]:int64"));
  EXPECT_EQ(bn->args()["bias"], false);
  EXPECT_THAT(BuildError("BatchNorm2d", R"({"num_features": 3, "bias": 1})"), HasSubstr("bias"));
}

TEST(LayersLayerNormTest, ShapesAndNoneSlots) {
  auto ln = MustBuild("LayerNorm", R"({"normalized_shape": 4})");
  EXPECT_THAT(Slots(ln->parameters()), ElementsAre("weight:[4]:float32", "bias:[4]:float32"));
  EXPECT_THAT(ValuesOf(*ln, "weight"), ElementsAre(1, 1, 1, 1));
  EXPECT_THAT(ValuesOf(*ln, "bias"), ElementsAre(0, 0, 0, 0));
  EXPECT_EQ(ln->args()["normalized_shape"].dump(), "[4]");
  auto two_d = MustBuild("LayerNorm", R"({"normalized_shape": [2, 3], "bias": false})");
  EXPECT_THAT(Slots(two_d->parameters()), ElementsAre("weight:[2, 3]:float32", "bias:None"));
  auto plain =
      MustBuild("LayerNorm", R"({"normalized_shape": [2, 3], "elementwise_affine": false})");
  EXPECT_THAT(Slots(plain->parameters()), ElementsAre("weight:None", "bias:None"));
  EXPECT_TRUE(plain->buffers().empty());
  EXPECT_THAT(BuildError("LayerNorm", R"({"normalized_shape": [2, -3]})"),
              HasSubstr("Trying to create tensor with negative dimension -3: [2, -3]"));
  EXPECT_THAT(BuildError("LayerNorm", R"({"normalized_shape": "4"})"),
              HasSubstr("expected an integer or a list of integers"));
}

TEST(LayersLayerNormTest, ExtraRepr) {
  EXPECT_EQ(ExtraRepr(*MustBuild("LayerNorm", R"({"normalized_shape": 4})")),
            "(4,), eps=1e-05, elementwise_affine=True, bias=True");
  EXPECT_EQ(ExtraRepr(*MustBuild("LayerNorm", R"({"normalized_shape": [2, 3], "eps": 1e-6,
                                  "elementwise_affine": false})")),
            "(2, 3), eps=1e-06, elementwise_affine=False, bias=False");
  EXPECT_EQ(ExtraRepr(*MustBuild("LayerNorm", R"({"normalized_shape": 4, "bias": false})")),
            "(4,), eps=1e-05, elementwise_affine=True, bias=False");
}

// ---- Embedding ----

TEST(LayersEmbeddingTest, WeightIsStandardNormal) {
  auto embedding = MustBuild("Embedding", R"({"num_embeddings": 1000, "embedding_dim": 64})", 11);
  EXPECT_THAT(Slots(embedding->parameters()), ElementsAre("weight:[1000, 64]:float32"));
  std::vector<double> values = ValuesOf(*embedding, "weight");
  double sum = 0, sum_sq = 0;
  for (double v : values) {
    sum += v;
    sum_sq += v * v;
  }
  const double n = static_cast<double>(values.size());
  const double mean = sum / n;
  const double std = std::sqrt(sum_sq / n - mean * mean);
  EXPECT_NEAR(mean, 0.0, 0.02);
  EXPECT_NEAR(std, 1.0, 0.02);
}

TEST(LayersEmbeddingTest, PaddingRowIsZeroAndNegativeIndexIsNormalised) {
  auto embedding =
      MustBuild("Embedding", R"({"num_embeddings": 5, "embedding_dim": 3, "padding_idx": -1})");
  EXPECT_EQ(embedding->args()["padding_idx"], 4);
  std::vector<double> values = ValuesOf(*embedding, "weight");
  EXPECT_THAT(std::vector<double>(values.begin() + 12, values.end()), ElementsAre(0, 0, 0));
  EXPECT_NE(values[0], 0.0);
  auto first =
      MustBuild("Embedding", R"({"num_embeddings": 5, "embedding_dim": 3, "padding_idx": 0})");
  const std::vector<double> first_values = ValuesOf(*first, "weight");
  EXPECT_THAT(std::vector<double>(first_values.begin(), first_values.begin() + 3),
              ElementsAre(0, 0, 0));
}

TEST(LayersEmbeddingTest, PaddingIdxMustBeWithinNumEmbeddings) {
  EXPECT_THAT(
      BuildError("Embedding", R"({"num_embeddings": 5, "embedding_dim": 3, "padding_idx": 5})"),
      HasSubstr("$.args.padding_idx: Padding_idx must be within num_embeddings"));
  EXPECT_THAT(
      BuildError("Embedding", R"({"num_embeddings": 5, "embedding_dim": 3, "padding_idx": -6})"),
      HasSubstr("Padding_idx must be within num_embeddings"));
  EXPECT_THAT(BuildError("Embedding", R"({"num_embeddings": 5, "embedding_dim": -3})"),
              HasSubstr("Trying to create tensor with negative dimension -3: [5, -3]"));
}

TEST(LayersEmbeddingTest, ExtraRepr) {
  EXPECT_EQ(ExtraRepr(*MustBuild("Embedding", R"({"num_embeddings": 10, "embedding_dim": 4})")),
            "10, 4");
  EXPECT_EQ(ExtraRepr(*MustBuild("Embedding", R"({"num_embeddings": 10, "embedding_dim": 4,
            "padding_idx": 0, "max_norm": 1.0, "norm_type": 1.0, "scale_grad_by_freq": true,
            "sparse": true})")),
            "10, 4, padding_idx=0, max_norm=1.0, norm_type=1.0, scale_grad_by_freq=True, "
            "sparse=True");
  EXPECT_EQ(ExtraRepr(*MustBuild("Embedding", R"({"num_embeddings": 10, "embedding_dim": 4,
            "norm_type": 2})")),
            "10, 4");
}

// ---- Parameterless modules ----

TEST(LayersActivationTest, ArgumentsAndExtraRepr) {
  EXPECT_EQ(ExtraRepr(*MustBuild("ReLU")), "");
  EXPECT_EQ(ExtraRepr(*MustBuild("ReLU", R"({"inplace": true})")), "inplace=True");
  EXPECT_EQ(ExtraRepr(*MustBuild("SiLU")), "");
  EXPECT_EQ(ExtraRepr(*MustBuild("SiLU", R"({"inplace": true})")), "inplace=True");
  EXPECT_EQ(ExtraRepr(*MustBuild("GELU")), "approximate='none'");
  EXPECT_EQ(ExtraRepr(*MustBuild("GELU", R"({"approximate": "tanh"})")), "approximate='tanh'");
  EXPECT_THAT(BuildError("GELU", R"({"approximate": "erf"})"),
              HasSubstr("GELU expected one of 'none', 'tanh' for 'approximate', got \"erf\""));
  EXPECT_EQ(ExtraRepr(*MustBuild("Sigmoid")), "");
  EXPECT_EQ(ExtraRepr(*MustBuild("Tanh")), "");
  EXPECT_THAT(BuildError("Tanh", R"({"inplace": true})"), HasSubstr("it takes no arguments"));
  EXPECT_EQ(ExtraRepr(*MustBuild("Softmax")), "dim=None");
  EXPECT_EQ(ExtraRepr(*MustBuild("Softmax", R"({"dim": 1})")), "dim=1");
  EXPECT_EQ(ExtraRepr(*MustBuild("LogSoftmax", R"({"dim": -1})")), "dim=-1");
  for (const char* type : {"ReLU", "GELU", "SiLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax"}) {
    auto module = MustBuild(type);
    EXPECT_TRUE(module->parameters().empty() && module->buffers().empty()) << type;
  }
}

TEST(LayersDropoutTest, ProbabilityRangeAndExtraRepr) {
  EXPECT_EQ(ExtraRepr(*MustBuild("Dropout")), "p=0.5, inplace=False");
  EXPECT_EQ(ExtraRepr(*MustBuild("Dropout", R"({"p": 0.1, "inplace": true})")),
            "p=0.1, inplace=True");
  EXPECT_EQ(ExtraRepr(*MustBuild("Dropout", R"({"p": 0})")), "p=0, inplace=False");
  EXPECT_TRUE(BuildLayer("Dropout", R"({"p": 1.0})").ok());
  EXPECT_THAT(BuildError("Dropout", R"({"p": 1.5})"),
              HasSubstr("$.args.p: dropout probability has to be between 0 and 1, but got 1.5"));
  EXPECT_THAT(BuildError("Dropout", R"({"p": -0.1})"),
              HasSubstr("dropout probability has to be between 0 and 1, but got -0.1"));
}

TEST(LayersFlattenTest, DefaultsAndExtraRepr) {
  EXPECT_EQ(ExtraRepr(*MustBuild("Flatten")), "start_dim=1, end_dim=-1");
  EXPECT_EQ(ExtraRepr(*MustBuild("Flatten", R"({"start_dim": 0, "end_dim": 2})")),
            "start_dim=0, end_dim=2");
  EXPECT_THAT(BuildError("Flatten", R"({"start_dim": "1"})"), HasSubstr("expected an integer"));
}

TEST(LayersIdentityTest, AcceptsAndIgnoresAnyArguments) {
  auto identity = MustBuild("Identity", R"({"in_features": 3, "anything": [1, 2]})");
  EXPECT_TRUE(identity->parameters().empty());
  EXPECT_EQ(identity->args().dump(), "{}");
  EXPECT_EQ(ExtraRepr(*identity), "");
}

TEST(LayersContainerTest, TakeNoArgumentsAndRegisterNothing) {
  for (const char* type : {"Sequential", "ModuleList", "ModuleDict"}) {
    auto container = MustBuild(type);
    EXPECT_TRUE(container->parameters().empty() && container->buffers().empty() &&
                container->children().empty())
        << type;
    EXPECT_THAT(BuildError(type, R"({"x": 1})"), HasSubstr("unknown argument 'x'"));
  }
}

}  // namespace
}  // namespace paramd::core
