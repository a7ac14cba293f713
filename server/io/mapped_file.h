// MappedFile: a whole file mapped read-only into memory (mmap PROT_READ, MAP_PRIVATE).
//
// Ownership: held by shared_ptr; the mapping lives until the last reference goes, so a
// tensor that views the mapping keeps its MappedFile alive (see safetensors.h). The bytes
// must never be written: the pages are read-only and writing them faults.
// Thread-safety: immutable after Open; safe to read from many threads (a ScatteredReads
// changes how fast their faults are served, never what they read).
//
// If the file is truncated by another process while mapped, reading past the new end
// raises SIGBUS, as for any mmap; paramd only maps files it owns or was pointed at.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace paramd::io {

// Which file, in which state: a new file renamed over a path has another inode, and a file
// changed in place another mtime or size. ctime is left out because rename(2) changes it.
struct FileIdentity {
  uint64_t device = 0;
  uint64_t inode = 0;
  uint64_t size = 0;
  int64_t mtime_ns = 0;

  bool operator==(const FileIdentity& other) const {
    return device == other.device && inode == other.inode && size == other.size &&
           mtime_ns == other.mtime_ns;
  }
  bool operator!=(const FileIdentity& other) const { return !(*this == other); }
};

// stat(2) of `path`, as ErrnoStatus on failure.
absl::StatusOr<FileIdentity> IdentityOf(const std::string& path);

class MappedFile {
 public:
  // Maps the whole of `path`. NOT_FOUND when it does not exist, PERMISSION_DENIED when it
  // cannot be read, INVALID_ARGUMENT for a directory or anything that is not a regular
  // file. An empty file maps to size() == 0 and data() == nullptr.
  static absl::StatusOr<std::shared_ptr<MappedFile>> Open(const std::string& path);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  absl::Span<const uint8_t> bytes() const { return absl::Span<const uint8_t>(data_, size_); }
  const std::string& path() const { return path_; }
  // The file that was mapped, even if `path` names another one by now.
  const FileIdentity& identity() const { return identity_; }

  // While one lives, a fault on the mapping reads just its own page from the disk, not the
  // read_ahead_kb around it (madvise MADV_RANDOM, back to MADV_NORMAL when it goes), and
  // when it goes, the pages it brought into the page cache leave it again. For reading a
  // few headers spread over a cold file before one pass over the whole; see Note [Headers
  // without read-around]. Hints only: every byte reads the same either way, and a failed
  // madvise, mincore or posix_fadvise changes nothing but the speed (so does dropping a page
  // that another reader of the same file brought in meanwhile: it is read again if needed).
  class ScatteredReads {
   public:
    explicit ScatteredReads(const MappedFile& file);
    ~ScatteredReads();
    ScatteredReads(const ScatteredReads&) = delete;
    ScatteredReads& operator=(const ScatteredReads&) = delete;

   private:
    const MappedFile& file_;
    std::vector<bool> cached_before_;  // per page; empty when mincore failed
  };

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size, FileIdentity identity)
      : path_(std::move(path)), data_(data), size_(size), identity_(identity) {}

  std::string path_;
  const uint8_t* data_;
  size_t size_;
  FileIdentity identity_;
};

// The Status for a failed POSIX call: the code follows `errno_value` (ENOENT: NOT_FOUND,
// EACCES/EPERM: PERMISSION_DENIED, ENOSPC/EDQUOT: RESOURCE_EXHAUSTED, EEXIST:
// ALREADY_EXISTS, EISDIR/ENOTDIR/EINVAL: INVALID_ARGUMENT, otherwise INTERNAL) and the
// message is "`what`: strerror". Shared by the io library's POSIX code.
absl::Status ErrnoStatus(int errno_value, absl::string_view what);

// open(path, flags, mode) then fstat into `st`: the descriptor (the caller closes it), or
// the ErrnoStatus of whichever call failed ("cannot open" / "cannot stat" naming `path`)
// with nothing left open.
absl::StatusOr<int> OpenAndStat(const std::string& path, int flags, mode_t mode,
                                struct stat* st);

}  // namespace paramd::io
