// Where torch.optim checks, keeps and refuses things, and paramd with it: hyperparameters
// checked only as the constructor's keyword arguments, state a step does not use left as it
// is, and the steps torch 2.15 (foreach=False) refuses.
#include <cmath>
#include <limits>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/optim/optimizer.h"
#include "tests/unit/core/test_util.h"

namespace paramd::core {
namespace {

using testing::Build;
using ::testing::ElementsAre;
using testing::MakeTensor;
using testing::Values;

constexpr char kVectorSpec[] = R"({"type": "Net", "parameters": [
    {"name": "t", "shape": [4]}, {"name": "u", "shape": [2]}]})";

std::shared_ptr<Model> VectorModel() {
  auto model = std::make_shared<Model>("net", Build(kVectorSpec), Device{});
  EXPECT_TRUE(
      model->SetTensor("t", std::nullopt, MakeTensor({4}, {1, -2, 3, -4}), std::nullopt).ok());
  EXPECT_TRUE(model->SetTensor("u", std::nullopt, MakeTensor({2}, {5, 6}), std::nullopt).ok());
  return model;
}

std::vector<double> Read(const Model& model, const std::string& name) {
  return Values(model.Read([&](const std::shared_ptr<Module>& root, uint64_t) {
    return (*FindTensorSlot(root, name))->data();
  }));
}

std::shared_ptr<Optimizer> MakeOptimizer(std::shared_ptr<Model> model, OptimizerKind kind,
                                         const Hyperparameters& defaults,
                                         const std::vector<Optimizer::GroupSpec>& groups = {}) {
  auto optimizer = Optimizer::Create("opt", std::move(model), kind, defaults, groups);
  EXPECT_TRUE(optimizer.ok()) << optimizer.status();
  return optimizer.ok() ? *optimizer : nullptr;
}

absl::Status CreateStatus(OptimizerKind kind, const Hyperparameters& defaults,
                          const std::vector<Optimizer::GroupSpec>& groups = {}) {
  return Optimizer::Create("opt", VectorModel(), kind, defaults, groups).status();
}

absl::Status PushAndStep(Optimizer& optimizer, std::vector<double> u) {
  absl::Status pushed = optimizer.AccumulateGradients({{"u", MakeTensor({2}, std::move(u))}});
  if (!pushed.ok()) return pushed;
  return optimizer.Step(std::nullopt).status();
}

HyperValue Nan() { return HyperValue::Float(std::numeric_limits<double>::quiet_NaN()); }

TEST(OptimizerTorchRulesTest, OnlyTheConstructorsKeywordArgumentsAreChecked) {
  using K = OptimizerKind;
  // The constructor's own arguments: torch's ValueError texts.
  EXPECT_EQ(CreateStatus(K::kSgd, {{"lr", HyperValue::Float(-1)}}).message(),
            "Invalid learning rate: -1.0");
  EXPECT_EQ(CreateStatus(K::kAdam, {{"betas", HyperValue::Tuple({1.5, 0.9})}}).message(),
            "Invalid beta parameter at index 0: 1.5");
  // A group's own values are not checked, nor are later writes or loads.
  auto model = VectorModel();
  auto sgd = MakeOptimizer(
      model, K::kSgd, {{"lr", HyperValue::Float(0.5)}},
      {{{"t"}, {{"lr", HyperValue::Float(-1)}}}, {{"u"}, {{"nesterov", HyperValue::Bool(true)}}}});
  ASSERT_NE(sgd, nullptr);
  // Nesterov without momentum steps as plain SGD, as torch's does.
  ASSERT_TRUE(PushAndStep(*sgd, {1, 2}).ok());
  EXPECT_THAT(Read(*model, "u"), ElementsAre(4.5, 5));
  ASSERT_TRUE(sgd->SetHyperparameters(1, {{"lr", HyperValue::Float(-0.1)}}).ok());
  ASSERT_TRUE(sgd->Step(std::nullopt).ok());
  EXPECT_THAT(Read(*model, "u"), ElementsAre(4.6f, 5.2f));
  OptimizerStateDict dict = sgd->StateDict();
  dict.param_groups[1].hyperparameters = {{"lr", HyperValue::Float(-0.5)},
                                          {"weight_decay", HyperValue::Float(-1)}};
  EXPECT_TRUE(sgd->LoadStateDict(dict).ok());
  EXPECT_EQ(*FindHyperparameter(sgd->StateDict().param_groups[1].hyperparameters, "lr"),
            HyperValue::Float(-0.5));
  EXPECT_TRUE(
      MakeOptimizer(
          VectorModel(), K::kAdam, {},
          {{{"u"}, {{"betas", HyperValue::Tuple({1.5, 0.9})}, {"eps", HyperValue::Float(-1)}}}}) !=
      nullptr);
  // A wrong type is refused anywhere: the daemon has no way to hold it.
  EXPECT_EQ(sgd->SetHyperparameters(0, {{"lr", HyperValue::Bool(true)}}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(OptimizerTorchRulesTest, TheConstructorComparesAsTorchsDoes) {
  using K = OptimizerKind;
  // SGD's `lr < 0.0`: NaN passes.
  for (const char* name : {"lr", "momentum", "weight_decay"}) {
    EXPECT_TRUE(CreateStatus(K::kSgd, {{name, Nan()}}).ok()) << name;
  }
  // Adam's `not 0.0 <= lr`: NaN fails.
  EXPECT_EQ(CreateStatus(K::kAdam, {{"lr", Nan()}}).message(), "Invalid learning rate: nan");
  EXPECT_EQ(CreateStatus(K::kAdamW, {{"eps", Nan()}}).message(), "Invalid epsilon value: nan");
  EXPECT_EQ(CreateStatus(K::kAdam, {{"weight_decay", HyperValue::Int(-1)}}).message(),
            "Invalid weight_decay value: -1");
}

TEST(OptimizerTorchRulesTest, FusedIsRefusedWithDifferentiableOrForeachOnlyAsADefault) {
  for (OptimizerKind kind : {OptimizerKind::kSgd, OptimizerKind::kAdam}) {
    EXPECT_EQ(CreateStatus(kind, {{"fused", HyperValue::Bool(true)},
                                  {"differentiable", HyperValue::Bool(true)}})
                  .message(),
              "`fused` does not support `differentiable`");
    EXPECT_EQ(
        CreateStatus(kind, {{"fused", HyperValue::Bool(true)}, {"foreach", HyperValue::Bool(true)}})
            .message(),
        "`fused` and `foreach` cannot be `True` together.");
    // torch checks after the param groups: their errors come first.
    EXPECT_THAT(
        CreateStatus(
            kind, {{"fused", HyperValue::Bool(true)}, {"differentiable", HyperValue::Bool(true)}},
            {{{"u"}, {}}, {{"u"}, {}}})
            .message(),
        ::testing::HasSubstr("some parameters appear in more than one parameter group"));
    EXPECT_TRUE(CreateStatus(kind, {},
                             {{{"u"},
                               {{"fused", HyperValue::Bool(true)},
                                {"differentiable", HyperValue::Bool(true)},
                                {"foreach", HyperValue::Bool(true)}}}})
                    .ok());
  }
}

TEST(OptimizerTorchRulesTest, ASecondBetaPastOneFailsTheStepAsTorchsComplexBiasCorrectionDoes) {
  auto model = VectorModel();
  auto adam = MakeOptimizer(model, OptimizerKind::kAdam, {},
                            {{{"u"}, {{"betas", HyperValue::Tuple({0.9, 1.5})}}}});
  ASSERT_NE(adam, nullptr);
  const uint64_t version = model->version();
  EXPECT_EQ(PushAndStep(*adam, {1, 2}).message(),
            "result type ComplexFloat can't be cast to the desired output type Float");
  EXPECT_EQ(model->version(), version);
  EXPECT_TRUE(adam->StateDict().state.empty());
}

TEST(OptimizerTorchRulesTest, AdamWTakesAWriteOfDecoupledWeightDecay) {
  const Hyperparameters hyper = {{"lr", HyperValue::Float(0.1)},
                                 {"weight_decay", HyperValue::Float(0.5)}};
  auto adam_model = VectorModel();
  auto adam = MakeOptimizer(adam_model, OptimizerKind::kAdam, hyper);
  auto adamw_model = VectorModel();
  auto adamw = MakeOptimizer(adamw_model, OptimizerKind::kAdamW, hyper);
  ASSERT_TRUE(adam != nullptr && adamw != nullptr);
  ASSERT_TRUE(
      adamw->SetHyperparameters(std::nullopt, {{"decoupled_weight_decay", HyperValue::Bool(false)}})
          .ok());
  ASSERT_TRUE(PushAndStep(*adam, {1, 2}).ok());
  ASSERT_TRUE(PushAndStep(*adamw, {1, 2}).ok());
  // Weight decay added to the gradient, as Adam's: the moments hold it.
  EXPECT_EQ(Values(adamw->StateDict().state[0].tensors[1].second),
            Values(adam->StateDict().state[0].tensors[1].second));
  EXPECT_EQ(Read(*adamw_model, "u"), Read(*adam_model, "u"));
  // A group's own False is kept too; a load makes it True, as AdamW.__setstate__ does.
  auto grouped = MakeOptimizer(VectorModel(), OptimizerKind::kAdamW, {},
                               {{{"u"}, {{"decoupled_weight_decay", HyperValue::Bool(false)}}}});
  ASSERT_NE(grouped, nullptr);
  OptimizerStateDict dict = grouped->StateDict();
  EXPECT_EQ(*FindHyperparameter(dict.param_groups[0].hyperparameters, "decoupled_weight_decay"),
            HyperValue::Bool(false));
  ASSERT_TRUE(grouped->LoadStateDict(dict).ok());
  EXPECT_EQ(*FindHyperparameter(grouped->StateDict().param_groups[0].hyperparameters,
                                "decoupled_weight_decay"),
            HyperValue::Bool(true));
  // AdamW's constructor has no such argument.
  EXPECT_EQ(
      CreateStatus(OptimizerKind::kAdamW, {{"decoupled_weight_decay", HyperValue::Bool(false)}})
          .message(),
      "AdamW.__init__() got an unexpected keyword argument 'decoupled_weight_decay'");
}

TEST(OptimizerTorchRulesTest, AGroupWithNoParametersIsTaken) {
  auto model = VectorModel();
  auto optimizer = MakeOptimizer(model, OptimizerKind::kSgd, {{"lr", HyperValue::Float(1)}},
                                 {{{}, {{"lr", HyperValue::Float(0.5)}}}, {{"u"}, {}}});
  ASSERT_NE(optimizer, nullptr);
  ASSERT_TRUE(PushAndStep(*optimizer, {1, 2}).ok());
  EXPECT_THAT(Read(*model, "u"), ElementsAre(4, 4));
  OptimizerStateDict dict = optimizer->StateDict();
  ASSERT_EQ(dict.param_groups.size(), 2u);
  EXPECT_TRUE(dict.param_groups[0].params.empty());
  EXPECT_THAT(dict.param_groups[1].params, ElementsAre(0));
  EXPECT_TRUE(optimizer->LoadStateDict(dict).ok());
  // A lone group with no parameters is a group too, not "every parameter".
  auto lone = MakeOptimizer(VectorModel(), OptimizerKind::kAdam, {}, {{{}, {}}});
  ASSERT_NE(lone, nullptr);
  EXPECT_EQ(lone->Describe().parameters, 0);
}

// The values of state entry `key` of the one parameter with state.
std::vector<double> StateOf(const Optimizer& optimizer, const std::string& key) {
  const OptimizerStateDict dict = optimizer.StateDict();
  EXPECT_EQ(dict.state.size(), 1u);
  for (const auto& [name, tensor] : dict.state.at(0).tensors) {
    if (name == key) return Values(tensor);
  }
  return {};
}

TEST(OptimizerTorchRulesTest, AStepWithoutMomentumLeavesTheMomentumBuffer) {
  auto model = VectorModel();
  auto sgd = MakeOptimizer(model, OptimizerKind::kSgd,
                           {{"lr", HyperValue::Float(0.1)}, {"momentum", HyperValue::Float(0.9)}});
  ASSERT_NE(sgd, nullptr);
  ASSERT_TRUE(PushAndStep(*sgd, {1, 2}).ok());
  ASSERT_TRUE(sgd->SetHyperparameters(std::nullopt, {{"momentum", HyperValue::Int(0)}}).ok());
  ASSERT_TRUE(sgd->Step(std::nullopt).ok());
  EXPECT_THAT(StateOf(*sgd, "momentum_buffer"), ElementsAre(1, 2));
  // Momentum back: torch continues from the buffer it kept (0.9 * buf + grad).
  ASSERT_TRUE(sgd->SetHyperparameters(std::nullopt, {{"momentum", HyperValue::Float(0.9)}}).ok());
  ASSERT_TRUE(sgd->Step(std::nullopt).ok());
  const std::vector<double> buf = StateOf(*sgd, "momentum_buffer");
  ASSERT_EQ(buf.size(), 2u);
  EXPECT_FLOAT_EQ(static_cast<float>(buf[0]), 1.9f);
  EXPECT_FLOAT_EQ(static_cast<float>(buf[1]), 3.8f);
  const std::vector<double> u = Read(*model, "u");
  EXPECT_FLOAT_EQ(static_cast<float>(u[0]), 4.61f);
  EXPECT_FLOAT_EQ(static_cast<float>(u[1]), 5.22f);
}

TEST(OptimizerTorchRulesTest, AStepWithoutAmsgradLeavesMaxExpAvgSq) {
  auto adam = MakeOptimizer(VectorModel(), OptimizerKind::kAdam,
                            {{"lr", HyperValue::Float(0.1)}, {"amsgrad", HyperValue::Bool(true)}});
  ASSERT_NE(adam, nullptr);
  ASSERT_TRUE(PushAndStep(*adam, {4, 8}).ok());
  const std::vector<double> kept = StateOf(*adam, "max_exp_avg_sq");
  ASSERT_EQ(kept.size(), 2u);
  ASSERT_TRUE(adam->SetHyperparameters(0, {{"amsgrad", HyperValue::Bool(false)}}).ok());
  ASSERT_TRUE(adam->ZeroGrad().ok());
  ASSERT_TRUE(PushAndStep(*adam, {0, 0}).ok());
  EXPECT_EQ(StateOf(*adam, "max_exp_avg_sq"), kept);
  ASSERT_TRUE(adam->SetHyperparameters(0, {{"amsgrad", HyperValue::Bool(true)}}).ok());
  ASSERT_TRUE(adam->Step(std::nullopt).ok());
  // The running maximum goes on from the kept one, which the decayed average stays below.
  const std::vector<double> v = StateOf(*adam, "exp_avg_sq");
  ASSERT_TRUE(v[0] < kept[0] && v[1] < kept[1]);
  EXPECT_EQ(StateOf(*adam, "max_exp_avg_sq"), kept);
}

TEST(OptimizerTorchRulesTest, AmsgradWithoutMaxExpAvgSqFailsTheStepAsTorchsKeyError) {
  auto model = VectorModel();
  auto adam = MakeOptimizer(model, OptimizerKind::kAdam, {{"lr", HyperValue::Float(0.1)}});
  ASSERT_NE(adam, nullptr);
  ASSERT_TRUE(PushAndStep(*adam, {1, 2}).ok());
  const OptimizerStateDict before = adam->StateDict();
  const uint64_t version = model->version();
  ASSERT_TRUE(adam->SetHyperparameters(0, {{"amsgrad", HyperValue::Bool(true)}}).ok());
  const absl::Status refused = adam->Step(std::nullopt).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.message(), ::testing::HasSubstr("parameter 'u' has no 'max_exp_avg_sq'"));
  EXPECT_THAT(refused.message(), ::testing::HasSubstr("torch raises KeyError: 'max_exp_avg_sq'"));
  EXPECT_EQ(model->version(), version);
  EXPECT_EQ(StateOf(*adam, "step"), Values(before.state[0].tensors[0].second));
  EXPECT_EQ(StateOf(*adam, "exp_avg"), Values(before.state[0].tensors[1].second));
  // A loaded state without the key, into a group with amsgrad on: the same.
  OptimizerStateDict loaded = before;
  loaded.param_groups[0].hyperparameters = {{"amsgrad", HyperValue::Bool(true)}};
  auto fresh = MakeOptimizer(model, OptimizerKind::kAdam, {});
  ASSERT_NE(fresh, nullptr);
  ASSERT_TRUE(fresh->LoadStateDict(loaded).ok());
  EXPECT_EQ(PushAndStep(*fresh, {1, 2}).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(model->version(), version);
}

TEST(OptimizerTorchRulesTest, AScalarPastFloatsRangeFailsTheStepAndChangesNothing) {
  auto model = VectorModel();
  auto sgd = MakeOptimizer(model, OptimizerKind::kSgd,
                           {{"lr", HyperValue::Float(0.1)}, {"momentum", HyperValue::Float(0.9)}},
                           {{{"t"}, {}}, {{"u"}, {}}});
  ASSERT_NE(sgd, nullptr);
  ASSERT_TRUE(sgd->AccumulateGradients({{"t", MakeTensor({4}, {1, 1, 1, 1})}}).ok());
  ASSERT_TRUE(PushAndStep(*sgd, {1, 2}).ok());
  const uint64_t version = model->version();
  // The second group's lr: the first group's step, already computed, is not published.
  ASSERT_TRUE(sgd->SetHyperparameters(1, {{"lr", HyperValue::Float(1e39)}}).ok());
  const absl::Status refused = sgd->Step(std::nullopt).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.message(), "value cannot be converted to type float without overflow");
  EXPECT_EQ(model->version(), version);
  EXPECT_EQ(sgd->Describe().steps, 1u);
  EXPECT_THAT(Values(sgd->StateDict().state[1].tensors[0].second), ElementsAre(1, 2));
  // Adam's lr / (1 - beta1^t) is the checked value: 1e38 / 0.1 at the first step.
  auto adam = MakeOptimizer(model, OptimizerKind::kAdam, {{"lr", HyperValue::Float(1e38)}});
  ASSERT_NE(adam, nullptr);
  EXPECT_EQ(PushAndStep(*adam, {1, 2}).message(),
            "value cannot be converted to type float without overflow");
  EXPECT_TRUE(adam->StateDict().state.empty());
  EXPECT_EQ(model->version(), version);
}

std::vector<int64_t> StateIndices(const Optimizer& optimizer) {
  std::vector<int64_t> indices;
  for (const auto& entry : optimizer.StateDict().state) indices.push_back(entry.index);
  return indices;
}

TEST(OptimizerTorchRulesTest, StateIsListedInTheOrderItWasMade) {
  auto model = VectorModel();
  auto sgd = MakeOptimizer(model, OptimizerKind::kSgd, {{"lr", HyperValue::Float(0.1)}});
  ASSERT_NE(sgd, nullptr);
  // A step without momentum makes no state; u's first step with momentum comes before t's.
  ASSERT_TRUE(sgd->AccumulateGradients({{"t", MakeTensor({4}, {1, 1, 1, 1})}}).ok());
  ASSERT_TRUE(sgd->Step(std::nullopt).ok());
  ASSERT_TRUE(sgd->ZeroGrad().ok());
  ASSERT_TRUE(sgd->SetHyperparameters(0, {{"momentum", HyperValue::Float(0.9)}}).ok());
  ASSERT_TRUE(PushAndStep(*sgd, {1, 2}).ok());
  ASSERT_TRUE(sgd->AccumulateGradients({{"t", MakeTensor({4}, {1, 1, 1, 1})}}).ok());
  ASSERT_TRUE(sgd->Step(std::nullopt).ok());
  EXPECT_THAT(StateIndices(*sgd), ElementsAre(1, 0));
  // A load keeps the loaded order; state made after it comes last.
  auto adam = MakeOptimizer(model, OptimizerKind::kAdam, {});
  ASSERT_NE(adam, nullptr);
  ASSERT_TRUE(PushAndStep(*adam, {1, 2}).ok());
  ASSERT_TRUE(adam->ZeroGrad().ok());
  ASSERT_TRUE(adam->LoadStateDict(adam->StateDict()).ok());
  ASSERT_TRUE(adam->AccumulateGradients({{"t", MakeTensor({4}, {1, 1, 1, 1})}}).ok());
  ASSERT_TRUE(adam->Step(std::nullopt).ok());
  EXPECT_THAT(StateIndices(*adam), ElementsAre(1, 0));
  OptimizerStateDict dict = adam->StateDict();
  std::swap(dict.state[0], dict.state[1]);
  ASSERT_TRUE(adam->LoadStateDict(dict).ok());
  EXPECT_THAT(StateIndices(*adam), ElementsAre(0, 1));
}

std::vector<std::string> Keys(const Hyperparameters& hyperparameters) {
  std::vector<std::string> keys;
  for (const auto& [key, value] : hyperparameters) keys.push_back(key);
  return keys;
}

TEST(OptimizerTorchRulesTest, GroupKeysComeInTorchsOrder) {
  // A group's own keys first, then the defaults it lacks.
  auto adam = MakeOptimizer(
      VectorModel(), OptimizerKind::kAdam, {{"lr", HyperValue::Float(0.1)}},
      {{{"t"}, {{"weight_decay", HyperValue::Float(0.5)}, {"lr", HyperValue::Float(0.2)}}},
       {{"u"}, {}}});
  ASSERT_NE(adam, nullptr);
  OptimizerStateDict dict = adam->StateDict();
  EXPECT_THAT(Keys(dict.param_groups[0].hyperparameters),
              ElementsAre("weight_decay", "lr", "betas", "eps", "amsgrad", "maximize", "foreach",
                          "capturable", "differentiable", "fused", "decoupled_weight_decay"));
  EXPECT_EQ(Keys(dict.param_groups[1].hyperparameters),
            Keys(DefaultHyperparameters(OptimizerKind::kAdam)));
  // A load keeps the loaded order; __setstate__ appends what it fills, SGD's fused as False.
  auto sgd = MakeOptimizer(VectorModel(), OptimizerKind::kSgd, {});
  ASSERT_NE(sgd, nullptr);
  dict = sgd->StateDict();
  dict.param_groups[0].hyperparameters = {
      {"maximize", HyperValue::Bool(false)}, {"lr", HyperValue::Float(0.5)},
      {"momentum", HyperValue::Int(0)},      {"dampening", HyperValue::Int(0)},
      {"weight_decay", HyperValue::Int(0)},  {"differentiable", HyperValue::Bool(false)}};
  ASSERT_TRUE(sgd->LoadStateDict(dict).ok());
  const Hyperparameters loaded = sgd->StateDict().param_groups[0].hyperparameters;
  EXPECT_THAT(Keys(loaded), ElementsAre("maximize", "lr", "momentum", "dampening", "weight_decay",
                                        "differentiable", "nesterov", "foreach", "fused"));
  EXPECT_EQ(*FindHyperparameter(loaded, "fused"), HyperValue::Bool(false));
}

}  // namespace
}  // namespace paramd::core
