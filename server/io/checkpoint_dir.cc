#include "server/io/checkpoint_dir.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <system_error>

#include "base/text.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "server/io/mapped_file.h"

namespace paramd::io {
namespace {

absl::StatusOr<std::string> RealPath(const std::string& path) {
  char resolved[PATH_MAX];
  if (::realpath(path.c_str(), resolved) == nullptr) {
    return ErrnoStatus(errno, absl::StrCat("cannot resolve ", QuoteName(path)));
  }
  return std::string(resolved);
}

}  // namespace

absl::StatusOr<CheckpointDir> CheckpointDir::Open(const std::string& root) {
  if (root.empty()) return absl::InvalidArgumentError("the checkpoint directory is empty");
  std::error_code error;
  std::filesystem::create_directories(root, error);
  if (error) {
    return ErrnoStatus(error.value(),
                       absl::StrCat("cannot create the checkpoint directory ", QuoteName(root)));
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
        absl::StrCat("checkpoint path ", QuoteName(relative), " ", why,
                     "; give a path relative to the checkpoint directory, such as "
                     "'runs/model.safetensors'"));
  };
  if (relative.empty()) return bad("is empty");
  if (relative.front() == '/') return bad("is absolute");
  if (relative.find('\0') != absl::string_view::npos) return bad("contains a NUL byte");
  std::vector<std::string> parts;
  for (absl::string_view part : absl::StrSplit(relative, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    if (part == "..") return bad("contains '..'");
    if (part.front() == '.') return bad("has a hidden name (starting with '.')");
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
    return ErrnoStatus(errno, absl::StrCat("cannot stat ", QuoteName(relative)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint path ", QuoteName(relative), " is not a regular file"));
  }
  return *resolved;
}

absl::StatusOr<std::string> CheckpointDir::ForWrite(absl::string_view relative) const {
  absl::StatusOr<std::vector<std::string>> parts = Components(relative);
  if (!parts.ok()) return parts.status();
  // Walks the parents one by one, so that a symlink leading outside is caught before any
  // directory is created through it.
  std::string directory = root_;
  for (size_t i = 0; i + 1 < parts->size(); ++i) {
    const std::string next = absl::StrCat(directory, "/", (*parts)[i]);
    struct stat st;
    if (::lstat(next.c_str(), &st) != 0) {
      if (errno != ENOENT) return ErrnoStatus(errno, absl::StrCat("cannot stat ", QuoteName(next)));
      if (::mkdir(next.c_str(), 0755) != 0 && errno != EEXIST) {
        return ErrnoStatus(errno, absl::StrCat("cannot create directory ", QuoteName(next)));
      }
    }
    absl::StatusOr<std::string> resolved = RealPath(next);
    if (!resolved.ok()) return resolved.status();
    if (!Inside(*resolved)) {
      return absl::PermissionDeniedError(absl::StrCat(
          "checkpoint path ", QuoteName(relative), " leads outside the checkpoint directory"));
    }
    if (::stat(resolved->c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint path ", QuoteName(relative), ": ", QuoteName((*parts)[i]), " is not a directory"));
    }
    directory = *resolved;
  }
  const std::string path = absl::StrCat(directory, "/", parts->back());
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) {
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint path ", QuoteName(relative), " is a directory; name a file in it"));
    }
    // The save replaces a symlink itself, never its target, but one leading outside is
    // refused anyway: the client's intent cannot be what it would do.
    if (S_ISLNK(st.st_mode)) {
      absl::StatusOr<std::string> resolved = RealPath(path);
      if (!resolved.ok() || !Inside(*resolved)) {
        return absl::PermissionDeniedError(absl::StrCat(
            "checkpoint path ", QuoteName(relative), " leads outside the checkpoint directory"));
      }
    }
  }
  return path;
}

absl::StatusOr<std::vector<CheckpointFileInfo>> CheckpointDir::List() const {
  std::vector<CheckpointFileInfo> files;
  std::error_code error;
  auto it = std::filesystem::recursive_directory_iterator(
      root_, std::filesystem::directory_options::skip_permission_denied, error);
  if (error) {
    return ErrnoStatus(error.value(), absl::StrCat("cannot list ", QuoteName(root_)));
  }
  for (; it != std::filesystem::recursive_directory_iterator(); it.increment(error)) {
    if (error) break;
    const std::string name = it->path().filename().string();
    if (!name.empty() && name.front() == '.') {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    struct stat st;
    if (::stat(it->path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    CheckpointFileInfo info;
    info.path = std::filesystem::relative(it->path(), root_).generic_string();
    info.size = static_cast<uint64_t>(st.st_size);
    info.modified_unix = static_cast<int64_t>(st.st_mtime);
    files.push_back(std::move(info));
  }
  std::sort(files.begin(), files.end(),
            [](const auto& a, const auto& b) { return a.path < b.path; });
  return files;
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
