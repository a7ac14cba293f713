#include "server/io/checkpoint_store.h"

#include <sys/stat.h>

#include <algorithm>

#include "base/text.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kernels/backend.h"
#include "base/status_macros.h"
#include "server/core/spec.h"
#include "server/core/spec_export.h"
#include "server/core/traversal.h"
#include "server/io/sha256.h"
#include "server/io/torch_checkpoint.h"

namespace paramd::io {
namespace {

// torch.load's map_location, from the request.
absl::StatusOr<MapLocation> MapLocationOf(const CheckpointStore::LoadRequest& request) {
  if (!request.map_location.empty()) {
    if (!request.location_map.empty()) {
      return absl::InvalidArgumentError(
          "give map_location as one location or as a mapping, not both");
    }
    return MapLocation::To(request.map_location);
  }
  if (!request.location_map.empty()) {
    // Sorted, so that the same request always resolves the same way.
    std::vector<std::pair<std::string, std::string>> mapping = request.location_map;
    std::sort(mapping.begin(), mapping.end());
    return MapLocation::Remap(std::move(mapping));
  }
  return MapLocation();
}

// Where a tensor saved at `saved` goes; a CUDA location on a daemon without that GPU is
// refused as torch.load refuses it.
absl::Status CheckTarget(const MapLocation& location, const std::string& saved) {
  PARAMD_ASSIGN_OR_RETURN(Device device, location.Resolve(saved));
  if (device.is_cuda() && !kernels::GetBackend(device).ok()) {
    return CudaUnavailableForLoadError();
  }
  return absl::OkStatus();
}

// Creates the model `request.model` from `checkpoint` (it does not exist yet).
absl::StatusOr<CheckpointStore::Loaded> CreateFromCheckpoint(
    const CheckpointStore::LoadRequest& request, const Checkpoint& checkpoint,
    const core::StateDictInput& input, core::ModelRegistry& registry) {
  std::string spec = request.spec_json;
  if (spec.empty()) {
    if (!checkpoint.spec_json) {
      return absl::FailedPreconditionError(absl::StrCat(
          "model ", QuoteName(request.model), " does not exist and ", QuoteName(request.path),
          " is a bare state_dict without a model spec; give a spec (paramctl load --spec "
          "FILE) or create the model first"));
    }
    spec = *checkpoint.spec_json;
  }
  PARAMD_ASSIGN_OR_RETURN(Device device,
                          ParseDevice(request.device.empty() ? "cpu" : request.device));
  PARAMD_RETURN_IF_ERROR(kernels::GetBackend(device).status());
  if (device.is_cuda() && device.index < 0) device.index = 0;  // as MoveModel does
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Module> root, core::BuildModuleFromText(spec, 0));
  PARAMD_ASSIGN_OR_RETURN(core::LoadPlan plan,
                          core::PlanLoadStateDict(root, input, request.options));
  // The file's version where the model is the file's own; a new history otherwise.
  const uint64_t version = checkpoint.spec_json && request.spec_json.empty() && checkpoint.version
                               ? *checkpoint.version
                               : 1;
  plan.Commit(version);
  if (!device.is_cpu()) PARAMD_RETURN_IF_ERROR(core::MoveUnpublishedTree(root, device));
  auto model = std::make_shared<core::Model>(request.model, std::move(root), device, version);
  PARAMD_RETURN_IF_ERROR(registry.Add(model));
  CheckpointStore::Loaded loaded;
  loaded.format = checkpoint.format;
  loaded.created = true;
  loaded.version = version;
  loaded.keys = plan.keys();
  return loaded;
}

}  // namespace

absl::StatusOr<CheckpointStore::Saved> CheckpointStore::Save(const SaveRequest& request) {
  const CheckpointFormat format = request.format.value_or(FormatForSave(request.path));
  PARAMD_ASSIGN_OR_RETURN(std::string path, directory_.ForWrite(request.path));
  PARAMD_ASSIGN_OR_RETURN(auto model, registry_->Get(request.model));
  SaveInput input = model->Read([&](const std::shared_ptr<core::Module>& root, uint64_t version) {
    SaveInput pinned;
    pinned.state_dict = core::GetStateDict(*root);
    pinned.spec_json = core::ExportSpec(root).dump();
    pinned.version = version;
    return pinned;
  });
  input.keep_vars = request.keep_vars;
  WrittenFile written;
  PARAMD_RETURN_IF_ERROR(SaveCheckpoint(path, format, input, *fs_, &written));
  KeepDigest(path, written);
  return Saved{format, input.version, written.size, written.sha256};
}

absl::StatusOr<CheckpointStore::Loaded> CheckpointStore::Load(const LoadRequest& request) {
  PARAMD_RETURN_IF_ERROR(core::ValidateModelName(request.model));
  PARAMD_ASSIGN_OR_RETURN(std::string path, directory_.ForRead(request.path));
  absl::StatusOr<std::shared_ptr<core::Model>> existing = registry_->Get(request.model);
  if (existing.ok() && !request.spec_json.empty()) {
    return absl::AlreadyExistsError(absl::StrCat(
        "model ", QuoteName(request.model),
        " exists; a spec is only for creating a model: drop it to load into the model, or "
        "delete the model first"));
  }
  PARAMD_ASSIGN_OR_RETURN(MapLocation location, MapLocationOf(request));
  PARAMD_ASSIGN_OR_RETURN(Checkpoint checkpoint, ReadCheckpoint(path));
  core::StateDictInput input;
  for (CheckpointTensor& entry : checkpoint.entries) {
    PARAMD_RETURN_IF_ERROR(CheckTarget(location, entry.location));
    input.entries.emplace_back(std::move(entry.name), std::move(entry.tensor));
  }
  if (checkpoint.module_versions) {
    input.metadata.emplace(checkpoint.module_versions->begin(), checkpoint.module_versions->end());
  }
  if (existing.ok()) {
    PARAMD_ASSIGN_OR_RETURN(auto loaded,
                            (*existing)->LoadStateDict(input, request.options, request.if_version));
    return Loaded{checkpoint.format, false, loaded.first, std::move(loaded.second)};
  }
  if (existing.status().code() != absl::StatusCode::kNotFound) return existing.status();
  return CreateFromCheckpoint(request, checkpoint, input, *registry_);
}

absl::StatusOr<std::vector<CheckpointStore::Listed>> CheckpointStore::List() const {
  PARAMD_ASSIGN_OR_RETURN(std::vector<CheckpointFileInfo> files, directory_.List());
  std::vector<Listed> listed;
  listed.reserve(files.size());
  for (CheckpointFileInfo& file : files) {
    std::optional<CheckpointFormat> format =
        SniffFileFormat(absl::StrCat(directory_.root(), "/", file.path));
    listed.push_back({std::move(file), format});
  }
  return listed;
}

// Note [Uploads in flight]
// An upload appends to the one hidden partial file of its target across calls, so two
// calls appending to it at once would interleave their bytes. The store keeps the targets
// being uploaded; a second call for one of them is ABORTED ("retry later") instead of
// waiting, since the first may take minutes and its client may resume it elsewhere. The
// Upload object releases its target when destroyed, whatever ended it.
absl::StatusOr<std::unique_ptr<CheckpointStore::Upload>> CheckpointStore::StartUpload(
    const UploadHeader& header) {
  PARAMD_ASSIGN_OR_RETURN(std::string target, directory_.ForWrite(header.path));
  if (header.sha256.size() != 64) {
    return absl::InvalidArgumentError(
        "the upload header needs the file's SHA-256 as 64 hex digits (sha256sum prints it)");
  }
  {
    absl::MutexLock lock(&uploads_mu_);
    if (!uploads_in_flight_.insert(target).second) {
      return absl::AbortedError(
          absl::StrCat(QuoteName(header.path), " is being uploaded by another call; retry later"));
    }
  }
  absl::StatusOr<PartialUpload> opened =
      PartialUpload::Open(*fs_, target, header.offset, header.total_size);
  if (!opened.ok()) {
    EndUpload(target);
    return absl::Status(opened.status().code(),
                        absl::StrCat("upload of ", QuoteName(header.path), ": ", opened.status().message()));
  }
  return std::unique_ptr<Upload>(new Upload(
      this, header.path, target, absl::AsciiStrToLower(header.sha256), *std::move(opened)));
}

absl::StatusOr<uint64_t> CheckpointStore::UploadOffset(const std::string& path) const {
  PARAMD_ASSIGN_OR_RETURN(std::string target, directory_.ForWrite(path));
  return PartialUpload::KeptBytes(target);
}

void CheckpointStore::EndUpload(const std::string& target) {
  absl::MutexLock lock(&uploads_mu_);
  uploads_in_flight_.erase(target);
}

CheckpointStore::Upload::~Upload() { store_->EndUpload(target_); }

absl::Status CheckpointStore::Upload::Named(const absl::Status& status) const {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat("upload of ", QuoteName(path_), ": ", status.message()));
}

absl::Status CheckpointStore::Upload::Append(absl::string_view piece) {
  return Named(partial_.Append(piece));
}

absl::Status CheckpointStore::Upload::BreakOff() {
  const uint64_t kept = partial_.size();
  PARAMD_RETURN_IF_ERROR(Named(partial_.Keep()));
  return absl::CancelledError(absl::StrCat("the upload of ", QuoteName(path_), " broke off after ", kept,
                                           " bytes; they are kept: resume from offset ", kept));
}

absl::StatusOr<WrittenFile> CheckpointStore::Upload::Finish() {
  absl::StatusOr<WrittenFile> written = partial_.Finish(sha256_);
  if (!written.ok()) return Named(written.status());
  store_->KeepDigest(target_, *written);
  return written;
}

absl::StatusOr<CheckpointStore::Download> CheckpointStore::OpenDownload(const std::string& path,
                                                                        uint64_t offset) {
  PARAMD_ASSIGN_OR_RETURN(std::string absolute, directory_.ForRead(path));
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::Open(absolute));
  if (offset > file->size()) {
    return absl::OutOfRangeError(absl::StrCat("offset ", offset, " is past the end of ", QuoteName(path),
                                              " (", file->size(), " bytes)"));
  }
  Download download;
  download.sha256 = DigestOf(*file);
  struct stat st;
  if (::stat(absolute.c_str(), &st) == 0) download.modified_unix = st.st_mtime;
  download.file = std::move(file);
  return download;
}

// Note [Kept digests]
// A kept digest is trusted while the file's identity (device, inode, size, mtime) is the
// one that was hashed: a save or upload renames a new inode into place, and a change in
// place moves mtime. But mtime only advances with the kernel's coarse clock (a few ms), so
// a file rewritten in place within the same tick, at the same size, would look unchanged.
// As git does with "racy" index entries, a digest is therefore trusted only if the file's
// mtime was over a second older than the moment it was hashed; a digest taken sooner (a
// download right after a save) is taken again on the next download, once.
constexpr int64_t kRacyNs = 1'000'000'000;

std::string CheckpointStore::DigestOf(const MappedFile& file) {
  {
    absl::MutexLock lock(&digests_mu_);
    auto it = digests_.find(file.path());
    if (it != digests_.end() && it->second.identity == file.identity() &&
        file.identity().mtime_ns + kRacyNs < it->second.taken_unix_ns) {
      return it->second.sha256;
    }
  }
  WrittenFile hashed;
  hashed.identity = file.identity();
  hashed.sha256 = Sha256Hex(file.bytes());
  KeepDigest(file.path(), hashed);
  return hashed.sha256;
}

void CheckpointStore::KeepDigest(const std::string& path, const WrittenFile& written) {
  absl::MutexLock lock(&digests_mu_);
  // A bound on memory for daemons that see many files: forgetting only costs a rehash.
  if (digests_.size() >= 4096) digests_.clear();
  digests_[path] = {written.identity, written.sha256, absl::GetCurrentTimeNanos()};
}

}  // namespace paramd::io
