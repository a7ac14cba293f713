#include "server/service/checkpoints_service.h"

#include <sys/stat.h>

#include <algorithm>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "kernels/backend.h"
#include "base/status_macros.h"
#include "server/core/load_state_dict.h"
#include "server/core/spec.h"
#include "server/core/spec_export.h"
#include "server/core/traversal.h"
#include "server/io/checkpoint.h"
#include "server/io/mapped_file.h"
#include "server/io/sha256.h"
#include "server/io/torch_checkpoint.h"
#include "server/io/upload.h"
#include "server/service/status_util.h"
#include "server/service/tensor_codec.h"

namespace paramd::service {
namespace {

v1::CheckpointFormat ToProto(io::CheckpointFormat format) {
  return format == io::CheckpointFormat::kSafetensors ? v1::CHECKPOINT_FORMAT_SAFETENSORS
                                                      : v1::CHECKPOINT_FORMAT_TORCH;
}

absl::StatusOr<io::CheckpointFormat> ChosenFormat(v1::CheckpointFormat format,
                                                  const std::string& path) {
  switch (format) {
    case v1::CHECKPOINT_FORMAT_SAFETENSORS:
      return io::CheckpointFormat::kSafetensors;
    case v1::CHECKPOINT_FORMAT_TORCH:
      return io::CheckpointFormat::kTorch;
    case v1::CHECKPOINT_FORMAT_UNSPECIFIED:
      return io::FormatFromPath(path);
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown checkpoint format ", format));
  }
}

// torch.load's map_location, from the request.
absl::StatusOr<io::MapLocation> MapLocationOf(const v1::LoadRequest& request) {
  if (!request.map_location().empty()) {
    if (!request.location_map().empty()) {
      return absl::InvalidArgumentError(
          "give map_location as one location or as a mapping, not both");
    }
    return io::MapLocation::To(request.map_location());
  }
  if (!request.location_map().empty()) {
    // Sorted, so that the same request always resolves the same way.
    std::vector<std::pair<std::string, std::string>> mapping(request.location_map().begin(),
                                                             request.location_map().end());
    std::sort(mapping.begin(), mapping.end());
    return io::MapLocation::Remap(std::move(mapping));
  }
  return io::MapLocation();
}

// Where a tensor saved at `saved` goes; a CUDA location on a daemon without that GPU is
// refused as torch.load refuses it.
absl::Status CheckTarget(const io::MapLocation& location, const std::string& saved) {
  PARAMD_ASSIGN_OR_RETURN(Device device, location.Resolve(saved));
  if (device.is_cuda() && !kernels::GetBackend(device).ok()) {
    return io::CudaUnavailableForLoadError();
  }
  return absl::OkStatus();
}

}  // namespace

grpc::Status CheckpointsService::Save(grpc::ServerContext*, const v1::SaveRequest* request,
                                      v1::SaveResponse* response) {
  return Logged("save checkpoint", request->model(), Guard([&]() -> absl::Status {
    PARAMD_ASSIGN_OR_RETURN(io::CheckpointFormat format,
                            ChosenFormat(request->format(), request->path()));
    PARAMD_ASSIGN_OR_RETURN(std::string path, directory_->ForWrite(request->path()));
    PARAMD_ASSIGN_OR_RETURN(auto model, registry_->Get(request->model()));
    io::SaveInput input = model->Read([&](const std::shared_ptr<core::Module>& root,
                                          uint64_t version) {
      io::SaveInput pinned;
      pinned.state_dict = core::GetStateDict(*root);
      pinned.spec_json = core::ExportSpec(root).dump();
      pinned.version = version;
      return pinned;
    });
    input.keep_vars = request->keep_vars();
    io::WrittenFile written;
    PARAMD_RETURN_IF_ERROR(
        io::SaveCheckpoint(path, format, input, io::FileSystem::Posix(), &written));
    KeepDigest(path, written);
    response->set_path(request->path());
    response->set_format(ToProto(format));
    response->set_version(input.version);
    response->set_size(written.size);
    response->set_sha256(written.sha256);
    return absl::OkStatus();
  }), /*log_success=*/true);
}

grpc::Status CheckpointsService::Load(grpc::ServerContext*, const v1::LoadRequest* request,
                                      v1::LoadResponse* response) {
  return Logged("load checkpoint", request->model(), Guard([&]() -> absl::Status {
    PARAMD_RETURN_IF_ERROR(core::ValidateModelName(request->model()));
    PARAMD_ASSIGN_OR_RETURN(std::string path, directory_->ForRead(request->path()));
    absl::StatusOr<std::shared_ptr<core::Model>> existing = registry_->Get(request->model());
    if (existing.ok() && !request->spec_json().empty()) {
      return absl::AlreadyExistsError(absl::StrCat(
          "model '", request->model(),
          "' exists; a spec is only for creating a model: drop it to load into the model, or "
          "delete the model first"));
    }
    PARAMD_ASSIGN_OR_RETURN(io::MapLocation location, MapLocationOf(*request));
    PARAMD_ASSIGN_OR_RETURN(io::Checkpoint checkpoint, io::ReadCheckpoint(path));
    core::StateDictInput input;
    for (io::CheckpointTensor& entry : checkpoint.entries) {
      PARAMD_RETURN_IF_ERROR(CheckTarget(location, entry.location));
      input.entries.emplace_back(std::move(entry.name), std::move(entry.tensor));
    }
    if (checkpoint.module_versions) {
      input.metadata.emplace(checkpoint.module_versions->begin(),
                             checkpoint.module_versions->end());
    }
    core::LoadOptions options;
    options.strict = !request->non_strict();
    options.assign = request->assign();
    response->set_format(ToProto(checkpoint.format));

    if (existing.ok()) {
      PARAMD_ASSIGN_OR_RETURN(auto loaded, (*existing)->LoadStateDict(
                                               input, options, IfVersion(request->if_version())));
      response->set_version(loaded.first);
      for (auto& key : loaded.second.missing_keys) response->add_missing_keys(key);
      for (auto& key : loaded.second.unexpected_keys) response->add_unexpected_keys(key);
      return absl::OkStatus();
    }
    if (existing.status().code() != absl::StatusCode::kNotFound) return existing.status();
    std::string spec = request->spec_json();
    if (spec.empty()) {
      if (!checkpoint.spec_json) {
        return absl::FailedPreconditionError(absl::StrCat(
            "model '", request->model(), "' does not exist and '", request->path(),
            "' is a bare state_dict without a model spec; give a spec (paramctl load --spec "
            "FILE) or create the model first"));
      }
      spec = *checkpoint.spec_json;
    }
    PARAMD_ASSIGN_OR_RETURN(Device device,
                            ParseDevice(request->device().empty() ? "cpu" : request->device()));
    PARAMD_RETURN_IF_ERROR(kernels::GetBackend(device).status());
    if (device.is_cuda() && device.index < 0) device.index = 0;  // as MoveModel does
    PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Module> root,
                            core::BuildModuleFromText(spec, 0));
    PARAMD_ASSIGN_OR_RETURN(core::LoadPlan plan, core::PlanLoadStateDict(root, input, options));
    const uint64_t version = checkpoint.spec_json && request->spec_json().empty() &&
                                     checkpoint.version
                                 ? *checkpoint.version
                                 : 1;
    plan.Commit(version);
    if (!device.is_cpu()) PARAMD_RETURN_IF_ERROR(core::MoveUnpublishedTree(root, device));
    auto model = std::make_shared<core::Model>(request->model(), std::move(root), device, version);
    PARAMD_RETURN_IF_ERROR(registry_->Add(model));
    response->set_created(true);
    response->set_version(version);
    for (const auto& key : plan.keys().missing_keys) response->add_missing_keys(key);
    for (const auto& key : plan.keys().unexpected_keys) response->add_unexpected_keys(key);
    return absl::OkStatus();
  }), /*log_success=*/true);
}

grpc::Status CheckpointsService::List(grpc::ServerContext*, const v1::ListCheckpointsRequest*,
                                      v1::ListCheckpointsResponse* response) {
  return Logged("list checkpoints", "", Guard([&]() -> absl::Status {
    PARAMD_ASSIGN_OR_RETURN(std::vector<io::CheckpointFileInfo> files, directory_->List());
    for (const io::CheckpointFileInfo& info : files) {
      v1::CheckpointFile* file = response->add_files();
      file->set_path(info.path);
      file->set_size(info.size);
      file->set_modified_unix(info.modified_unix);
      absl::StatusOr<io::CheckpointFormat> format = io::FormatFromPath(info.path);
      file->set_format(format.ok() ? ToProto(*format) : v1::CHECKPOINT_FORMAT_UNSPECIFIED);
    }
    return absl::OkStatus();
  }));
}

grpc::Status CheckpointsService::Upload(grpc::ServerContext* context,
                                        grpc::ServerReader<v1::UploadRequest>* reader,
                                        v1::UploadResponse* response) {
  std::string path;
  grpc::Status status = Guard([&] { return DoUpload(context, reader, response, path); });
  return Logged("upload checkpoint", path, status, /*log_success=*/true);
}

absl::Status CheckpointsService::DoUpload(grpc::ServerContext* context,
                                          grpc::ServerReader<v1::UploadRequest>* reader,
                                          v1::UploadResponse* response, std::string& path) {
  v1::UploadRequest message;
  if (!reader->Read(&message) || !message.has_header()) {
    return absl::InvalidArgumentError(
        "an upload starts with an UploadHeader (path, offset, total_size, sha256)");
  }
  const v1::UploadHeader header = message.header();
  path = header.path();
  PARAMD_ASSIGN_OR_RETURN(std::string target, directory_->ForWrite(header.path()));
  if (header.sha256().size() != 64) {
    return absl::InvalidArgumentError(
        "the upload header needs the file's SHA-256 as 64 hex digits (sha256sum prints it)");
  }
  {
    absl::MutexLock lock(&uploads_mu_);
    if (!uploads_in_flight_.insert(target).second) {
      return absl::AbortedError(absl::StrCat("'", header.path(),
                                             "' is being uploaded by another call; retry later"));
    }
  }
  absl::Cleanup done = [&] {
    absl::MutexLock lock(&uploads_mu_);
    uploads_in_flight_.erase(target);
  };

  // Every error names the file, which the io layer only knows by its absolute path.
  const auto named = [&](const absl::Status& status) {
    return absl::Status(status.code(),
                        absl::StrCat("upload of '", header.path(), "': ", status.message()));
  };
  absl::StatusOr<io::PartialUpload> opened = io::PartialUpload::Open(
      io::FileSystem::Posix(), target, header.offset(), header.total_size());
  if (!opened.ok()) return named(opened.status());
  io::PartialUpload& upload = *opened;
  while (reader->Read(&message)) {
    if (message.has_header()) {
      return named(absl::InvalidArgumentError("an upload has one header, first"));
    }
    if (absl::Status appended = upload.Append(message.chunk()); !appended.ok()) {
      return named(appended);
    }
  }
  if (context->IsCancelled()) {
    const uint64_t kept = upload.size();
    if (absl::Status kept_status = upload.Keep(); !kept_status.ok()) return named(kept_status);
    return absl::CancelledError(absl::StrCat("the upload of '", header.path(), "' broke off after ",
                                             kept, " bytes; they are kept: resume from offset ",
                                             kept));
  }
  absl::StatusOr<io::WrittenFile> written = upload.Finish(absl::AsciiStrToLower(header.sha256()));
  if (!written.ok()) return named(written.status());
  KeepDigest(target, *written);
  response->set_path(header.path());
  response->set_size(written->size);
  response->set_sha256(written->sha256);
  return absl::OkStatus();
}

grpc::Status CheckpointsService::UploadStatus(grpc::ServerContext*,
                                              const v1::UploadStatusRequest* request,
                                              v1::UploadStatusResponse* response) {
  return Logged("upload status", request->path(), Guard([&]() -> absl::Status {
    PARAMD_ASSIGN_OR_RETURN(std::string target, directory_->ForWrite(request->path()));
    response->set_offset(io::PartialUpload::KeptBytes(target));
    return absl::OkStatus();
  }));
}

grpc::Status CheckpointsService::Download(grpc::ServerContext* context,
                                          const v1::DownloadRequest* request,
                                          grpc::ServerWriter<v1::DownloadResponse>* writer) {
  return Logged("download checkpoint", request->path(), Guard([&]() -> absl::Status {
    PARAMD_ASSIGN_OR_RETURN(std::string path, directory_->ForRead(request->path()));
    // The mapping pins this file even if a save replaces it meanwhile.
    PARAMD_ASSIGN_OR_RETURN(auto file, io::MappedFile::Open(path));
    if (request->offset() > file->size()) {
      return absl::OutOfRangeError(absl::StrCat("offset ", request->offset(), " is past the end of '",
                                                request->path(), "' (", file->size(), " bytes)"));
    }
    struct stat st;
    v1::DownloadResponse message;
    message.mutable_header()->set_size(file->size());
    message.mutable_header()->set_sha256(DigestOf(*file));
    if (::stat(path.c_str(), &st) == 0) message.mutable_header()->set_modified_unix(st.st_mtime);
    if (!writer->Write(message)) return absl::CancelledError("the client went away");
    for (uint64_t at = request->offset(); at < file->size(); at += kChunkBytes) {
      if (context->IsCancelled()) return absl::CancelledError("the client went away");
      const size_t length = std::min<uint64_t>(kChunkBytes, file->size() - at);
      message.set_chunk(reinterpret_cast<const char*>(file->data() + at), length);
      if (!writer->Write(message)) return absl::CancelledError("the client went away");
    }
    return absl::OkStatus();
  }));
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

std::string CheckpointsService::DigestOf(const io::MappedFile& file) {
  {
    absl::MutexLock lock(&digests_mu_);
    auto it = digests_.find(file.path());
    if (it != digests_.end() && it->second.identity == file.identity() &&
        file.identity().mtime_ns + kRacyNs < it->second.taken_unix_ns) {
      return it->second.sha256;
    }
  }
  io::WrittenFile hashed;
  hashed.identity = file.identity();
  hashed.sha256 = io::Sha256Hex(file.bytes());
  KeepDigest(file.path(), hashed);
  return hashed.sha256;
}

void CheckpointsService::KeepDigest(const std::string& path, const io::WrittenFile& written) {
  absl::MutexLock lock(&digests_mu_);
  // A bound on memory for daemons that see many files: forgetting only costs a rehash.
  if (digests_.size() >= 4096) digests_.clear();
  digests_[path] = {written.identity, written.sha256, absl::GetCurrentTimeNanos()};
}

grpc::Status CheckpointsService::Snapshot(grpc::ServerContext*, const v1::SnapshotRequest* request,
                                          v1::SnapshotResponse* response) {
  return Logged("snapshot", "", Guard([&]() -> absl::Status {
    if (snapshots_ == nullptr) {
      return absl::FailedPreconditionError("this daemon keeps no snapshots (no --data-dir)");
    }
    std::vector<std::string> names(request->models().begin(), request->models().end());
    PARAMD_ASSIGN_OR_RETURN(std::vector<Snapshots::Taken> taken, snapshots_->Take(names));
    for (const Snapshots::Taken& entry : taken) {
      v1::ModelSnapshot* snapshot = response->add_snapshots();
      snapshot->set_model(entry.model);
      snapshot->set_version(entry.version);
    }
    return absl::OkStatus();
  }), /*log_success=*/true);
}

}  // namespace paramd::service
