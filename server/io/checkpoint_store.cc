#include "server/io/checkpoint_store.h"

#include <sys/stat.h>

#include <cerrno>
#include <filesystem>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/text.h"
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
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Module> root,
                          core::BuildModuleFromText(spec, 0, registry.max_state_dict_keys()));
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

// `result`, its error with paths relative to `directory` (CheckpointDir::Relative).
template <typename T>
absl::StatusOr<T> Relative(const CheckpointDir& directory, absl::StatusOr<T> result) {
  if (result.ok()) return result;
  return directory.Relative(result.status());
}

}  // namespace

absl::StatusOr<CheckpointStore::Saved> CheckpointStore::Save(const SaveRequest& request) {
  return Relative(directory_, SaveFile(request));
}

absl::StatusOr<CheckpointStore::Loaded> CheckpointStore::Load(const LoadRequest& request) {
  return Relative(directory_, LoadFile(request));
}

absl::StatusOr<std::unique_ptr<CheckpointStore::Upload>> CheckpointStore::StartUpload(
    const UploadHeader& header) {
  return Relative(directory_, StartUploadOf(header));
}

absl::StatusOr<CheckpointStore::Download> CheckpointStore::OpenDownload(const std::string& path,
                                                                        uint64_t offset) {
  return Relative(directory_, OpenDownloadOf(path, offset));
}

absl::StatusOr<uint64_t> CheckpointStore::UploadOffset(const std::string& path) const {
  absl::StatusOr<CheckpointDir::WriteTarget> target = directory_.ForWrite(path);
  if (!target.ok()) return directory_.Relative(target.status());
  return PartialUpload::KeptBytes(target->path);
}

absl::StatusOr<CheckpointStore::Saved> CheckpointStore::SaveFile(const SaveRequest& request) {
  const CheckpointFormat format = request.format.value_or(FormatForSave(request.path));
  PARAMD_ASSIGN_OR_RETURN(CheckpointDir::WriteTarget target, directory_.ForWrite(request.path));
  PARAMD_ASSIGN_OR_RETURN(auto model, registry_->Get(request.model));
  std::shared_ptr<core::Optimizer> optimizer;
  if (!request.optimizer.empty()) {
    if (format != CheckpointFormat::kTorch) {
      return absl::InvalidArgumentError(
          "a training checkpoint (model and optimizer) is a PyTorch file, as torch.save "
          "writes it; save it to a .pt path (or with the torch format)");
    }
    PARAMD_ASSIGN_OR_RETURN(optimizer, OptimizerOf(request.optimizer, model));
  }
  MaybeRemoveExpiredUploads();
  SaveInput input;
  // The optimizer's state must go with the pinned version: a step between taking it and
  // pinning the model shows as a change (Describe waits for a step in flight).
  for (int attempt = 1;; ++attempt) {
    const uint64_t changes = optimizer ? optimizer->Describe().changes : 0;
    std::optional<core::OptimizerStateDict> state;
    if (optimizer) state = optimizer->StateDict();
    input = model->Read([&](const std::shared_ptr<core::Module>& root, uint64_t version) {
      SaveInput pinned;
      pinned.state_dict = core::GetStateDict(*root);
      pinned.spec_json = core::ExportSpec(root).dump();
      pinned.version = version;
      return pinned;
    });
    if (!optimizer || optimizer->Describe().changes == changes) {
      input.optimizer = std::move(state);
      break;
    }
    if (attempt == 20) {
      return absl::AbortedError(absl::StrCat("optimizer ", QuoteName(request.optimizer),
                                             " kept stepping while the checkpoint was taken; "
                                             "retry when it pauses"));
    }
  }
  input.keep_vars = request.keep_vars;
  PARAMD_ASSIGN_OR_RETURN(ParentDirs parents, MakeParents(target));
  WrittenFile written;
  written.hash = request.sha256;
  const absl::Status status = SaveCheckpoint(target.path, format, input, *fs_, &written);
  ReleaseParents(parents, /*remove_created=*/!status.ok());
  PARAMD_RETURN_IF_ERROR(status);
  if (written.hash) KeepDigest(target.path, written);
  return Saved{format, input.version, written.size, written.sha256};
}

absl::StatusOr<CheckpointStore::Loaded> CheckpointStore::LoadFile(const LoadRequest& request) {
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
  // The tensors view the file; the plan copies what it installs (load_state_dict.cc,
  // Note [Loaded tensors own their memory]).
  std::error_code size_error;
  const uint64_t size = std::filesystem::file_size(path, size_error);
  core::StateDictInput input;
  for (CheckpointTensor& entry : checkpoint.entries) {
    PARAMD_RETURN_IF_ERROR(CheckTarget(location, entry.location));
    input.entries.emplace_back(std::move(entry.name), std::move(entry.tensor));
  }
  if (checkpoint.module_versions) {
    input.metadata.emplace(checkpoint.module_versions->begin(), checkpoint.module_versions->end());
  }
  if (!request.optimizer.empty()) {
    if (!existing.ok()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "model ", QuoteName(request.model), " does not exist; a training checkpoint loads "
          "into an existing model and its existing optimizer (torch's file does not name "
          "the optimizer's class): create both first"));
    }
    return LoadWithOptimizer(request, *existing, std::move(input), checkpoint,
                             size_error ? 0 : size);
  }
  if (existing.ok()) {
    PARAMD_ASSIGN_OR_RETURN(auto loaded,
                            (*existing)->LoadStateDict(input, request.options, request.if_version));
    return Loaded{checkpoint.format, false, loaded.first, std::move(loaded.second),
                  size_error ? 0 : size};
  }
  if (existing.status().code() != absl::StatusCode::kNotFound) return existing.status();
  absl::StatusOr<Loaded> created = CreateFromCheckpoint(request, checkpoint, input, *registry_);
  if (created.ok()) created->size = size_error ? 0 : size;
  return created;
}

absl::StatusOr<std::shared_ptr<core::Optimizer>> CheckpointStore::OptimizerOf(
    const std::string& name, const std::shared_ptr<core::Model>& model) const {
  if (optimizers_ == nullptr) {
    return absl::FailedPreconditionError("this daemon keeps no optimizers");
  }
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Optimizer> optimizer, optimizers_->Get(name));
  if (optimizer->model() != model) {
    return absl::FailedPreconditionError(absl::StrCat(
        "optimizer ", QuoteName(name), " belongs to model ",
        QuoteName(optimizer->model()->name()), ", not to model ", QuoteName(model->name()),
        " (or to a model of that name since deleted); name an optimizer of this model"));
  }
  return optimizer;
}

absl::StatusOr<CheckpointStore::Loaded> CheckpointStore::LoadWithOptimizer(
    const LoadRequest& request, const std::shared_ptr<core::Model>& model,
    core::StateDictInput input, Checkpoint& checkpoint, uint64_t size) {
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Optimizer> optimizer,
                          OptimizerOf(request.optimizer, model));
  if (!checkpoint.optimizer) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the file holds no optimizer state to load into optimizer ",
        QuoteName(request.optimizer),
        "; a training checkpoint is torch.save({'model': model.state_dict(), 'optimizer': "
        "optimizer.state_dict()}, f)"));
  }
  // Both are checked before either changes: the optimizer's load is prepared (checked and
  // converted), the model's runs (all or nothing), and only then is the optimizer's committed.
  absl::StatusOr<core::Optimizer::PreparedLoad> prepared =
      optimizer->PrepareLoad(*checkpoint.optimizer);
  if (!prepared.ok()) {
    return absl::Status(prepared.status().code(),
                        absl::StrCat("the file's optimizer state does not load into optimizer ",
                                     QuoteName(request.optimizer), ": ",
                                     prepared.status().message()));
  }
  PARAMD_ASSIGN_OR_RETURN(auto loaded,
                          model->LoadStateDict(input, request.options, request.if_version));
  optimizer->CommitLoad(*std::move(prepared));
  return Loaded{checkpoint.format, false, loaded.first, std::move(loaded.second), size};
}

absl::StatusOr<std::vector<CheckpointStore::Listed>> CheckpointStore::List() const {
  absl::StatusOr<std::vector<CheckpointFileInfo>> files = directory_.List();
  if (!files.ok()) return directory_.Relative(files.status());
  std::vector<Listed> listed;
  listed.reserve(files->size());
  for (CheckpointFileInfo& file : *files) {
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
absl::StatusOr<std::unique_ptr<CheckpointStore::Upload>> CheckpointStore::StartUploadOf(
    const UploadHeader& header) {
  PARAMD_ASSIGN_OR_RETURN(CheckpointDir::WriteTarget target, directory_.ForWrite(header.path));
  if (header.sha256.size() != 64) {
    return absl::InvalidArgumentError(
        "the upload header needs the file's SHA-256 as 64 hex digits (sha256sum prints it)");
  }
  if (header.total_size > options_.max_upload_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "upload of ", QuoteName(header.path), ": its total_size of ", header.total_size,
        " bytes is over this daemon's limit of ", options_.max_upload_size,
        " bytes (--max-upload-size); ask its operator to raise the limit, or send a smaller "
        "file"));
  }
  MaybeRemoveExpiredUploads();
  const uint64_t needed =
      header.offset < header.total_size ? header.total_size - header.offset : 0;
  PARAMD_RETURN_IF_ERROR(ClaimUpload(header.path, target.path, needed));
  absl::StatusOr<ParentDirs> parents = MakeParents(target);
  if (!parents.ok()) {
    EndUpload(target.path);
    return parents.status();
  }
  absl::StatusOr<PartialUpload> opened =
      PartialUpload::Open(*fs_, target.path, header.offset, header.total_size);
  if (!opened.ok()) {
    ReleaseParents(*parents, /*remove_created=*/true);
    EndUpload(target.path);
    return absl::Status(opened.status().code(),
                        absl::StrCat("upload of ", QuoteName(header.path), ": ", opened.status().message()));
  }
  return std::unique_ptr<Upload>(new Upload(this, header.path, target.path,
                                            absl::AsciiStrToLower(header.sha256),
                                            *std::move(opened), *std::move(parents)));
}

absl::Status CheckpointStore::ClaimUpload(const std::string& path, const std::string& target,
                                          uint64_t needed) {
  // Asked before taking the lock: statvfs is a system call.
  absl::StatusOr<uint64_t> free = directory_.FreeBytes();
  if (!free.ok()) return free.status();
  absl::MutexLock lock(&uploads_mu_);
  if (uploads_in_flight_.contains(target)) {
    return absl::AbortedError(
        absl::StrCat("", QuoteName(path), " is being uploaded by another call; retry later"));
  }
  uint64_t held = 0;
  for (const auto& [other, bytes] : uploads_in_flight_) held += bytes;
  const uint64_t available = *free > held ? *free - held : 0;
  if (needed > available) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "upload of ", QuoteName(path), ": ", needed, " more bytes do not fit: the checkpoint "
        "directory's file system has ", *free, " bytes free, ", held,
        " of them held for uploads in progress; free space there (remove checkpoints no "
        "longer needed) and retry"));
  }
  uploads_in_flight_.emplace(target, needed);
  return absl::OkStatus();
}

void CheckpointStore::EndUpload(const std::string& target) {
  absl::MutexLock lock(&uploads_mu_);
  uploads_in_flight_.erase(target);
}

CheckpointStore::Upload::~Upload() {
  // Before the path is free for the next upload of it.
  partial_.DropIfEmpty();
  // An upload whose bytes were dropped leaves the directories it made empty: they go too.
  store_->ReleaseParents(parents_, /*remove_created=*/true);
  store_->EndUpload(target_);
}

absl::Status CheckpointStore::Upload::Named(const absl::Status& status) const {
  if (status.ok()) return status;
  return store_->directory_.Relative(
      absl::Status(status.code(), absl::StrCat("upload of ", QuoteName(path_), ": ", status.message())));
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

absl::StatusOr<CheckpointStore::Download> CheckpointStore::OpenDownloadOf(
    const std::string& path, uint64_t offset) {
  PARAMD_ASSIGN_OR_RETURN(std::string absolute, directory_.ForRead(path));
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::Open(absolute));
  if (offset > file->size()) {
    return absl::OutOfRangeError(absl::StrCat("offset ", offset, " is past the end of ",
                                              QuoteName(path), " (", file->size(), " bytes)"));
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

// Note [Directories made by writes]
// A write creates the directories its path needs only once everything else checked out,
// right before it writes, and removes those it created when it fails, so a failed call
// leaves nothing behind. Two writes may need one new directory at once: the one that finds
// it made by the other must not see it vanish because the other failed. So each write pins
// every directory on its path while it runs, and a failing write removes only directories
// nobody else pins (rmdir, which also leaves any directory that is not empty). The pin
// and the removal happen under dirs_mu_; the lock is held for those rmdir calls alone.
absl::StatusOr<CheckpointStore::ParentDirs> CheckpointStore::MakeParents(
    const CheckpointDir::WriteTarget& target) {
  ParentDirs parents;
  parents.pinned = target.parents;
  {
    absl::MutexLock lock(&dirs_mu_);
    for (const std::string& directory : parents.pinned) ++dirs_in_use_[directory];
  }
  for (const std::string& directory : target.missing) {
    if (::mkdir(directory.c_str(), 0755) == 0) {
      parents.created.push_back(directory);
    } else if (errno != EEXIST) {  // made meanwhile by another write: not ours to remove
      const absl::Status status =
          ErrnoStatus(errno, absl::StrCat("cannot create directory ", QuoteName(directory), ""));
      ReleaseParents(parents, /*remove_created=*/true);
      return status;
    }
  }
  return parents;
}

void CheckpointStore::ReleaseParents(const ParentDirs& parents, bool remove_created) {
  absl::MutexLock lock(&dirs_mu_);
  for (const std::string& directory : parents.pinned) {
    auto it = dirs_in_use_.find(directory);
    if (it != dirs_in_use_.end() && --it->second == 0) dirs_in_use_.erase(it);
  }
  if (!remove_created) return;
  for (auto it = parents.created.rbegin(); it != parents.created.rend(); ++it) {
    if (!dirs_in_use_.contains(*it)) ::rmdir(it->c_str());  // fails, harmlessly, when not empty
  }
}

// Note [Expired uploads]
// A client that abandons an upload leaves its partial file behind, holding disk space. Such
// files are removed once untouched (no byte appended) for longer than --upload-expiry:
// when the daemon starts, and lazily when a write (a save or an upload) starts, at most
// once a minute. Lazily, because only writes need the space: an upload sweeps right
// before it checks the free space, so expired partials never count against it; no timer
// thread is needed, an idle daemon does no work, and a client starting many uploads cannot
// make the daemon walk the directory more than once a minute. A partial file of an upload
// in flight is never removed: the sweep claims its target as an upload would.
int CheckpointStore::RemoveExpiredUploads() {
  if (options_.upload_expiry <= absl::ZeroDuration()) return 0;
  const int64_t cutoff = absl::ToUnixNanos(absl::Now() - options_.upload_expiry);
  int removed = 0;
  for (const CheckpointDir::HiddenFile& file : directory_.HiddenFiles()) {
    const std::optional<std::string> target = PartialUpload::TargetOfPartial(file.path);
    if (!target || file.modified_unix_ns >= cutoff) continue;
    {
      absl::MutexLock lock(&uploads_mu_);
      if (!uploads_in_flight_.emplace(*target, 0).second) continue;
    }
    // Asked again now that no upload can be appending to it.
    const absl::StatusOr<FileIdentity> identity = IdentityOf(file.path);
    if (identity.ok() && identity->mtime_ns < cutoff && fs_->Remove(file.path).ok()) ++removed;
    EndUpload(*target);
  }
  return removed;
}

void CheckpointStore::MaybeRemoveExpiredUploads() {
  {
    absl::MutexLock lock(&uploads_mu_);
    const absl::Time now = absl::Now();
    if (now - last_expiry_sweep_ < absl::Minutes(1)) return;
    last_expiry_sweep_ = now;
  }
  RemoveExpiredUploads();
}

}  // namespace paramd::io
