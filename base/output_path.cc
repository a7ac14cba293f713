#include "base/output_path.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace paramd {
namespace {

// Linux's own limit on the links one path lookup follows.
constexpr int kMaxLinks = 40;

}  // namespace

// Names of open descriptors: their links name no file a part could be renamed over (a pipe
// reads "pipe:[N]").
int NamedDescriptor(const std::string& name) {
  if (name == "/dev/stdout") return 1;
  if (name == "/dev/stderr") return 2;
  for (absl::string_view prefix : {"/dev/fd/", "/proc/self/fd/", "/proc/thread-self/fd/"}) {
    int fd = -1;
    if (absl::StartsWith(name, prefix) &&
        absl::SimpleAtoi(absl::string_view(name).substr(prefix.size()), &fd) && fd >= 0) {
      return fd;
    }
  }
  return -1;
}

absl::StatusOr<OutputPath> ResolveOutputPath(const std::string& name) {
  if (name.empty()) {
    return absl::InvalidArgumentError("the output file name is empty; name the file to write");
  }
  if (absl::EndsWith(name, "/")) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", name, "' names a directory (it ends with '/'); name a file in it"));
  }
  if (NamedDescriptor(name) >= 0) return OutputPath{name, /*in_place=*/true};
  std::string at = name;
  for (int links = 0;; ++links) {
    struct stat info;
    if (lstat(at.c_str(), &info) != 0) {
      // Nothing there yet (or it cannot be seen): the write itself says what is wrong.
      return OutputPath{at, /*in_place=*/false};
    }
    if (S_ISDIR(info.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", name, "' is a directory", at == name ? "" : absl::StrCat(" (through '", at, "')"),
          "; name a file in it"));
    }
    if (!S_ISLNK(info.st_mode)) return OutputPath{at, /*in_place=*/!S_ISREG(info.st_mode)};
    if (links == kMaxLinks) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", name, "' is a loop of symbolic links; name a file"));
    }
    std::string target(static_cast<size_t>(info.st_size > 0 ? info.st_size : 4096) + 1, '\0');
    const ssize_t length = readlink(at.c_str(), target.data(), target.size());
    if (length < 0) {
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot read the symbolic link '", at, "'"));
    }
    target.resize(static_cast<size_t>(length));
    if (absl::StartsWith(target, "/")) {
      at = target;
    } else {
      const size_t slash = at.rfind('/');
      at = slash == std::string::npos ? target : absl::StrCat(at.substr(0, slash + 1), target);
    }
  }
}

}  // namespace paramd
