// The real daemon's synchronous training rounds (docs/training.md, Note [Synchronous rounds]
// in server/core/optim/optimizer.h): K workers' pushes for one round are averaged and stepped
// once, and every push is answered when its round has stepped; a push for another round is
// ABORTED with the current one, a second push of a worker ALREADY_EXISTS; a round that times
// out, a stream that breaks off, a client that cancels while it waits, a deleted optimizer and
// a stopping daemon leave nothing behind and never hang a push.
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "paramd/v1/training.grpc.pb.h"
#include "tests/integration/daemon.h"
#include "tests/integration/wire.h"

namespace paramd::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// w: 4 ones, b: 2 zeros.
constexpr char kSpec[] = R"({"type": "Net", "parameters": [
   {"name": "w", "shape": [4], "init": {"constant": 1.0}},
   {"name": "b", "shape": [2], "init": {"constant": 0.0}}]})";
constexpr double kLr = 0.5;

struct Gradient {
  std::string name;
  std::vector<float> values;
};

// A push's outcome: its status, answer and the current round an ABORTED one carries (-1:
// none).
struct Pushed {
  grpc::Status status;
  v1::PushGradientsResponse response;
  int64_t current_round = -1;
};

std::vector<v1::GradientFrame> PushFrames(const std::string& optimizer, const std::string& worker,
                                          uint64_t round, const std::vector<Gradient>& grads) {
  std::vector<v1::GradientFrame> frames(1);
  v1::GradientOptions* options = frames[0].mutable_options();
  options->set_optimizer(optimizer);
  options->set_worker(worker);
  options->set_round(round);
  for (const Gradient& grad : grads) {
    v1::GradientFrame header;
    header.mutable_header()->set_name(grad.name);
    header.mutable_header()->mutable_meta()->set_dtype(v1::FLOAT32);
    header.mutable_header()->mutable_meta()->add_shape(static_cast<int64_t>(grad.values.size()));
    frames.push_back(header);
    // Chunks of at most 1 MiB.
    const std::string bytes = FloatBytes(grad.values);
    size_t offset = 0;
    do {
      v1::GradientFrame chunk;
      chunk.mutable_chunk()->set_offset(offset);
      chunk.mutable_chunk()->set_data(bytes.substr(offset, size_t{1} << 20));
      offset += chunk.chunk().data().size();
      frames.push_back(std::move(chunk));
    } while (offset < bytes.size());
  }
  return frames;
}

class TrainingTest : public ::testing::Test {
 protected:
  // A fresh daemon and its stubs; a running one goes first.
  void Start(std::vector<std::string> args = {}) {
    training_.reset();
    parameters_.reset();
    models_.reset();
    daemon_.reset();
    auto daemon = Daemon::Start(std::move(args));
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
    models_ = v1::Models::NewStub(daemon_->channel());
    parameters_ = v1::Parameters::NewStub(daemon_->channel());
    training_ = v1::Training::NewStub(daemon_->channel());
  }

  void SetUp() override { Start(); }

  // Model "m" and optimizer "opt": SGD(lr=kLr) in synchronous mode with `workers`.
  grpc::Status Create(uint64_t workers, const std::string& mode = "synchronous") {
    {
      grpc::ClientContext context;
      v1::CreateModelRequest request;
      request.set_name("m");
      request.set_spec_json(kSpec);
      v1::ModelInfo info;
      grpc::Status created = models_->CreateModel(&context, request, &info);
      if (!created.ok() && created.error_code() != grpc::StatusCode::ALREADY_EXISTS) return created;
    }
    grpc::ClientContext context;
    v1::CreateOptimizerRequest request;
    request.set_name("opt");
    request.set_model("m");
    request.set_kind("SGD");
    v1::Hyperparameter* lr = request.add_defaults();
    lr->set_name("lr");
    lr->mutable_value()->set_float_value(kLr);
    request.set_mode(mode);
    request.set_workers(workers);
    v1::OptimizerInfo info;
    return training_->CreateOptimizer(&context, request, &info);
  }

  // Pushes on `context` (a fresh one when null), sending the first `frames` frames only
  // when given (a stream that breaks off: the context is then cancelled).
  Pushed Push(const std::string& worker, uint64_t round, const std::vector<Gradient>& grads,
              grpc::ClientContext* context = nullptr, int frames = -1) {
    grpc::ClientContext own;
    if (context == nullptr) context = &own;
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    Pushed out;
    auto writer = training_->PushGradients(context, &out.response);
    const auto all = PushFrames("opt", worker, round, grads);
    const size_t sent = frames < 0 ? all.size() : static_cast<size_t>(frames);
    for (size_t i = 0; i < sent; ++i) {
      if (!writer->Write(all[i])) break;
    }
    if (frames < 0) {
      writer->WritesDone();
    } else {
      context->TryCancel();
    }
    out.status = writer->Finish();
    const auto& trailers = context->GetServerTrailingMetadata();
    auto it = trailers.find("paramd-current-version");
    if (it != trailers.end()) out.current_round = std::stoll(std::string(it->second.data(),
                                                                         it->second.size()));
    return out;
  }

  // A push on its own thread, for one that waits for its round.
  struct Waiting {
    grpc::ClientContext context;
    Pushed result;
    std::thread thread;
    ~Waiting() {
      if (thread.joinable()) thread.join();
    }
    Pushed Join() {
      thread.join();
      return result;
    }
  };
  std::unique_ptr<Waiting> PushInBackground(const std::string& worker, uint64_t round,
                                            std::vector<Gradient> grads) {
    auto waiting = std::make_unique<Waiting>();
    Waiting* raw = waiting.get();
    raw->thread = std::thread([this, raw, worker, round, grads = std::move(grads)] {
      raw->result = Push(worker, round, grads, &raw->context);
    });
    return waiting;
  }

  v1::OptimizerInfo Info() {
    grpc::ClientContext context;
    v1::ListOptimizersRequest request;
    v1::ListOptimizersResponse response;
    EXPECT_TRUE(training_->ListOptimizers(&context, request, &response).ok());
    for (const auto& info : response.optimizers()) {
      if (info.name() == "opt") return info;
    }
    return {};
  }

  // Waits until `count` pushes wait in the current round.
  void AwaitWaiting(int64_t count) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (Info().waiting() != count && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_EQ(Info().waiting(), count);
  }

  std::vector<float> Tensor(const std::string& name) {
    WireRead read = GetTensor(*parameters_, "m", name);
    EXPECT_TRUE(read.status.ok()) << read.status.error_message();
    return read.tensors.empty() ? std::vector<float>{} : Floats(read.tensors[0].data);
  }

  uint64_t Version() { return GetTensor(*parameters_, "m", "w").version; }

  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<v1::Models::Stub> models_;
  std::unique_ptr<v1::Parameters::Stub> parameters_;
  std::unique_ptr<v1::Training::Stub> training_;
};

TEST_F(TrainingTest, TwoWorkersStepOnceOnTheAverageAndBothAnswersComeAfterTheStep) {
  ASSERT_TRUE(Create(2).ok());
  const uint64_t before = Version();
  auto first = PushInBackground("a", 0, {{"w", {1, 2, 3, 4}}});
  AwaitWaiting(1);
  EXPECT_EQ(Version(), before);  // the round waits for its second worker
  EXPECT_THAT(Tensor("w"), ElementsAre(1, 1, 1, 1));
  const Pushed second = Push("b", 0, {{"w", {3, 6, 1, 0}}, {"b", {2, -4}}});
  const Pushed answered = first->Join();
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  ASSERT_TRUE(answered.status.ok()) << answered.status.error_message();
  // One step, one new version, and both answers name it and the next round.
  EXPECT_EQ(second.response.model_version(), before + 1);
  EXPECT_EQ(answered.response.model_version(), before + 1);
  EXPECT_EQ(second.response.round(), 1u);
  EXPECT_EQ(answered.response.round(), 1u);
  EXPECT_EQ(Version(), before + 1);
  // w -= lr * (g_a + g_b) / 2; b was pushed by one worker only: its sum is divided by K too.
  EXPECT_THAT(Tensor("w"), ElementsAre(1 - kLr * 2, 1 - kLr * 4, 1 - kLr * 2, 1 - kLr * 2));
  EXPECT_THAT(Tensor("b"), ElementsAre(-kLr * 1, kLr * 2));
  const v1::OptimizerInfo info = Info();
  EXPECT_EQ(info.mode(), "synchronous");
  EXPECT_EQ(info.workers(), 2u);
  EXPECT_EQ(info.steps(), 1u);
  EXPECT_EQ(info.waiting(), 0);
  EXPECT_EQ(info.with_gradient(), 0);  // the step consumed the round's gradients
}

TEST_F(TrainingTest, APushForAnotherRoundIsAbortedWithTheCurrentRound) {
  ASSERT_TRUE(Create(1).ok());
  ASSERT_TRUE(Push("a", 0, {{"w", {2, 2, 2, 2}}}).status.ok());  // K = 1: steps at once
  const uint64_t version = Version();
  for (uint64_t round : {uint64_t{0}, uint64_t{5}}) {
    const Pushed refused = Push("a", round, {{"w", {2, 2, 2, 2}}});
    EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::ABORTED) << round;
    EXPECT_THAT(refused.status.error_message(), HasSubstr("is at round 1"));
    EXPECT_EQ(refused.current_round, 1) << round;
  }
  EXPECT_EQ(Version(), version);
  EXPECT_THAT(Tensor("w"), ElementsAre(0, 0, 0, 0));
  EXPECT_EQ(Info().steps(), 1u);
}

TEST_F(TrainingTest, ASecondPushOfAWorkerInOneRoundAlreadyExistsAndIsNotCounted) {
  ASSERT_TRUE(Create(2).ok());
  auto first = PushInBackground("a", 0, {{"w", {2, 2, 2, 2}}});
  AwaitWaiting(1);
  const Pushed again = Push("a", 0, {{"w", {100, 100, 100, 100}}});
  EXPECT_EQ(again.status.error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_THAT(again.status.error_message(), HasSubstr("worker 'a' already pushed for round 0"));
  EXPECT_EQ(Info().waiting(), 1);
  ASSERT_TRUE(Push("b", 0, {{"w", {4, 4, 4, 4}}}).status.ok());
  ASSERT_TRUE(first->Join().status.ok());
  EXPECT_THAT(Tensor("w"), ElementsAre(1 - kLr * 3, 1 - kLr * 3, 1 - kLr * 3, 1 - kLr * 3));
}

TEST_F(TrainingTest, ExplicitStepAndBadPushesAreRefused) {
  ASSERT_TRUE(Create(2).ok());
  grpc::ClientContext context;
  v1::StepRequest request;
  request.set_optimizer("opt");
  v1::StepResponse response;
  const grpc::Status step = training_->Step(&context, request, &response);
  EXPECT_EQ(step.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(step.error_message(), HasSubstr("synchronous"));
  const Pushed anonymous = Push("", 0, {{"w", {1, 1, 1, 1}}});
  EXPECT_EQ(anonymous.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  const Pushed unknown = Push("a", 0, {{"nope", {1, 1, 1, 1}}});
  EXPECT_EQ(unknown.status.error_code(), grpc::StatusCode::NOT_FOUND);
  const Pushed misshapen = Push("a", 0, {{"w", {1, 1}}});
  EXPECT_EQ(misshapen.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Info().waiting(), 0);
  // K must be 1 or more, and only synchronous mode takes it.
  Start();
  EXPECT_EQ(Create(0).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Create(2, "manual").error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// max_staleness (S) means something in asynchronous mode only, as workers (K) does in
// synchronous mode only: elsewhere it is refused, not silently dropped.
TEST_F(TrainingTest, MaxStalenessIsRefusedOutsideAsynchronousMode) {
  ASSERT_TRUE(CreateModel(*models_, "m", kSpec).ok());
  auto create = [&](const std::string& mode, uint64_t workers, uint64_t max_staleness) {
    grpc::ClientContext context;
    v1::CreateOptimizerRequest request;
    request.set_name("opt");
    request.set_model("m");
    request.set_kind("SGD");
    request.set_mode(mode);
    request.set_workers(workers);
    request.set_max_staleness(max_staleness);
    v1::OptimizerInfo info;
    return training_->CreateOptimizer(&context, request, &info);
  };
  for (const std::string mode : {"", "manual"}) {
    const grpc::Status refused = create(mode, 0, 3);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << mode;
    EXPECT_THAT(refused.error_message(), HasSubstr("max_staleness is for mode 'asynchronous'"));
  }
  EXPECT_EQ(create("synchronous", 2, 1).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Info().name(), "") << "a refused create leaves no optimizer";
  EXPECT_TRUE(create("asynchronous", 0, 0).ok());
}

TEST_F(TrainingTest, ARoundThatTimesOutIsAbortedAndChangesNothing) {
  Start({"--sync-round-timeout", "1s"});
  ASSERT_TRUE(Create(2).ok());
  const uint64_t before = Version();
  const auto start = std::chrono::steady_clock::now();
  const Pushed lonely = Push("a", 0, {{"w", {100, 100, 100, 100}}});
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(lonely.status.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_THAT(lonely.status.error_message(), HasSubstr("--sync-round-timeout"));
  EXPECT_EQ(lonely.current_round, 0);
  EXPECT_GE(waited, 0.9);
  EXPECT_LT(waited, 10);
  EXPECT_EQ(Version(), before);
  EXPECT_EQ(Info().steps(), 0u);
  EXPECT_EQ(Info().waiting(), 0);
  // The round is still 0, and the dropped gradients are not in its average.
  auto first = PushInBackground("a", 0, {{"w", {2, 2, 2, 2}}});
  AwaitWaiting(1);
  ASSERT_TRUE(Push("b", 0, {{"w", {0, 0, 0, 0}}}).status.ok());
  ASSERT_TRUE(first->Join().status.ok());
  EXPECT_THAT(Tensor("w"), ElementsAre(1 - kLr, 1 - kLr, 1 - kLr, 1 - kLr));
}

TEST_F(TrainingTest, AStreamThatBreaksOffLeavesNothingInTheRound) {
  ASSERT_TRUE(Create(2).ok());
  grpc::ClientContext context;
  // The options, w's header, and then the client goes away before w's bytes.
  const Pushed cut = Push("a", 0, {{"w", {100, 100, 100, 100}}}, &context, 2);
  EXPECT_FALSE(cut.status.ok());
  EXPECT_EQ(Info().waiting(), 0);
  auto first = PushInBackground("a", 0, {{"w", {2, 2, 2, 2}}});
  AwaitWaiting(1);
  ASSERT_TRUE(Push("b", 0, {{"w", {2, 2, 2, 2}}}).status.ok());
  ASSERT_TRUE(first->Join().status.ok());
  EXPECT_THAT(Tensor("w"), ElementsAre(1 - kLr * 2, 1 - kLr * 2, 1 - kLr * 2, 1 - kLr * 2));
}

// Messages and log lines name an optimizer as an optimizer, not as a model.
TEST_F(TrainingTest, AStalledPushAndABadNameAreToldAndLoggedAsTheOptimizers) {
  Start({"--stream-idle-timeout", "1s"});
  ASSERT_TRUE(Create(2).ok());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(8));
  v1::PushGradientsResponse response;
  auto writer = training_->PushGradients(&context, &response);
  const std::vector<v1::GradientFrame> frames = PushFrames("opt", "a", 0, {{"w", {1, 1, 1, 1}}});
  ASSERT_TRUE(writer->Write(frames[0]) && writer->Write(frames[1]));
  const grpc::Status ended = writer->Finish();
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << ended.error_message();
  EXPECT_THAT(ended.error_message(),
              ::testing::StartsWith("the gradient stream to optimizer 'opt' sent nothing for 1s"));
  EXPECT_EQ(Info().waiting(), 0);

  grpc::ClientContext create_context;
  v1::CreateOptimizerRequest request;
  request.set_name("a b");
  request.set_model("m");
  request.set_kind("SGD");
  v1::OptimizerInfo info;
  const grpc::Status refused = training_->CreateOptimizer(&create_context, request, &info);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(refused.error_message(), ::testing::StartsWith("invalid optimizer name 'a b'"));
  EXPECT_THAT(daemon_->Log(), HasSubstr("msg=\"push gradients\" optimizer=opt"));
  EXPECT_THAT(daemon_->Log(), HasSubstr("msg=\"create optimizer\" optimizer=\"a b\""));
}

TEST_F(TrainingTest, APushCancelledWhileItWaitsIsWithdrawnFromItsRound) {
  ASSERT_TRUE(Create(2).ok());
  auto cancelled = PushInBackground("a", 0, {{"w", {100, 100, 100, 100}}});
  AwaitWaiting(1);
  cancelled->context.TryCancel();
  EXPECT_EQ(cancelled->Join().status.error_code(), grpc::StatusCode::CANCELLED);
  AwaitWaiting(0);
  // The same worker may push for the round again, and only that push counts.
  auto again = PushInBackground("a", 0, {{"w", {4, 4, 4, 4}}});
  AwaitWaiting(1);
  ASSERT_TRUE(Push("b", 0, {{"w", {0, 0, 0, 0}}}).status.ok());
  ASSERT_TRUE(again->Join().status.ok());
  EXPECT_THAT(Tensor("w"), ElementsAre(1 - kLr * 2, 1 - kLr * 2, 1 - kLr * 2, 1 - kLr * 2));
}

TEST_F(TrainingTest, DeletingTheOptimizerAnswersTheWaitingPushes) {
  ASSERT_TRUE(Create(3).ok());
  const uint64_t before = Version();
  auto first = PushInBackground("a", 0, {{"w", {1, 1, 1, 1}}});
  auto second = PushInBackground("b", 0, {{"w", {1, 1, 1, 1}}});
  AwaitWaiting(2);
  grpc::ClientContext context;
  v1::DeleteOptimizerRequest request;
  request.set_optimizer("opt");
  v1::DeleteOptimizerResponse response;
  ASSERT_TRUE(training_->DeleteOptimizer(&context, request, &response).ok());
  for (Waiting* waiting : {first.get(), second.get()}) {
    const Pushed pushed = waiting->Join();
    EXPECT_EQ(pushed.status.error_code(), grpc::StatusCode::CANCELLED);
    EXPECT_THAT(pushed.status.error_message(), HasSubstr("was deleted"));
  }
  EXPECT_EQ(Version(), before);
  // The name is free again, and its new optimizer starts at round 0.
  ASSERT_TRUE(Create(1).ok());
  EXPECT_TRUE(Push("a", 0, {{"w", {1, 1, 1, 1}}}).status.ok());
}

// Deleting the model ends its optimizers' rounds at once, saying so, not at the round's
// timeout with a message to push again.
TEST_F(TrainingTest, DeletingTheModelAnswersTheWaitingPushesAtOnce) {
  Start({"--sync-round-timeout", "60s"});
  ASSERT_TRUE(Create(2).ok());
  auto first = PushInBackground("a", 0, {{"w", {1, 1, 1, 1}}});
  AwaitWaiting(1);
  const auto deleted_at = std::chrono::steady_clock::now();
  grpc::ClientContext context;
  v1::DeleteModelRequest request;
  request.set_name("m");
  v1::DeleteModelResponse response;
  ASSERT_TRUE(models_->DeleteModel(&context, request, &response).ok());
  const Pushed pushed = first->Join();
  EXPECT_LT(std::chrono::steady_clock::now() - deleted_at, std::chrono::seconds(10));
  EXPECT_EQ(pushed.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(pushed.status.error_message(),
              HasSubstr("model 'm' was deleted while the push waited for its round, and its "
                        "optimizer 'opt' with it"));
  // The optimizer went with its model.
  const Pushed later = Push("b", 0, {{"w", {1, 1, 1, 1}}});
  EXPECT_EQ(later.status.error_code(), grpc::StatusCode::NOT_FOUND);
}

// An optimizer holds its model's parameters, their gradients and its state; once the model is
// deleted it could only fail. Deleting the model deletes it too, so that all of that is freed
// at once: the daemon's memory accounting drops, and a model that needs the memory fits.
TEST_F(TrainingTest, DeletingTheModelDeletesItsOptimizersAndFreesTheirMemory) {
  Start({"--max-memory", "40M"});
  constexpr int64_t kElements = int64_t{1} << 20;  // 4 MiB of float32
  const std::string spec =
      absl::StrCat(R"({"type": "Net", "parameters": [{"name": "w", "shape": [)", kElements,
                   R"(], "init": {"constant": 1.0}}]})");
  ASSERT_TRUE(CreateModel(*models_, "m", spec).ok());
  {
    grpc::ClientContext context;
    v1::CreateOptimizerRequest request;
    request.set_name("opt");
    request.set_model("m");
    request.set_kind("Adam");
    v1::OptimizerInfo info;
    ASSERT_TRUE(training_->CreateOptimizer(&context, request, &info).ok());
  }
  ASSERT_TRUE(Push("", 0, {{"w", std::vector<float>(kElements, 1.0f)}}).status.ok());
  {
    grpc::ClientContext context;
    v1::StepRequest request;
    request.set_optimizer("opt");
    v1::StepResponse response;
    ASSERT_TRUE(training_->Step(&context, request, &response).ok());
  }
  // w, its gradient and Adam's exp_avg and exp_avg_sq: 16 MiB.
  EXPECT_EQ(Info().state_bytes(), uint64_t{8} << 20);
  {
    grpc::ClientContext context;
    v1::DeleteModelRequest request;
    request.set_name("m");
    v1::DeleteModelResponse response;
    ASSERT_TRUE(models_->DeleteModel(&context, request, &response).ok());
  }
  EXPECT_THAT(daemon_->Log(),
              HasSubstr("msg=\"optimizer deleted with its model\" optimizer=opt model=m"));
  EXPECT_EQ(Info().name(), "") << "the optimizer is no longer listed";
  // The accounting, as a refusal states it: "... (N in use)".
  const grpc::Status huge = CreateModel(
      *models_, "huge",
      R"({"type": "Net", "parameters": [{"name": "w", "shape": [1073741824], "init": "zeros"}]})");
  ASSERT_EQ(huge.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << huge.error_message();
  const std::string& message = huge.error_message();
  const size_t open = message.rfind('(');
  uint64_t in_use = 0;
  ASSERT_NE(open, std::string::npos) << message;
  ASSERT_TRUE(
      absl::SimpleAtoi(message.substr(open + 1, message.find(' ', open) - open - 1), &in_use))
      << message;
  EXPECT_LT(in_use, uint64_t{2} << 20) << message;
  // 28 MiB fits in the 40 MiB only once the 16 MiB are free.
  const std::string big = absl::StrCat(R"({"type": "Net", "parameters": [{"name": "w", "shape": [)",
                                       7 * kElements, R"(], "init": "zeros"}]})");
  const grpc::Status created = CreateModel(*models_, "big", big);
  EXPECT_TRUE(created.ok()) << created.error_message();
}

TEST_F(TrainingTest, AStoppingDaemonAnswersTheWaitingPushesAndExitsCleanly) {
  ASSERT_TRUE(Create(2).ok());
  auto waiting = PushInBackground("a", 0, {{"w", {1, 1, 1, 1}}});
  AwaitWaiting(1);
  const auto start = std::chrono::steady_clock::now();
  int exit_status = -1;
  std::thread stopper([&] { exit_status = daemon_->Stop(); });
  const Pushed pushed = waiting->Join();
  const double answered =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stopper.join();
  EXPECT_EQ(exit_status, 0);
  EXPECT_EQ(pushed.status.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(pushed.status.error_message(), HasSubstr("shutting down"));
  // Answered at the start of the shutdown, not at its grace deadline (10 s).
  EXPECT_LT(answered, 5);
}

}  // namespace
}  // namespace paramd::testing
