#include "server/io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace paramd::io {

absl::Status ErrnoStatus(int errno_value, absl::string_view what) {
  const std::string message = absl::StrCat(what, ": ", std::strerror(errno_value));
  switch (errno_value) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    case ENOSPC:
    case EDQUOT:
    case ENOMEM:
      return absl::ResourceExhaustedError(message);
    case EEXIST:
      return absl::AlreadyExistsError(message);
    case EISDIR:
    case ENOTDIR:
    case EINVAL:
    case ENAMETOOLONG:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

namespace {

FileIdentity IdentityFrom(const struct stat& st) {
  FileIdentity identity;
  identity.device = static_cast<uint64_t>(st.st_dev);
  identity.inode = static_cast<uint64_t>(st.st_ino);
  identity.size = static_cast<uint64_t>(st.st_size);
  identity.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return identity;
}

}  // namespace

absl::StatusOr<FileIdentity> IdentityOf(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    return ErrnoStatus(errno, absl::StrCat("cannot stat '", path, "'"));
  }
  return IdentityFrom(st);
}

absl::StatusOr<int> OpenAndStat(const std::string& path, int flags, mode_t mode,
                                struct stat* st) {
  const int fd = ::open(path.c_str(), flags, mode);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("cannot open '", path, "'"));
  if (::fstat(fd, st) != 0) {
    const int err = errno;
    ::close(fd);
    return ErrnoStatus(err, absl::StrCat("cannot stat '", path, "'"));
  }
  return fd;
}

absl::StatusOr<std::shared_ptr<MappedFile>> MappedFile::Open(const std::string& path) {
  struct stat st;
  PARAMD_ASSIGN_OR_RETURN(const int fd, OpenAndStat(path, O_RDONLY | O_CLOEXEC, 0, &st));
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "' is a directory; give the path of a file"));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "' is not a regular file and cannot be mapped"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return std::shared_ptr<MappedFile>(new MappedFile(path, nullptr, 0, IdentityFrom(st)));
  }
  void* data = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  const int err = errno;
  ::close(fd);  // the mapping stays valid without the descriptor
  if (data == MAP_FAILED) return ErrnoStatus(err, absl::StrCat("cannot map '", path, "'"));
  return std::shared_ptr<MappedFile>(
      new MappedFile(path, static_cast<const uint8_t*>(data), size, IdentityFrom(st)));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
}

// Note [Headers without read-around]
// A fault on a cold file mapping reads read_ahead_kb (8 MiB on the disks measured) around
// the page it needs. A torch.save zip has a local header before every record, so checking
// the headers of a cold 1 GiB .pt of 64 records read 64 x 8 MiB in synchronous pieces, one
// after another (336-377 ms), before the CRC pass that reads the file in order. Under
// MADV_RANDOM the same headers cost 5-9 ms.
//
// The header pages then stay cached as single pages, and readahead fills a window that
// meets a cached page with single pages too, where it would otherwise use large folios: the
// CRC pass took 8,900 faults instead of 1,000, and in interleaved runs of a C model of the
// pass it was the slowest way in 4 rounds of 4 (0.95-1.43 GB/s against 1.17-2.11). In this
// VM the host's cost of a new guest page rises with the number of pages, shown as user time
// at the faulting instruction. So ScatteredReads lets go of every page it brought in
// (mincore before and after) and the pass reads the whole file in large folios (1,170
// faults); pages that were cached before stay. With both, checkpoint_bench's cold 1 GiB .pt
// load ran at 1.14-1.21 of torch.load(mmap=True), and at 0.88 without them (the same
// benchmark, the same hour).
namespace {

// Calls `each(first_page, pages_resident)` for the mapping [data, data + size) in pieces;
// false when mincore fails.
template <typename Each>
bool ForEachResidency(const uint8_t* data, size_t size, Each each) {
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  constexpr size_t kPiecePages = 64 * 1024;  // 64 KiB of mincore output per call
  std::vector<unsigned char> resident(kPiecePages);
  for (size_t first = 0; first * page < size; first += kPiecePages) {
    const size_t length = std::min(kPiecePages * page, size - first * page);
    if (::mincore(const_cast<uint8_t*>(data) + first * page, length, resident.data()) != 0) {
      return false;
    }
    each(first, absl::MakeConstSpan(resident.data(), (length + page - 1) / page));
  }
  return true;
}

}  // namespace

MappedFile::ScatteredReads::ScatteredReads(const MappedFile& file) : file_(file) {
  if (file_.data_ == nullptr) return;
  ::madvise(const_cast<uint8_t*>(file_.data_), file_.size_, MADV_RANDOM);
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  cached_before_.resize((file_.size_ + page - 1) / page);
  const bool known = ForEachResidency(
      file_.data_, file_.size_, [this](size_t first, absl::Span<const unsigned char> resident) {
        for (size_t i = 0; i < resident.size(); ++i) cached_before_[first + i] = resident[i] & 1;
      });
  if (!known) cached_before_.clear();
}

MappedFile::ScatteredReads::~ScatteredReads() {
  if (file_.data_ == nullptr) return;
  ::madvise(const_cast<uint8_t*>(file_.data_), file_.size_, MADV_NORMAL);
  if (cached_before_.empty()) return;
  // The page cache is dropped through a descriptor of the same file: the path may name
  // another one by now, and then nothing is dropped.
  const int fd = ::open(file_.path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  struct stat st;
  if (::fstat(fd, &st) != 0 || IdentityFrom(st) != file_.identity_) {
    ::close(fd);
    return;
  }
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  // Our own mapping of a page holds it in the cache, so it goes first (MADV_DONTNEED on a
  // private mapping never written reads the file again on the next touch).
  auto drop = [&](size_t first, size_t pages) {
    uint8_t* at = const_cast<uint8_t*>(file_.data_) + first * page;
    ::madvise(at, pages * page, MADV_DONTNEED);
    ::posix_fadvise(fd, static_cast<off_t>(first * page), static_cast<off_t>(pages * page),
                    POSIX_FADV_DONTNEED);
  };
  ForEachResidency(file_.data_, file_.size_,
                   [&](size_t first, absl::Span<const unsigned char> resident) {
                     size_t run = 0;  // pages brought in, ending before page i
                     for (size_t i = 0; i <= resident.size(); ++i) {
                       const bool brought =
                           i < resident.size() && (resident[i] & 1) && !cached_before_[first + i];
                       if (brought) {
                         ++run;
                       } else if (run > 0) {
                         drop(first + i - run, run);
                         run = 0;
                       }
                     }
                   });
  ::close(fd);
}

}  // namespace paramd::io
