#include "server/io/upload.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/io/mapped_file.h"

namespace paramd::io {

std::string PartialUpload::PartialPathOf(const std::string& target) {
  const size_t slash = target.find_last_of('/');
  const size_t name = slash == std::string::npos ? 0 : slash + 1;
  return absl::StrCat(target.substr(0, name), ".", target.substr(name), ".upload");
}

std::optional<std::string> PartialUpload::TargetOfPartial(const std::string& partial) {
  constexpr absl::string_view kSuffix = ".upload";
  const size_t slash = partial.find_last_of('/');
  const size_t name = slash == std::string::npos ? 0 : slash + 1;
  const absl::string_view base = absl::string_view(partial).substr(name);
  if (base.size() <= 1 + kSuffix.size() || base.front() != '.' ||
      !absl::EndsWith(base, kSuffix)) {
    return std::nullopt;
  }
  return absl::StrCat(partial.substr(0, name),
                      base.substr(1, base.size() - 1 - kSuffix.size()));
}

uint64_t PartialUpload::KeptBytes(const std::string& target) {
  const absl::StatusOr<FileIdentity> partial = IdentityOf(PartialPathOf(target));
  return partial.ok() ? partial->size : 0;
}

PartialUpload::PartialUpload(FileSystem& fs, std::string target, uint64_t total_size,
                             std::unique_ptr<WritableFile> file, Sha256 hasher)
    : fs_(&fs),
      target_(std::move(target)),
      partial_(PartialPathOf(target_)),
      total_size_(total_size),
      file_(std::move(file)),
      hasher_(std::move(hasher)) {}

absl::StatusOr<PartialUpload> PartialUpload::Open(FileSystem& fs, const std::string& target,
                                                  uint64_t offset, uint64_t total_size) {
  if (offset > total_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("upload offset ", offset, " is past the file's size ", total_size));
  }
  const uint64_t kept = KeptBytes(target);
  if (offset != 0 && offset != kept) {
    return absl::FailedPreconditionError(
        absl::StrCat(kept, " bytes of this upload are kept; resume from offset ", kept,
                     " (or start again at 0)"));
  }
  const std::string partial = PartialPathOf(target);
  Sha256 hasher;
  if (offset != 0) {
    PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> prefix, MappedFile::Open(partial));
    if (prefix->size() != offset) {
      return absl::AbortedError("the kept bytes changed while resuming; ask for the offset again");
    }
    hasher.Update(prefix->bytes());
  }
  PARAMD_ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file,
                          fs.OpenForAppend(partial, /*truncate=*/offset == 0));
  if (file->size() != offset) {
    return absl::AbortedError("the kept bytes changed while resuming; ask for the offset again");
  }
  return PartialUpload(fs, target, total_size, std::move(file), std::move(hasher));
}

absl::Status PartialUpload::Append(absl::string_view piece) {
  if (file_->size() + piece.size() > total_size_) {
    file_->Close().IgnoreError();
    fs_->Remove(partial_).IgnoreError();
    return absl::InvalidArgumentError(absl::StrCat(
        "the upload sent more than the ", total_size_, " bytes its header declared; its bytes "
        "were dropped: upload the file again from offset 0"));
  }
  const auto bytes = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(piece.data()),
                                         piece.size());
  PARAMD_RETURN_IF_ERROR(file_->Append(bytes));
  hasher_.Update(bytes);
  return absl::OkStatus();
}

absl::Status PartialUpload::Keep() {
  absl::Status status = file_->Sync();
  absl::Status closed = file_->Close();
  return status.ok() ? closed : status;
}

void PartialUpload::DropIfEmpty() {
  if (placed_ || file_->size() != 0) return;
  (void)file_->Close();                 // FAILED_PRECONDITION when already closed: nothing to do
  fs_->Remove(partial_).IgnoreError();  // NOT_FOUND when Append dropped it already
}

absl::StatusOr<WrittenFile> PartialUpload::Finish(absl::string_view expected_sha256) {
  if (file_->size() < total_size_) {
    const uint64_t kept = file_->size();
    PARAMD_RETURN_IF_ERROR(Keep());
    return absl::FailedPreconditionError(absl::StrCat(
        "the upload ended after ", kept, " of ", total_size_,
        " bytes; they are kept: resume from offset ", kept));
  }
  PARAMD_RETURN_IF_ERROR(Keep());
  WrittenFile written;
  written.size = total_size_;
  written.sha256 = hasher_.HexDigest();
  if (written.sha256 != expected_sha256) {
    fs_->Remove(partial_).IgnoreError();
    return absl::InvalidArgumentError(absl::StrCat(
        "the uploaded bytes have SHA-256 ", written.sha256, ", not ", expected_sha256,
        "; the upload was discarded: upload the file again from offset 0"));
  }
  PARAMD_ASSIGN_OR_RETURN(written.identity, IdentityOf(partial_));
  PARAMD_RETURN_IF_ERROR(fs_->Rename(partial_, target_));
  placed_ = true;
  PARAMD_RETURN_IF_ERROR(fs_->SyncDirectory(DirectoryOf(target_)));
  return written;
}

}  // namespace paramd::io
