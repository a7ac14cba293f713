// FileSystem: the few file operations a checkpoint save needs, behind an interface so that
// tests can fail each step in turn (see tests/unit/io/atomic_write_test.cc) and prove that a
// failed or interrupted save never harms the file it was replacing.
//
// Ownership: FileSystem::Posix() is a process-wide singleton; WritableFile objects are
// owned by their caller and close (without syncing) when destroyed.
// Thread-safety: Posix() may be used from many threads; one WritableFile from one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/io/mapped_file.h"

namespace paramd::io {

class WritableFile {
 public:
  virtual ~WritableFile() = default;
  // Appends all of `bytes`; a short write is retried, a failure is the POSIX error.
  virtual absl::Status Append(absl::Span<const uint8_t> bytes) = 0;
  // Flushes the file's data to stable storage (fsync).
  virtual absl::Status Sync() = 0;
  // Closes the file; later calls fail. A close error means the data may not be on disk.
  virtual absl::Status Close() = 0;
  // Bytes appended so far.
  virtual uint64_t size() const = 0;

  absl::Status Append(const void* data, size_t size) {
    return Append(absl::MakeConstSpan(static_cast<const uint8_t*>(data), size));
  }
};

// A WritableFile that keeps its bytes in memory, in `data`: for writing a format to a
// buffer (and for tests and fuzzers that round-trip through one).
class StringWritableFile : public WritableFile {
 public:
  absl::Status Append(absl::Span<const uint8_t> bytes) override {
    data.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return absl::OkStatus();
  }
  absl::Status Sync() override { return absl::OkStatus(); }
  absl::Status Close() override { return absl::OkStatus(); }
  uint64_t size() const override { return data.size(); }

  std::string data;
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;
  // Creates `path` for writing, mode 0644; ALREADY_EXISTS when it exists (O_EXCL).
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> CreateNew(const std::string& path) = 0;
  // Opens `path` for appending, creating it (mode 0644) when missing and emptying it when
  // `truncate`; the file's size() starts at what it already holds. For files written
  // across calls, such as a resumable upload.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> OpenForAppend(const std::string& path,
                                                                      bool truncate) = 0;
  // rename(2): replaces `to` atomically.
  virtual absl::Status Rename(const std::string& from, const std::string& to) = 0;
  virtual absl::Status Remove(const std::string& path) = 0;
  // fsync on the directory, so that a rename in it survives a power loss.
  virtual absl::Status SyncDirectory(const std::string& directory) = 0;

  static FileSystem& Posix();
};

// The directory part of `path` ("." when it has none).
std::string DirectoryOf(const std::string& path);

// The temporary names WriteFileAtomically uses for `path` start with this; a daemon can
// remove leftovers (from a process killed mid-save) by it.
std::string TemporaryPrefixFor(const std::string& path);

// What WriteFileAtomically wrote: its size and SHA-256 (hex), computed from the bytes as
// they were written, so that nobody has to read the file again to hash it.
struct WrittenFile {
  // Set by the caller: whether to hash the bytes. SHA-256 runs slower than a fast disk
  // takes writes, so a save that needs no digest is spared it (`sha256` then stays empty).
  bool hash = true;
  uint64_t size = 0;
  std::string sha256;
  // The new file's, taken before the rename, so that it is this file's and not that of a
  // concurrent writer of the same path.
  FileIdentity identity;
};

// Writes `path` so that it is either its old self or completely the new file, whatever
// fails and whenever the process dies: `fill` writes into a new temporary file in the same
// directory, which is then fsynced, closed, renamed over `path`, and the directory fsynced.
// On an error before the rename the temporary file is removed and `path` is untouched; the
// error names the step and the path. An error from the final directory sync is returned
// too (the new file is in place but its name may not yet be durable). When `written` is
// given it receives the new file's size and digest on success.
absl::Status WriteFileAtomically(FileSystem& fs, const std::string& path,
                                 absl::FunctionRef<absl::Status(WritableFile&)> fill,
                                 WrittenFile* written = nullptr);

}  // namespace paramd::io
