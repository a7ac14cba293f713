// The optimizer engine (server/core/optim): torch.optim's arithmetic, gradients as
// accumulators, tying, atomic steps and the state_dict layout. Expected values come from
// torch 2.15 (foreach=False) on the same inputs.
#include "server/core/optim/optimizer.h"

#include <atomic>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "base/version_conflict.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "tests/unit/core/test_util.h"

namespace paramd::core {
namespace {

using testing::Build;
using testing::MakeTensor;
using testing::Values;
using ::testing::HasSubstr;

constexpr char kVectorSpec[] = R"({"type": "Net", "parameters": [
    {"name": "t", "shape": [4]}, {"name": "u", "shape": [2]}]})";

std::shared_ptr<Model> VectorModel() {
  auto model = std::make_shared<Model>("net", Build(kVectorSpec), Device{});
  EXPECT_TRUE(model->SetTensor("t", std::nullopt, MakeTensor({4}, {1, -2, 3, -4}), std::nullopt).ok());
  EXPECT_TRUE(model->SetTensor("u", std::nullopt, MakeTensor({2}, {5, 6}), std::nullopt).ok());
  return model;
}

Tensor Read(const Model& model, const std::string& name) {
  return model.Read([&](const std::shared_ptr<Module>& root, uint64_t) {
    return (*FindTensorSlot(root, name))->data();
  });
}

// Three steps with gradients g * (step + 1), as the torch script that made the figures.
std::vector<double> ThreeSteps(OptimizerKind kind, const Hyperparameters& hyperparameters) {
  auto model = VectorModel();
  auto optimizer = Optimizer::Create("opt", model, kind, hyperparameters, {{{"t"}, {}}});
  EXPECT_TRUE(optimizer.ok()) << optimizer.status();
  for (int step = 0; step < 3; ++step) {
    const double k = step + 1;
    EXPECT_TRUE((*optimizer)->ZeroGrad().ok());
    EXPECT_TRUE((*optimizer)
                    ->AccumulateGradients({{"t", MakeTensor({4}, {0.5 * k, 0.25 * k, -k, 2 * k})}})
                    .ok());
    EXPECT_TRUE((*optimizer)->Step(std::nullopt).ok());
  }
  return Values(Read(*model, "t"));
}

void ExpectFloats(const std::vector<double>& actual, const std::vector<float>& expected) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) {
    EXPECT_FLOAT_EQ(static_cast<float>(actual[i]), expected[i]) << "element " << i;
  }
}

TEST(OptimizerTest, SgdWithNesterovAndWeightDecayMatchesTorch) {
  ExpectFloats(ThreeSteps(OptimizerKind::kSgd, {{"lr", HyperValue::Float(0.1)},
                                                {"momentum", HyperValue::Float(0.9)},
                                                {"nesterov", HyperValue::Bool(true)},
                                                {"weight_decay", HyperValue::Float(0.01)}}),
               {0x1.0f3f72p-2f, -0x1.2c79ccp+1f, 0x1.1b85d6p+2f, -0x1.b812f6p+2f});
}

TEST(OptimizerTest, SgdWithDampeningAndMaximizeMatchesTorch) {
  ExpectFloats(ThreeSteps(OptimizerKind::kSgd, {{"lr", HyperValue::Float(0.1)},
                                                {"momentum", HyperValue::Float(0.5)},
                                                {"dampening", HyperValue::Float(0.3)},
                                                {"maximize", HyperValue::Bool(true)}}),
               {0x1.4c28f6p+0f, -0x1.d9eb86p+0f, 0x1.33d70ap+1f, -0x1.67ae14p+1f});
}

TEST(OptimizerTest, AdamWithAmsgradAndWeightDecayMatchesTorch) {
  ExpectFloats(ThreeSteps(OptimizerKind::kAdam, {{"lr", HyperValue::Float(0.01)},
                                                 {"amsgrad", HyperValue::Bool(true)},
                                                 {"weight_decay", HyperValue::Float(0.1)}}),
               {0x1.f0f0a6p-1f, -0x1.037b0cp+1f, 0x1.83b03cp+1f, -0x1.01dad0p+2f});
}

TEST(OptimizerTest, AdamWWithALargeLerpWeightMatchesTorch) {
  ExpectFloats(ThreeSteps(OptimizerKind::kAdamW, {{"lr", HyperValue::Float(0.01)},
                                                  {"betas", HyperValue::Tuple({0.3, 0.99})}}),
               {0x1.eebbd4p-1f, -0x1.04338cp+1f, 0x1.8429b8p+1f, -0x1.020ff4p+2f});
}

TEST(OptimizerTest, DefaultsAndGroupLayoutAreTorchs) {
  auto model = VectorModel();
  auto optimizer = Optimizer::Create("opt", model, OptimizerKind::kAdam, {}, {});
  ASSERT_TRUE(optimizer.ok()) << optimizer.status();
  OptimizerStateDict dict = (*optimizer)->StateDict();
  ASSERT_EQ(dict.param_groups.size(), 1u);
  EXPECT_THAT(dict.param_groups[0].params, ::testing::ElementsAre(0, 1));
  EXPECT_THAT(dict.param_groups[0].param_names, ::testing::ElementsAre("t", "u"));
  std::vector<std::string> keys;
  for (const auto& [key, value] : dict.param_groups[0].hyperparameters) keys.push_back(key);
  EXPECT_THAT(keys, ::testing::ElementsAre("lr", "betas", "eps", "weight_decay", "amsgrad",
                                           "maximize", "foreach", "capturable", "differentiable",
                                           "fused", "decoupled_weight_decay"));
  EXPECT_EQ(*FindHyperparameter(dict.param_groups[0].hyperparameters, "weight_decay"),
            HyperValue::Int(0));
  EXPECT_TRUE(dict.state.empty());
}

TEST(OptimizerTest, ANoneGradientIsSkippedWhereAZeroGradientIsNot) {
  auto model = VectorModel();
  auto optimizer = Optimizer::Create("opt", model, OptimizerKind::kSgd,
                                     {{"lr", HyperValue::Float(0.5)},
                                      {"weight_decay", HyperValue::Float(0.1)}},
                                     {});
  ASSERT_TRUE(optimizer.ok());
  // u gets a zero gradient (weight decay still moves it); t gets none (untouched).
  ASSERT_TRUE((*optimizer)->AccumulateGradients({{"u", MakeTensor({2}, {0, 0})}}).ok());
  auto version = (*optimizer)->Step(std::nullopt);
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_THAT(Values(Read(*model, "t")), ::testing::ElementsAre(1, -2, 3, -4));
  ExpectFloats(Values(Read(*model, "u")), {5 - 0.5f * 0.5f, 6 - 0.5f * 0.6f});
}

TEST(OptimizerTest, PushesAccumulateAndStepDoesNotClearThem) {
  auto model = VectorModel();
  auto optimizer =
      Optimizer::Create("opt", model, OptimizerKind::kSgd, {{"lr", HyperValue::Float(1)}}, {});
  ASSERT_TRUE(optimizer.ok());
  ASSERT_TRUE((*optimizer)->AccumulateGradients({{"u", MakeTensor({2}, {1, 2})}}).ok());
  ASSERT_TRUE((*optimizer)->AccumulateGradients({{"u", MakeTensor({2}, {0.5, 0.5})}}).ok());
  const uint64_t before = model->version();
  auto version = (*optimizer)->Step(std::nullopt);
  ASSERT_TRUE(version.ok());
  EXPECT_EQ(*version, before + 1);
  EXPECT_THAT(Values(Read(*model, "u")), ::testing::ElementsAre(3.5, 3.5));
  ASSERT_TRUE((*optimizer)->Step(std::nullopt).ok());  // the same gradient again
  EXPECT_THAT(Values(Read(*model, "u")), ::testing::ElementsAre(2, 1));
  ASSERT_TRUE((*optimizer)->ZeroGrad().ok());
  auto unchanged = (*optimizer)->Step(std::nullopt);
  ASSERT_TRUE(unchanged.ok());
  EXPECT_EQ(*unchanged, before + 2);  // no gradient: no new version
}

TEST(OptimizerTest, TiedNamesShareOneGradientAndCannotBeListedTwice) {
  auto model = std::make_shared<Model>("lm", Build(testing::kTiedEmbeddingSpec), Device{});
  auto twice = Optimizer::Create("opt", model, OptimizerKind::kSgd, {},
                                 {{{"embed.weight"}, {}}, {{"lm_head.weight"}, {}}});
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(twice.status().message(),
              HasSubstr("some parameters appear in more than one parameter group"));

  auto optimizer =
      Optimizer::Create("opt", model, OptimizerKind::kSgd, {{"lr", HyperValue::Float(1)}}, {});
  ASSERT_TRUE(optimizer.ok());
  std::vector<double> ones(40, 1.0);
  const std::vector<double> before = Values(Read(*model, "embed.weight"));
  ASSERT_TRUE((*optimizer)
                  ->AccumulateGradients({{"embed.weight", MakeTensor({10, 4}, ones)},
                                         {"lm_head.weight", MakeTensor({10, 4}, ones)}})
                  .ok());
  EXPECT_EQ((*optimizer)->Describe().with_gradient, 1);
  ASSERT_TRUE((*optimizer)->Step(std::nullopt).ok());
  const std::vector<double> after = Values(Read(*model, "lm_head.weight"));
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_FLOAT_EQ(static_cast<float>(after[i]), static_cast<float>(before[i] - 2));
  }
}

TEST(OptimizerTest, BadPushesAndBadGroupsChangeNothing) {
  auto model = VectorModel();
  EXPECT_EQ(
      Optimizer::Create("opt", model, OptimizerKind::kSgd, {{"lr", HyperValue::Float(-1)}}, {})
          .status()
          .message(),
      "Invalid learning rate: -1.0");
  EXPECT_EQ(Optimizer::Create("opt", model, OptimizerKind::kSgd,
                              {{"nesterov", HyperValue::Bool(true)}}, {}).status().message(),
            "Nesterov momentum requires a momentum and zero dampening");
  auto optimizer = Optimizer::Create("opt", model, OptimizerKind::kSgd, {}, {{{"u"}, {}}});
  ASSERT_TRUE(optimizer.ok());
  // The second gradient is of a parameter outside the optimizer: neither lands.
  auto status = (*optimizer)->AccumulateGradients(
      {{"u", MakeTensor({2}, {1, 1})}, {"t", MakeTensor({4}, {1, 1, 1, 1})}});
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  status = (*optimizer)->AccumulateGradients({{"u", MakeTensor({3}, {1, 1, 1})}});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*optimizer)->Describe().with_gradient, 0);
  // A stale if_version aborts the step and leaves the gradient and the state alone.
  ASSERT_TRUE((*optimizer)->AccumulateGradients({{"u", MakeTensor({2}, {1, 1})}}).ok());
  const uint64_t version = model->version();
  EXPECT_EQ((*optimizer)->Step(version - 1).status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(model->version(), version);
  EXPECT_EQ((*optimizer)->Describe().steps, 0u);
}

// The step kernel runs one dtype a call and float32 alone. A group with a float16 parameter
// used to run the float32 kernel over it when a float32 one came last (the last dtype won),
// writing past the float16 tensors' ends: a crash or a corrupted heap. Whichever comes
// first, the step is refused and changes nothing.
TEST(OptimizerTest, AGroupWithAParameterTheKernelCannotStepIsRefusedWhole) {
  for (const char* spec : {R"({"type": "Net", "parameters": [
          {"name": "h", "shape": [4096], "dtype": "float16"}, {"name": "f", "shape": [4]}]})",
                           R"({"type": "Net", "parameters": [
          {"name": "f", "shape": [4]}, {"name": "h", "shape": [4096], "dtype": "float16"}]})"}) {
    auto model = std::make_shared<Model>("net", Build(spec), Device{});
    auto optimizer = Optimizer::Create("opt", model, OptimizerKind::kAdam, {}, {});
    ASSERT_TRUE(optimizer.ok()) << optimizer.status();
    ASSERT_TRUE((*optimizer)
                    ->AccumulateGradients({{"h", MakeTensor({4096}, std::vector<double>(4096, 1))},
                                           {"f", MakeTensor({4}, {1, 1, 1, 1})}})
                    .ok());
    const std::vector<double> before = Values(Read(*model, "f"));
    const uint64_t version = model->version();
    const absl::Status stepped = (*optimizer)->Step(std::nullopt).status();
    EXPECT_EQ(stepped.code(), absl::StatusCode::kUnimplemented) << stepped;
    EXPECT_THAT(stepped.message(), HasSubstr("float16"));
    EXPECT_EQ(model->version(), version);
    EXPECT_EQ(Values(Read(*model, "f")), before);
    EXPECT_EQ((*optimizer)->Describe().steps, 0u);
    EXPECT_TRUE((*optimizer)->StateDict().state.empty());
  }
}

// Pushes and state loads read the parameters' tensors while writers commit new ones; they
// copy them under the model's lock (a reference to the slot read the storage a commit had
// freed: garbage devices and shapes, or a crash).
TEST(OptimizerTest, PushesAndLoadsRaceWritersSafely) {
  std::string spec = R"({"type": "Net", "parameters": [)";
  for (int i = 0; i < 200; ++i) {
    absl::StrAppend(&spec, i ? "," : "", R"({"name": "p)", i, R"(", "shape": [3]})");
  }
  spec += "]}";
  auto model = std::make_shared<Model>("net", Build(spec), Device{});
  auto optimizer = Optimizer::Create("opt", model, OptimizerKind::kAdam, {}, {});
  ASSERT_TRUE(optimizer.ok());
  std::vector<Optimizer::Gradient> gradients;
  for (int i = 0; i < 200; ++i) {
    gradients.push_back({absl::StrCat("p", i), MakeTensor({3}, {1, 2, 3})});
  }
  ASSERT_TRUE((*optimizer)->AccumulateGradients(gradients).ok());
  ASSERT_TRUE((*optimizer)->Step(std::nullopt).ok());
  const OptimizerStateDict state = (*optimizer)->StateDict();
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (int k = 0; !done.load(); ++k) {
      EXPECT_TRUE(model
                      ->SetTensor(absl::StrCat("p", k % 200), std::nullopt,
                                  MakeTensor({3}, {1.0 * k, 2, 3}), std::nullopt)
                      .ok());
    }
  });
  for (int round = 0; round < 300; ++round) {
    ASSERT_TRUE((*optimizer)->AccumulateGradients(gradients).ok());
    ASSERT_TRUE((*optimizer)->LoadStateDict(state).ok());
  }
  done.store(true);
  writer.join();
}

// A loaded Adam 'step' of -1 makes the next step's bias correction 1 - beta1^0 = 0 (torch:
// ZeroDivisionError), and one of -2 a negative 1 - beta2^-1 under a square root (torch: a
// complex number, refused): the step is refused instead of publishing NaN weights.
TEST(OptimizerTest, AnAdamStepWhereTorchsArithmeticRaisesIsRefused) {
  auto model = VectorModel();
  auto optimizer = Optimizer::Create("opt", model, OptimizerKind::kAdam, {}, {{{"u"}, {}}});
  ASSERT_TRUE(optimizer.ok());
  ASSERT_TRUE((*optimizer)->AccumulateGradients({{"u", MakeTensor({2}, {1, -1})}}).ok());
  ASSERT_TRUE((*optimizer)->Step(std::nullopt).ok());
  const std::vector<double> before = Values(Read(*model, "u"));
  for (double loaded_step : {-1.0, -2.0}) {
    OptimizerStateDict dict = (*optimizer)->StateDict();
    ASSERT_EQ(dict.state[0].tensors[0].first, "step");
    dict.state[0].tensors[0].second = MakeTensor({}, {loaded_step});
    ASSERT_TRUE((*optimizer)->LoadStateDict(dict).ok());
    const absl::Status stepped = (*optimizer)->Step(std::nullopt).status();
    if (loaded_step == -1.0) {
      EXPECT_EQ(stepped.code(), absl::StatusCode::kFailedPrecondition) << stepped;
      EXPECT_THAT(stepped.message(), HasSubstr("where torch raises ZeroDivisionError"));
    } else {
      EXPECT_EQ(stepped.code(), absl::StatusCode::kInvalidArgument) << stepped;
      EXPECT_EQ(stepped.message(),
                "result type ComplexFloat can't be cast to the desired output type Float");
    }
    EXPECT_EQ(Values(Read(*model, "u")), before);
  }
}

TEST(OptimizerTest, StateDictRoundTripsThroughLoadStateDict) {
  auto model = VectorModel();
  const Hyperparameters hyper = {{"lr", HyperValue::Float(0.01)}, {"amsgrad", HyperValue::Bool(true)}};
  auto first = Optimizer::Create("a", model, OptimizerKind::kAdam, hyper, {});
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE((*first)->AccumulateGradients({{"u", MakeTensor({2}, {1, -1})}}).ok());
  ASSERT_TRUE((*first)->Step(std::nullopt).ok());
  ASSERT_TRUE((*first)->Step(std::nullopt).ok());
  OptimizerStateDict dict = (*first)->StateDict();
  ASSERT_EQ(dict.state.size(), 1u);  // t never had a gradient: no state
  EXPECT_EQ(dict.state[0].index, 1);
  std::vector<std::string> keys;
  for (const auto& [key, tensor] : dict.state[0].tensors) keys.push_back(key);
  EXPECT_THAT(keys, ::testing::ElementsAre("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"));
  EXPECT_TRUE(dict.state[0].tensors[0].second.shape().empty());
  EXPECT_THAT(Values(dict.state[0].tensors[0].second), ::testing::ElementsAre(2));

  auto second = Optimizer::Create("b", model, OptimizerKind::kAdam, {}, {});
  ASSERT_TRUE(second.ok());
  ASSERT_TRUE((*second)->LoadStateDict(dict).ok());
  OptimizerStateDict loaded = (*second)->StateDict();
  EXPECT_EQ(loaded.param_groups[0].hyperparameters, dict.param_groups[0].hyperparameters);
  ASSERT_EQ(loaded.state.size(), 1u);
  for (size_t k = 0; k < 4; ++k) {
    EXPECT_EQ(Values(loaded.state[0].tensors[k].second), Values(dict.state[0].tensors[k].second));
  }
  // A layout that does not fit is refused with torch's message, and changes nothing.
  dict.param_groups[0].params.pop_back();
  EXPECT_EQ((*second)->LoadStateDict(dict).message(),
            "loaded state dict contains a parameter group that doesn't match the size of "
            "optimizer's group");
  EXPECT_EQ((*second)->StateDict().state.size(), 1u);
}

TEST(OptimizerTest, AsynchronousPushesStepAloneWithinTheStalenessBound) {
  auto model = VectorModel();
  auto optimizer = Optimizer::Create("opt", model, OptimizerKind::kSgd,
                                     {{"lr", HyperValue::Float(1)}}, {{{"u"}, {}}},
                                     {OptimizerMode::kAsynchronous, 1});
  ASSERT_TRUE(optimizer.ok()) << optimizer.status();
  const uint64_t start = model->version();
  auto first = (*optimizer)->PushAndStep({{"u", MakeTensor({2}, {1, 1})}}, 0);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->version, start + 1);
  EXPECT_EQ(first->round, 1u);
  // One step stale is within S = 1; the push steps with its own gradient alone.
  auto second = (*optimizer)->PushAndStep({{"u", MakeTensor({2}, {2, 2})}}, 0);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_THAT(Values(Read(*model, "u")), ::testing::ElementsAre(2, 3));
  EXPECT_EQ((*optimizer)->Describe().with_gradient, 0);  // consumed
  // Two steps stale, or a round still to come: ABORTED with the current round, no change.
  for (uint64_t round : {0u, 7u}) {
    auto refused = (*optimizer)->PushAndStep({{"u", MakeTensor({2}, {1, 1})}}, round);
    ASSERT_EQ(refused.status().code(), absl::StatusCode::kAborted);
    EXPECT_EQ(CurrentVersionOf(refused.status()), std::optional<uint64_t>(2));
  }
  EXPECT_EQ(model->version(), start + 2);
  // Only pushes step an asynchronous optimizer.
  EXPECT_EQ((*optimizer)->Step(std::nullopt).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*optimizer)->AccumulateGradients({{"u", MakeTensor({2}, {1, 1})}}).code(),
            absl::StatusCode::kFailedPrecondition);
  // A bad push in asynchronous mode changes nothing either.
  EXPECT_EQ((*optimizer)->PushAndStep({{"u", MakeTensor({3}, {1, 1, 1})}}, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(model->version(), start + 2);
}

// Host memory and the CPU kernels posing as cuda:0, so that where no GPU is present a model
// "in GPU memory" still takes the device path: its state and gradients allocated through
// the model's device, its step run by that device's backend.
class HostAsDevice final : public kernels::Backend {
 public:
  Device device() const override { return Device::Cuda(0); }
  absl::StatusOr<void*> Allocate(size_t n) override { return cpu_.Allocate(n); }
  void Free(void* data, size_t n) override { cpu_.Free(data, n); }
  absl::Status CopyFromHost(void* d, const void* s, size_t n) override {
    return cpu_.CopyFromHost(d, s, n);
  }
  absl::Status CopyToHost(void* d, const void* s, size_t n) override {
    return cpu_.CopyToHost(d, s, n);
  }
  absl::Status CopyWithinDevice(void* d, const void* s, size_t n) override {
    return cpu_.CopyWithinDevice(d, s, n);
  }
  size_t bytes_in_use() const override { return cpu_.bytes_in_use(); }
  void SetMemoryLimit(size_t n) override { cpu_.SetMemoryLimit(n); }
  absl::Status Supports(const kernels::OpQuery& q) const override { return cpu_.Supports(q); }
  absl::Status Binary(const kernels::BinaryArgs& a) override { return cpu_.Binary(a); }
  absl::Status Convert(const kernels::ConvertArgs& a) override { return cpu_.Convert(a); }
  absl::Status Fill(const kernels::FillArgs& a) override {
    ++fills;
    return cpu_.Fill(a);
  }
  absl::Status OptimizerStep(const kernels::OptimizerStepArgs& a) override {
    ++steps;
    return cpu_.OptimizerStep(a);
  }
  absl::Status Synchronize() override {
    ++synchronizes;
    return absl::OkStatus();
  }
  int steps = 0;
  int fills = 0;
  int synchronizes = 0;

 private:
  kernels::CpuBackend cpu_;
};

// A model on cuda:0 steps as the same model on the CPU, bit for bit (the CUDA kernel rounds
// as the CPU's: Note [Optimizer arithmetic]), with its state on the GPU, counted there. On a
// real GPU where one is present (tests/gpu/run.sh), on HostAsDevice otherwise.
TEST(OptimizerOnGpuTest, StepsAsOnTheCpuWithItsStateOnTheDevice) {
  HostAsDevice stand_in;
  const bool have_gpu = kernels::GetBackend(Device::Cuda(0)).ok();
  if (!have_gpu) kernels::SetBackendForTesting(Device::Cuda(0), &stand_in);
  absl::Cleanup restore = [&] {
    if (!have_gpu) kernels::SetBackendForTesting(Device::Cuda(0), nullptr);
  };
  kernels::Backend* device = *kernels::GetBackend(Device::Cuda(0));
  const std::vector<std::pair<OptimizerKind, Hyperparameters>> cases = {
      {OptimizerKind::kSgd, {{"lr", HyperValue::Float(0.1)}, {"momentum", HyperValue::Float(0.9)},
                             {"nesterov", HyperValue::Bool(true)},
                             {"weight_decay", HyperValue::Float(0.01)}}},
      {OptimizerKind::kAdam, {{"lr", HyperValue::Float(0.01)}, {"amsgrad", HyperValue::Bool(true)},
                              {"weight_decay", HyperValue::Float(0.1)}}},
      {OptimizerKind::kAdamW, {{"lr", HyperValue::Float(0.01)}}}};
  for (const auto& [kind, hyper] : cases) {
    auto on_cpu = VectorModel();
    auto on_gpu = VectorModel();
    ASSERT_TRUE(on_gpu->MoveTo(Device::Cuda(0), std::nullopt).ok());
    auto cpu_opt = Optimizer::Create("c", on_cpu, kind, hyper, {});
    auto gpu_opt = Optimizer::Create("g", on_gpu, kind, hyper, {});
    ASSERT_TRUE(cpu_opt.ok() && gpu_opt.ok());
    const size_t before = device->bytes_in_use();
    for (int step = 0; step < 5; ++step) {
      const double k = step + 1;
      for (const auto& opt : {*cpu_opt, *gpu_opt}) {
        ASSERT_TRUE(opt->ZeroGrad().ok());
        ASSERT_TRUE(opt->AccumulateGradients({{"t", MakeTensor({4}, {0.5 * k, 0.25, -k, 2 * k})},
                                              {"u", MakeTensor({2}, {-k, 3})}})
                        .ok());
        auto version = opt->Step(std::nullopt);
        ASSERT_TRUE(version.ok()) << version.status();
      }
      for (const char* name : {"t", "u"}) {
        EXPECT_EQ(Read(*on_gpu, name).device(), Device::Cuda(0));
        EXPECT_EQ(Values(Read(*on_gpu, name)), Values(Read(*on_cpu, name))) << name << step;
      }
    }
    const OptimizerStateDict state = (*gpu_opt)->StateDict();
    ASSERT_EQ(state.state.size(), 2u);
    for (const auto& [key, tensor] : state.state[1].tensors) {
      if (key == "step") continue;  // a CPU scalar, as torch keeps it
      EXPECT_EQ(tensor.device(), Device::Cuda(0)) << key;
    }
    const uint64_t state_bytes = (*gpu_opt)->Describe().state_bytes;
    EXPECT_GT(state_bytes, 0u);
    EXPECT_GE(device->bytes_in_use(), before + state_bytes);

    // The model moves back to the CPU; its state does not follow, and a step is refused
    // without changing anything, as torch refuses state on another device.
    ASSERT_TRUE(on_gpu->MoveTo(Device::Cpu(), std::nullopt).ok());
    ASSERT_TRUE((*gpu_opt)->ZeroGrad().ok());
    ASSERT_TRUE((*gpu_opt)->AccumulateGradients({{"u", MakeTensor({2}, {1, 1})}}).ok());
    const uint64_t version = on_gpu->version();
    const absl::Status moved = (*gpu_opt)->Step(std::nullopt).status();
    EXPECT_EQ(moved.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(moved.message(), HasSubstr("is on cuda:0 but the parameter is on cpu"));
    EXPECT_EQ(on_gpu->version(), version);
  }
  if (!have_gpu) {
    EXPECT_EQ(stand_in.steps, 3 * 5);  // each step ran on the device's backend
    EXPECT_GT(stand_in.fills, 0);      // Adam's zero moments were made there, not copied in
  }
}

// Gradients summed or zeroed on a device are computed by queued work that other threads
// (a step, a later push) read on their own streams, so each is synchronized before it is
// published (Note [Work across threads] in kernels/backend.h).
TEST(OptimizerOnGpuTest, GradientsComputedOnTheDeviceAreCompleteBeforeTheyArePublished) {
  HostAsDevice stand_in;
  kernels::SetBackendForTesting(Device::Cuda(0), &stand_in);
  absl::Cleanup restore = [] { kernels::SetBackendForTesting(Device::Cuda(0), nullptr); };
  auto model = VectorModel();
  ASSERT_TRUE(model->MoveTo(Device::Cuda(0), std::nullopt).ok());
  auto optimizer = Optimizer::Create("o", model, OptimizerKind::kSgd,
                                     {{"lr", HyperValue::Float(0.1)}}, {});
  ASSERT_TRUE(optimizer.ok()) << optimizer.status();
  const Tensor g = MakeTensor({4}, {1, 2, 3, 4});
  ASSERT_TRUE((*optimizer)->AccumulateGradients({{"t", g}}).ok());  // a copy: no kernel
  stand_in.synchronizes = 0;
  ASSERT_TRUE((*optimizer)->AccumulateGradients({{"t", g}}).ok());  // an add on the device
  EXPECT_EQ(stand_in.synchronizes, 1);
  stand_in.synchronizes = 0;
  stand_in.fills = 0;
  ASSERT_TRUE((*optimizer)->ZeroGrad(/*set_to_none=*/false).ok());
  EXPECT_EQ(stand_in.fills, 1);
  EXPECT_EQ(stand_in.synchronizes, 1);
}

}  // namespace
}  // namespace paramd::core
