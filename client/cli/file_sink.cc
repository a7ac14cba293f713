#include "client/cli/file_sink.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <system_error>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/output_path.h"
#include "base/status_macros.h"

namespace paramd::cli {
namespace {

// Note [Parts removed on a signal]: a .part of get or state-dict --out is never resumed, so
// one left by Ctrl-C or SIGTERM would stay forever. The handler removes the parts still
// registered and dies by the same signal (the exit status still says so). It may run on
// any thread at any moment: the table is fixed arrays, a slot's path written before the
// slot is marked used, and the handler calls only unlink, sigaction and raise.
constexpr int kMaxParts = 4;
char part_paths[kMaxParts][PATH_MAX];
std::atomic<bool> part_used[kMaxParts];

void RemovePartsAndDie(int signal) {
  for (int i = 0; i < kMaxParts; ++i) {
    if (part_used[i].load(std::memory_order_acquire)) unlink(part_paths[i]);
  }
  struct sigaction action {};
  action.sa_handler = SIG_DFL;
  sigemptyset(&action.sa_mask);
  sigaction(signal, &action, nullptr);
  raise(signal);
}

// The slot `path` took, -1 when none was free (the part is then left as before).
int RegisterPart(const std::string& path) {
  static const bool installed = [] {
    struct sigaction action {};
    action.sa_handler = RemovePartsAndDie;
    sigemptyset(&action.sa_mask);
    for (int signal : {SIGINT, SIGTERM, SIGHUP}) sigaction(signal, &action, nullptr);
    return true;
  }();
  (void)installed;
  if (path.size() >= PATH_MAX) return -1;
  for (int i = 0; i < kMaxParts; ++i) {
    if (part_used[i].load(std::memory_order_acquire)) continue;
    std::memcpy(part_paths[i], path.c_str(), path.size() + 1);
    part_used[i].store(true, std::memory_order_release);
    return i;
  }
  return -1;
}

void UnregisterPart(int slot) {
  if (slot >= 0) part_used[slot].store(false, std::memory_order_release);
}

}  // namespace

// ---------------------------------------------------------------------------------------
// FileSink

absl::StatusOr<std::unique_ptr<FileSink>> FileSink::Create(const std::string& path, Writes writes) {
  // /dev/stdout and its kind: the descriptor itself (Note [Writing over special files]),
  // written in order from where it stands, as a shell's redirection expects.
  const int named = NamedDescriptor(path);
  const int fd = named >= 0 ? fcntl(named, F_DUPFD_CLOEXEC, 0)
                            : open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot create '", path, "'"));
  struct stat st {};
  const bool seekable = named < 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  // fcntl refuses O_DIRECT (EINVAL) where the file system cannot do it; that is no error.
  const bool can_direct = writes == Writes::kFastest && seekable &&
                          fcntl(fd, F_SETFL, O_DIRECT) == 0 && fcntl(fd, F_SETFL, 0) == 0;
  std::unique_ptr<FileSink> sink(new FileSink(path, fd, seekable, can_direct));
  try {
    sink->writer_ = std::thread([raw = sink.get()] { raw->WriteLoop(); });
  } catch (const std::system_error& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot start a thread to write '", path, "': ", e.what()));
  }
  return sink;
}

FileSink::FileSink(std::string path, int fd, bool seekable, bool can_direct)
    : path_(std::move(path)), fd_(fd), seekable_(seekable), can_direct_(can_direct) {}

FileSink::~FileSink() {
  if (writer_.joinable()) {
    {
      absl::MutexLock lock(&mu_);
      queue_.clear();
      stop_ = true;
    }
    writer_.join();
  }
  if (fd_ >= 0) close(fd_);
}

void FileSink::FreeAligned::operator()(uint8_t* bytes) const { std::free(bytes); }

absl::StatusOr<FileSink::Buffer> FileSink::NewBuffer(size_t size) const {
  const size_t rounded = (std::max<size_t>(size, 1) + kAlignment - 1) / kAlignment * kAlignment;
  Buffer buffer(static_cast<uint8_t*>(std::aligned_alloc(kAlignment, rounded)));
  if (buffer == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("out of memory writing '", path_, "'"));
  }
  return buffer;
}

absl::Status FileSink::Append(absl::Span<const uint8_t> bytes) {
  while (!bytes.empty()) {
    if (filling_.bytes == nullptr) {
      PARAMD_ASSIGN_OR_RETURN(filling_.bytes, TakeBuffer());
      filling_.offset = size_;
    }
    const size_t n = std::min(kPieceBytes - filling_.size, bytes.size());
    std::memcpy(filling_.bytes.get() + filling_.size, bytes.data(), n);
    filling_.size += n;
    size_ += n;
    bytes.remove_prefix(n);
    if (filling_.size == kPieceBytes) {
      PARAMD_RETURN_IF_ERROR(Enqueue(std::exchange(filling_, Piece())));
    }
  }
  return absl::OkStatus();
}

absl::Status FileSink::Overwrite(uint64_t offset, absl::Span<const uint8_t> bytes) {
  if (!seekable_) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot rewrite bytes of '", path_,
                     "': it is not a regular file, so it can only be written in order"));
  }
  if (offset > size_ || bytes.size() > size_ - offset) {
    return absl::InvalidArgumentError(absl::StrCat("cannot rewrite bytes ", offset, " to ",
                                                   offset + bytes.size(), " of '", path_,
                                                   "', which holds ", size_));
  }
  // Bytes still gathering are patched where they are, so that every piece but the last
  // stays whole (Note [Past the page cache]).
  const uint64_t filling_from = size_ - filling_.size;
  if (offset + bytes.size() > filling_from) {
    const uint64_t at = std::max(offset, filling_from);
    const size_t skip = static_cast<size_t>(at - offset);
    std::memcpy(filling_.bytes.get() + (at - filling_from), bytes.data() + skip,
                bytes.size() - skip);
    bytes = bytes.first(skip);
  }
  if (bytes.empty()) return absl::OkStatus();
  Piece piece;
  PARAMD_ASSIGN_OR_RETURN(piece.bytes, NewBuffer(bytes.size()));
  std::memcpy(piece.bytes.get(), bytes.data(), bytes.size());
  piece.size = bytes.size();
  piece.rewrite = true;
  piece.offset = offset;
  return Enqueue(std::move(piece));
}

absl::Status FileSink::Close() {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat("'", path_, "' is closed"));
  absl::Status status =
      filling_.size > 0 ? Enqueue(std::exchange(filling_, Piece())) : absl::OkStatus();
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  writer_.join();
  {
    absl::MutexLock lock(&mu_);
    if (!error_.ok()) status = error_;
  }
  const int fd = fd_;
  fd_ = -1;
  // The last piece went out padded to whole blocks.
  if (status.ok() && file_end_ > size_ && ftruncate(fd, static_cast<off_t>(size_)) != 0) {
    status = WriteError();
  }
  if (close(fd) != 0 && status.ok()) {
    status = WriteError();
  }
  return status;
}

absl::Status FileSink::Enqueue(Piece piece) {
  absl::MutexLock lock(&mu_);
  auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return queue_.size() < kPieces || !error_.ok();
  };
  mu_.Await(absl::Condition(&room));
  if (!error_.ok()) return error_;
  queue_.push_back(std::move(piece));
  return absl::OkStatus();
}

absl::StatusOr<FileSink::Buffer> FileSink::TakeBuffer() {
  {
    absl::MutexLock lock(&mu_);
    if (!spare_.empty()) {
      Buffer buffer = std::move(spare_.back());
      spare_.pop_back();
      return buffer;
    }
  }
  return NewBuffer(kPieceBytes);
}

void FileSink::WriteLoop() {
  for (;;) {
    Piece piece;
    bool failed;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || !queue_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (queue_.empty()) return;
      piece = std::move(queue_.front());
      queue_.pop_front();
      failed = !error_.ok();
    }
    // After a failed write the rest is dropped: the file is bad whatever follows.
    absl::Status status = failed ? absl::OkStatus() : WritePiece(piece);
    absl::MutexLock lock(&mu_);
    if (!status.ok()) error_ = status;
    if (!piece.rewrite) spare_.push_back(std::move(piece.bytes));
  }
}

absl::Status FileSink::WritePiece(Piece& piece) {
  if (piece.rewrite) {
    // Through the page cache, which reads the block back if it went past it.
    PARAMD_RETURN_IF_ERROR(SetDirect(false));
    return WriteAll(piece.bytes.get(), piece.size, piece.offset);
  }
  const bool direct = NextGoesDirect();
  PARAMD_RETURN_IF_ERROR(SetDirect(direct));
  size_t length = piece.size;
  if (direct && length % kAlignment != 0) {
    // Only the last piece is short; Close cuts the padding off again.
    const size_t padded = (length + kAlignment - 1) / kAlignment * kAlignment;
    std::memset(piece.bytes.get() + length, 0, padded - length);
    length = padded;
  }
  const auto start = std::chrono::steady_clock::now();
  PARAMD_RETURN_IF_ERROR(WriteAll(piece.bytes.get(), length, piece.offset));
  const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
  // WriteAll may have turned the sink to the page cache: what counts is how it went.
  double& recent = seconds_per_byte_[direct_ ? 1 : 0];
  const double now = took.count() / static_cast<double>(length);
  recent = recent == 0 ? now : (recent + now) / 2;
  if (direct_) direct_bytes_ += piece.size;
  ++pieces_;
  file_end_ = std::max(file_end_, piece.offset + length);
  if (seekable_ && !direct_ && file_end_ - writeback_from_ >= kWritebackBytes) {
    sync_file_range(fd_, static_cast<off_t>(writeback_from_),
                    static_cast<off_t>(file_end_ - writeback_from_), SYNC_FILE_RANGE_WRITE);
    writeback_from_ = file_end_;
  }
  return absl::OkStatus();
}

bool FileSink::NextGoesDirect() {
  if (!can_direct_) return false;
  if (pieces_ < 2) return pieces_ == 0;
  const double direct = seconds_per_byte_[1];
  const double cached = seconds_per_byte_[0];
  const bool direct_better = direct < 2 * cached;
  const bool probe = next_probe_ != 0 && pieces_ >= next_probe_;
  if (next_probe_ == 0 || probe) {
    const double behind = std::max(direct, cached) / std::max(std::min(direct, cached), 1e-12);
    next_probe_ = pieces_ + static_cast<uint64_t>(kProbeEvery * std::min(std::ceil(behind), 1e6));
  }
  return probe ? !direct_better : direct_better;
}

absl::Status FileSink::SetDirect(bool direct) {
  if (direct == direct_) return absl::OkStatus();
  if (fcntl(fd_, F_SETFL, direct ? O_DIRECT : 0) != 0) return WriteError();
  direct_ = direct;
  return absl::OkStatus();
}

absl::Status FileSink::WriteError() const {
  return absl::ErrnoToStatus(errno, absl::StrCat("cannot write '", path_, "'"));
}

absl::Status FileSink::WriteAll(const uint8_t* data, size_t size, uint64_t offset) {
  while (size > 0) {
    // A device or FIFO takes its bytes in order, where pwrite(2) may be refused (ESPIPE).
    const ssize_t n =
        seekable_ ? pwrite(fd_, data, size, static_cast<off_t>(offset)) : write(fd_, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EINVAL && direct_ && SetDirect(false).ok()) {
        can_direct_ = false;  // the file system took O_DIRECT but not these blocks
        continue;
      }
      return WriteError();
    }
    data += n;
    size -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// PartFile

absl::StatusOr<std::unique_ptr<PartFile>> PartFile::Create(const std::string& path) {
  PARAMD_ASSIGN_OR_RETURN(const OutputPath out, ResolveOutputPath(path));
  const std::string part = out.in_place ? "" : out.path + ".part";
  // Registered before it exists, so that no signal finds it unregistered.
  const int slot = part.empty() ? -1 : RegisterPart(part);
  absl::StatusOr<std::unique_ptr<FileSink>> file = FileSink::Create(out.in_place ? out.path : part);
  if (!file.ok()) {
    UnregisterPart(slot);
    return file.status();
  }
  std::unique_ptr<PartFile> created(new PartFile(path, out.path, part, *std::move(file)));
  created->signal_slot_ = slot;
  return created;
}

PartFile::~PartFile() {
  UnregisterPart(signal_slot_);
  if (!committed_) {
    file_.reset();
    if (!part_.empty()) std::remove(part_.c_str());
  }
}

absl::Status PartFile::Commit() {
  PARAMD_RETURN_IF_ERROR(file_->Close());
  // Unregistered only once renamed, so that a signal before the rename still removes the
  // part; after it, unlinking the part's name finds nothing.
  absl::Cleanup unregister = [this] { UnregisterPart(std::exchange(signal_slot_, -1)); };
  if (!part_.empty() && std::rename(part_.c_str(), target_.c_str()) != 0) {
    return absl::ErrnoToStatus(errno,
                               absl::StrCat("cannot rename '", part_, "' to '", target_, "'"));
  }
  committed_ = true;
  return absl::OkStatus();
}

absl::Status PartFile::Named(absl::Status status) const {
  if (status.ok() || absl::StrContains(status.message(), path_)) return status;
  return absl::Status(status.code(), absl::StrCat("cannot save '", path_, "': ", status.message()));
}

}  // namespace paramd::cli
