// A save or an upload never harms the file it replaces: every file step is failed in turn
// (leveldb's fault_injection_test is the model) and the previous file must still be there,
// byte for byte and readable, with no temporary file left behind; an upload broken off at
// any step resumes to the right file.
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
#include "server/io/sha256.h"
#include "server/io/upload.h"
#include "tests/unit/io/test_util.h"

namespace paramd::io {
namespace {

using ::testing::HasSubstr;
using test_util::Filled;
using test_util::ReadFile;

class AtomicWriteTest : public test_util::ScratchDirTest {
 protected:

  // Saves `next` over a file holding `previous`, failing each step in turn, and checks
  // after each failure that the file on disk is still `previous`, whole and readable.
  // Returns the number of steps a successful save takes.
  int64_t WalkEveryFailure(
      const std::function<absl::Status(const std::string&, FileSystem&)>& save,
      const std::function<void(const std::string&)>& check_readable) {
    const std::string path = PathOf("model.ckpt");
    FaultInjectingFileSystem fs(FileSystem::Posix());
    fs.FailFromStep(-1);
    EXPECT_TRUE(save(path, fs).ok());
    const std::string previous = ReadFile(path);
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
        EXPECT_EQ(ReadFile(path), previous);
      }
      check_readable(path);
      EXPECT_EQ(Listing(), std::vector<std::string>{"model.ckpt"});
    }
    return steps;
  }
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
  EXPECT_EQ(WriteFileAtomically(FileSystem::Posix(), dir_.string() + "/", fill).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Listing().empty());
}

TEST_F(AtomicWriteTest, TemporaryFilesAreHiddenBesideTheTarget) {
  const std::string path = PathOf("m.pt");
  std::string seen;
  ASSERT_TRUE(WriteFileAtomically(FileSystem::Posix(), path, [&](WritableFile& out) {
                for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
                  seen = entry.path().string();
                }
                return out.Append("x", 1);
              }).ok());
  EXPECT_EQ(seen.rfind(TemporaryPrefixFor(path), 0), 0u) << seen;
  EXPECT_EQ(TemporaryPrefixFor(path), PathOf(".m.pt.tmp-"));
  EXPECT_EQ(ReadFile(path), "x");
}

TEST_F(AtomicWriteTest, ReportsTheSizeAndDigestOfWhatItWrote) {
  const std::string path = PathOf("m.safetensors");
  WrittenFile written;
  // A small tensor (hashed in line) and a 2 MiB one (hashed on a second thread).
  ASSERT_TRUE(SaveSafetensors(path, {{"a", Filled(1000, 1.5)}, {"b", Filled(1 << 19, -2.0)}},
                              {}, FileSystem::Posix(), &written)
                  .ok());
  const std::string bytes = ReadFile(path);
  EXPECT_EQ(written.size, bytes.size());
  EXPECT_EQ(written.sha256, Sha256Hex(test_util::AsSpan(bytes)));
  absl::StatusOr<FileIdentity> identity = IdentityOf(path);
  ASSERT_TRUE(identity.ok()) << identity.status();
  EXPECT_EQ(written.identity, *identity);  // the file renamed into place is the one hashed
}

TEST(Sha256Test, HashesInPiecesAsAtOnce) {
  // FIPS 180-2's "abc" vector, fed in two pieces and read between them.
  Sha256 hasher;
  hasher.Update(test_util::AsSpan("a"));
  EXPECT_EQ(hasher.HexDigest(), Sha256Hex(test_util::AsSpan("a")));
  hasher.Update(test_util::AsSpan("bc"));
  EXPECT_EQ(hasher.HexDigest(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

// --- uploads --------------------------------------------------------------------------

class UploadTest : public test_util::ScratchDirTest {
 protected:
  // Uploads `bytes` over `target` in three pieces through `fs`, resuming from what is
  // kept; the status of the first failing step, or the result.
  static absl::StatusOr<WrittenFile> Upload(FileSystem& fs, const std::string& target,
                                            const std::string& bytes) {
    const uint64_t kept = PartialUpload::KeptBytes(target);
    absl::StatusOr<PartialUpload> upload = PartialUpload::Open(fs, target, kept, bytes.size());
    if (!upload.ok()) return upload.status();
    const size_t piece = bytes.size() / 3 + 1;
    for (size_t at = kept; at < bytes.size(); at += piece) {
      if (absl::Status status = upload->Append(absl::string_view(bytes).substr(at, piece));
          !status.ok()) {
        return status;
      }
    }
    return upload->Finish(Sha256Hex(test_util::AsSpan(bytes)));
  }
};

TEST_F(UploadTest, FailingAtAnyStepKeepsTheTargetAndResumesToTheRightFile) {
  const std::string target = PathOf("model.pt");
  const std::string previous(5000, 'p');
  std::string next(7000, '\0');
  for (size_t i = 0; i < next.size(); ++i) next[i] = static_cast<char>(i * 7 + 3);
  FaultInjectingFileSystem fs(FileSystem::Posix());

  test_util::WriteFile(target, previous);
  fs.FailFromStep(-1);
  ASSERT_TRUE(Upload(fs, target, next).ok());
  const int64_t steps = fs.steps();
  EXPECT_GE(steps, 7);  // open, three writes, fsync, close, rename, directory fsync

  for (int64_t step = 0; step < steps; ++step) {
    SCOPED_TRACE(testing::Message() << "failing step " << step << " of " << steps);
    test_util::WriteFile(target, previous);
    fs.FailFromStep(step);
    const absl::StatusOr<WrittenFile> failed = Upload(fs, target, next);
    ASSERT_FALSE(failed.ok());
    EXPECT_THAT(std::string(failed.status().message()), HasSubstr("injected"));
    if (step < steps - 1) {
      EXPECT_EQ(ReadFile(target), previous);
    }
    // Whatever is kept is a prefix of the file, so resuming from it finishes correctly.
    const uint64_t kept = PartialUpload::KeptBytes(target);
    EXPECT_LE(kept, next.size());
    fs.FailFromStep(-1);
    if (step < steps - 1) {
      const absl::StatusOr<WrittenFile> resumed = Upload(fs, target, next);
      ASSERT_TRUE(resumed.ok()) << resumed.status();
      EXPECT_EQ(resumed->sha256, Sha256Hex(test_util::AsSpan(next)));
    }
    EXPECT_EQ(ReadFile(target), next);
    EXPECT_EQ(Listing(), std::vector<std::string>{"model.pt"});
  }
}

TEST_F(UploadTest, ResumesOnlyWhereTheKeptBytesEnd) {
  const std::string target = PathOf("m.bin");
  const std::string bytes = "0123456789";
  absl::StatusOr<PartialUpload> first = PartialUpload::Open(FileSystem::Posix(), target, 0, 10);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(first->Append("0123").ok());
  ASSERT_TRUE(first->Keep().ok());
  EXPECT_EQ(PartialUpload::KeptBytes(target), 4u);

  absl::StatusOr<PartialUpload> wrong = PartialUpload::Open(FileSystem::Posix(), target, 2, 10);
  EXPECT_EQ(wrong.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(wrong.status().message()), HasSubstr("resume from offset 4"));
  EXPECT_EQ(PartialUpload::Open(FileSystem::Posix(), target, 11, 10).status().code(),
            absl::StatusCode::kInvalidArgument);

  absl::StatusOr<PartialUpload> resumed = PartialUpload::Open(FileSystem::Posix(), target, 4, 10);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  ASSERT_TRUE(resumed->Append("456").ok());
  // Ended early: kept for another resume, and nothing renamed.
  absl::StatusOr<WrittenFile> early = resumed->Finish(Sha256Hex(test_util::AsSpan(bytes)));
  EXPECT_EQ(early.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(PartialUpload::KeptBytes(target), 7u);
  EXPECT_FALSE(std::filesystem::exists(target));

  resumed = PartialUpload::Open(FileSystem::Posix(), target, 7, 10);
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  ASSERT_TRUE(resumed->Append("789").ok());
  absl::StatusOr<WrittenFile> done = resumed->Finish(Sha256Hex(test_util::AsSpan(bytes)));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->size, 10u);
  EXPECT_EQ(ReadFile(target), bytes);
  EXPECT_EQ(Listing(), std::vector<std::string>{"m.bin"});
}

TEST_F(UploadTest, AWrongDigestOrTooManyBytesDropsTheUpload) {
  const std::string target = PathOf("m.bin");
  absl::StatusOr<PartialUpload> upload = PartialUpload::Open(FileSystem::Posix(), target, 0, 4);
  ASSERT_TRUE(upload.ok()) << upload.status();
  ASSERT_TRUE(upload->Append("abcd").ok());
  absl::StatusOr<WrittenFile> done = upload->Finish(std::string(64, '0'));
  EXPECT_EQ(done.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(done.status().message()), HasSubstr("upload the file again"));
  EXPECT_TRUE(Listing().empty());

  upload = PartialUpload::Open(FileSystem::Posix(), target, 0, 4);
  ASSERT_TRUE(upload.ok()) << upload.status();
  ASSERT_TRUE(upload->Append("abc").ok());
  const absl::Status too_many = upload->Append("de");
  EXPECT_EQ(too_many.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(too_many.message()), HasSubstr("more than the 4 bytes"));
  EXPECT_TRUE(Listing().empty());
}

}  // namespace
}  // namespace paramd::io
