// pytorch-semantics.md §1: module registries, their checks, order and messages.
#include "server/core/module.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/core/test_util.h"

namespace paramd::core {
namespace {

using ::testing::ElementsAre;
using testing::MakeTensor;

std::shared_ptr<Parameter> Param(std::vector<double> values = {1.0}) {
  const int64_t size = static_cast<int64_t>(values.size());
  return std::make_shared<Parameter>(MakeTensor({size}, std::move(values)));
}

std::shared_ptr<Buffer> Buf() { return std::make_shared<Buffer>(MakeTensor({1}, {0.0})); }

template <typename Map>
std::vector<std::string> Keys(const Map& map) {
  std::vector<std::string> keys;
  for (const auto& [name, value] : map) keys.push_back(name);
  return keys;
}

TEST(ModuleRegistryTest, RegisterParameterChecksInPyTorchOrder) {  // §1 register_parameter
  Module m("Net");
  absl::Status dot = m.RegisterParameter("a.b", Param());
  EXPECT_EQ(dot.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(dot.message(), "parameter name can't contain \".\"");
  absl::Status empty = m.RegisterParameter("", Param());
  EXPECT_EQ(empty.message(), "parameter name can't be empty string \"\"");
  ASSERT_TRUE(m.RegisterBuffer("running", Buf()).ok());
  absl::Status taken = m.RegisterParameter("running", Param());
  EXPECT_EQ(taken.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(taken.message(), "attribute 'running' already exists");
  // Methods and bookkeeping attributes of nn.Module count too (hasattr).
  EXPECT_EQ(m.RegisterParameter("forward", Param()).message(), "attribute 'forward' already exists");
  EXPECT_EQ(m.RegisterParameter("training", Param()).message(),
            "attribute 'training' already exists");
  // The dot check comes before "already exists": a dotted name never reaches it.
  EXPECT_EQ(m.RegisterParameter("running.x", Param()).message(),
            "parameter name can't contain \".\"");
}

TEST(ModuleRegistryTest, PlainAttributesBlockRegistrationButAreNeverRegistered) {  // §1 rule 6
  Module m("MLP");
  m.AddPlainAttribute("w1");
  EXPECT_TRUE(m.HasAttribute("w1"));
  EXPECT_EQ(m.RegisterParameter("w1", Param()).message(), "attribute 'w1' already exists");
  EXPECT_TRUE(m.parameters().empty());
}

TEST(ModuleRegistryTest, ReRegisteringKeepsPositionAndNoneIsASlot) {  // §1
  Module m("Net");
  ASSERT_TRUE(m.RegisterParameter("a", Param()).ok());
  ASSERT_TRUE(m.RegisterParameter("b", nullptr).ok());
  ASSERT_TRUE(m.RegisterParameter("c", Param()).ok());
  ASSERT_TRUE(m.RegisterParameter("a", Param({5.0})).ok());
  EXPECT_THAT(Keys(m.parameters()), ElementsAre("a", "b", "c"));
  EXPECT_EQ(*m.parameters().Find("b"), nullptr);
  EXPECT_TRUE(m.HasAttribute("b"));
  // Only "." and "" are forbidden.
  EXPECT_TRUE(m.RegisterParameter("0", Param()).ok());
  EXPECT_TRUE(m.RegisterParameter("my-layer", Param()).ok());
  EXPECT_TRUE(m.RegisterParameter("a b", Param()).ok());
}

TEST(ModuleRegistryTest, RegisterBufferChecksAndPersistence) {  // §1 register_buffer
  Module m("Net");
  EXPECT_EQ(m.RegisterBuffer("x.y", Buf()).message(), "buffer name can't contain \".\"");
  EXPECT_EQ(m.RegisterBuffer("", Buf()).message(), "buffer name can't be empty string \"\"");
  ASSERT_TRUE(m.RegisterParameter("w", Param()).ok());
  EXPECT_EQ(m.RegisterBuffer("w", Buf()).message(), "attribute 'w' already exists");
  ASSERT_TRUE(m.RegisterBuffer("stats", Buf(), /*persistent=*/false).ok());
  EXPECT_FALSE(m.IsPersistentBuffer("stats"));
  ASSERT_TRUE(m.RegisterBuffer("stats", Buf(), /*persistent=*/true).ok());
  EXPECT_TRUE(m.IsPersistentBuffer("stats"));
  ASSERT_TRUE(m.RegisterBuffer("none", nullptr).ok());
  EXPECT_THAT(Keys(m.buffers()), ElementsAre("stats", "none"));
}

TEST(ModuleRegistryTest, AddModuleChecksExistsBeforeDotAndEmpty) {  // §1 add_module
  Module m("Net");
  ASSERT_TRUE(m.RegisterParameter("weight", Param()).ok());
  EXPECT_EQ(m.AddModule("weight", std::make_shared<Module>("Sub")).message(),
            "attribute 'weight' already exists");
  absl::Status dot = m.AddModule("a.b", std::make_shared<Module>("Sub"));
  EXPECT_EQ(dot.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(dot.message(), "module name can't contain \".\", got: a.b");
  EXPECT_EQ(m.AddModule("", std::make_shared<Module>("Sub")).message(),
            "module name can't be empty string \"\"");
  EXPECT_TRUE(m.AddModule("child", nullptr).ok());
  EXPECT_TRUE(m.AddModule("child", std::make_shared<Module>("Sub")).ok());  // re-assign is fine
  EXPECT_THAT(Keys(m.children()), ElementsAre("child"));
}

TEST(ModuleRegistryTest, AssigningAParameterReplacesABufferOrChild) {  // §1 __setattr__ rule 1
  Module m("Net");
  ASSERT_TRUE(m.RegisterParameter("first", Param()).ok());
  ASSERT_TRUE(m.RegisterBuffer("x", Buf(), /*persistent=*/false).ok());
  ASSERT_TRUE(m.AddModule("y", std::make_shared<Module>("Sub")).ok());
  ASSERT_TRUE(m.AssignParameter("x", Param()).ok());
  ASSERT_TRUE(m.AssignParameter("y", Param()).ok());
  EXPECT_THAT(Keys(m.parameters()), ElementsAre("first", "x", "y"));  // appended at the end
  EXPECT_TRUE(m.buffers().empty());
  EXPECT_TRUE(m.children().empty());
  EXPECT_EQ(m.AssignParameter("forward", Param()).code(), absl::StatusCode::kAlreadyExists);
}

TEST(ModuleRegistryTest, BuiltinVersionsAndConstructorAttributes) {  // §1 built-ins
  auto net = testing::Build(R"({"type": "Net", "children": [
      {"name": "bn", "type": "BatchNorm2d", "args": {"num_features": 3}},
      {"name": "fc", "type": "Linear", "args": {"in_features": 2, "out_features": 2}}]})");
  EXPECT_EQ(net->version(), 1);
  EXPECT_EQ((*net->children().Find("bn"))->version(), 2);
  const Module& fc = **net->children().Find("fc");
  EXPECT_EQ(fc.version(), 1);
  EXPECT_TRUE(fc.HasAttribute("in_features"));
  Module& mutable_fc = **net->children().Find("fc");
  EXPECT_EQ(mutable_fc.RegisterBuffer("in_features", Buf()).message(),
            "attribute 'in_features' already exists");
}

}  // namespace
}  // namespace paramd::core
