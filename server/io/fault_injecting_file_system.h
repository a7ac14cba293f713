// FaultInjectingFileSystem: a FileSystem that passes every call to another one but fails
// the Nth file step (create or open, each append, sync, close, rename, directory sync) with an
// I/O error, as a full or failing disk would. Tests use it to walk a save through every
// possible failure point (leveldb's fault_injection_test is the model).
//
// Ownership: borrows `base`, which must outlive it and the files it creates.
// Thread-safety: the step counter is atomic; meant for one save at a time.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "server/io/file_system.h"

namespace paramd::io {

class FaultInjectingFileSystem : public FileSystem {
 public:
  explicit FaultInjectingFileSystem(FileSystem& base) : base_(base) {}

  // Fails the step with index `step` (0-based, counted from now) and every step after it
  // until the next call; a negative value fails nothing.
  void FailFromStep(int64_t step) {
    steps_ = 0;
    fail_from_ = step;
  }
  // Steps taken since the last FailFromStep, failed ones included.
  int64_t steps() const { return steps_; }
  // Whether any step failed since the last FailFromStep.
  bool injected() const { return fail_from_ >= 0 && steps_ > fail_from_; }

  absl::StatusOr<std::unique_ptr<WritableFile>> CreateNew(const std::string& path) override;
  absl::StatusOr<std::unique_ptr<WritableFile>> OpenForAppend(const std::string& path,
                                                              bool truncate) override;
  absl::Status Rename(const std::string& from, const std::string& to) override;
  // Never fails: removing a temporary file is how a failed save cleans up.
  absl::Status Remove(const std::string& path) override;
  absl::Status SyncDirectory(const std::string& directory) override;

  // Counts one step; the injected error when it is due, OK otherwise.
  absl::Status Step(const char* what, const std::string& path);

 private:
  FileSystem& base_;
  std::atomic<int64_t> steps_{0};
  std::atomic<int64_t> fail_from_{-1};
};

}  // namespace paramd::io
