// Optimizer snapshot files: every hyperparameter value the daemon accepts comes back exactly
// (floats bit for bit, Note [Exact floats in snapshots]; ints past 2^53), files written before
// floats carried their bits stay readable, and a restored synchronous optimizer's rounds time
// out after the timeout it is restored with.
#include "server/io/optimizer_snapshot.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/base/casts.h"
#include "server/core/spec.h"
#include "server/io/safetensors.h"
#include "tests/unit/io/test_util.h"

namespace paramd::io {
namespace {

using core::HyperValue;
using ::testing::HasSubstr;

uint64_t Bits(double value) { return absl::bit_cast<uint64_t>(value); }

OptimizerSnapshot WithHyperparameters(core::Hyperparameters hyperparameters) {
  OptimizerSnapshot snapshot;
  snapshot.name = "opt";
  snapshot.model = "m";
  snapshot.kind = core::OptimizerKind::kSgd;
  snapshot.state.param_groups.push_back({std::move(hyperparameters), {0}, {"weight"}});
  return snapshot;
}

class OptimizerSnapshotTest : public test_util::ScratchDirTest {
 protected:
  // The file `description` (the JSON metadata) makes, read back.
  absl::StatusOr<OptimizerSnapshot> ReadDescription(const std::string& description) {
    const std::string path = PathOf("opt.safetensors");
    EXPECT_TRUE(SaveSafetensors(path, {}, {{kOptimizerKey, description}}).ok());
    return ReadOptimizerSnapshot(path);
  }
};

TEST_F(OptimizerSnapshotTest, EveryFloatAndIntComesBackExactly) {
  const double inf = std::numeric_limits<double>::infinity();
  const std::vector<double> floats = {
      std::numeric_limits<double>::quiet_NaN(),
      absl::bit_cast<double>(uint64_t{0xfff800000000abcd}),  // negative, with a payload
      absl::bit_cast<double>(uint64_t{0x7ff0000000000001}),  // signalling
      inf,
      -inf,
      -0.0,
      0.0,
      std::numeric_limits<double>::denorm_min(),
      std::numeric_limits<double>::max(),
      0.1,
  };
  const std::vector<int64_t> ints = {std::numeric_limits<int64_t>::max(),
                                     std::numeric_limits<int64_t>::min(), (int64_t{1} << 53) + 1,
                                     -1, 0};
  core::Hyperparameters hyperparameters;
  for (size_t i = 0; i < floats.size(); ++i) {
    hyperparameters.emplace_back("f" + std::to_string(i), HyperValue::Float(floats[i]));
  }
  for (size_t i = 0; i < ints.size(); ++i) {
    hyperparameters.emplace_back("i" + std::to_string(i), HyperValue::Int(ints[i]));
  }
  hyperparameters.emplace_back("finite_tuple", HyperValue::Tuple({0.9, -0.0}));
  hyperparameters.emplace_back("tuple", HyperValue::Tuple({floats[1], -inf}));
  hyperparameters.emplace_back("empty_tuple", HyperValue::Tuple({}));
  const std::string path = PathOf("opt.safetensors");
  ASSERT_TRUE(SaveOptimizerSnapshot(path, WithHyperparameters(hyperparameters)).ok());

  absl::StatusOr<OptimizerSnapshot> read = ReadOptimizerSnapshot(path);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->state.param_groups.size(), 1u);
  const core::Hyperparameters& back = read->state.param_groups[0].hyperparameters;
  ASSERT_EQ(back.size(), hyperparameters.size());
  for (size_t i = 0; i < back.size(); ++i) {
    const auto& [name, value] = hyperparameters[i];
    EXPECT_EQ(back[i].first, name);
    EXPECT_EQ(back[i].second.type, value.type) << name;
    EXPECT_EQ(Bits(back[i].second.number), Bits(value.number)) << name;
    EXPECT_EQ(back[i].second.integer, value.integer) << name;
    ASSERT_EQ(back[i].second.tuple.size(), value.tuple.size()) << name;
    for (size_t j = 0; j < value.tuple.size(); ++j) {
      EXPECT_EQ(Bits(back[i].second.tuple[j]), Bits(value.tuple[j])) << name << "[" << j << "]";
    }
  }
}

// The format before floats carried their bits: finite numbers only, under "value".
TEST_F(OptimizerSnapshotTest, AFileWithoutBitsIsReadFromItsNumbers) {
  absl::StatusOr<OptimizerSnapshot> read = ReadDescription(R"({
    "name": "opt", "model": "m", "kind": "Adam", "mode": "manual", "bound": 0, "steps": 3,
    "model_version": 7,
    "param_groups": [{"params": [0], "param_names": ["weight"], "hyperparameters": [
      ["lr", {"type": "float", "value": 0.001}],
      ["betas", {"type": "tuple", "value": [0.9, 0.999]}],
      ["eps", {"type": "float", "value": -0.0}],
      ["weight_decay", {"type": "int", "value": 0}],
      ["amsgrad", {"type": "bool", "value": true}],
      ["foreach", {"type": "none"}]]}]})");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->steps, 3u);
  const core::Hyperparameters& h = read->state.param_groups.at(0).hyperparameters;
  ASSERT_EQ(h.size(), 6u);
  EXPECT_EQ(h[0].second, HyperValue::Float(0.001));
  EXPECT_EQ(h[1].second, HyperValue::Tuple({0.9, 0.999}));
  EXPECT_EQ(Bits(h[2].second.number), Bits(-0.0));
  EXPECT_EQ(h[3].second, HyperValue::Int(0));
  EXPECT_EQ(h[4].second, HyperValue::Bool(true));
  EXPECT_EQ(h[5].second, HyperValue::None());
}

TEST_F(OptimizerSnapshotTest, MalformedValuesAreRefusedAsDamaged) {
  const std::string head = R"({"name": "opt", "model": "m", "kind": "SGD", "mode": "manual",
    "bound": 0, "steps": 0, "model_version": 1, "param_groups": [{"params": [0],
    "param_names": ["weight"], "hyperparameters": [["lr", )";
  for (const std::string value : {
           R"({"type": "float", "value": null})",  // what NaN was written as before "bits"
           R"({"type": "float", "bits": "7ff000000000000"})",
           R"({"type": "float", "bits": "0x7ff0000000000000"})",
           R"({"type": "float", "bits": "7ff000000000000g"})",
           R"({"type": "float", "bits": 9218868437227405312})",
           R"({"type": "tuple", "bits": ["3fe0000000000000", 1]})",
           R"({"type": "tuple", "bits": "3fe0000000000000"})",
           R"({"type": "int", "value": 9223372036854775808})",
           R"({"type": "int", "value": 1.5})",
       }) {
    absl::StatusOr<OptimizerSnapshot> read = ReadDescription(head + value + "]]}]}");
    EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument) << value;
    EXPECT_THAT(read.status().message(), HasSubstr("is malformed")) << value;
  }
}

TEST_F(OptimizerSnapshotTest, ASynchronousOptimizerIsRestoredWithTheTimeoutGiven) {
  auto model = std::make_shared<core::Model>(
      "m",
      core::BuildModuleFromText(
          R"({"type": "Linear", "args": {"in_features": 2, "out_features": 1}})", 3)
          .value(),
      Device::Cpu());
  OptimizerSnapshot snapshot =
      WithHyperparameters(core::DefaultHyperparameters(core::OptimizerKind::kSgd));
  snapshot.mode = {core::OptimizerMode::kSynchronous, 2};
  const std::string path = PathOf("opt.safetensors");
  ASSERT_TRUE(SaveOptimizerSnapshot(path, snapshot).ok());
  absl::StatusOr<OptimizerSnapshot> read = ReadOptimizerSnapshot(path);
  ASSERT_TRUE(read.ok()) << read.status();
  absl::StatusOr<std::shared_ptr<core::Optimizer>> restored =
      RestoreOptimizer(*read, model, absl::Seconds(7));
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ((*restored)->mode().kind, core::OptimizerMode::kSynchronous);
  EXPECT_EQ((*restored)->mode().bound, 2u);
  EXPECT_EQ((*restored)->mode().round_timeout, absl::Seconds(7));
  // The timeout is the daemon's, not the file's: a manual optimizer has none.
  snapshot.mode = {};
  ASSERT_TRUE(SaveOptimizerSnapshot(path, snapshot).ok());
  restored = RestoreOptimizer(ReadOptimizerSnapshot(path).value(), model, absl::Seconds(7));
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ((*restored)->mode().round_timeout, absl::ZeroDuration());
}

}  // namespace
}  // namespace paramd::io
