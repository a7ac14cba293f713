// Synchronous rounds (Note [Synchronous rounds] in server/core/optim/optimizer.h): the
// average of K workers' pushes in worker-id order, the refusals, withdrawal, the timeout and
// Close, on the optimizer alone.
#include <optional>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "base/version_conflict.h"
#include "server/core/optim/optimizer.h"
#include "tests/unit/core/test_util.h"

namespace paramd::core {
namespace {

using testing::Build;
using testing::MakeTensor;
using testing::Values;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kSpec[] = R"({"type": "Net", "parameters": [
    {"name": "t", "shape": [3]}, {"name": "u", "shape": [1]}]})";

struct Fixture {
  std::shared_ptr<Model> model;
  std::shared_ptr<Optimizer> optimizer;
};

Fixture Make(uint64_t workers, absl::Duration timeout = absl::ZeroDuration()) {
  Fixture f;
  f.model = std::make_shared<Model>("net", Build(kSpec), Device{});
  EXPECT_TRUE(f.model->SetTensor("t", std::nullopt, MakeTensor({3}, {1, 1, 1}), std::nullopt).ok());
  EXPECT_TRUE(f.model->SetTensor("u", std::nullopt, MakeTensor({1}, {0}), std::nullopt).ok());
  OptimizerMode mode{OptimizerMode::kSynchronous, workers, timeout};
  auto optimizer = Optimizer::Create("opt", f.model, OptimizerKind::kSgd,
                                     {{"lr", HyperValue::Float(1.0)}}, {}, mode);
  EXPECT_TRUE(optimizer.ok()) << optimizer.status();
  f.optimizer = *optimizer;
  return f;
}

std::vector<double> Read(const Model& model, const std::string& name) {
  return Values(model.Read([&](const std::shared_ptr<Module>& root, uint64_t) {
    return (*FindTensorSlot(root, name))->data();
  }));
}

// Records the outcome a push's `done` got.
struct Outcome {
  bool called = false;
  absl::StatusOr<Optimizer::AsyncResult> result = absl::UnknownError("not called");
  Optimizer::RoundDone Done() {
    return [this](absl::StatusOr<Optimizer::AsyncResult> r) {
      EXPECT_FALSE(called) << "done called twice";
      called = true;
      result = std::move(r);
    };
  }
};

TEST(OptimizerRoundsTest, ThreeWorkersStepOnceOnTheirAverage) {
  Fixture f = Make(3);
  const uint64_t before = f.model->version();
  Outcome a, b, c;
  // Arrival order c, a, b: the sum is taken in worker-id order whatever the arrival.
  ASSERT_TRUE(f.optimizer->JoinRound({{"t", MakeTensor({3}, {3, 0, 1})}}, "c", 0, c.Done()).ok());
  ASSERT_TRUE(f.optimizer->JoinRound({{"t", MakeTensor({3}, {0, 6, 1})}, {"u", MakeTensor({1}, {3})}},
                                     "a", 0, a.Done())
                  .ok());
  EXPECT_FALSE(a.called || c.called);
  EXPECT_EQ(f.optimizer->Describe().waiting, 2);
  EXPECT_EQ(f.model->version(), before);
  ASSERT_TRUE(f.optimizer->JoinRound({{"t", MakeTensor({3}, {0, 0, 1})}}, "b", 0, b.Done()).ok());
  for (Outcome* o : {&a, &b, &c}) {
    ASSERT_TRUE(o->called);
    ASSERT_TRUE(o->result.ok()) << o->result.status();
    EXPECT_EQ(o->result->version, before + 1);
    EXPECT_EQ(o->result->round, 1u);
  }
  // t -= mean; u was pushed by one worker of three: 3 / 3.
  EXPECT_THAT(Read(*f.model, "t"), ElementsAre(0, -1, 0));
  EXPECT_THAT(Read(*f.model, "u"), ElementsAre(-1));
  const Optimizer::Summary summary = f.optimizer->Describe();
  EXPECT_EQ(summary.steps, 1u);
  EXPECT_EQ(summary.waiting, 0);
  EXPECT_EQ(summary.with_gradient, 0);
}

TEST(OptimizerRoundsTest, RefusalsChangeNothing) {
  Fixture f = Make(2);
  Outcome a;
  ASSERT_TRUE(f.optimizer->JoinRound({{"t", MakeTensor({3}, {1, 1, 1})}}, "a", 0, a.Done()).ok());
  Outcome ignored;
  auto twice = f.optimizer->JoinRound({{"t", MakeTensor({3}, {9, 9, 9})}}, "a", 0, ignored.Done());
  EXPECT_TRUE(absl::IsAlreadyExists(twice.status())) << twice.status();
  auto future = f.optimizer->JoinRound({{"t", MakeTensor({3}, {9, 9, 9})}}, "b", 1, ignored.Done());
  EXPECT_TRUE(absl::IsAborted(future.status())) << future.status();
  EXPECT_EQ(CurrentVersionOf(future.status()), 0u);
  auto anonymous = f.optimizer->JoinRound({{"t", MakeTensor({3}, {9, 9, 9})}}, "", 0, ignored.Done());
  EXPECT_TRUE(absl::IsInvalidArgument(anonymous.status())) << anonymous.status();
  auto bad = f.optimizer->JoinRound({{"t", MakeTensor({2}, {9, 9})}}, "b", 0, ignored.Done());
  EXPECT_TRUE(absl::IsInvalidArgument(bad.status())) << bad.status();
  EXPECT_TRUE(absl::IsFailedPrecondition(f.optimizer->Step(std::nullopt).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(
      f.optimizer->AccumulateGradients({{"t", MakeTensor({3}, {1, 1, 1})}})));
  EXPECT_FALSE(ignored.called);
  EXPECT_EQ(f.optimizer->Describe().waiting, 1);
  ASSERT_TRUE(f.optimizer->JoinRound({{"t", MakeTensor({3}, {3, 3, 3})}}, "b", 0, ignored.Done()).ok());
  EXPECT_THAT(Read(*f.model, "t"), ElementsAre(-1, -1, -1));
  // Round 0 is over: a push for it is ABORTED with round 1.
  Outcome late;
  auto old = f.optimizer->JoinRound({{"t", MakeTensor({3}, {1, 1, 1})}}, "a", 0, late.Done());
  EXPECT_TRUE(absl::IsAborted(old.status()));
  EXPECT_EQ(CurrentVersionOf(old.status()), 1u);
}

TEST(OptimizerRoundsTest, AWithdrawnPushLeavesTheRoundAsIfItNeverCame) {
  Fixture f = Make(2);
  Outcome gone, a, b;
  auto joined = f.optimizer->JoinRound({{"t", MakeTensor({3}, {50, 50, 50})}}, "a", 0, gone.Done());
  ASSERT_TRUE(joined.ok());
  EXPECT_TRUE(f.optimizer->WithdrawFromRound(joined->id));
  EXPECT_FALSE(f.optimizer->WithdrawFromRound(joined->id));
  EXPECT_EQ(f.optimizer->Describe().waiting, 0);
  ASSERT_TRUE(f.optimizer->JoinRound({{"t", MakeTensor({3}, {2, 2, 2})}}, "a", 0, a.Done()).ok());
  auto last = f.optimizer->JoinRound({{"t", MakeTensor({3}, {0, 0, 0})}}, "b", 0, b.Done());
  ASSERT_TRUE(last.ok());
  EXPECT_FALSE(gone.called);
  EXPECT_FALSE(f.optimizer->WithdrawFromRound(last->id));  // its round stepped
  EXPECT_THAT(Read(*f.model, "t"), ElementsAre(0, 0, 0));
}

TEST(OptimizerRoundsTest, ARoundPastItsTimeoutIsAbortedAndStays) {
  Fixture f = Make(2, absl::Seconds(30));
  Outcome a;
  const absl::Time start = absl::Now();
  auto joined = f.optimizer->JoinRound({{"t", MakeTensor({3}, {1, 1, 1})}}, "a", 0, a.Done());
  ASSERT_TRUE(joined.ok());
  EXPECT_GE(joined->deadline, start + absl::Seconds(30));
  EXPECT_EQ(f.optimizer->ExpireRound(start), joined->deadline);  // not yet
  EXPECT_FALSE(a.called);
  EXPECT_EQ(f.optimizer->ExpireRound(joined->deadline), absl::InfiniteFuture());
  ASSERT_TRUE(a.called);
  EXPECT_TRUE(absl::IsAborted(a.result.status()));
  EXPECT_THAT(a.result.status().message(), HasSubstr("1 of 2 workers pushed ('a')"));
  EXPECT_EQ(CurrentVersionOf(a.result.status()), 0u);
  EXPECT_EQ(f.optimizer->Describe().steps, 0u);
  EXPECT_THAT(Read(*f.model, "t"), ElementsAre(1, 1, 1));
}

TEST(OptimizerRoundsTest, CloseAnswersTheWaitingPushesAndRefusesLaterOnes) {
  Fixture f = Make(2);
  Outcome a, later;
  ASSERT_TRUE(f.optimizer->JoinRound({{"t", MakeTensor({3}, {1, 1, 1})}}, "a", 0, a.Done()).ok());
  f.optimizer->Close(absl::CancelledError("deleted"));
  ASSERT_TRUE(a.called);
  EXPECT_TRUE(absl::IsCancelled(a.result.status()));
  auto refused = f.optimizer->JoinRound({{"t", MakeTensor({3}, {1, 1, 1})}}, "b", 0, later.Done());
  EXPECT_TRUE(absl::IsCancelled(refused.status()));
  EXPECT_FALSE(later.called);
  EXPECT_THAT(Read(*f.model, "t"), ElementsAre(1, 1, 1));
}

}  // namespace
}  // namespace paramd::core
