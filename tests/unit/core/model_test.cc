// Model: versions, conditional writes, region writes, tying through writes, and readers
// that keep the version they pinned (DESIGN.md section 4).
#include "server/core/model.h"

#include <cstdlib>
#include <cstring>
#include <thread>

#include "kernels/backend.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/unit/core/test_util.h"

namespace paramd::core {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::Build;
using testing::MakeTensor;
using testing::Values;

// A stand-in for a GPU where none is present: memory the host can address but holds every
// byte scrambled, so a value only comes back right when it went in and out through
// CopyFromHost and CopyToHost, as it must for device memory. It runs no ops.
class ScrambledDevice final : public kernels::Backend {
 public:
  static constexpr uint8_t kKey = 0xA5;
  Device device() const override { return Device::Cuda(0); }
  absl::StatusOr<void*> Allocate(size_t nbytes) override {
    in_use_ += nbytes;
    return std::malloc(nbytes == 0 ? 1 : nbytes);
  }
  void Free(void* data, size_t nbytes) override {
    in_use_ -= nbytes;
    std::free(data);
  }
  absl::Status CopyFromHost(void* dst, const void* src, size_t nbytes) override {
    for (size_t i = 0; i < nbytes; ++i) {
      static_cast<uint8_t*>(dst)[i] = static_cast<const uint8_t*>(src)[i] ^ kKey;
    }
    return absl::OkStatus();
  }
  absl::Status CopyToHost(void* dst, const void* src, size_t nbytes) override {
    return CopyFromHost(dst, src, nbytes);  // the same XOR undoes it
  }
  absl::Status CopyWithinDevice(void* dst, const void* src, size_t nbytes) override {
    std::memmove(dst, src, nbytes);
    return absl::OkStatus();
  }
  size_t bytes_in_use() const override { return in_use_; }
  void SetMemoryLimit(size_t) override {}

 private:
  size_t in_use_ = 0;
};

// Registers a ScrambledDevice as cuda:0 for one test.
class ModelOnDeviceTest : public ::testing::Test {
 protected:
  void SetUp() override { kernels::SetBackendForTesting(Device::Cuda(0), &device_); }
  void TearDown() override { kernels::SetBackendForTesting(Device::Cuda(0), nullptr); }
  ScrambledDevice device_;
};

std::vector<double> Read(const Model& model, const std::string& key) {
  return model.Read([&](const std::shared_ptr<Module>& root, uint64_t) {
    return Values((*FindTensorSlot(root, key))->data());
  });
}

TEST(ModelTest, SeedTyingWriteThroughOneNameIsSeenThroughTheOther) {  // seed, §9
  Model model("net", Build(testing::kSharedSpec), Device{});
  EXPECT_EQ(model.version(), 1u);
  // net[2].weight[0][0] = 100
  auto version = model.SetTensor("2.weight", Region{{0, 1}, {0, 1}}, MakeTensor({}, {100}), {});
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(*version, 2u);
  EXPECT_EQ(Read(model, "4.weight")[0], 100.0);  // net[4].weight[0][0]
  EXPECT_EQ(Read(model, "2.weight")[1], Read(model, "4.weight")[1]);
  model.Read([](const std::shared_ptr<Module>& root, uint64_t) {
    EXPECT_EQ((*GetParameter(root, "4.weight"))->version(), 2u);
  });
}

TEST(ModelTest, TiedEmbeddingWriteIsSeenThroughBothNames) {  // §9
  Model model("lm", Build(testing::kTiedEmbeddingSpec), Device{});
  ASSERT_TRUE(model.SetTensor("lm_head.weight", Region{{3, 4}}, MakeTensor({4}, {1, 2, 3, 4}), {})
                  .ok());
  std::vector<double> embed = Read(model, "embed.weight");
  EXPECT_THAT(std::vector<double>(embed.begin() + 12, embed.begin() + 16), ElementsAre(1, 2, 3, 4));
}

TEST(ModelTest, IfVersionMakesWritesConditional) {
  Model model("mlp", Build(testing::kMlpSpec), Device{});
  ASSERT_TRUE(model.SetTensor("w2", {}, MakeTensor({1}, {3}), 1).ok());
  auto stale = model.SetTensor("w2", {}, MakeTensor({1}, {4}), 1);
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(stale.status().message(), HasSubstr("model 'mlp' is at version 2, not 1"));
  EXPECT_THAT(Read(model, "w2"), ElementsAre(3));
  EXPECT_EQ(model.version(), 2u);
}

// An empty batch writes nothing: no new version, the answer is the current one, and a stale
// if_version is ABORTED as for any write (docs/wire.md, "Writes").
TEST(ModelTest, EmptySetTensorsChangesNothingAndAnswersTheCurrentVersion) {
  Model model("mlp", Build(testing::kMlpSpec), Device{});
  ASSERT_TRUE(model.SetTensor("w2", {}, MakeTensor({1}, {3}), {}).ok());
  ASSERT_EQ(model.version(), 2u);
  auto empty = model.SetTensors({}, std::nullopt);
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(*empty, 2u);
  auto matching = model.SetTensors({}, 2);
  ASSERT_TRUE(matching.ok()) << matching.status();
  EXPECT_EQ(*matching, 2u);
  auto stale = model.SetTensors({}, 1);
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(stale.status().message(), HasSubstr("model 'mlp' is at version 2, not 1"));
  EXPECT_EQ(model.version(), 2u);
  EXPECT_THAT(Read(model, "w2"), ElementsAre(3));
}

TEST(ModelTest, BadWritesChangeNothing) {
  Model model("mlp", Build(testing::kMlpSpec), Device{});
  const auto before = Read(model, "linear1.weight");
  EXPECT_EQ(model.SetTensor("linear1.weight", {}, MakeTensor({3}, {1, 2, 3}), {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(model.SetTensor("linear1.weight", Region{{0, 3}}, MakeTensor({}, {1}), {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto unknown = model.SetTensor("linear9.weight", {}, MakeTensor({1}, {1}), {});
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(unknown.status().message(), "MLP has no attribute `linear9`");
  EXPECT_EQ(model.SetTensor("linear1.nope", {}, MakeTensor({1}, {1}), {}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(Read(model, "linear1.weight"), before);
  EXPECT_EQ(model.version(), 1u);
}

// Tensor.copy_ broadcasts one element over a whole tensor, but refuses a source with more
// dimensions than its target: "output with shape [] doesn't match the broadcast shape [1, 1]".
TEST(ModelTest, OneElementFillsAWholeTensorOfAsManyDimensionsOrMore) {
  Model model("net", Build(R"({"type": "Net", "parameters": [{"name": "s", "shape": []},
                                                             {"name": "t", "shape": [2, 3]}]})"),
              Device{});
  for (const Shape& shape : {Shape{1, 1}, Shape{1}}) {
    auto refused = model.SetTensor("s", {}, MakeTensor(shape, {5}), {});
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << ShapeString(shape);
    EXPECT_THAT(refused.status().message(), HasSubstr("does not match the shape [] of 's'"));
  }
  EXPECT_EQ(model.SetTensor("t", {}, MakeTensor({1, 1, 1}, {5}), {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(model.version(), 1u);
  ASSERT_TRUE(model.SetTensor("s", {}, MakeTensor({}, {5}), {}).ok());
  ASSERT_TRUE(model.SetTensor("t", {}, MakeTensor({1, 1}, {6}), {}).ok());
  ASSERT_TRUE(model.SetTensor("t", Region{{0, 1}}, MakeTensor({1, 1, 1}, {7}), {}).ok());
  EXPECT_THAT(Read(model, "s"), ElementsAre(5));
  EXPECT_THAT(Read(model, "t"), ElementsAre(7, 7, 7, 6, 6, 6));
}

TEST(ModelTest, RegionWriteConvertsDtypeAndAcceptsSqueezedShapes) {
  Model model("net", Build(R"({"type": "Net", "parameters": [{"name": "t", "shape": [2, 3]}]})"),
              Device{});
  // t[1, 0:2] = [7, 8] given as shape [2] for region shape [1, 2].
  ASSERT_TRUE(model.SetTensor("t", Region{{1, 2}, {0, 2}}, MakeTensor({2}, {7, 8}, DType::kInt64), {})
                  .ok());
  EXPECT_THAT(Read(model, "t"), ElementsAre(0, 0, 0, 7, 8, 0));
}

TEST(ModelTest, ReaderKeepsThePinnedVersionWhileWritersWrite) {  // Note [Snapshot publication]
  Model model("mlp", Build(testing::kMlpSpec), Device{});
  Tensor pinned = model.Read([](const std::shared_ptr<Module>& root, uint64_t) {
    return (*FindTensorSlot(root, "w2"))->data();
  });
  ASSERT_TRUE(model.SetTensor("w2", {}, MakeTensor({1}, {9}), {}).ok());
  EXPECT_THAT(Values(pinned), ElementsAre(2));
  EXPECT_THAT(Read(model, "w2"), ElementsAre(9));
}

TEST(ModelTest, ConcurrentReadersSeeWholeVersions) {
  Model model("net", Build(R"({"type": "Net", "parameters": [
      {"name": "a", "shape": [64]}, {"name": "b", "shape": [64]}]})"), Device{});
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (int i = 0; i < 200; ++i) {
      StateDictInput input;
      input.entries = {{"a", *Tensor::Full(DType::kFloat32, {64}, i)},
                       {"b", *Tensor::Full(DType::kFloat32, {64}, i)}};
      ASSERT_TRUE(model.LoadStateDict(input, {}, {}).ok());
    }
    done = true;
  });
  int reads = 0;
  while (!done || reads == 0) {
    auto sd = model.Read([](const std::shared_ptr<Module>& root, uint64_t) { return GetStateDict(*root); });
    std::vector<double> a = Values(sd.entries[0].tensor);
    std::vector<double> b = Values(sd.entries[1].tensor);
    for (double value : a) ASSERT_EQ(value, a[0]);
    ASSERT_EQ(a, b);
    ++reads;
  }
  writer.join();
  EXPECT_EQ(model.version(), 201u);
}

TEST(ModelTest, LoadStateDictThroughTheModelBumpsVersionOnlyOnSuccess) {
  Model model("mlp", Build(testing::kMlpSpec), Device{});
  StateDictInput input;
  input.entries = {{"w2", MakeTensor({1}, {5})}};
  auto failed = model.LoadStateDict(input, {}, {});
  EXPECT_FALSE(failed.ok());
  EXPECT_EQ(model.version(), 1u);
  auto loaded = model.LoadStateDict(input, {.strict = false}, {});
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->first, 2u);
  EXPECT_EQ(loaded->second.missing_keys.size(), 4u);
}

TEST(ModelTest, SetTrainingReachesEveryModule) {
  Model model("net", Build(testing::kSharedSpec), Device{});
  EXPECT_TRUE(model.training());
  ASSERT_TRUE(model.SetTraining(false, {}).ok());
  EXPECT_FALSE(model.training());
  model.Read([](const std::shared_ptr<Module>& root, uint64_t) {
    for (const auto& [name, module] : NamedModules(root)) EXPECT_FALSE(module->training()) << name;
  });
}

}  // namespace
}  // namespace paramd::core

namespace paramd::core {
namespace {

TEST_F(ModelOnDeviceTest, MoveToCopiesEveryTensorOnceAndKeepsTyingAndSharing) {  // §9
  Model model("net", Build(testing::kSharedSpec), Device{});
  const std::vector<double> shared = Read(model, "2.weight");
  const std::vector<double> last = Read(model, "6.bias");
  auto moved = model.MoveTo(Device::Cuda(0), 1);
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(*moved, 2u);
  EXPECT_EQ(model.device(), Device::Cuda(0));
  model.Read([&](const std::shared_ptr<Module>& root, uint64_t) {
    for (const auto& [name, parameter] : NamedParameters(root, "", true, false)) {
      EXPECT_EQ(parameter->data().device(), Device::Cuda(0)) << name;
    }
    // net[2] and net[4] are one module: one Parameter object, moved once.
    EXPECT_EQ(*GetParameter(root, "2.weight"), *GetParameter(root, "4.weight"));
    // The bytes on the device are the scrambled ones: nothing wrote them around the copy.
    const Tensor& weight = (*GetParameter(root, "2.weight"))->data();
    float raw;
    std::memcpy(&raw, weight.data(), sizeof(raw));
    EXPECT_NE(raw, static_cast<float>(shared[0]));
  });
  EXPECT_EQ(Read(model, "2.weight"), shared);  // read back through CopyToHost
  EXPECT_EQ(Read(model, "6.bias"), last);
  // A write through one name of the shared module is seen through the other, on the device.
  ASSERT_TRUE(model.SetTensor("4.bias", {}, MakeTensor({8}, {1, 2, 3, 4, 5, 6, 7, 8},
                                                       DType::kFloat64), {})
                  .ok());
  EXPECT_THAT(Read(model, "2.bias"), ElementsAre(1, 2, 3, 4, 5, 6, 7, 8));
  model.Read([&](const std::shared_ptr<Module>& root, uint64_t) {
    const Tensor& bias = (*GetParameter(root, "2.bias"))->data();
    EXPECT_EQ(bias.device(), Device::Cuda(0));
    EXPECT_EQ(bias.dtype(), DType::kFloat32);  // copy_ keeps the destination's dtype
  });
  // To the same device again: nothing to do, no new version.
  EXPECT_EQ(*model.MoveTo(Device::Cuda(0), {}), 3u);
  // And back.
  ASSERT_TRUE(model.MoveTo(Device::Cpu(), {}).ok());
  EXPECT_EQ(model.device(), Device::Cpu());
  EXPECT_EQ(Read(model, "2.weight"), shared);
  EXPECT_THAT(Read(model, "4.bias"), ElementsAre(1, 2, 3, 4, 5, 6, 7, 8));
  EXPECT_EQ(device_.bytes_in_use(), 0u) << "the device copies were not freed";
}

TEST_F(ModelOnDeviceTest, MovesThatCannotHappenChangeNothing) {
  Model model("mlp", Build(testing::kMlpSpec), Device{});
  const std::vector<double> before = Read(model, "linear1.weight");
  auto missing = model.MoveTo(Device::Cuda(1), {});  // no such device here
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kFailedPrecondition);
  auto stale = model.MoveTo(Device::Cuda(0), 7);
  EXPECT_EQ(stale.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(model.device(), Device::Cpu());
  EXPECT_EQ(model.version(), 1u);
  EXPECT_EQ(Read(model, "linear1.weight"), before);
  EXPECT_EQ(device_.bytes_in_use(), 0u);
}

TEST_F(ModelOnDeviceTest, RegionWritesLandOnTheDeviceAndBadOnesChangeNothing) {  // seed, §9
  Model model("net", Build(testing::kSharedSpec), Device{});
  ASSERT_TRUE(model.MoveTo(Device::Cuda(0), {}).ok());
  std::vector<double> expected = Read(model, "2.weight");
  // Through both names of the shared module, after a whole-tensor write, in one version.
  std::vector<double> whole(64, 0.5);
  auto version = model.SetTensors(
      {{"2.weight", std::nullopt, MakeTensor({8, 8}, whole)},
       {"4.weight", Region{{0, 1}, {0, 2}}, MakeTensor({2}, {7, 8}, DType::kFloat64)},
       {"2.weight", Region{{3, 4}}, MakeTensor({}, {9})}},
      {});
  ASSERT_TRUE(version.ok()) << version.status();
  expected = whole;
  expected[0] = 7;
  expected[1] = 8;
  std::fill(expected.begin() + 24, expected.begin() + 32, 9.0);
  EXPECT_EQ(Read(model, "4.weight"), expected);
  model.Read([&](const std::shared_ptr<Module>& root, uint64_t) {
    const Tensor& weight = (*GetParameter(root, "4.weight"))->data();
    EXPECT_EQ(weight.device(), Device::Cuda(0));
    float raw;
    std::memcpy(&raw, weight.data(), sizeof(raw));
    EXPECT_NE(raw, 7.0f) << "written around the device copy";
  });
  auto out_of_bounds = model.SetTensor("2.weight", Region{{8, 9}}, MakeTensor({}, {1}), {});
  EXPECT_EQ(out_of_bounds.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Read(model, "2.weight"), expected);
  EXPECT_EQ(model.version(), *version);
}

TEST_F(ModelOnDeviceTest, StridedViewsOfDeviceTensorsReadBackInOrder) {
  auto tensor = ConvertTo(MakeTensor({2, 3}, {1, 2, 3, 4, 5, 6}), DType::kFloat32, Device::Cuda(0));
  ASSERT_TRUE(tensor.ok()) << tensor.status();
  // The transpose, as a strided view of the device storage.
  Tensor transposed(tensor->storage(), 0, {3, 2}, {1, 3}, DType::kFloat32);
  EXPECT_THAT(Values(transposed), ElementsAre(1, 4, 2, 5, 3, 6));
  auto column = tensor->Slice({{0, 2}, {1, 2}});
  ASSERT_TRUE(column.ok());
  auto bytes = ToBytes(*column);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  ASSERT_EQ(bytes->size(), 8u);
  float values[2];
  std::memcpy(values, bytes->data(), sizeof(values));
  EXPECT_THAT(values, ElementsAre(2, 5));
  auto wide = ConvertTo(transposed, DType::kFloat64, Device::Cuda(0));
  ASSERT_TRUE(wide.ok()) << wide.status();
  EXPECT_EQ(wide->device(), Device::Cuda(0));
  EXPECT_THAT(Values(*wide), ElementsAre(1, 4, 2, 5, 3, 6));
}

}  // namespace
}  // namespace paramd::core
