#include "client/cli/file_sink.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace paramd::cli {

// ---------------------------------------------------------------------------------------
// FileSink

absl::StatusOr<std::unique_ptr<FileSink>> FileSink::Create(const std::string& path) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot create '", path, "'"));
  std::unique_ptr<FileSink> sink(new FileSink(path, fd));
  try {
    sink->writer_ = std::thread([raw = sink.get()] { raw->WriteLoop(); });
  } catch (const std::system_error& e) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot start a thread to write '", path, "': ", e.what()));
  }
  return sink;
}

FileSink::FileSink(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}

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

absl::Status FileSink::Append(absl::Span<const uint8_t> bytes) {
  while (!bytes.empty()) {
    if (filling_.bytes == nullptr) filling_.bytes = TakeBuffer();
    const size_t n = std::min(kPieceBytes - filling_.size, bytes.size());
    std::memcpy(filling_.bytes.get() + filling_.size, bytes.data(), n);
    filling_.size += n;
    size_ += n;
    bytes.remove_prefix(n);
    if (filling_.size == kPieceBytes) PARAMD_RETURN_IF_ERROR(Flush());
  }
  return absl::OkStatus();
}

absl::Status FileSink::Overwrite(uint64_t offset, absl::Span<const uint8_t> bytes) {
  if (offset > size_ || bytes.size() > size_ - offset) {
    return absl::InvalidArgumentError(absl::StrCat("cannot rewrite bytes ", offset, " to ",
                                                   offset + bytes.size(), " of '", path_,
                                                   "', which holds ", size_));
  }
  // After what is gathered so far, so that the rewrite lands on the bytes it replaces.
  PARAMD_RETURN_IF_ERROR(Flush());
  Piece piece;
  piece.bytes = std::make_unique<uint8_t[]>(bytes.size());
  std::memcpy(piece.bytes.get(), bytes.data(), bytes.size());
  piece.size = bytes.size();
  piece.rewrite = true;
  piece.offset = offset;
  return Enqueue(std::move(piece));
}

absl::Status FileSink::Close() {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat("'", path_, "' is closed"));
  absl::Status status = Flush();
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
  if (close(fd) != 0 && status.ok()) {
    status = absl::ErrnoToStatus(errno, absl::StrCat("cannot write '", path_, "'"));
  }
  return status;
}

absl::Status FileSink::Flush() {
  if (filling_.size == 0) return absl::OkStatus();
  Piece piece = std::move(filling_);
  filling_ = Piece();
  return Enqueue(std::move(piece));
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

std::unique_ptr<uint8_t[]> FileSink::TakeBuffer() {
  {
    absl::MutexLock lock(&mu_);
    if (!spare_.empty()) {
      std::unique_ptr<uint8_t[]> buffer = std::move(spare_.back());
      spare_.pop_back();
      return buffer;
    }
  }
  return std::make_unique_for_overwrite<uint8_t[]>(kPieceBytes);
}

void FileSink::WriteLoop() {
  for (;;) {
    Piece piece;
    bool failed;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || !queue_.empty();
      };
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

absl::Status FileSink::WritePiece(const Piece& piece) {
  const uint8_t* data = piece.bytes.get();
  size_t left = piece.size;
  uint64_t offset = piece.offset;
  while (left > 0) {
    const ssize_t n = piece.rewrite ? pwrite(fd_, data, left, static_cast<off_t>(offset))
                                    : write(fd_, data, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot write '", path_, "'"));
    }
    data += n;
    left -= static_cast<size_t>(n);
    offset += static_cast<uint64_t>(n);
  }
  if (!piece.rewrite) {
    written_ += piece.size;
    if (written_ - writeback_from_ >= kWritebackBytes) {
      sync_file_range(fd_, static_cast<off_t>(writeback_from_),
                      static_cast<off_t>(written_ - writeback_from_), SYNC_FILE_RANGE_WRITE);
      writeback_from_ = written_;
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// PartFile

absl::StatusOr<std::unique_ptr<PartFile>> PartFile::Create(const std::string& path) {
  PARAMD_ASSIGN_OR_RETURN(std::unique_ptr<FileSink> file, FileSink::Create(path + ".part"));
  return std::unique_ptr<PartFile>(new PartFile(path, std::move(file)));
}

PartFile::~PartFile() {
  if (!committed_) {
    file_.reset();
    std::remove((path_ + ".part").c_str());
  }
}

absl::Status PartFile::Commit() {
  PARAMD_RETURN_IF_ERROR(file_->Close());
  const std::string part = path_ + ".part";
  if (std::rename(part.c_str(), path_.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot rename '", part, "' to '", path_, "'"));
  }
  committed_ = true;
  return absl::OkStatus();
}

absl::Status PartFile::Named(absl::Status status) const {
  if (status.ok() || absl::StrContains(status.message(), path_)) return status;
  return absl::Status(status.code(),
                      absl::StrCat("cannot save '", path_, "': ", status.message()));
}

}  // namespace paramd::cli
