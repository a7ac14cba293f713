// The lock one daemon holds on its data directory for as long as it runs.
//
// Note [One daemon a data directory]: two daemons on one --data-dir would both restore the
// same models, then snapshot over each other's files: each one's writes lost at the other's
// next snapshot, and the version blocks (docs/wire.md, "Versions") handed out twice. The
// first daemon takes an exclusive flock(2) on DATA_DIR/paramd.lock and keeps it; a second
// is refused at start, before it reads a snapshot. The kernel lets go of the lock when the
// process ends however it ends (SIGKILL, OOM), so a crash never leaves a stale lock, and
// the file itself is left in place: removing it could let a third daemon lock a new file
// while the second still holds the old one.
//
// Thread-safety: immutable once acquired.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace paramd::io {

class DataDirLock {
 public:
  static constexpr const char* kFileName = "paramd.lock";

  // Creates `dir` (and its parents) where missing, then locks `dir`/paramd.lock (creating
  // it), writing this process's id into it. FAILED_PRECONDITION naming the directory and
  // the holder's process id (as the holder wrote it) when another process holds it; the
  // errno's code when the directory cannot be made or the file opened.
  static absl::StatusOr<std::unique_ptr<DataDirLock>> Acquire(const std::string& dir);
  ~DataDirLock();
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;

 private:
  explicit DataDirLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace paramd::io
