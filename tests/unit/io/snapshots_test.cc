// Snapshots: one file per model in the data directory, rewritten only when the model's
// version moved, removed with the model, and restored on start with version, values and
// mode; a snapshot that fails to write keeps the one before it.
#include "server/io/snapshots.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>

#include "server/core/spec.h"
#include "server/core/traversal.h"
#include "server/io/fault_injecting_file_system.h"
#include "tests/unit/io/test_util.h"

namespace paramd::io {
namespace {

using test_util::ReadFile;
using ::testing::ElementsAre;

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

}  // namespace
}  // namespace paramd::io
