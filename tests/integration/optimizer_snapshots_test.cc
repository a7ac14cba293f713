// Optimizers across restarts, end to end against the real daemon (docs/training.md,
// "Restarts"; docs/daemon.md, "Shutdown, snapshots and restart"): an optimizer stopped with
// SIGTERM comes back with the same state_dict and steps on exactly as one that never
// stopped; a damaged optimizer snapshot costs that optimizer only, never its model; deleted
// optimizers do not come back.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/casts.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "paramd/client.h"
#include "paramd/v1/training.grpc.pb.h"
#include "tests/integration/client_fixture.h"
#include "tests/integration/daemon.h"
#include "tests/integration/training_wire.h"

namespace paramd::testing {
namespace {

using ::testing::HasSubstr;

// optimizer.state_dict() as GetOptimizerState streams it.
struct WireState {
  grpc::Status status;
  v1::OptimizerStateHead head;
  std::map<std::string, std::string> tensors;  // "<index>.<key>" -> bytes
  std::vector<std::string> order;              // the names as they came
  std::map<std::string, std::vector<int64_t>> shapes;
};

class OptimizerSnapshotsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto daemon = Daemon::Start({"--snapshot-interval", "0"});
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
    Connect();
  }
  void Connect() {
    auto connected = client::Client::Connect(daemon_->address());
    ASSERT_TRUE(connected.ok()) << connected.status();
    client_ = *std::move(connected);
    training_ = v1::Training::NewStub(daemon_->channel());
  }
  void Restart() {
    ASSERT_TRUE(daemon_->Restart({"--snapshot-interval", "0"}).ok());
    Connect();
  }
  std::string OptimizersDir() const { return daemon_->data_dir() + "/optimizers"; }

  void MakeModel(const std::string& name) {
    ASSERT_TRUE(client_->CreateModel(name, kLinear32Spec).ok());
    // The same weights for every model, so that their optimizers can be compared.
    ASSERT_TRUE(
        client_->Model(name).SetTensor("weight", Floats({2, 3}, {0.5, -0.25, 0.125, 1, -1, 0.75}))
            .ok());
    ASSERT_TRUE(client_->Model(name).SetTensor("bias", Floats({2}, {0.1, -0.2})).ok());
  }

  grpc::Status CreateAdam(const std::string& name, const std::string& model) {
    return CreateTwoGroupAdam(*training_, name, model);
  }
  grpc::Status CreateSynchronousSgd(const std::string& name, const std::string& model,
                                    uint64_t workers) {
    v1::CreateOptimizerRequest request;
    request.set_name(name);
    request.set_model(model);
    request.set_kind("SGD");
    request.set_mode("synchronous");
    request.set_workers(workers);
    grpc::ClientContext context;
    v1::OptimizerInfo created;
    return training_->CreateOptimizer(&context, request, &created);
  }
  grpc::Status Push(const std::string& optimizer, int seed, uint64_t round = 0) {
    return PushLinearGradients(*training_, optimizer, seed, round);
  }
  grpc::Status Step(const std::string& optimizer) { return StepOptimizer(*training_, optimizer); }

  WireState State(const std::string& optimizer) {
    WireState out;
    grpc::ClientContext context;
    v1::GetOptimizerStateRequest request;
    request.set_optimizer(optimizer);
    auto reader = training_->GetOptimizerState(&context, request);
    v1::OptimizerStateFrame frame;
    std::string current;
    while (reader->Read(&frame)) {
      if (frame.has_options()) {
        out.head = frame.options();
      } else if (frame.has_header()) {
        current = frame.header().name();
        out.order.push_back(current);
        out.tensors[current];
        out.shapes[current].assign(frame.header().meta().shape().begin(),
                                   frame.header().meta().shape().end());
      } else if (frame.has_chunk()) {
        out.tensors[current] += frame.chunk().data();
      }
    }
    out.status = reader->Finish();
    return out;
  }

  absl::StatusOr<v1::OptimizerInfo> Info(const std::string& optimizer) {
    grpc::ClientContext context;
    v1::ListOptimizersResponse response;
    grpc::Status status = training_->ListOptimizers(&context, {}, &response);
    if (!status.ok()) return absl::UnknownError(status.error_message());
    for (const auto& info : response.optimizers()) {
      if (info.name() == optimizer) return info;
    }
    return absl::NotFoundError(optimizer);
  }

  std::vector<double> Weights(const std::string& model) {
    std::vector<double> out;
    for (const char* name : {"weight", "bias"}) {
      auto tensor = client_->Model(model).GetTensor(name);
      EXPECT_TRUE(tensor.ok()) << tensor.status();
      if (!tensor.ok()) continue;
      for (double v : tensor->ToDoubles()) out.push_back(v);
    }
    return out;
  }

  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<client::Client> client_;
  std::unique_ptr<v1::Training::Stub> training_;
};

// The same state_dict (the head's optimizer and model names aside).
void ExpectSameState(const WireState& a, const WireState& b) {
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();
  v1::OptimizerStateHead head_a = a.head;
  v1::OptimizerStateHead head_b = b.head;
  head_b.set_optimizer(head_a.optimizer());
  head_b.set_model(head_a.model());
  EXPECT_EQ(head_a.SerializeAsString(), head_b.SerializeAsString())
      << head_a.DebugString() << "\nvs\n" << head_b.DebugString();
  EXPECT_EQ(a.tensors, b.tensors);
  EXPECT_EQ(a.order, b.order);
  EXPECT_EQ(a.shapes, b.shapes);
}

TEST_F(OptimizerSnapshotsTest, StateSurvivesASigtermRestartAndSteppingContinuesIdentically) {
  // "m" stops and restarts; "twin" takes the same steps and one more before the stop, which
  // "m" must reproduce after the restart.
  MakeModel("m");
  MakeModel("twin");
  ASSERT_TRUE(CreateAdam("adam", "m").ok());
  ASSERT_TRUE(CreateAdam("twin_adam", "twin").ok());
  for (int seed = 0; seed < 3; ++seed) {
    for (const char* optimizer : {"adam", "twin_adam"}) {
      ASSERT_TRUE(Push(optimizer, seed).ok());
      ASSERT_TRUE(Step(optimizer).ok());
    }
  }
  // A hyperparameter written after the last step (a scheduler) is kept too.
  for (const char* optimizer : {"adam", "twin_adam"}) {
    grpc::ClientContext context;
    v1::SetHyperparametersRequest request;
    request.set_optimizer(optimizer);
    request.set_group(0);
    *request.add_hyperparameters() = FloatHyper("lr", 0.005);
    v1::OptimizerInfo info;
    ASSERT_TRUE(training_->SetHyperparameters(&context, request, &info).ok());
  }
  // A gradient pushed but not stepped is not kept (p.grad is None after the restart).
  ASSERT_TRUE(Push("adam", 9).ok());
  const WireState before = State("adam");
  ASSERT_TRUE(before.status.ok()) << before.status.error_message();
  // 2 parameters x {step, exp_avg, exp_avg_sq, max_exp_avg_sq}
  ASSERT_EQ(before.tensors.size(), 8u);
  auto info_before = Info("adam");
  ASSERT_TRUE(info_before.ok()) << info_before.status();
  ExpectSameState(before, State("twin_adam"));
  // The twin's next step, the reference for "m" after its restart: from None, as the
  // restarted optimizer's gradients are.
  ASSERT_TRUE(ZeroGrad(*training_, "twin_adam").ok());
  ASSERT_TRUE(Push("twin_adam", 3).ok());
  ASSERT_TRUE(Step("twin_adam").ok());
  const WireState twin_after = State("twin_adam");
  const std::vector<double> twin_weights = Weights("twin");

  ASSERT_EQ(daemon_->Stop(), 0);
  Restart();
  EXPECT_THAT(daemon_->Log(), HasSubstr("msg=\"optimizer restored\" optimizer=adam model=m"));
  auto info_after = Info("adam");
  ASSERT_TRUE(info_after.ok()) << info_after.status();
  EXPECT_EQ(info_after->kind(), "Adam");
  EXPECT_EQ(info_after->model(), "m");
  EXPECT_EQ(info_after->mode(), "manual");
  EXPECT_EQ(info_after->steps(), info_before->steps());
  EXPECT_EQ(info_after->param_groups(), 2);
  EXPECT_EQ(info_after->parameters(), 2);
  EXPECT_EQ(info_before->with_gradient(), 2);
  EXPECT_EQ(info_after->with_gradient(), 0);
  ExpectSameState(before, State("adam"));

  ASSERT_TRUE(Push("adam", 3).ok());
  ASSERT_TRUE(Step("adam").ok());
  ExpectSameState(twin_after, State("adam"));
  EXPECT_EQ(Weights("m"), twin_weights);
}

// torch lists optimizer.state_dict()["state"] in the order the parameters got their state;
// a restart keeps that order, which safetensors' sorted names do not.
TEST_F(OptimizerSnapshotsTest, TheStatesOrderSurvivesARestart) {
  MakeModel("m");
  ASSERT_TRUE(CreateAdam("adam", "m").ok());
  // bias (index 1) steps first, weight (index 0) joins at the second step.
  ASSERT_TRUE(PushLinearGradients(*training_, "adam", 0, 0, "bias").ok());
  ASSERT_TRUE(Step("adam").ok());
  ASSERT_TRUE(Push("adam", 1).ok());
  ASSERT_TRUE(Step("adam").ok());
  const WireState before = State("adam");
  ASSERT_TRUE(before.status.ok()) << before.status.error_message();
  EXPECT_THAT(before.order,
              ::testing::ElementsAre("1.step", "1.exp_avg", "1.exp_avg_sq", "1.max_exp_avg_sq",
                                     "0.step", "0.exp_avg", "0.exp_avg_sq", "0.max_exp_avg_sq"));
  ASSERT_EQ(daemon_->Stop(), 0);
  Restart();
  ExpectSameState(before, State("adam"));
}

// AdamW's decoupled_weight_decay written False stays False: a load would make it True.
TEST_F(OptimizerSnapshotsTest, AnAdamWsDecoupledWeightDecayWrittenFalseSurvivesARestart) {
  MakeModel("m");
  grpc::ClientContext create_context;
  v1::CreateOptimizerRequest create;
  create.set_name("adamw");
  create.set_model("m");
  create.set_kind("AdamW");
  v1::OptimizerInfo info;
  ASSERT_TRUE(training_->CreateOptimizer(&create_context, create, &info).ok());
  grpc::ClientContext context;
  v1::SetHyperparametersRequest request;
  request.set_optimizer("adamw");
  request.set_group(-1);
  *request.add_hyperparameters() = BoolHyper("decoupled_weight_decay", false);
  ASSERT_TRUE(training_->SetHyperparameters(&context, request, &info).ok());
  ASSERT_TRUE(Push("adamw", 0).ok());
  ASSERT_TRUE(Step("adamw").ok());
  const WireState before = State("adamw");
  ASSERT_EQ(daemon_->Stop(), 0);
  Restart();
  ExpectSameState(before, State("adamw"));
}

TEST_F(OptimizerSnapshotsTest, AnAsynchronousOptimizerKeepsItsModeAndRound) {
  MakeModel("m");
  ASSERT_TRUE(CreateAsynchronousSgd(*training_, "sgd", "m", 1).ok());
  for (uint64_t round = 0; round < 4; ++round) ASSERT_TRUE(Push("sgd", int(round), round).ok());
  const WireState before = State("sgd");
  // SGD without momentum keeps no state, as torch's.
  EXPECT_TRUE(before.tensors.empty());
  ASSERT_EQ(daemon_->Stop(), 0);
  Restart();
  auto info = Info("sgd");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->mode(), "asynchronous");
  EXPECT_EQ(info->max_staleness(), 1u);
  EXPECT_EQ(info->steps(), 4u);
  ExpectSameState(before, State("sgd"));
  EXPECT_EQ(Push("sgd", 0, 2).error_code(), grpc::StatusCode::ABORTED);  // 2 steps behind
  EXPECT_TRUE(Push("sgd", 0, 3).ok());
}

// A synchronous optimizer comes back synchronous with its K (the snapshot's "bound"), at its
// round; a round that was open at the stop is not kept (its pushes were answered UNAVAILABLE).
TEST_F(OptimizerSnapshotsTest, ASynchronousOptimizerKeepsItsModeAndWorkers) {
  MakeModel("m");
  ASSERT_TRUE(CreateSynchronousSgd("sync", "m", 3).ok());
  ASSERT_EQ(daemon_->Stop(), 0);
  Restart();
  auto info = Info("sync");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->mode(), "synchronous");
  EXPECT_EQ(info->workers(), 3u);
  EXPECT_EQ(info->steps(), 0u);
}

// --sync-round-timeout is the restarted daemon's, for restored synchronous optimizers as for
// new ones: a round that does not fill still ends, rather than waiting forever.
TEST_F(OptimizerSnapshotsTest, ARestoredSynchronousOptimizersRoundsTimeOut) {
  ASSERT_TRUE(daemon_->Restart({"--snapshot-interval", "0", "--sync-round-timeout", "1s"}).ok());
  Connect();
  MakeModel("m");
  ASSERT_TRUE(CreateSynchronousSgd("sync", "m", 2).ok());
  ASSERT_EQ(daemon_->Stop(), 0);
  ASSERT_TRUE(daemon_->Restart({"--snapshot-interval", "0", "--sync-round-timeout", "1s"}).ok());
  Connect();
  ASSERT_TRUE(Info("sync").ok());
  const auto start = std::chrono::steady_clock::now();
  grpc::ClientContext push_context;
  push_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(15));
  v1::PushGradientsResponse response;
  auto writer = training_->PushGradients(&push_context, &response);
  v1::GradientFrame options;
  options.mutable_options()->set_optimizer("sync");
  options.mutable_options()->set_worker("a");
  ASSERT_TRUE(writer->Write(options));
  writer->WritesDone();
  const grpc::Status lonely = writer->Finish();
  const double waited =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(lonely.error_code(), grpc::StatusCode::ABORTED) << lonely.error_message();
  EXPECT_THAT(lonely.error_message(), HasSubstr("not completed within 1s"));
  EXPECT_LT(waited, 10);
}

v1::Hyperparameter IntHyper(const std::string& name, int64_t value) {
  v1::Hyperparameter h;
  h.set_name(name);
  h.mutable_value()->set_int_value(value);
  return h;
}

// Every value CreateOptimizer accepts (torch accepts them too) is given back as it came, and
// comes back so after a restart: NaN (with its payload), infinities and -0.0 bit for bit, ints
// past 2^53 exactly.
TEST_F(OptimizerSnapshotsTest, EveryAcceptedHyperparameterSurvivesARestartExactly) {
  MakeModel("m");
  const double nan_with_payload = absl::bit_cast<double>(uint64_t{0x7ff800000000abcd});
  const double inf = std::numeric_limits<double>::infinity();
  const int64_t max_int = std::numeric_limits<int64_t>::max();
  const int64_t past_double = (int64_t{1} << 53) + 1;
  const std::vector<std::pair<std::string, std::vector<v1::Hyperparameter>>> optimizers = {
      {"lr_inf", {FloatHyper("lr", inf), FloatHyper("weight_decay", inf)}},
      {"dampening_nan", {FloatHyper("momentum", 0.9), FloatHyper("dampening", nan_with_payload)}},
      {"eps_inf", {FloatHyper("eps", inf), FloatHyper("lr", -0.0)}},
      {"momentum_max_int", {IntHyper("momentum", max_int)}},
      {"momentum_past_double", {IntHyper("momentum", past_double)}},
  };
  std::map<std::string, WireState> before;
  for (const auto& [name, defaults] : optimizers) {
    v1::CreateOptimizerRequest request;
    request.set_name(name);
    request.set_model("m");
    request.set_kind(name == "eps_inf" ? "Adam" : "SGD");
    for (const v1::Hyperparameter& h : defaults) *request.add_defaults() = h;
    grpc::ClientContext context;
    v1::OptimizerInfo info;
    const grpc::Status created = training_->CreateOptimizer(&context, request, &info);
    ASSERT_TRUE(created.ok()) << name << ": " << created.error_message();
    before[name] = State(name);
    ASSERT_TRUE(before[name].status.ok()) << before[name].status.error_message();
    // Given back as sent.
    for (const v1::Hyperparameter& sent : defaults) {
      bool found = false;
      for (const v1::Hyperparameter& got : before[name].head.param_groups(0).hyperparameters()) {
        if (got.name() != sent.name()) continue;
        found = true;
        EXPECT_EQ(got.value().SerializeAsString(), sent.value().SerializeAsString())
            << name << "." << sent.name() << ": " << got.value().DebugString();
      }
      EXPECT_TRUE(found) << name << "." << sent.name();
    }
  }
  ASSERT_EQ(daemon_->Stop(), 0);
  Restart();
  EXPECT_THAT(daemon_->Log(), ::testing::Not(HasSubstr("optimizer not restored")));
  for (const auto& [name, defaults] : optimizers) ExpectSameState(before[name], State(name));
}

TEST_F(OptimizerSnapshotsTest, ADamagedOptimizerSnapshotCostsTheOptimizerNotTheModel) {
  MakeModel("m");
  ASSERT_TRUE(CreateAdam("adam", "m").ok());
  ASSERT_TRUE(Push("adam", 1).ok());
  ASSERT_TRUE(Step("adam").ok());
  const std::vector<double> weights = Weights("m");
  ASSERT_EQ(daemon_->Stop(), 0);
  const std::string file = OptimizersDir() + "/adam.safetensors";
  ASSERT_TRUE(std::filesystem::exists(file));
  std::filesystem::resize_file(file, std::filesystem::file_size(file) / 2);
  Restart();
  EXPECT_THAT(daemon_->Log(),
              HasSubstr("level=error msg=\"optimizer not restored\" optimizer=adam"));
  EXPECT_EQ(Weights("m"), weights);
  EXPECT_EQ(Info("adam").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(std::filesystem::exists(file)) << "left for inspection";
}

TEST_F(OptimizerSnapshotsTest, AStateThatGoesWithAnotherModelVersionIsNotRestored) {
  MakeModel("m");
  ASSERT_TRUE(CreateAdam("adam", "m").ok());
  ASSERT_TRUE(Push("adam", 1).ok());
  ASSERT_TRUE(Step("adam").ok());
  ASSERT_TRUE(client_->Snapshot({"m"}).ok());
  const std::string file = OptimizersDir() + "/adam.safetensors";
  const std::string kept = daemon_->data_dir() + "/adam.kept";
  std::filesystem::copy_file(file, kept);
  ASSERT_TRUE(Push("adam", 2).ok());
  ASSERT_TRUE(Step("adam").ok());
  ASSERT_EQ(daemon_->Stop(), 0);
  // As if the daemon had died after writing the model's snapshot but before the optimizer's.
  std::filesystem::copy_file(kept, file, std::filesystem::copy_options::overwrite_existing);
  Restart();
  EXPECT_THAT(daemon_->Log(), HasSubstr("msg=\"optimizer not restored\" optimizer=adam"));
  EXPECT_THAT(daemon_->Log(), HasSubstr("its state goes with version"));
  EXPECT_TRUE(client_->DescribeModel("m").ok());
}

TEST_F(OptimizerSnapshotsTest, DeletedOptimizersAndThoseOfDeletedModelsDoNotComeBack) {
  MakeModel("m");
  MakeModel("n");
  ASSERT_TRUE(CreateAdam("a", "m").ok());
  ASSERT_TRUE(CreateAdam("b", "n").ok());
  ASSERT_TRUE(client_->Snapshot({}).ok());
  ASSERT_TRUE(std::filesystem::exists(OptimizersDir() + "/a.safetensors"));
  ASSERT_TRUE(std::filesystem::exists(OptimizersDir() + "/b.safetensors"));
  {
    grpc::ClientContext context;
    v1::DeleteOptimizerRequest request;
    request.set_optimizer("a");
    v1::DeleteOptimizerResponse response;
    ASSERT_TRUE(training_->DeleteOptimizer(&context, request, &response).ok());
  }
  ASSERT_TRUE(client_->DeleteModel("n").ok());
  EXPECT_FALSE(std::filesystem::exists(OptimizersDir() + "/b.safetensors"));
  ASSERT_EQ(daemon_->Stop(), 0);
  EXPECT_FALSE(std::filesystem::exists(OptimizersDir() + "/a.safetensors"));
  Restart();
  EXPECT_EQ(Info("a").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Info("b").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(OptimizerSnapshotsTest, TheTemporaryFileOfAKilledOptimizerSnapshotIsRemovedAtStart) {
  MakeModel("m");
  ASSERT_TRUE(CreateAdam("adam", "m").ok());
  ASSERT_TRUE(client_->Snapshot({}).ok());
  std::ofstream(OptimizersDir() + "/.adam.safetensors.tmp-12345") << "half a file";
  daemon_->Kill();
  Restart();
  EXPECT_THAT(daemon_->Log(), HasSubstr("msg=\"removed unfinished snapshot file\""));
  EXPECT_FALSE(std::filesystem::exists(OptimizersDir() + "/.adam.safetensors.tmp-12345"));
  EXPECT_TRUE(Info("adam").ok());
}

}  // namespace
}  // namespace paramd::testing
