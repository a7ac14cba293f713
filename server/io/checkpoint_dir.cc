#include "server/io/checkpoint_dir.h"

#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/text.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "server/io/mapped_file.h"

namespace paramd::io {
namespace {

absl::StatusOr<std::string> RealPath(const std::string& path) {
  char resolved[PATH_MAX];
  if (::realpath(path.c_str(), resolved) == nullptr) {
    return ErrnoStatus(errno, absl::StrCat("cannot resolve ", QuoteName(path), ""));
  }
  return std::string(resolved);
}

// A client's path as it may appear in a message: a hostile one can be megabytes long.
std::string Shown(absl::string_view relative) {
  constexpr size_t kShown = 96;
  if (relative.size() <= kShown) return std::string(relative);
  return absl::StrCat(relative.substr(0, kShown), "...");
}

}  // namespace

absl::StatusOr<CheckpointDir> CheckpointDir::Open(const std::string& root) {
  if (root.empty()) return absl::InvalidArgumentError("the checkpoint directory is empty");
  std::error_code error;
  std::filesystem::create_directories(root, error);
  if (error) {
    return ErrnoStatus(error.value(),
                       absl::StrCat("cannot create the checkpoint directory ", QuoteName(root), ""));
  }
  if (!std::filesystem::is_directory(root, error)) {
    return absl::InvalidArgumentError(
        absl::StrCat("the checkpoint directory ", QuoteName(root), " is not a directory"));
  }
  absl::StatusOr<std::string> resolved = RealPath(root);
  if (!resolved.ok()) return resolved.status();
  return CheckpointDir(*resolved);
}

bool CheckpointDir::Inside(const std::string& resolved) const {
  return resolved == root_ || absl::StartsWith(resolved, root_ == "/" ? "/" : root_ + "/");
}

absl::StatusOr<std::vector<std::string>> CheckpointDir::Components(
    absl::string_view relative) const {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint path ", QuoteName(Shown(relative)), " ", why,
                     "; give a path relative to the checkpoint directory, such as "
                     "'runs/model.safetensors'"));
  };
  if (relative.empty()) return bad("is empty");
  // Note [Checkpoint path limits]: checked first, in one pass, before any file operation.
  if (relative.size() > kMaxPathBytes) {
    return bad(absl::StrCat("is ", relative.size(), " bytes long; at most ", kMaxPathBytes,
                            " are allowed"));
  }
  if (relative.front() == '/') return bad("is absolute");
  if (relative.find('\0') != absl::string_view::npos) return bad("contains a NUL byte");
  // As in POSIX, a trailing slash names a directory: "runs/m.pt/" is not the file m.pt.
  if (relative.back() == '/') return bad("ends with '/', which names a directory, not a file");
  std::vector<std::string> parts;
  for (absl::string_view part : absl::StrSplit(relative, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    if (part == "..") return bad("contains '..'");
    if (part.front() == '.') return bad("has a hidden name (starting with '.')");
    if (part.size() > kMaxNameBytes) {
      return bad(absl::StrCat("has a name of ", part.size(), " bytes; at most ", kMaxNameBytes,
                              " are allowed"));
    }
    if (parts.size() == kMaxPathComponents) {
      return bad(absl::StrCat("has more than ", kMaxPathComponents,
                              " components; use at most ", kMaxPathComponents, " levels"));
    }
    parts.emplace_back(part);
  }
  if (parts.empty()) return bad("names no file");
  return parts;
}

absl::StatusOr<std::string> CheckpointDir::ForRead(absl::string_view relative) const {
  absl::StatusOr<std::vector<std::string>> parts = Components(relative);
  if (!parts.ok()) return parts.status();
  const std::string path = absl::StrCat(root_, "/", absl::StrJoin(*parts, "/"));
  absl::StatusOr<std::string> resolved = RealPath(path);
  if (!resolved.ok()) {
    if (resolved.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(absl::StrCat("checkpoint ", QuoteName(relative),
                                              " does not exist; `paramctl checkpoints` lists "
                                              "the files there are"));
    }
    return resolved.status();
  }
  if (!Inside(*resolved)) {
    return absl::PermissionDeniedError(absl::StrCat(
        "checkpoint path ", QuoteName(relative), " leads outside the checkpoint directory"));
  }
  struct stat st;
  if (::stat(resolved->c_str(), &st) != 0) {
    return ErrnoStatus(errno, absl::StrCat("cannot stat ", QuoteName(relative), ""));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint path ", QuoteName(relative), " is not a regular file"));
  }
  return *resolved;
}

absl::StatusOr<CheckpointDir::WriteTarget> CheckpointDir::ForWrite(
    absl::string_view relative) const {
  absl::StatusOr<std::vector<std::string>> parts = Components(relative);
  if (!parts.ok()) return parts.status();
  auto outside = [&] {
    return absl::PermissionDeniedError(absl::StrCat(
        "checkpoint path ", QuoteName(relative), " leads outside the checkpoint directory"));
  };
  // Walks the parents one by one (a symlink leading outside is refused), each from the
  // symlink-free directory before it, so only symlinks need resolving; from the first
  // missing one on, the rest are missing too.
  WriteTarget target;
  std::string directory = root_;
  for (size_t i = 0; i + 1 < parts->size(); ++i) {
    std::string next = absl::StrCat(directory, "/", (*parts)[i]);
    if (target.missing.empty()) {
      struct stat st;
      if (::lstat(next.c_str(), &st) != 0) {
        if (errno != ENOENT) return ErrnoStatus(errno, absl::StrCat("cannot stat ", QuoteName(next), ""));
        target.missing.push_back(next);
      } else {
        if (S_ISLNK(st.st_mode)) {
          absl::StatusOr<std::string> resolved = RealPath(next);
          if (!resolved.ok()) return resolved.status();
          if (!Inside(*resolved)) return outside();
          next = *resolved;
          if (::stat(next.c_str(), &st) != 0) st.st_mode = 0;
        }
        if (!S_ISDIR(st.st_mode)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "checkpoint path ", QuoteName(relative), ": ", QuoteName((*parts)[i]), " is not a directory"));
        }
      }
    } else {
      target.missing.push_back(next);
    }
    target.parents.push_back(next);
    directory = std::move(next);
  }
  target.path = absl::StrCat(directory, "/", parts->back());
  struct stat st;
  if (target.missing.empty() && ::lstat(target.path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint path ", QuoteName(relative), " is a directory; name a file in it"));
    }
    // The save replaces a symlink itself, never its target, but one leading outside is
    // refused anyway: the client's intent cannot be what it would do.
    if (S_ISLNK(st.st_mode)) {
      absl::StatusOr<std::string> resolved = RealPath(target.path);
      if (!resolved.ok() || !Inside(*resolved)) return outside();
    }
  }
  return target;
}

absl::StatusOr<std::vector<CheckpointFileInfo>> CheckpointDir::List() const {
  std::vector<CheckpointFileInfo> files;
  std::vector<std::string> pending = {""};  // directories to read, relative to the root
  while (!pending.empty()) {
    const std::string relative = std::move(pending.back());
    pending.pop_back();
    const std::string absolute = relative.empty() ? root_ : absl::StrCat(root_, "/", relative);
    std::error_code error;
    std::filesystem::directory_iterator it(
        absolute, std::filesystem::directory_options::skip_permission_denied, error);
    if (error) {
      if (relative.empty()) {
        return ErrnoStatus(error.value(), "cannot list the checkpoint directory");
      }
      continue;  // removed meanwhile, or unreadable: nothing a client could load
    }
    for (; it != std::filesystem::directory_iterator(); it.increment(error)) {
      if (error) break;
      const std::string name = it->path().filename().string();
      if (name.empty() || name.front() == '.') continue;
      const std::string path = relative.empty() ? name : absl::StrCat(relative, "/", name);
      const std::string full = it->path().string();
      struct stat st;
      if (::lstat(full.c_str(), &st) != 0) continue;
      if (S_ISDIR(st.st_mode)) {
        pending.push_back(path);
        continue;
      }
      if (S_ISLNK(st.st_mode)) {
        // Never followed out of the directory: listed only when Load could read it.
        absl::StatusOr<std::string> resolved = RealPath(full);
        if (!resolved.ok() || !Inside(*resolved) || ::stat(resolved->c_str(), &st) != 0) continue;
      }
      if (!S_ISREG(st.st_mode)) continue;
      files.push_back({path, static_cast<uint64_t>(st.st_size),
                       static_cast<int64_t>(st.st_mtime)});
    }
  }
  std::sort(files.begin(), files.end(),
            [](const auto& a, const auto& b) { return a.path < b.path; });
  return files;
}

std::vector<CheckpointDir::HiddenFile> CheckpointDir::HiddenFiles() const {
  std::vector<HiddenFile> hidden;
  std::vector<std::string> pending = {root_};
  while (!pending.empty()) {
    const std::string directory = std::move(pending.back());
    pending.pop_back();
    std::error_code error;
    std::filesystem::directory_iterator it(
        directory, std::filesystem::directory_options::skip_permission_denied, error);
    if (error) continue;
    for (; it != std::filesystem::directory_iterator(); it.increment(error)) {
      if (error) break;
      const std::string name = it->path().filename().string();
      struct stat st;
      if (name.empty() || ::lstat(it->path().c_str(), &st) != 0) continue;
      if (name.front() != '.') {
        if (S_ISDIR(st.st_mode)) pending.push_back(it->path().string());
        continue;
      }
      if (S_ISREG(st.st_mode)) {
        hidden.push_back({it->path().string(),
                          static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 +
                              st.st_mtim.tv_nsec});
      }
    }
  }
  return hidden;
}

absl::StatusOr<uint64_t> CheckpointDir::FreeBytes() const {
  struct statvfs fs;
  if (::statvfs(root_.c_str(), &fs) != 0) {
    return ErrnoStatus(errno, "cannot tell the free space of the checkpoint directory");
  }
  return static_cast<uint64_t>(fs.f_bavail) * static_cast<uint64_t>(fs.f_frsize);
}

absl::Status CheckpointDir::Relative(const absl::Status& status) const {
  if (status.ok() || root_ == "/") return status;
  std::string message = absl::StrReplaceAll(status.message(), {{root_ + "/", ""}});
  message = absl::StrReplaceAll(message, {{root_, "."}});
  if (message == status.message()) return status;
  return absl::Status(status.code(), message);
}

int CheckpointDir::RemoveLeftovers() const {
  int removed = 0;
  std::error_code error;
  auto it = std::filesystem::recursive_directory_iterator(
      root_, std::filesystem::directory_options::skip_permission_denied, error);
  if (error) return 0;
  std::vector<std::filesystem::path> doomed;
  for (; it != std::filesystem::recursive_directory_iterator(); it.increment(error)) {
    if (error) break;
    const std::string name = it->path().filename().string();
    if (name.front() == '.' && name.find(".tmp-") != std::string::npos &&
        it->is_regular_file()) {
      doomed.push_back(it->path());
    }
  }
  for (const auto& path : doomed) {
    if (std::filesystem::remove(path, error)) ++removed;
  }
  return removed;
}

}  // namespace paramd::io
