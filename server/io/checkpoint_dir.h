// CheckpointDir: the one directory clients' checkpoint paths are confined to
// (--checkpoint-dir). A path from a client is relative to it; absolute paths, `..`,
// hidden names (the daemon's temporary and partial files start with '.') and symlinks
// that lead outside are refused, so a client can never read or replace a file elsewhere.
//
// Thread-safety: immutable after Open; safe from many threads. Another process changing
// the directory between a check and its use is outside the contract (the daemon owns it).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace paramd::io {

struct CheckpointFileInfo {
  std::string path;  // relative to the checkpoint directory, '/'-separated
  uint64_t size = 0;
  int64_t modified_unix = 0;
};

class CheckpointDir {
 public:
  // Creates `root` (and its parents) when missing. INVALID_ARGUMENT when it is not a
  // directory; the POSIX error otherwise.
  static absl::StatusOr<CheckpointDir> Open(const std::string& root);

  // The absolute, symlink-free root.
  const std::string& root() const { return root_; }

  // The absolute path of an existing regular file. INVALID_ARGUMENT for a malformed path,
  // PERMISSION_DENIED when it leads outside the directory, NOT_FOUND when it does not exist.
  absl::StatusOr<std::string> ForRead(absl::string_view relative) const;
  // The absolute path to write `relative` at, creating missing parent directories inside
  // the checkpoint directory. Errors as ForRead; INVALID_ARGUMENT when it names a directory.
  absl::StatusOr<std::string> ForWrite(absl::string_view relative) const;

  // Every regular file below the root (hidden ones aside), sorted by path.
  absl::StatusOr<std::vector<CheckpointFileInfo>> List() const;

  // Removes the temporary files a process killed mid-save left behind; returns how many.
  int RemoveLeftovers() const;

 private:
  explicit CheckpointDir(std::string root) : root_(std::move(root)) {}
  absl::StatusOr<std::vector<std::string>> Components(absl::string_view relative) const;
  bool Inside(const std::string& resolved) const;

  std::string root_;
};

}  // namespace paramd::io
