// RunForward: the version a forward answers with and the commit of BatchNorm statistics
// (Note [Forward version] in server/core/run_forward.h).
#include "server/core/run_forward.h"

#include <atomic>
#include <thread>

#include "gtest/gtest.h"
#include "server/core/model.h"
#include "tests/unit/core/test_util.h"

namespace paramd::core {
namespace {

using testing::Build;
using testing::MakeTensor;
using testing::Values;

constexpr char kBatchNormSpec[] = R"({"type": "Net", "children": [
  {"name": "bn", "type": "BatchNorm1d", "args": {"num_features": 2}}],
  "forward": ["bn"]})";

std::vector<NamedTensor> Input() { return {{"input", MakeTensor({2, 2}, {1, 2, 3, 6})}}; }

Model MakeModel(const char* spec) { return Model("net", Build(spec), Device::Cpu()); }

TEST(RunForwardTest, EvalAnswersWithThePinnedVersionAndWritesNothing) {
  Model model = MakeModel(kBatchNormSpec);
  absl::StatusOr<ForwardAnswer> answer = RunForward(model, Input(), {.mode = ForwardMode::kEval});
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->version, 1u);
  EXPECT_EQ(answer->updated_version, 0u);
  EXPECT_FALSE(answer->training);
  ASSERT_EQ(answer->outputs.size(), 1u);
  EXPECT_EQ(answer->outputs[0].name, "output");
  EXPECT_EQ(model.version(), 1u);
}

TEST(RunForwardTest, ModelModeFollowsTheModelsFlag) {
  Model model = MakeModel(kBatchNormSpec);  // built in training mode, as PyTorch's are
  absl::StatusOr<ForwardAnswer> answer = RunForward(model, Input(), {});
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_TRUE(answer->training);
  ASSERT_TRUE(model.SetTraining(false, std::nullopt).ok());
  answer = RunForward(model, Input(), {});
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_FALSE(answer->training);
  EXPECT_EQ(answer->updated_version, 0u);
}

TEST(RunForwardTest, TrainingCommitsBatchNormStatisticsAsTheNextVersion) {
  Model model = MakeModel(kBatchNormSpec);
  absl::StatusOr<ForwardAnswer> answer = RunForward(model, Input(), {.mode = ForwardMode::kTrain});
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->version, 1u);
  EXPECT_EQ(answer->updated_version, 2u);
  EXPECT_EQ(model.version(), 2u);
  // running_mean = 0.9 * 0 + 0.1 * batch mean (2, 4), as torch.nn.BatchNorm1d computes it.
  const std::vector<double> mean = model.Read([](const std::shared_ptr<Module>& root, uint64_t) {
    return Values((*FindTensorSlot(root, "bn.running_mean"))->data());
  });
  ASSERT_EQ(mean.size(), 2u);
  EXPECT_NEAR(mean[0], 0.2, 1e-6);
  EXPECT_NEAR(mean[1], 0.4, 1e-6);
}

TEST(RunForwardTest, MayTrainIsAskedForTrainingModeAloneAndItsRefusalCommitsNothing) {
  Model model = MakeModel(kBatchNormSpec);  // in training mode
  std::vector<bool> asked;                  // model_mode of each question
  const auto refuse = [&](bool model_mode) {
    asked.push_back(model_mode);
    return absl::PermissionDeniedError("no");
  };
  absl::StatusOr<ForwardAnswer> answer =
      RunForward(model, Input(), {.mode = ForwardMode::kTrain, .may_train = refuse});
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kPermissionDenied);
  answer = RunForward(model, Input(), {.mode = ForwardMode::kModel, .may_train = refuse});
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(asked, std::vector<bool>({false, true}));
  EXPECT_EQ(model.version(), 1u);
  // Eval forwards never ask, whether chosen for the call or the model's own mode.
  EXPECT_TRUE(RunForward(model, Input(), {.mode = ForwardMode::kEval, .may_train = refuse}).ok());
  ASSERT_TRUE(model.SetTraining(false, std::nullopt).ok());
  EXPECT_TRUE(RunForward(model, Input(), {.mode = ForwardMode::kModel, .may_train = refuse}).ok());
  EXPECT_EQ(asked.size(), 2u);
}

TEST(RunForwardTest, IfVersionMismatchIsAbortedWithoutRunning) {
  Model model = MakeModel(kBatchNormSpec);
  absl::StatusOr<ForwardAnswer> answer =
      RunForward(model, Input(), {.mode = ForwardMode::kTrain, .if_version = 7});
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(answer.status().message(),
            "model 'net' is at version 1, not 7; drop if_version or ask for the current one");
  EXPECT_EQ(model.version(), 1u);
}

TEST(RunForwardTest, CancelledBeforeTheFirstAttemptRunsNothing) {
  Model model = MakeModel(kBatchNormSpec);
  absl::StatusOr<ForwardAnswer> answer =
      RunForward(model, Input(), {.mode = ForwardMode::kTrain, .cancelled = [] { return true; }});
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(answer.status().message(), "the client cancelled the forward");
  EXPECT_EQ(model.version(), 1u);
}

// The cancellation poll reaches inside the forward: it stops between layers (the client's
// deadline passing while a deep model runs), and a training forward then commits nothing.
TEST(RunForwardTest, CancelledBetweenLayersStopsTheForwardAndCommitsNothing) {
  Model model = MakeModel(R"({"type": "Net", "children": [
    {"name": "bn", "type": "BatchNorm1d", "args": {"num_features": 2}},
    {"name": "relu", "type": "ReLU"},
    {"name": "fc", "type": "Linear", "args": {"in_features": 2, "out_features": 2}}],
    "forward": ["bn", "relu", "fc"]})");
  int polls = 0;
  // The attempt's poll, the root's call, bn's: the fourth poll, before relu, cancels.
  absl::StatusOr<ForwardAnswer> answer = RunForward(
      model, Input(), {.mode = ForwardMode::kTrain, .cancelled = [&] { return ++polls > 3; }});
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kCancelled) << answer.status();
  EXPECT_EQ(answer.status().message(), "the client cancelled the forward");
  EXPECT_EQ(polls, 4);
  EXPECT_EQ(model.version(), 1u);
}

TEST(RunForwardTest, ForwardErrorsPassThrough) {
  Model model = MakeModel(kBatchNormSpec);
  absl::StatusOr<ForwardAnswer> answer =
      RunForward(model, {{"x", MakeTensor({2, 2}, {1, 2, 3, 4})}}, {});
  EXPECT_FALSE(answer.ok());
  EXPECT_EQ(model.version(), 1u);
}

// Under a concurrent writer every training forward either commits its statistics as
// exactly the version after the one it read, or gives up with ABORTED after its retries.
TEST(RunForwardTest, ConcurrentWritersNeverSplitWeightsFromStatistics) {
  Model model = MakeModel(kBatchNormSpec);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    const Tensor weight = MakeTensor({2}, {1, 1});
    while (!stop.load()) ASSERT_TRUE(model.SetTensor("bn.weight", {}, weight, {}).ok());
  });
  for (int i = 0; i < 50; ++i) {
    absl::StatusOr<ForwardAnswer> answer =
        RunForward(model, Input(), {.mode = ForwardMode::kTrain});
    if (answer.ok()) {
      EXPECT_EQ(answer->updated_version, answer->version + 1);
    } else {
      EXPECT_EQ(answer.status().code(), absl::StatusCode::kAborted) << answer.status();
    }
  }
  stop = true;
  writer.join();
}

}  // namespace
}  // namespace paramd::core
