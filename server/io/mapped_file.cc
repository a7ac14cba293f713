#include "server/io/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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
// MADV_RANDOM the same headers cost 5-9 ms, and 28 KiB of a test's 24 MiB file were read
// instead of 22 MiB. The whole load gained less than this VM's disk varies between runs:
// the pass after the headers found half the file read already, so little of that I/O was
// wasted, only done one 8 MiB piece at a time with nothing overlapping it.
MappedFile::ScatteredReads::ScatteredReads(const MappedFile& file) : file_(file) {
  if (file_.data_ != nullptr) {
    ::madvise(const_cast<uint8_t*>(file_.data_), file_.size_, MADV_RANDOM);
  }
}

MappedFile::ScatteredReads::~ScatteredReads() {
  if (file_.data_ != nullptr) {
    ::madvise(const_cast<uint8_t*>(file_.data_), file_.size_, MADV_NORMAL);
  }
}

}  // namespace paramd::io
