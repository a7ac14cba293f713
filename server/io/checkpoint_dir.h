// CheckpointDir: the one directory clients' checkpoint paths are confined to
// (--checkpoint-dir). A path from a client is relative to it; absolute paths, `..`,
// hidden names (the daemon's temporary and partial files start with '.') and symlinks
// that lead outside are refused, so a client can never read or replace a file elsewhere.
//
// A path is checked in time linear in its length, before any file operation, against the
// limits of Note [Checkpoint path limits]; nothing here creates anything except Open.
// Errors from the file system name absolute paths; Relative() rewrites them relative to
// the directory, so that answers to clients never show the server's layout.
//
// Thread-safety: immutable after Open; safe from many threads. Another process changing
// the directory between a check and its use is outside the contract (the daemon owns it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace paramd::io {

// Note [Checkpoint path limits]
// A client's path has at most kMaxPathBytes bytes, kMaxPathComponents components and
// kMaxNameBytes bytes per component, so that checking it (and the directories a write
// would walk) stays cheap whatever a client sends, and so that the daemon's hidden names
// beside a file (".NAME.tmp-PID-N-R", ".NAME.upload", up to 44 bytes more) still fit the
// file system's 255-byte names.
inline constexpr size_t kMaxPathBytes = 1024;
inline constexpr size_t kMaxPathComponents = 32;
inline constexpr size_t kMaxNameBytes = 200;

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
  // Where a write of `relative` goes. Creates nothing: the caller creates `missing` right
  // before it writes (and removes what it created when the write fails).
  struct WriteTarget {
    std::string path;  // absolute
    // Every directory between the root and the file, absolute and symlink-free, outermost
    // first; the last `missing.size()` of them do not exist yet.
    std::vector<std::string> parents;
    std::vector<std::string> missing;
  };
  // Errors as ForRead; INVALID_ARGUMENT when it names a directory or a parent is a file.
  absl::StatusOr<WriteTarget> ForWrite(absl::string_view relative) const;

  // What Load and Download can read, sorted by path: regular files below the root, and
  // symlinks to regular files inside it (with their target's size and time). Hidden names,
  // symlinks that lead outside or nowhere, and what is below a symlinked directory are left
  // out: a listing shows nothing a client could not read anyway.
  absl::StatusOr<std::vector<CheckpointFileInfo>> List() const;

  struct HiddenFile {
    std::string path;  // absolute
    int64_t modified_unix_ns = 0;
  };
  // The hidden regular files (the daemon's temporary and partial files) below the root,
  // outside hidden directories and without following symlinks.
  std::vector<HiddenFile> HiddenFiles() const;

  // Bytes free for an unprivileged writer on the directory's file system (statvfs).
  absl::StatusOr<uint64_t> FreeBytes() const;

  // `status` with every absolute path below the root written relative to it (the root
  // itself as '.'), for answers to clients.
  absl::Status Relative(const absl::Status& status) const;

  // Removes the temporary files a process killed mid-save left behind; returns how many.
  int RemoveLeftovers() const;

 private:
  explicit CheckpointDir(std::string root) : root_(std::move(root)) {}
  absl::StatusOr<std::vector<std::string>> Components(absl::string_view relative) const;
  bool Inside(const std::string& resolved) const;

  std::string root_;
};

}  // namespace paramd::io
