// A save never harms the file it replaces: every file step of a save is failed in turn
// (leveldb's fault_injection_test is the model) and the previous file must still be there,
// byte for byte and readable, with no temporary file left behind.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "server/core/parameter.h"
#include "server/io/checkpoint.h"
#include "server/io/fault_injecting_file_system.h"
#include "server/io/file_system.h"
#include "server/io/safetensors.h"

namespace paramd::io {
namespace {

using ::testing::HasSubstr;

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

core::Tensor Filled(int64_t n, double value) {
  absl::StatusOr<core::Tensor> tensor = core::Tensor::Full(core::DType::kFloat32, {n}, value);
  EXPECT_TRUE(tensor.ok()) << tensor.status();
  return *tensor;
}

class AtomicWriteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "paramd-atomic-XXXXXX");
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::vector<std::string> Listing() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
      names.push_back(entry.path().filename().string());
    }
    return names;
  }

  // Saves `next` over a file holding `previous`, failing each step in turn, and checks
  // after each failure that the file on disk is still `previous`, whole and readable.
  // Returns the number of steps a successful save takes.
  int64_t WalkEveryFailure(
      const std::function<absl::Status(const std::string&, FileSystem&)>& save,
      const std::function<void(const std::string&)>& check_readable) {
    const std::string path = dir_ + "/model.ckpt";
    FaultInjectingFileSystem fs(FileSystem::Posix());
    fs.FailFromStep(-1);
    EXPECT_TRUE(save(path, fs).ok());
    const std::string previous = Read(path);
    const int64_t steps = fs.steps();
    EXPECT_GE(steps, 5);  // create, write, fsync, close, rename, directory fsync

    for (int64_t step = 0; step < steps; ++step) {
      SCOPED_TRACE(testing::Message() << "failing step " << step << " of " << steps);
      fs.FailFromStep(step);
      const absl::Status status = save(path, fs);
      EXPECT_TRUE(fs.injected());
      EXPECT_FALSE(status.ok());
      EXPECT_THAT(std::string(status.message()), HasSubstr("injected"));
      if (step == steps - 1) {
        // Only the directory sync failed: the new file is in place and whole.
        EXPECT_THAT(std::string(status.message()), HasSubstr("was written but"));
      } else {
        EXPECT_EQ(Read(path), previous);
      }
      check_readable(path);
      EXPECT_EQ(Listing(), std::vector<std::string>{"model.ckpt"});
    }
    return steps;
  }

  std::string dir_;
};

TEST_F(AtomicWriteTest, SafetensorsSaveFailingAtAnyStepKeepsThePreviousFile) {
  int generation = 0;
  auto save = [&generation](const std::string& path, FileSystem& fs) {
    ++generation;
    // Several tensors, so the save takes several write steps.
    return SaveSafetensors(path,
                           {{"a", Filled(1000, generation)}, {"b", Filled(3, -generation)}},
                           {{"generation", std::to_string(generation)}}, fs);
  };
  auto check = [](const std::string& path) {
    absl::StatusOr<SafetensorsFile> file = ReadSafetensors(path);
    ASSERT_TRUE(file.ok()) << file.status();
    ASSERT_EQ(file->entries.size(), 2u);
  };
  EXPECT_GE(WalkEveryFailure(save, check), 7);
}

TEST_F(AtomicWriteTest, TorchSaveFailingAtAnyStepKeepsThePreviousFile) {
  int generation = 0;
  auto save = [&generation](const std::string& path, FileSystem& fs) {
    ++generation;
    SaveInput input;
    const core::Tensor shared = Filled(1000, generation);
    auto slot = std::make_shared<core::Parameter>(shared);
    input.state_dict.entries = {{"a", shared, slot, true},
                                {"tied", shared, slot, true},
                                {"b", Filled(3, -generation), nullptr, false}};
    input.spec_json = "{}";
    input.version = static_cast<uint64_t>(generation);
    return SaveCheckpoint(path, CheckpointFormat::kTorch, input, fs);
  };
  auto check = [](const std::string& path) {
    absl::StatusOr<Checkpoint> file = ReadCheckpoint(path);
    ASSERT_TRUE(file.ok()) << file.status();
    ASSERT_EQ(file->entries.size(), 3u);
  };
  EXPECT_GE(WalkEveryFailure(save, check), 7);
}

TEST_F(AtomicWriteTest, RefusesAPathThatNamesNoFile) {
  auto fill = [](WritableFile&) { return absl::OkStatus(); };
  EXPECT_EQ(WriteFileAtomically(FileSystem::Posix(), dir_ + "/", fill).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Listing().empty());
}

TEST_F(AtomicWriteTest, TemporaryFilesAreHiddenBesideTheTarget) {
  const std::string path = dir_ + "/m.pt";
  std::string seen;
  ASSERT_TRUE(WriteFileAtomically(FileSystem::Posix(), path, [&](WritableFile& out) {
                for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
                  seen = entry.path().string();
                }
                return out.Append("x", 1);
              }).ok());
  EXPECT_EQ(seen.rfind(TemporaryPrefixFor(path), 0), 0u) << seen;
  EXPECT_EQ(TemporaryPrefixFor(path), dir_ + "/.m.pt.tmp-");
  EXPECT_EQ(Read(path), "x");
}

}  // namespace
}  // namespace paramd::io
