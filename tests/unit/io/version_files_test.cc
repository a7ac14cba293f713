// Version reservations (Note [Version reservation]): a block is durable before any of its
// versions is handed out, a failed reservation fails the write and changes nothing, and a
// model restored after an unclean stop comes back past every version it acknowledged, while
// a clean shutdown keeps its version.
#include "server/io/version_files.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <limits>

#include "server/core/registry.h"
#include "server/core/spec.h"
#include "server/io/fault_injecting_file_system.h"
#include "server/io/snapshots.h"
#include "tests/unit/io/test_util.h"

namespace paramd::io {
namespace {

constexpr char kSpec[] = R"({"type": "Linear", "args": {"in_features": 2, "out_features": 1}})";

class VersionFilesTest : public test_util::ScratchDirTest {
 protected:
  std::shared_ptr<core::Model> NewModel(const std::string& name, uint64_t version = 1) {
    return std::make_shared<core::Model>(name, core::BuildModuleFromText(kSpec, 3).value(),
                                         Device::Cpu(), version);
  }
  std::string Reserved(const std::string& name) {
    return test_util::ReadFile((dir_ / (name + ".versions")).string());
  }

  FaultInjectingFileSystem fs_{FileSystem::Posix()};
};

TEST_F(VersionFilesTest, AWriteReservesABlockBeforeItsVersionIsHandedOut) {
  auto files = std::make_shared<VersionFiles>(dir_.string(), fs_, 4);
  std::shared_ptr<core::Model> model = NewModel("m");
  model->set_version_lease(files);
  fs_.FailFromStep(-1);
  ASSERT_EQ(model->SetTraining(false, {}).value(), 2u);
  EXPECT_EQ(Reserved("m"), "5\n");
  const int64_t steps = fs_.steps();
  EXPECT_GT(steps, 0);
  for (uint64_t expected = 3; expected <= 5; ++expected) {
    ASSERT_EQ(model->SetTraining(expected % 2 == 0, {}).value(), expected);
  }
  EXPECT_EQ(fs_.steps(), steps);  // inside the block: no file written
  ASSERT_EQ(model->SetTraining(true, {}).value(), 6u);
  EXPECT_EQ(Reserved("m"), "9\n");
  EXPECT_EQ(files->ReservedEnd("m").value(), std::optional<uint64_t>(9));
  EXPECT_EQ(files->ReservedEnd("other").value(), std::nullopt);
}

TEST_F(VersionFilesTest, AFailedReservationFailsTheWriteAndChangesNothing) {
  std::shared_ptr<core::Model> model = NewModel("m");
  model->set_version_lease(std::make_shared<VersionFiles>(dir_.string(), fs_, 4));
  for (int64_t step = 0; step < 4; ++step) {
    fs_.FailFromStep(step);
    absl::StatusOr<uint64_t> written = model->SetTraining(false, {});
    if (written.ok()) break;  // past the last step of the reservation
    EXPECT_THAT(std::string(written.status().message()),
                ::testing::HasSubstr("cannot reserve versions for model 'm'"));
    EXPECT_EQ(model->version(), 1u);
    EXPECT_TRUE(model->training());
  }
  fs_.FailFromStep(-1);
  EXPECT_EQ(model->SetTraining(false, {}).value(), 2u);
}

TEST_F(VersionFilesTest, TheLastVersionIsNeverWrappedAround) {
  std::shared_ptr<core::Model> model = NewModel("m", std::numeric_limits<uint64_t>::max());
  absl::StatusOr<uint64_t> written = model->SetTraining(false, {});
  EXPECT_EQ(written.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(model->version(), std::numeric_limits<uint64_t>::max());
  EXPECT_TRUE(model->training());
}

TEST_F(VersionFilesTest, AnUncleanStopRestoresPastEveryAcknowledgedVersionACleanOneKeepsIt) {
  uint64_t acknowledged = 0;
  {
    core::ModelRegistry registry;
    auto snapshots = Snapshots::Open(dir_.string(), &registry, fs_).value();
    std::shared_ptr<core::Model> model = NewModel("m");
    ASSERT_TRUE(registry.Add(model).ok());
    ASSERT_TRUE(snapshots->Take({}).ok());  // holds version 1
    for (int i = 0; i < 5; ++i) acknowledged = model->SetTraining(i % 2 == 0, {}).value();
    // SIGKILL: no final snapshot.
  }
  ASSERT_EQ(acknowledged, 6u);
  uint64_t restored = 0;
  {
    core::ModelRegistry registry;
    auto snapshots = Snapshots::Open(dir_.string(), &registry, fs_).value();
    ASSERT_EQ(snapshots->RestoreAll(), 1);
    std::shared_ptr<core::Model> model = registry.Get("m").value();
    EXPECT_GT(model->version(), acknowledged);
    EXPECT_TRUE(model->training());  // the values of the snapshot
    // Killed again before any write: still past everything acknowledged.
  }
  {
    core::ModelRegistry registry;
    auto snapshots = Snapshots::Open(dir_.string(), &registry, fs_).value();
    ASSERT_EQ(snapshots->RestoreAll(), 1);
    std::shared_ptr<core::Model> model = registry.Get("m").value();
    EXPECT_GT(model->version(), acknowledged);
    restored = model->SetTraining(false, {}).value();
    EXPECT_GT(restored, acknowledged);
    ASSERT_TRUE(snapshots->Shutdown().ok());
    EXPECT_FALSE(std::filesystem::exists(dir_ / "models" / "m.versions"));
  }
  core::ModelRegistry registry;
  auto snapshots = Snapshots::Open(dir_.string(), &registry, fs_).value();
  ASSERT_EQ(snapshots->RestoreAll(), 1);
  EXPECT_EQ(registry.Get("m").value()->version(), restored);
}

TEST_F(VersionFilesTest, AFailedFinalSnapshotKeepsTheReservation) {
  core::ModelRegistry registry;
  auto snapshots = Snapshots::Open(dir_.string(), &registry, fs_).value();
  std::shared_ptr<core::Model> model = NewModel("m");
  ASSERT_TRUE(registry.Add(model).ok());
  ASSERT_TRUE(model->SetTraining(false, {}).ok());
  fs_.FailFromStep(0);
  absl::StatusOr<std::vector<Snapshots::Taken>> final = snapshots->Shutdown();
  ASSERT_FALSE(final.ok());
  EXPECT_THAT(std::string(final.status().message()), ::testing::HasSubstr("(m)"));
  EXPECT_TRUE(std::filesystem::exists(dir_ / "models" / "m.versions"));
}

}  // namespace
}  // namespace paramd::io
