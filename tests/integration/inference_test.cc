// Inference.Forward through the C++ client against the real daemon: the seed's models,
// shape errors, one version per forward under concurrent writers, training-mode BatchNorm
// statistics committed as one new version, and the wire's errors.
#include <atomic>
#include <cmath>
#include <map>
#include <set>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "paramd/client.h"
#include "tests/integration/client_fixture.h"
#include "tests/integration/daemon.h"
#include "tests/integration/specs.h"

namespace paramd::testing {
namespace {

using client::DType;
using client::ForwardMode;
using client::ForwardOptions;
using client::HostTensor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kForwardMlpSpec[] = R"({"type": "MLP", "children": [
   {"name": "linear1", "type": "Linear", "args": {"in_features": 1, "out_features": 2}},
   {"name": "relu", "type": "ReLU"},
   {"name": "linear2", "type": "Linear", "args": {"in_features": 2, "out_features": 1}}],
 "forward": ["linear1", "relu", "linear2"]})";

constexpr char kCnnSpec[] = R"({"type": "CNN", "children": [
   {"name": "conv1", "type": "Conv2d", "args": {"in_channels": 1, "out_channels": 20, "kernel_size": 5}},
   {"name": "pool", "type": "MaxPool2d", "args": {"kernel_size": 2, "stride": 2}},
   {"name": "fc1", "type": "Linear", "args": {"in_features": 2880, "out_features": 10}}],
 "forward": ["conv1", {"op": "relu"}, "pool", {"op": "view", "args": {"shape": [-1, 2880]}},
             "fc1", {"op": "relu"}]})";

// Two layers, so that a forward reads tensors written by one write at different moments.
constexpr char kTwoLayerSpec[] = R"({"type": "Sequential", "children": [
   {"type": "Linear", "args": {"in_features": 64, "out_features": 64}},
   {"type": "Linear", "args": {"in_features": 64, "out_features": 64}}]})";

HostTensor Filled(std::vector<int64_t> shape, double value) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return Floats(std::move(shape), std::vector<double>(static_cast<size_t>(n), value));
}

class InferenceTest : public DaemonClientTest {};

TEST_F(InferenceTest, SeedMlpComputesAndReportsItsVersion) {
  ASSERT_TRUE(client_->CreateModel("mlp", kForwardMlpSpec).ok());
  client::RemoteModel mlp = client_->Model("mlp");
  auto written = mlp.SetTensors({{"linear1.weight", Floats({2, 1}, {1.0, -1.0}), std::nullopt},
                                 {"linear1.bias", Floats({2}, {0.5, 0.25}), std::nullopt},
                                 {"linear2.weight", Floats({1, 2}, {2.0, 3.0}), std::nullopt},
                                 {"linear2.bias", Floats({1}, {-1.0}), std::nullopt}});
  ASSERT_TRUE(written.ok()) << written.status();

  auto result = mlp.Forward(Floats({3, 1}, {1.0, -2.0, 0.0}));
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->version, *written);
  EXPECT_EQ(result->updated_version, 0u);
  EXPECT_TRUE(result->training);  // a new model is in training mode, as in PyTorch
  ASSERT_EQ(result->outputs.size(), 1u);
  const client::NamedTensor& output = result->outputs[0];
  EXPECT_EQ(output.name, "output");
  EXPECT_EQ(output.tensor.dtype, DType::kFloat32);
  EXPECT_EQ(output.tensor.device, "cpu");
  EXPECT_THAT(output.tensor.shape, ElementsAre(3, 1));
  // x=1: relu([1.5, -0.75]) = [1.5, 0] -> 3 - 1 = 2; x=-2: [0, 2.25] -> 6.75 - 1;
  // x=0: [0.5, 0.25] -> 1 + 0.75 - 1.
  EXPECT_THAT(output.tensor.ToDoubles(), ElementsAre(2.0, 5.75, 0.75));

  ASSERT_TRUE(mlp.SetTensor("linear2.bias", Floats({1}, {0.0})).ok());
  auto later = mlp.Forward(Floats({1, 1}, {1.0}));
  ASSERT_TRUE(later.ok()) << later.status();
  EXPECT_EQ(later->version, *written + 1);
  EXPECT_THAT(later->outputs[0].tensor.ToDoubles(), ElementsAre(3.0));

  ForwardOptions pinned;
  pinned.if_version = *written;
  auto stale = mlp.Forward(Floats({1, 1}, {1.0}), pinned);
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(stale.status().message(), HasSubstr("is at version"));
  EXPECT_EQ(CurrentVersionOf(stale.status()), std::optional<uint64_t>(*written + 1));
  pinned.if_version = *written + 1;
  EXPECT_TRUE(mlp.Forward(Floats({1, 1}, {1.0}), pinned).ok());

  pinned.wire_dtype = DType::kBFloat16;
  auto narrow = mlp.Forward(Floats({1, 1}, {1.0}), pinned);
  ASSERT_TRUE(narrow.ok()) << narrow.status();
  EXPECT_EQ(narrow->outputs[0].tensor.dtype, DType::kBFloat16);
  EXPECT_THAT(narrow->outputs[0].tensor.ToDoubles(), ElementsAre(3.0));
}

TEST_F(InferenceTest, SeedCnnBatches) {
  ASSERT_TRUE(client_->CreateModel("cnn", kCnnSpec, "cpu", 7).ok());
  client::RemoteModel cnn = client_->Model("cnn");
  std::vector<double> pixels(2 * 28 * 28);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = std::sin(0.1 * static_cast<double>(i));
  const HostTensor batch = Floats({2, 1, 28, 28}, pixels);
  auto result = cnn.Forward(batch);
  ASSERT_TRUE(result.ok()) << result.status();
  const HostTensor& out = result->outputs[0].tensor;
  EXPECT_THAT(out.shape, ElementsAre(2, 10));
  for (double v : out.ToDoubles()) EXPECT_GE(v, 0.0);

  // Each sample alone gives its row of the batch (no batch coupling in eval arithmetic).
  auto first = cnn.Forward(
      Floats({1, 1, 28, 28}, std::vector<double>(pixels.begin(), pixels.begin() + 784)));
  ASSERT_TRUE(first.ok()) << first.status();
  const std::vector<double> both = out.ToDoubles();
  const std::vector<double> one = first->outputs[0].tensor.ToDoubles();
  for (size_t i = 0; i < 10; ++i) EXPECT_NEAR(one[i], both[i], 1e-5);
}

TEST_F(InferenceTest, ShapeErrorsNameTheModuleAndExpectedShape) {
  ASSERT_TRUE(client_->CreateModel("mlp", kForwardMlpSpec).ok());
  auto bad = client_->Model("mlp").Forward(Filled({4, 3}, 1.0));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("module 'linear1' (Linear)"));
  EXPECT_THAT(bad.status().message(),
              HasSubstr("mat1 and mat2 shapes cannot be multiplied (4x3 and 1x2)"));
  EXPECT_THAT(bad.status().message(), HasSubstr("expected an input of shape [*, 1]"));

  ASSERT_TRUE(client_->CreateModel("cnn", kCnnSpec).ok());
  auto channels = client_->Model("cnn").Forward(Filled({1, 3, 28, 28}, 1.0));
  EXPECT_EQ(channels.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(channels.status().message(), HasSubstr("module 'conv1' (Conv2d)"));
  EXPECT_THAT(channels.status().message(),
              HasSubstr("expected input[1, 3, 28, 28] to have 1 channels, but got 3 channels"));
  // The daemon logs the failure like any other call's.
  EXPECT_THAT(daemon_->Log(), HasSubstr("forward"));
}

TEST_F(InferenceTest, WireErrors) {
  auto missing = client_->Model("nobody").Forward(Filled({1, 1}, 1.0));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("model 'nobody' not found"));

  ASSERT_TRUE(client_->CreateModel("mlp", kForwardMlpSpec).ok());
  auto unnamed = client_->Model("mlp").Forward({{"x", Filled({1, 1}, 1.0)}});
  EXPECT_EQ(unnamed.status().code(), absl::StatusCode::kInvalidArgument);
  auto twice = client_->Model("mlp").Forward(
      {{"input", Filled({1, 1}, 1.0)}, {"input", Filled({1, 1}, 1.0)}});
  EXPECT_EQ(twice.status().code(), absl::StatusCode::kInvalidArgument);
  // The kernels' rank limit is said for the input, whichever module would meet it first.
  auto deep = client_->Model("mlp").Forward(Filled({1, 1, 1, 1, 1, 1, 1, 1, 1}, 1.0));
  EXPECT_EQ(deep.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(deep.status().message(),
              HasSubstr("input 'input' has 9 dimensions; paramd's kernels take at most 8"));
  EXPECT_THAT(twice.status().message(), HasSubstr("'input' is sent twice"));
  HostTensor short_data = Filled({2, 1}, 1.0);
  short_data.data.resize(4);
  EXPECT_EQ(client_->Model("mlp").Forward(short_data).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(InferenceTest, LargeInputsAndOutputsTravelInChunks) {
  ASSERT_TRUE(client_->CreateModel("mlp", kForwardMlpSpec).ok());
  client::RemoteModel mlp = client_->Model("mlp");
  ASSERT_TRUE(mlp.SetTensors({{"linear1.weight", Floats({2, 1}, {1.0, 0.0}), std::nullopt},
                              {"linear1.bias", Floats({2}, {0.0, 0.0}), std::nullopt},
                              {"linear2.weight", Floats({1, 2}, {2.0, 0.0}), std::nullopt},
                              {"linear2.bias", Floats({1}, {1.0}), std::nullopt}})
                  .ok());
  // 3 MiB in and out: several chunks each way.
  const int64_t rows = 3 * (int64_t{1} << 20) / 4;
  std::vector<double> values(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) values[static_cast<size_t>(i)] = static_cast<double>(i % 1000);
  auto result = mlp.Forward(Floats({rows, 1}, values));
  ASSERT_TRUE(result.ok()) << result.status();
  const std::vector<double> out = result->outputs[0].tensor.ToDoubles();
  ASSERT_EQ(out.size(), values.size());
  for (size_t i = 0; i < out.size(); i += 997) EXPECT_EQ(out[i], 2 * values[i] + 1) << i;
  EXPECT_EQ(out.back(), 2 * values.back() + 1);
}

// Writers set every weight and bias to one value c per write; a forward that mixed two
// writes would see two values. Each forward's output must be the one computed from the c
// of the version it reports: y = c * (64 * 65c + 1) per element for an input of ones.
TEST_F(InferenceTest, EachForwardSeesOneVersionUnderConcurrentWriters) {
  ASSERT_TRUE(client_->CreateModel("net", kTwoLayerSpec).ok());
  client::RemoteModel net = client_->Model("net");
  auto write = [&](double c) {
    return net.SetTensors({{"0.weight", Filled({64, 64}, c), std::nullopt},
                           {"0.bias", Filled({64}, c), std::nullopt},
                           {"1.weight", Filled({64, 64}, c), std::nullopt},
                           {"1.bias", Filled({64}, c), std::nullopt}});
  };
  absl::Mutex mu;
  std::map<uint64_t, double> value_of_version;
  auto first = write(1.0);
  ASSERT_TRUE(first.ok()) << first.status();
  value_of_version[*first] = 1.0;

  constexpr int kWriters = 3;
  constexpr int kWritesEach = 19;  // c stays <= 58: y is an exact float32 integer
  std::atomic<int> next_value{2};
  std::atomic<int> writers_left{kWriters};
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([&] {
      for (int i = 0; i < kWritesEach; ++i) {
        const double c = next_value.fetch_add(1);
        auto version = write(c);
        ASSERT_TRUE(version.ok()) << version.status();
        absl::MutexLock lock(&mu);
        value_of_version[*version] = c;
      }
      writers_left.fetch_sub(1);
    });
  }
  struct Seen {
    uint64_t version;
    std::vector<double> values;
  };
  std::vector<std::vector<Seen>> seen(3);
  for (auto& mine : seen) {
    threads.emplace_back([&, &mine = mine] {
      while (writers_left.load() > 0 || mine.size() < 5) {
        auto result = net.Forward(Filled({2, 64}, 1.0));
        ASSERT_TRUE(result.ok()) << result.status();
        mine.push_back({result->version, result->outputs[0].tensor.ToDoubles()});
      }
    });
  }
  for (std::thread& thread : threads) thread.join();

  size_t checked = 0;
  std::set<uint64_t> versions;
  for (const auto& mine : seen) {
    for (const Seen& s : mine) {
      ASSERT_TRUE(value_of_version.count(s.version)) << "unknown version " << s.version;
      const double c = value_of_version[s.version];
      for (double y : s.values) ASSERT_EQ(y, c * (64 * 65 * c + 1)) << "version " << s.version;
      versions.insert(s.version);
      ++checked;
    }
  }
  EXPECT_GE(checked, 15u);
  EXPECT_GE(versions.size(), 2u);  // the forwards did overlap the writes
}

TEST_F(InferenceTest, TrainingBatchNormCommitsRunningStatsAsOneVersion) {
  ASSERT_TRUE(client_->CreateModel("bn", kBatchNormSpec).ok());
  client::RemoteModel bn = client_->Model("bn");
  auto written = bn.SetTensors({{"0.weight", Floats({3, 2}, {1, 0, 0, 1, 1, 1}), std::nullopt},
                                {"0.bias", Floats({3}, {0, 0, 1}), std::nullopt}});
  ASSERT_TRUE(written.ok()) << written.status();
  const HostTensor x = Floats({4, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  // Linear outputs: columns [1,3,5,7], [2,4,6,8], [4,8,12,16] -> means 4, 5, 10; unbiased
  // variances 20/3, 20/3, 80/3.

  ForwardOptions eval;
  eval.mode = ForwardMode::kEval;
  auto evaluated = bn.Forward(x, eval);
  ASSERT_TRUE(evaluated.ok()) << evaluated.status();
  EXPECT_FALSE(evaluated->training);
  EXPECT_EQ(evaluated->updated_version, 0u);
  EXPECT_EQ(evaluated->version, *written);

  auto trained = bn.Forward(x);  // the model's own mode: training
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_TRUE(trained->training);
  EXPECT_EQ(trained->version, *written);
  EXPECT_EQ(trained->updated_version, *written + 1);
  // Batch statistics normalise each column to mean 0.
  const std::vector<double> y = trained->outputs[0].tensor.ToDoubles();
  for (int col = 0; col < 3; ++col) {
    double sum = 0;
    for (int row = 0; row < 4; ++row) sum += y[static_cast<size_t>(row * 3 + col)];
    EXPECT_NEAR(sum, 0.0, 1e-5);
  }
  auto mean = bn.GetTensor("1.running_mean");
  ASSERT_TRUE(mean.ok()) << mean.status();
  EXPECT_EQ(mean->version, *written + 1);
  const std::vector<double> m = mean->ToDoubles();
  EXPECT_NEAR(m[0], 0.4, 1e-6);
  EXPECT_NEAR(m[1], 0.5, 1e-6);
  EXPECT_NEAR(m[2], 1.0, 1e-6);
  auto var = bn.GetTensor("1.running_var");
  ASSERT_TRUE(var.ok()) << var.status();
  const std::vector<double> v = var->ToDoubles();
  EXPECT_NEAR(v[0], 0.9 + 0.1 * 20.0 / 3, 1e-5);
  EXPECT_NEAR(v[2], 0.9 + 0.1 * 80.0 / 3, 1e-5);
  auto count = bn.GetTensor("1.num_batches_tracked");
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_THAT(count->ToDoubles(), ElementsAre(1.0));
  auto info = bn.Describe();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->version, *written + 1);

  // Set to eval, the model's own mode leaves the statistics alone.
  auto mode = bn.SetMode(false);
  ASSERT_TRUE(mode.ok());
  auto after = bn.Forward(x);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_FALSE(after->training);
  EXPECT_EQ(after->version, mode->version);
  EXPECT_EQ(after->updated_version, 0u);
  ForwardOptions train;
  train.mode = ForwardMode::kTrain;
  auto forced = bn.Forward(x, train);
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_EQ(forced->updated_version, mode->version + 1);
  auto still_eval = bn.Describe();
  ASSERT_TRUE(still_eval.ok());
  EXPECT_FALSE(still_eval->training);
}

}  // namespace
}  // namespace paramd::testing
