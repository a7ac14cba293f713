// Snapshots: one file per model in the data directory, rewritten only when the model's
// version moved, removed with the model, and restored on start with version, values and
// mode; a snapshot that fails to write keeps the one before it.
#include "server/io/snapshots.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <limits>
#include <thread>

#include "server/core/spec.h"
#include "server/core/traversal.h"
#include "server/io/checkpoint.h"
#include "server/io/fault_injecting_file_system.h"
#include "tests/unit/io/test_util.h"

namespace paramd::io {
namespace {

using test_util::ReadFile;
using ::testing::ElementsAre;

// Runs `hook` (once) when a snapshot file of the model `model` is created: the moment a
// snapshot of it is being written.
class HookedFileSystem : public FaultInjectingFileSystem {
 public:
  HookedFileSystem(std::string model, std::function<void()> hook)
      : FaultInjectingFileSystem(FileSystem::Posix()),
        marker_("/." + model + ".safetensors.tmp-"),
        hook_(std::move(hook)) {}
  absl::StatusOr<std::unique_ptr<WritableFile>> CreateNew(const std::string& path) override {
    if (path.find(marker_) != std::string::npos && hook_) std::exchange(hook_, nullptr)();
    return FaultInjectingFileSystem::CreateNew(path);
  }

 private:
  const std::string marker_;
  std::function<void()> hook_;
};

constexpr char kSpec[] = R"({"type": "Linear", "args": {"in_features": 2, "out_features": 1}})";

class SnapshotsTest : public test_util::ScratchDirTest {
 protected:
  std::unique_ptr<Snapshots> Open(core::ModelRegistry* registry) {
    absl::StatusOr<std::unique_ptr<Snapshots>> snapshots =
        Snapshots::Open(dir_.string(), registry, fs_);
    EXPECT_TRUE(snapshots.ok()) << snapshots.status();
    return snapshots.ok() ? *std::move(snapshots) : nullptr;
  }

  std::shared_ptr<core::Model> AddModel(const std::string& name) {
    auto model = std::make_shared<core::Model>(name, core::BuildModuleFromText(kSpec, 3).value(),
                                               Device::Cpu());
    EXPECT_TRUE(registry_.Add(model).ok());
    return model;
  }

  static std::vector<double> Bias(const core::Model& model) {
    return model.Read([](const std::shared_ptr<core::Module>& root, uint64_t) {
      return core::ToDoubles(core::FindTensorSlot(root, "bias").value()->data()).value();
    });
  }

  std::string FileOf(const std::string& name) const {
    return (dir_ / "models" / (name + ".safetensors")).string();
  }

  core::ModelRegistry registry_;
  FaultInjectingFileSystem fs_{FileSystem::Posix()};
};

TEST_F(SnapshotsTest, WritesAModelOnlyWhenItsVersionMoved) {
  std::shared_ptr<core::Model> model = AddModel("a");
  AddModel("b");
  std::unique_ptr<Snapshots> snapshots = Open(&registry_);
  absl::StatusOr<std::vector<Snapshots::Taken>> taken = snapshots->Take({});
  ASSERT_TRUE(taken.ok()) << taken.status();
  ASSERT_EQ(taken->size(), 2u);
  EXPECT_TRUE((*taken)[0].written);
  EXPECT_TRUE(std::filesystem::exists(FileOf("a")));
  EXPECT_TRUE(std::filesystem::exists(FileOf("b")));

  ASSERT_TRUE(model->SetTensor("bias", {}, test_util::Filled(1, 5), {}).ok());
  taken = snapshots->Take({});
  ASSERT_TRUE(taken.ok());
  EXPECT_EQ((*taken)[0].model, "a");
  EXPECT_TRUE((*taken)[0].written);
  EXPECT_EQ((*taken)[0].version, 2u);
  EXPECT_FALSE((*taken)[1].written);

  EXPECT_EQ(snapshots->Take({"nope"}).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SnapshotsTest, RestoresVersionValuesAndMode) {
  std::shared_ptr<core::Model> model = AddModel("a");
  ASSERT_TRUE(model->SetTensor("bias", {}, test_util::Filled(1, 5), {}).ok());
  ASSERT_TRUE(model->SetTraining(false, {}).ok());
  ASSERT_TRUE(Open(&registry_)->Take({"a"}).ok());

  core::ModelRegistry restarted;
  std::unique_ptr<Snapshots> snapshots = Open(&restarted);
  EXPECT_EQ(snapshots->RestoreAll(), 1);
  absl::StatusOr<std::shared_ptr<core::Model>> restored = restarted.Get("a");
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ((*restored)->version(), 3u);
  EXPECT_FALSE((*restored)->training());
  EXPECT_THAT(Bias(**restored), ElementsAre(5.0));
  // What was restored is the snapshot on disk: no rewrite until the model moves.
  EXPECT_FALSE(snapshots->Take({"a"}).value()[0].written);
}

TEST_F(SnapshotsTest, AForgottenModelDoesNotComeBack) {
  AddModel("a");
  std::unique_ptr<Snapshots> snapshots = Open(&registry_);
  ASSERT_TRUE(snapshots->Take({}).ok());
  snapshots->Forget("a");
  EXPECT_FALSE(std::filesystem::exists(FileOf("a")));
  core::ModelRegistry restarted;
  EXPECT_EQ(Open(&restarted)->RestoreAll(), 0);
}

TEST_F(SnapshotsTest, AnUnreadableSnapshotIsSkippedAndKept) {
  AddModel("good");
  ASSERT_TRUE(Open(&registry_)->Take({}).ok());
  test_util::WriteFile(FileOf("broken"), "not a safetensors file");
  core::ModelRegistry restarted;
  EXPECT_EQ(Open(&restarted)->RestoreAll(), 1);
  EXPECT_FALSE(restarted.Get("broken").ok());
  EXPECT_EQ(ReadFile(FileOf("broken")), "not a safetensors file");
}

TEST_F(SnapshotsTest, AFailedWriteKeepsTheSnapshotBefore) {
  std::shared_ptr<core::Model> model = AddModel("a");
  std::unique_ptr<Snapshots> snapshots = Open(&registry_);
  ASSERT_TRUE(snapshots->Take({}).ok());
  const std::string before = ReadFile(FileOf("a"));
  ASSERT_TRUE(model->SetTensor("bias", {}, test_util::Filled(1, 9), {}).ok());
  fs_.FailFromStep(0);
  EXPECT_FALSE(snapshots->Take({}).ok());
  EXPECT_EQ(ReadFile(FileOf("a")), before);
  // The version moved and was not written, so the next snapshot writes it.
  fs_.FailFromStep(-1);
  absl::StatusOr<std::vector<Snapshots::Taken>> taken = snapshots->Take({});
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_TRUE((*taken)[0].written);
}

// Regression: Take held its write lock and called Forget, which took it again (an absl
// self-deadlock abort) when a model was deleted while the snapshot ran.
TEST_F(SnapshotsTest, DeletingAModelWhileItsSnapshotIsWrittenNeitherDeadlocksNorBringsItBack) {
  AddModel("a");
  AddModel("b");
  std::unique_ptr<Snapshots> snapshots;
  std::thread deleter;
  // As DeleteModel does it: remove from the registry, then forget the snapshot, on another
  // thread while the snapshot of "a" is being written.
  HookedFileSystem fs("a", [&] {
    ASSERT_TRUE(registry_.Remove("a", {}).ok());
    deleter = std::thread([&] { snapshots->Forget("a"); });
  });
  snapshots = Snapshots::Open(dir_.string(), &registry_, fs).value();
  auto taking = std::async(std::launch::async, [&] { return snapshots->Take({}); });
  if (taking.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
    ADD_FAILURE() << "Take did not return: deadlocked";
    std::_Exit(1);
  }
  absl::StatusOr<std::vector<Snapshots::Taken>> taken = taking.get();
  ASSERT_TRUE(deleter.joinable());
  deleter.join();
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_FALSE(std::filesystem::exists(FileOf("a")));
  EXPECT_TRUE(std::filesystem::exists(FileOf("b")));
  core::ModelRegistry restarted;
  EXPECT_EQ(Open(&restarted)->RestoreAll(), 1);
  EXPECT_FALSE(restarted.Get("a").ok());
}

// register_buffer('__metadata__', t) is legal in PyTorch; safetensors reserves the name.
TEST_F(SnapshotsTest, ABufferNamedMetadataSurvivesASnapshot) {
  auto model = std::make_shared<core::Model>(
      "odd",
      core::BuildModuleFromText(
          R"({"type": "Holder", "buffers": [{"name": "__metadata__", "shape": [2],
              "init": {"constant": 4.0}}],
              "children": [{"name": "inner", "type": "Holder", "buffers": [
                {"name": "__metadata__", "shape": [1], "init": {"constant": 6.0}}]}]})",
          1)
          .value(),
      Device::Cpu());
  ASSERT_TRUE(registry_.Add(model).ok());
  absl::StatusOr<std::vector<Snapshots::Taken>> taken = Open(&registry_)->Take({});
  ASSERT_TRUE(taken.ok()) << taken.status();
  core::ModelRegistry restarted;
  ASSERT_EQ(Open(&restarted)->RestoreAll(), 1);
  auto values = [](const core::Model& m, const char* key) {
    return m.Read([&](const std::shared_ptr<core::Module>& root, uint64_t) {
      return core::ToDoubles(core::FindTensorSlot(root, key).value()->data()).value();
    });
  };
  std::shared_ptr<core::Model> back = restarted.Get("odd").value();
  EXPECT_THAT(values(*back, "__metadata__"), ElementsAre(4.0, 4.0));
  EXPECT_THAT(values(*back, "inner.__metadata__"), ElementsAre(6.0));
}

TEST_F(SnapshotsTest, OpenRemovesOnlyItsOwnLeftoverTemporaries) {
  std::filesystem::create_directories(dir_ / "models");
  const auto models = dir_ / "models";
  test_util::WriteFile((models / ".a.safetensors.tmp-12-0-345").string(), std::string(100, 'x'));
  test_util::WriteFile((models / ".a.versions.tmp-12-1-345").string(), "7\n");
  test_util::WriteFile((models / ".notes.txt.tmp-1").string(), "theirs");
  test_util::WriteFile((models / "a.safetensors.tmp-1").string(), "not hidden");
  test_util::WriteFile((dir_ / ".b.safetensors.tmp-1-1-1").string(), "another directory");
  Open(&registry_);
  EXPECT_FALSE(std::filesystem::exists(models / ".a.safetensors.tmp-12-0-345"));
  EXPECT_FALSE(std::filesystem::exists(models / ".a.versions.tmp-12-1-345"));
  EXPECT_TRUE(std::filesystem::exists(models / ".notes.txt.tmp-1"));
  EXPECT_TRUE(std::filesystem::exists(models / "a.safetensors.tmp-1"));
  EXPECT_TRUE(std::filesystem::exists(dir_ / ".b.safetensors.tmp-1-1-1"));
}

TEST_F(SnapshotsTest, ASnapshotWithAVersionFrom2To63IsRefusedAndKept) {
  std::filesystem::create_directories(dir_ / "models");
  SaveInput input;
  auto root = core::BuildModuleFromText(kSpec, 3).value();
  input.state_dict = core::GetStateDict(*root);
  input.spec_json = kSpec;
  input.version = uint64_t{1} << 63;
  ASSERT_TRUE(SaveCheckpoint(FileOf("huge"), CheckpointFormat::kSafetensors, input).ok());
  EXPECT_EQ(ReadCheckpoint(FileOf("huge")).status().code(),
            absl::StatusCode::kInvalidArgument);
  input.version = kMaxFileVersion;
  ASSERT_TRUE(SaveCheckpoint(FileOf("large"), CheckpointFormat::kSafetensors, input).ok());
  core::ModelRegistry restarted;
  EXPECT_EQ(Open(&restarted)->RestoreAll(), 1);
  EXPECT_FALSE(restarted.Get("huge").ok());
  EXPECT_TRUE(std::filesystem::exists(FileOf("huge")));
  // The largest file version still leaves room to write.
  std::shared_ptr<core::Model> large = restarted.Get("large").value();
  EXPECT_EQ(large->SetTraining(false, {}).value(), kMaxFileVersion + 1);
}

}  // namespace
}  // namespace paramd::io
