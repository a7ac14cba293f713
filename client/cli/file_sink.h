// The files paramctl writes tensors into (state-dict --out, get --out): a zip::Sink that
// writes behind on a thread of its own, past the page cache where it can, and a `.part` file
// renamed into place once whole (or, for a device or a FIFO, the file itself written in
// order: Note [Writing over special files] in base/output_path.h).
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
// that a thread of its own writes out, in order with the rewrites.
//
// Note [Write-behind]: a read streamed to a file used to write each chunk before reading the
// next, so while the kernel copied a chunk into the page cache nobody drained the socket;
// the connection's window filled and the daemon stopped sending. Handing the chunk to a
// writer thread lets the receiving thread go back to the socket at once. The copy into a
// warm buffer costs a fraction of the write it takes off the receiving thread, and the
// client holds at most kPieces + 2 buffers more.
//
// Note [Past the page cache]: a piece can go through the page cache (write(2) copies it into
// page-cache pages, the disk gets it later) or past it (O_DIRECT: from the buffer to the
// device). Which is faster depends on the machine. On a development VM that hands free
// memory back to its host, a fresh page-cache page can cost a host fault: buffered writes of
// a new file ran at 0.37-0.5 GB/s (one piece in 10-12 ms, on the CPU that receives) when
// memory had gone cold, while the disk took direct writes of 2 MiB at 1.5-1.7 GB/s and of
// 4 MiB at 1.7-1.8. On a machine with memory to spare and a slow disk it is the other way
// round, until the dirty pages reach the kernel's limit and buffered writes slow to the
// disk's pace. So the writer measures:
// - the first two pieces go one each way;
// - then each piece goes the way that has been faster lately (the page cache must be twice
//   as fast: its time is taken from the receiving thread's CPU, a direct write's is mostly
//   the device's);
// - now and then a piece goes the other way, to see a change: after kProbeEvery pieces
//   times how many times slower that way was, so that probing costs about 1/kProbeEvery.
// Pieces of 2 MiB, not 4: four buffers of them keep paramctl within a few chunks of a bare
// call. A direct write needs whole aligned blocks: pieces start at multiples of kPieceBytes,
// and a short last piece is padded and the file cut back to its size by Close. The few small
// rewrites (a zip entry's CRC) go through the page cache, which reads the block back if it
// went past it. Where direct I/O is refused (tmpfs on older kernels, devices, a write that
// comes back EINVAL), every piece goes through the page cache. The writer then starts the
// disk's writeback every kWritebackBytes, so that the final rename does not wait for all of
// it.
class FileSink final : public zip::Sink {
 public:
  static constexpr size_t kPieceBytes = size_t{2} << 20;
  static constexpr size_t kPieces = 2;
  // What direct I/O needs of buffers, offsets and lengths on every file system paramctl
  // is likely to meet (a device's logical block: 512 or 4096).
  static constexpr size_t kAlignment = 4096;

  static constexpr uint64_t kProbeEvery = 32;

  // kFastest: through the page cache or past it, whichever is faster (Note [Past the page
  // cache]); kPageCache: through it always.
  enum class Writes { kFastest, kPageCache };

  // Creates (or truncates) `path`. A `path` that is not a regular file (a device, a FIFO)
  // is written in order with write(2), and cannot Overwrite.
  static absl::StatusOr<std::unique_ptr<FileSink>> Create(const std::string& path,
                                                          Writes writes = Writes::kFastest);
  // Without Close: what is queued is dropped and the file closed.
  ~FileSink() override;
  FileSink(const FileSink&) = delete;
  FileSink& operator=(const FileSink&) = delete;

  absl::Status Append(absl::Span<const uint8_t> bytes) override;
  uint64_t size() const override { return size_; }
  // FAILED_PRECONDITION when the file is written in order (see Create).
  absl::Status Overwrite(uint64_t offset, absl::Span<const uint8_t> bytes) override;
  // Whether Overwrite can work: the file is a regular one.
  bool can_rewrite() const { return seekable_; }
  // Writes out everything queued and closes the file, reporting the first failed write or
  // what close(2) reports (a late write error).
  absl::Status Close();
  // Bytes appended that went past the page cache; meaningful after Close.
  uint64_t direct_bytes() const { return direct_bytes_; }

 private:
  struct FreeAligned {
    void operator()(uint8_t* bytes) const;
  };
  using Buffer = std::unique_ptr<uint8_t[], FreeAligned>;
  // One write in the queue: `size` bytes of `bytes`, appended, or at `offset` when
  // `rewrite`.
  struct Piece {
    Buffer bytes;
    size_t size = 0;
    bool rewrite = false;
    uint64_t offset = 0;
  };

  FileSink(std::string path, int fd, bool seekable, bool can_direct);
  // `size` bytes (rounded up to kAlignment) aligned to kAlignment; RESOURCE_EXHAUSTED naming
  // the file when out of memory.
  absl::StatusOr<Buffer> NewBuffer(size_t size) const;
  // Waits for room in the queue and adds `piece`; the writer's error if it failed.
  absl::Status Enqueue(Piece piece);
  // A buffer of kPieceBytes: one the writer is done with, else a new one.
  absl::StatusOr<Buffer> TakeBuffer();
  void WriteLoop();
  absl::Status WritePiece(Piece& piece);
  // Whether the next appended piece goes past the page cache.
  bool NextGoesDirect();
  // Sets or clears O_DIRECT on the file.
  absl::Status SetDirect(bool direct);
  // "cannot write PATH" with errno's code and text.
  absl::Status WriteError() const;
  // pwrite(2) of all `size` bytes at `offset`. A direct write refused with EINVAL turns the
  // sink to the page cache for good and is tried again.
  absl::Status WriteAll(const uint8_t* data, size_t size, uint64_t offset);

  static constexpr uint64_t kWritebackBytes = uint64_t{8} << 20;

  const std::string path_;
  int fd_;
  const bool seekable_;  // a regular file: written with pwrite(2); else in order
  uint64_t size_ = 0;
  // The writer thread's until it is joined: whether direct writes are possible and whether
  // O_DIRECT is set now; seconds per byte of recent writes each way (0: none yet); pieces
  // appended, the next to go the other way, and bytes of them written directly; where the file ends
  // on disk (past size_ while the last piece is padded); where writeback was last started.
  bool can_direct_;
  bool direct_ = false;
  double seconds_per_byte_[2] = {0, 0};  // [0] through the page cache, [1] past it
  uint64_t pieces_ = 0;
  uint64_t next_probe_ = 0;  // the piece that goes the other way; 0: not set yet
  uint64_t direct_bytes_ = 0;
  uint64_t file_end_ = 0;
  uint64_t writeback_from_ = 0;
  Piece filling_;  // appends gather here until it is full; it starts at size_ - filling_.size

  absl::Mutex mu_;
  std::deque<Piece> queue_ ABSL_GUARDED_BY(mu_);
  // Buffers the writer is done with. At most kPieces + 2 are ever made: one filling, up to
  // kPieces queued, one being written.
  std::vector<Buffer> spare_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;  // the writer ends once the queue is empty
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  std::thread writer_;
};

// `path` written as `path`.part and renamed into place by Commit, so that nobody sees a
// half-written file under the name; the .part is removed unless committed, also when
// SIGINT, SIGTERM or SIGHUP ends the process (Note [Parts removed on a signal]). A symlink is
// followed and a device or FIFO written straight into (Note [Writing over special files] in
// base/output_path.h).
class PartFile {
 public:
  // INVALID_ARGUMENT, before anything is created, for an empty `path`, one ending in '/'
  // and a directory.
  static absl::StatusOr<std::unique_ptr<PartFile>> Create(const std::string& path);
  ~PartFile();
  PartFile(const PartFile&) = delete;
  PartFile& operator=(const PartFile&) = delete;

  FileSink& sink() { return *file_; }
  // Closes the file and renames it to `path` (or the file its symlinks lead to).
  absl::Status Commit();
  // `status`, its message led by "cannot save 'PATH': " unless it names the path already.
  absl::Status Named(absl::Status status) const;
  // The file written under another name until Commit; empty when written in place.
  const std::string& part_path() const { return part_; }

 private:
  PartFile(std::string path, std::string target, std::string part, std::unique_ptr<FileSink> file)
      : path_(std::move(path)),
        target_(std::move(target)),
        part_(std::move(part)),
        file_(std::move(file)) {}

  std::string path_;    // as given
  std::string target_;  // what Commit renames over
  std::string part_;
  std::unique_ptr<FileSink> file_;
  bool committed_ = false;
  int signal_slot_ = -1;  // in the table of parts removed on a signal
};

}  // namespace paramd::cli
