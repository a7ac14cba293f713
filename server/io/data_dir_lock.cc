#include "server/io/data_dir_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <string>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace paramd::io {

absl::StatusOr<std::unique_ptr<DataDirLock>> DataDirLock::Acquire(const std::string& dir) {
  std::error_code made;
  std::filesystem::create_directories(dir, made);
  if (made) {
    return absl::Status(absl::ErrnoToStatus(made.value(), "").code(),
                        absl::StrCat("cannot create --data-dir '", dir, "': ", made.message()));
  }
  const std::string path = absl::StrCat(dir, "/", kFileName);
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open '", path, "'"));
  std::unique_ptr<DataDirLock> lock(new DataDirLock(fd));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int lock_errno = errno;
    if (lock_errno != EWOULDBLOCK) {
      return absl::ErrnoToStatus(lock_errno, absl::StrCat("cannot lock '", path, "'"));
    }
    char holder[32] = {};
    const ssize_t got = pread(fd, holder, sizeof(holder) - 1, 0);
    const std::string pid(absl::StripAsciiWhitespace(got > 0 ? holder : ""));
    return absl::FailedPreconditionError(absl::StrCat(
        "--data-dir '", dir, "' is in use by another paramd",
        pid.empty() ? "" : absl::StrCat(" (pid ", pid, ")"),
        ", which holds its lock file ", kFileName,
        "; two daemons on one data directory would overwrite each other's snapshots: stop "
        "that one, or give this one a --data-dir of its own"));
  }
  const std::string pid = absl::StrCat(getpid(), "\n");
  // The id is for the message a second daemon prints; the lock works without it.
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot write '", path, "'"));
  }
  return lock;
}

DataDirLock::~DataDirLock() { close(fd_); }

}  // namespace paramd::io
