#include "server/service/checkpoints_service.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "server/common/status_macros.h"
#include "server/core/load_state_dict.h"
#include "server/core/spec.h"
#include "server/core/spec_export.h"
#include "server/core/traversal.h"
#include "server/io/checkpoint.h"
#include "server/io/mapped_file.h"
#include "server/io/sha256.h"
#include "server/io/torch_checkpoint.h"
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
  PARAMD_ASSIGN_OR_RETURN(core::Device device, location.Resolve(saved));
  if (device.is_cuda() && !kernels::GetBackend(device).ok()) {
    return io::CudaUnavailableForLoadError();
  }
  return absl::OkStatus();
}

// The hidden file an unfinished upload of `path` (absolute) is kept in.
std::string PartialPathOf(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return absl::StrCat(path.substr(0, slash + 1), ".", path.substr(slash + 1), ".upload");
}

uint64_t FileSize(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
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
    PARAMD_RETURN_IF_ERROR(io::SaveCheckpoint(path, format, input));
    PARAMD_ASSIGN_OR_RETURN(auto file, io::MappedFile::Open(path));
    response->set_path(request->path());
    response->set_format(ToProto(format));
    response->set_version(input.version);
    response->set_size(file->size());
    response->set_sha256(io::Sha256Hex(file->bytes()));
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
    PARAMD_ASSIGN_OR_RETURN(core::Device device,
                            core::ParseDevice(request->device().empty() ? "cpu" : request->device()));
    PARAMD_RETURN_IF_ERROR(kernels::GetBackend(device).status());
    PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Module> root,
                            core::BuildModuleFromText(spec, 0));
    PARAMD_ASSIGN_OR_RETURN(core::LoadPlan plan, core::PlanLoadStateDict(root, input, options));
    const uint64_t version = checkpoint.spec_json && request->spec_json().empty() &&
                                     checkpoint.version
                                 ? *checkpoint.version
                                 : 1;
    plan.Commit(version);
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
  if (header.offset() > header.total_size()) {
    return absl::InvalidArgumentError(absl::StrCat("upload offset ", header.offset(),
                                                   " is past the file's size ",
                                                   header.total_size()));
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

  const std::string partial = PartialPathOf(target);
  const uint64_t kept = FileSize(partial);
  if (header.offset() != 0 && header.offset() != kept) {
    return absl::FailedPreconditionError(
        absl::StrCat(kept, " bytes of the upload of '", header.path(),
                     "' are kept; resume from offset ", kept, " (or start again at 0)"));
  }
  const int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (header.offset() == 0 ? O_TRUNC : O_APPEND);
  const int fd = ::open(partial.c_str(), flags, 0644);
  if (fd < 0) return io::ErrnoStatus(errno, absl::StrCat("cannot open '", partial, "'"));
  absl::Cleanup close_fd = [fd] { ::close(fd); };
  uint64_t size = header.offset();
  while (reader->Read(&message)) {
    if (!message.has_chunk() && message.has_header()) {
      return absl::InvalidArgumentError("an upload has one header, first");
    }
    const std::string& chunk = message.chunk();
    if (size + chunk.size() > header.total_size()) {
      ::ftruncate(fd, 0);
      return absl::InvalidArgumentError(absl::StrCat(
          "the upload sent more than the ", header.total_size(), " bytes its header declared"));
    }
    const char* data = chunk.data();
    size_t left = chunk.size();
    while (left > 0) {
      const ssize_t written = ::write(fd, data, left);
      if (written < 0) {
        if (errno == EINTR) continue;
        return io::ErrnoStatus(errno, absl::StrCat("cannot write '", partial, "'"));
      }
      data += written;
      left -= static_cast<size_t>(written);
    }
    size += chunk.size();
  }
  if (::fsync(fd) != 0) return io::ErrnoStatus(errno, absl::StrCat("cannot fsync '", partial, "'"));
  if (context->IsCancelled() || size < header.total_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the upload of '", header.path(), "' ended after ", size, " of ", header.total_size(),
        " bytes; they are kept: resume from offset ", size));
  }
  PARAMD_ASSIGN_OR_RETURN(auto file, io::MappedFile::Open(partial));
  const std::string sha256 = io::Sha256Hex(file->bytes());
  if (sha256 != header.sha256()) {
    ::unlink(partial.c_str());
    return absl::InvalidArgumentError(absl::StrCat(
        "the uploaded bytes of '", header.path(), "' have SHA-256 ", sha256, ", not ",
        header.sha256(), "; the upload was discarded: upload the file again from offset 0"));
  }
  if (::rename(partial.c_str(), target.c_str()) != 0) {
    return io::ErrnoStatus(errno, absl::StrCat("cannot rename '", partial, "'"));
  }
  PARAMD_RETURN_IF_ERROR(io::FileSystem::Posix().SyncDirectory(io::DirectoryOf(target)));
  response->set_path(header.path());
  response->set_size(size);
  response->set_sha256(sha256);
  return absl::OkStatus();
}

grpc::Status CheckpointsService::UploadStatus(grpc::ServerContext*,
                                              const v1::UploadStatusRequest* request,
                                              v1::UploadStatusResponse* response) {
  return Logged("upload status", request->path(), Guard([&]() -> absl::Status {
    PARAMD_ASSIGN_OR_RETURN(std::string target, directory_->ForWrite(request->path()));
    response->set_offset(FileSize(PartialPathOf(target)));
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
    message.mutable_header()->set_sha256(io::Sha256Hex(file->bytes()));
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
