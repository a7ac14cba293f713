#include "server/io/fault_injecting_file_system.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace paramd::io {
namespace {

class FaultInjectingFile : public WritableFile {
 public:
  FaultInjectingFile(FaultInjectingFileSystem& fs, std::unique_ptr<WritableFile> base,
                     std::string path)
      : fs_(fs), base_(std::move(base)), path_(std::move(path)) {}

  absl::Status Append(absl::Span<const uint8_t> bytes) override {
    PARAMD_RETURN_IF_ERROR(fs_.Step("write", path_));
    return base_->Append(bytes);
  }
  absl::Status Sync() override {
    PARAMD_RETURN_IF_ERROR(fs_.Step("fsync", path_));
    return base_->Sync();
  }
  absl::Status Close() override {
    absl::Status injected = fs_.Step("close", path_);
    // The descriptor is released either way, as close(2) does on Linux.
    absl::Status closed = base_->Close();
    return injected.ok() ? closed : injected;
  }
  uint64_t size() const override { return base_->size(); }

 private:
  FaultInjectingFileSystem& fs_;
  std::unique_ptr<WritableFile> base_;
  std::string path_;
};

}  // namespace

absl::Status FaultInjectingFileSystem::Step(const char* what, const std::string& path) {
  const int64_t step = steps_.fetch_add(1);
  const int64_t fail_from = fail_from_.load();
  if (fail_from >= 0 && step >= fail_from) {
    return absl::InternalError(
        absl::StrCat("cannot ", what, " '", path, "': Input/output error (injected at step ",
                     step, ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<WritableFile>> FaultInjectingFileSystem::CreateNew(
    const std::string& path) {
  PARAMD_RETURN_IF_ERROR(Step("create", path));
  PARAMD_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, base_.CreateNew(path));
  return std::make_unique<FaultInjectingFile>(*this, std::move(file), path);
}

absl::StatusOr<std::unique_ptr<WritableFile>> FaultInjectingFileSystem::OpenForAppend(
    const std::string& path, bool truncate) {
  PARAMD_RETURN_IF_ERROR(Step("open", path));
  PARAMD_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, base_.OpenForAppend(path, truncate));
  return std::make_unique<FaultInjectingFile>(*this, std::move(file), path);
}

absl::Status FaultInjectingFileSystem::Rename(const std::string& from, const std::string& to) {
  PARAMD_RETURN_IF_ERROR(Step("rename", from));
  return base_.Rename(from, to);
}

absl::Status FaultInjectingFileSystem::Remove(const std::string& path) {
  return base_.Remove(path);
}

absl::Status FaultInjectingFileSystem::SyncDirectory(const std::string& directory) {
  PARAMD_RETURN_IF_ERROR(Step("fsync directory", directory));
  return base_.SyncDirectory(directory);
}

}  // namespace paramd::io
