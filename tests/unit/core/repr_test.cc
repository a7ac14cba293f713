// repr(module) as PyTorch prints it (nn.Module.__repr__, ModuleList's compression) and the
// Python value formatting underneath (py_format.h).
#include "server/core/repr.h"

#include <cmath>
#include <limits>
#include <memory>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "base/status_macros.h"
#include "server/core/init.h"
#include "server/core/layers/layer.h"
#include "server/core/py_format.h"

namespace paramd::core {
namespace {

std::shared_ptr<Module> Layer(const std::string& type, const std::string& args_text = "{}") {
  const LayerDef* layer = FindLayer(type);
  EXPECT_NE(layer, nullptr) << type;
  if (layer == nullptr) return std::make_shared<Module>(type);
  const nlohmann::json args = nlohmann::json::parse(args_text);
  ArgReader reader(type, args, "$.args");
  auto module = std::make_shared<Module>(layer, nlohmann::ordered_json::object());
  InitRng rng(0);
  absl::Status status = layer->build(reader, *module, rng);
  EXPECT_TRUE(status.ok()) << status;
  return module;
}

std::shared_ptr<Module> Linear(int in, int out) {
  return Layer("Linear", "{\"in_features\": " + std::to_string(in) +
                             ", \"out_features\": " + std::to_string(out) + "}");
}

void Add(Module& parent, const std::string& name, std::shared_ptr<Module> child) {
  absl::Status status = parent.AddModule(name, std::move(child));
  ASSERT_TRUE(status.ok()) << status;
}

// ---- PyFormat ----

TEST(PyFormatTest, FloatReprMatchesPython) {
  EXPECT_EQ(PyFloatRepr(1e-05), "1e-05");
  EXPECT_EQ(PyFloatRepr(0.1), "0.1");
  EXPECT_EQ(PyFloatRepr(2.0), "2.0");
  EXPECT_EQ(PyFloatRepr(100.0), "100.0");
  EXPECT_EQ(PyFloatRepr(1e16), "1e+16");
  EXPECT_EQ(PyFloatRepr(1.5e16), "1.5e+16");
  EXPECT_EQ(PyFloatRepr(1e15), "1000000000000000.0");
  EXPECT_EQ(PyFloatRepr(1234567890123456.0), "1234567890123456.0");
  EXPECT_EQ(PyFloatRepr(1.5e-07), "1.5e-07");
  EXPECT_EQ(PyFloatRepr(123456789.0), "123456789.0");
  EXPECT_EQ(PyFloatRepr(0.0001), "0.0001");
  EXPECT_EQ(PyFloatRepr(0.00012), "0.00012");
  EXPECT_EQ(PyFloatRepr(1e-3), "0.001");
  EXPECT_EQ(PyFloatRepr(1.0 / 3.0), "0.3333333333333333");
  EXPECT_EQ(PyFloatRepr(-2.5), "-2.5");
  EXPECT_EQ(PyFloatRepr(0.0), "0.0");
  EXPECT_EQ(PyFloatRepr(-0.0), "-0.0");
  EXPECT_EQ(PyFloatRepr(1e100), "1e+100");
  EXPECT_EQ(PyFloatRepr(5e-324), "5e-324");
  EXPECT_EQ(PyFloatRepr(1.7976931348623157e308), "1.7976931348623157e+308");
  EXPECT_EQ(PyFloatRepr(std::numeric_limits<double>::infinity()), "inf");
  EXPECT_EQ(PyFloatRepr(-std::numeric_limits<double>::infinity()), "-inf");
  EXPECT_EQ(PyFloatRepr(std::nan("")), "nan");
}

TEST(PyFormatTest, BoolsTuplesAndStrings) {
  EXPECT_EQ(PyBool(true), "True");
  EXPECT_EQ(PyBool(false), "False");
  EXPECT_EQ(PyTupleRepr({5, 5}), "(5, 5)");
  EXPECT_EQ(PyTupleRepr({4}), "(4,)");
  EXPECT_EQ(PyTupleRepr({}), "()");
  EXPECT_EQ(PyStringRepr("none"), "'none'");
  EXPECT_EQ(PyStringRepr("it's"), "\"it's\"");
  EXPECT_EQ(PyStringRepr("a'b\"c"), "'a\\'b\"c'");
  EXPECT_EQ(PyStringRepr("a\nb\\"), "'a\\nb\\\\'");
}

TEST(PyFormatTest, JsonValuesAsPythonValues) {
  using J = nlohmann::ordered_json;
  EXPECT_EQ(PyRepr(J(2)), "2");
  EXPECT_EQ(PyRepr(J(-3)), "-3");
  EXPECT_EQ(PyRepr(J(1e-5)), "1e-05");
  EXPECT_EQ(PyRepr(J(true)), "True");
  EXPECT_EQ(PyRepr(J()), "None");
  EXPECT_EQ(PyRepr(J::parse("[2, 2]")), "(2, 2)");
  EXPECT_EQ(PyRepr(J::parse("[4]")), "(4,)");
  EXPECT_EQ(PyRepr(J::parse("[null, 7]")), "(None, 7)");
  EXPECT_EQ(PyRepr(J::parse("[]")), "()");
  EXPECT_EQ(PyRepr(J("none")), "'none'");
  EXPECT_EQ(PyStr(J("same")), "same");
  EXPECT_EQ(PyStr(J::parse("[\"a\"]")), "('a',)");
  EXPECT_EQ(PyStr(J(3)), "3");
}

// ---- Repr ----

TEST(ReprTest, LeafModulesPrintOnOneLine) {  // nn.Module.__repr__
  EXPECT_EQ(Repr(*Linear(1, 2)), "Linear(in_features=1, out_features=2, bias=True)");
  EXPECT_EQ(Repr(*Layer("ReLU")), "ReLU()");
  EXPECT_EQ(Repr(*Layer("ReLU", R"({"inplace": true})")), "ReLU(inplace=True)");
  EXPECT_EQ(Repr(*Layer("Conv2d", R"({"in_channels": 1, "out_channels": 20, "kernel_size": 5})")),
            "Conv2d(1, 20, kernel_size=(5, 5), stride=(1, 1))");
  EXPECT_EQ(Repr(*Layer("MaxPool2d", R"({"kernel_size": 2, "stride": 2})")),
            "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1, ceil_mode=False)");
  EXPECT_EQ(Repr(*Layer("AvgPool2d", R"({"kernel_size": 2})")),
            "AvgPool2d(kernel_size=2, stride=2, padding=0)");
  EXPECT_EQ(Repr(*Layer("AdaptiveAvgPool2d", R"({"output_size": [1, 1]})")),
            "AdaptiveAvgPool2d(output_size=(1, 1))");
  EXPECT_EQ(Repr(*Layer("BatchNorm2d", R"({"num_features": 20})")),
            "BatchNorm2d(20, eps=1e-05, momentum=0.1, affine=True, bias=True, "
            "track_running_stats=True)");
  EXPECT_EQ(Repr(*Layer("LayerNorm", R"({"normalized_shape": 4})")),
            "LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=True)");
  EXPECT_EQ(
      Repr(*Layer("Embedding", R"({"num_embeddings": 10, "embedding_dim": 4, "padding_idx": 0})")),
      "Embedding(10, 4, padding_idx=0)");
  EXPECT_EQ(Repr(*Layer("GELU")), "GELU(approximate='none')");
  EXPECT_EQ(Repr(*Layer("Softmax", R"({"dim": 1})")), "Softmax(dim=1)");
  EXPECT_EQ(Repr(*Layer("LogSoftmax")), "LogSoftmax(dim=None)");
  EXPECT_EQ(Repr(*Layer("Dropout")), "Dropout(p=0.5, inplace=False)");
  EXPECT_EQ(Repr(*Layer("Flatten")), "Flatten(start_dim=1, end_dim=-1)");
  EXPECT_EQ(Repr(*Layer("Identity")), "Identity()");
  EXPECT_EQ(Repr(*Layer("Sigmoid")), "Sigmoid()");
  EXPECT_EQ(Repr(*Layer("Tanh")), "Tanh()");
  EXPECT_EQ(Repr(*Layer("Sequential")), "Sequential()");
  EXPECT_EQ(Repr(*Layer("ModuleList")), "ModuleList()");
  EXPECT_EQ(Repr(*Layer("ModuleDict")), "ModuleDict()");
  EXPECT_EQ(Repr(Module("MyModel")), "MyModel()");
}

TEST(ReprTest, SequentialListsChildren) {
  auto seq = Layer("Sequential");
  Add(*seq, "0", Linear(1, 2));
  Add(*seq, "1", Layer("ReLU"));
  Add(*seq, "2", Linear(2, 1));
  EXPECT_EQ(Repr(*seq),
            "Sequential(\n"
            "  (0): Linear(in_features=1, out_features=2, bias=True)\n"
            "  (1): ReLU()\n"
            "  (2): Linear(in_features=2, out_features=1, bias=True)\n"
            ")");
}

TEST(ReprTest, NestedChildrenAreIndentedAndNoneChildPrintsNone) {
  auto inner = Layer("Sequential");
  Add(*inner, "0", Linear(4, 4));
  Add(*inner, "1", Layer("ReLU"));
  auto root = std::make_shared<Module>("Net");
  Add(*root, "body", inner);
  Add(*root, "skip", nullptr);
  Add(*root, "head", Linear(4, 1));
  EXPECT_EQ(Repr(*root),
            "Net(\n"
            "  (body): Sequential(\n"
            "    (0): Linear(in_features=4, out_features=4, bias=True)\n"
            "    (1): ReLU()\n"
            "  )\n"
            "  (skip): None\n"
            "  (head): Linear(in_features=4, out_features=1, bias=True)\n"
            ")");
}

TEST(ReprTest, SharedModulePrintsAtEachPath) {  // pytorch-semantics.md §9
  auto shared = Linear(8, 8);
  auto seq = Layer("Sequential");
  Add(*seq, "0", shared);
  Add(*seq, "1", Layer("ReLU"));
  Add(*seq, "2", shared);
  EXPECT_EQ(Repr(*seq),
            "Sequential(\n"
            "  (0): Linear(in_features=8, out_features=8, bias=True)\n"
            "  (1): ReLU()\n"
            "  (2): Linear(in_features=8, out_features=8, bias=True)\n"
            ")");
}

TEST(ReprTest, ModuleListCompressesRunsOfEqualChildren) {  // PyTorch >= 2.0
  auto list = Layer("ModuleList");
  Add(*list, "0", Linear(2, 2));
  Add(*list, "1", Linear(2, 2));
  Add(*list, "2", Linear(2, 2));
  Add(*list, "3", Layer("ReLU"));
  Add(*list, "4", Linear(2, 2));
  EXPECT_EQ(Repr(*list),
            "ModuleList(\n"
            "  (0-2): 3 x Linear(in_features=2, out_features=2, bias=True)\n"
            "  (3): ReLU()\n"
            "  (4): Linear(in_features=2, out_features=2, bias=True)\n"
            ")");
}

TEST(ReprTest, ModuleListIndentsMultiLineBlocks) {
  auto block = [] {
    auto seq = Layer("Sequential");
    Add(*seq, "0", Linear(2, 2));
    Add(*seq, "1", Layer("GELU"));
    return seq;
  };
  auto list = Layer("ModuleList");
  Add(*list, "0", block());
  Add(*list, "1", block());
  EXPECT_EQ(Repr(*list),
            "ModuleList(\n"
            "  (0-1): 2 x Sequential(\n"
            "    (0): Linear(in_features=2, out_features=2, bias=True)\n"
            "    (1): GELU(approximate='none')\n"
            "  )\n"
            ")");
}

TEST(ReprTest, SequentialAndModuleDictDoNotCompress) {
  for (const char* type : {"Sequential", "ModuleDict"}) {
    auto container = Layer(type);
    Add(*container, "a", Layer("ReLU"));
    Add(*container, "b", Layer("ReLU"));
    EXPECT_EQ(Repr(*container), std::string(type) + "(\n  (a): ReLU()\n  (b): ReLU()\n)");
  }
}

TEST(ReprTest, CustomTypeNamedModuleListIsNotCompressed) {
  // Only the built-in ModuleList has the compressing repr.
  Module custom("ModuleList");
  Add(custom, "0", Layer("ReLU"));
  Add(custom, "1", Layer("ReLU"));
  EXPECT_EQ(Repr(custom), "ModuleList(\n  (0): ReLU()\n  (1): ReLU()\n)");
}

}  // namespace
}  // namespace paramd::core
