// The files paramctl writes tensors into (state-dict --out, get --out): a zip::Sink that
// writes behind on a thread of its own, and a `.part` file renamed into place once whole.
//
// Errors: file-system failures map errno and name the path. A write that fails on the
// writer thread is reported by the next Append or Overwrite, or by Close.
// Thread-safety: one thread per object (the writer thread is internal).
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "base/zip/zip.h"

namespace paramd::cli {

// A file being written, as a zip::Sink. Appends are copied into a few buffers of kPieceBytes
// that a thread of its own writes out with write(2), in order with the rewrites (pwrite(2)).
//
// Note [Write-behind]: a read streamed to a file used to write each chunk before reading the
// next, so while the kernel copied a chunk into the page cache nobody drained the socket;
// the connection's window filled and the daemon stopped sending. Handing the chunk to a
// writer thread lets the receiving thread go back to the socket at once. The copy into a
// warm buffer costs a fraction of the write(2) it takes off the receiving thread, and the
// client holds at most kPieces buffers more.
class FileSink final : public zip::Sink {
 public:
  static constexpr size_t kPieceBytes = size_t{1} << 20;
  static constexpr size_t kPieces = 4;

  // Creates (or truncates) `path`.
  static absl::StatusOr<std::unique_ptr<FileSink>> Create(const std::string& path);
  // Without Close: what is queued is dropped and the file closed.
  ~FileSink() override;
  FileSink(const FileSink&) = delete;
  FileSink& operator=(const FileSink&) = delete;

  absl::Status Append(absl::Span<const uint8_t> bytes) override;
  uint64_t size() const override { return size_; }
  absl::Status Overwrite(uint64_t offset, absl::Span<const uint8_t> bytes) override;
  // Writes out everything queued and closes the file, reporting the first failed write or
  // what close(2) reports (a late write error).
  absl::Status Close();

 private:
  // One write in the queue: `size` bytes of `bytes`, appended, or at `offset` when
  // `rewrite`.
  struct Piece {
    std::unique_ptr<uint8_t[]> bytes;
    size_t size = 0;
    bool rewrite = false;
    uint64_t offset = 0;
  };

  FileSink(std::string path, int fd);
  // Queues `filling_` when it holds bytes.
  absl::Status Flush();
  // Waits for room in the queue and adds `piece`; the writer's error if it failed.
  absl::Status Enqueue(Piece piece);
  // A buffer of kPieceBytes: one the writer is done with, else a new one.
  std::unique_ptr<uint8_t[]> TakeBuffer();
  void WriteLoop();
  absl::Status WritePiece(const Piece& piece);

  static constexpr uint64_t kWritebackBytes = uint64_t{8} << 20;

  const std::string path_;
  int fd_;
  uint64_t size_ = 0;
  // The writer thread's: bytes appended to the file, and where writeback was last started.
  uint64_t written_ = 0;
  uint64_t writeback_from_ = 0;
  Piece filling_;  // appends gather here until it is full

  absl::Mutex mu_;
  std::deque<Piece> queue_ ABSL_GUARDED_BY(mu_);
  // Buffers the writer is done with. At most kPieces + 2 are ever made: one filling, up to
  // kPieces queued, one being written.
  std::vector<std::unique_ptr<uint8_t[]>> spare_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;  // the writer ends once the queue is empty
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  std::thread writer_;
};

// `path` written as `path`.part and renamed into place by Commit, so that nobody sees a
// half-written file under the name; the .part is removed unless committed.
class PartFile {
 public:
  static absl::StatusOr<std::unique_ptr<PartFile>> Create(const std::string& path);
  ~PartFile();
  PartFile(const PartFile&) = delete;
  PartFile& operator=(const PartFile&) = delete;

  FileSink& sink() { return *file_; }
  // Closes the file and renames it to `path`.
  absl::Status Commit();
  // `status`, its message led by "cannot save 'PATH': " unless it names the path already.
  absl::Status Named(absl::Status status) const;

 private:
  PartFile(std::string path, std::unique_ptr<FileSink> file)
      : path_(std::move(path)), file_(std::move(file)) {}

  std::string path_;
  std::unique_ptr<FileSink> file_;
  bool committed_ = false;
};

}  // namespace paramd::cli
