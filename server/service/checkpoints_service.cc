#include "server/service/checkpoints_service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/service/status_util.h"
#include "server/service/tensor_codec.h"

namespace paramd::service {
namespace {

v1::CheckpointFormat ToProto(io::CheckpointFormat format) {
  return format == io::CheckpointFormat::kSafetensors ? v1::CHECKPOINT_FORMAT_SAFETENSORS
                                                      : v1::CHECKPOINT_FORMAT_TORCH;
}

// The format a request names; unset when it leaves the choice to the path's suffix.
absl::StatusOr<std::optional<io::CheckpointFormat>> FormatOf(v1::CheckpointFormat format) {
  switch (format) {
    case v1::CHECKPOINT_FORMAT_SAFETENSORS:
      return io::CheckpointFormat::kSafetensors;
    case v1::CHECKPOINT_FORMAT_TORCH:
      return io::CheckpointFormat::kTorch;
    case v1::CHECKPOINT_FORMAT_UNSPECIFIED:
      return std::nullopt;
    default:
      return absl::InvalidArgumentError(absl::StrCat("unknown checkpoint format ", format));
  }
}

io::CheckpointStore::LoadRequest LoadRequestOf(const v1::LoadRequest& request) {
  io::CheckpointStore::LoadRequest load;
  load.model = request.model();
  load.path = request.path();
  load.map_location = request.map_location();
  load.location_map.assign(request.location_map().begin(), request.location_map().end());
  load.options.strict = !request.non_strict();
  load.options.assign = request.assign();
  load.if_version = IfVersion(request.if_version());
  load.spec_json = request.spec_json();
  load.device = request.device();
  return load;
}

}  // namespace

grpc::Status CheckpointsService::Save(grpc::ServerContext*, const v1::SaveRequest* request,
                                      v1::SaveResponse* response) {
  return Logged("save checkpoint", request->model(), Guard([&]() -> absl::Status {
                  PARAMD_ASSIGN_OR_RETURN(std::optional<io::CheckpointFormat> format,
                                          FormatOf(request->format()));
                  PARAMD_ASSIGN_OR_RETURN(io::CheckpointStore::Saved saved,
                                          store_->Save({.model = request->model(),
                                                        .path = request->path(),
                                                        .format = format,
                                                        .keep_vars = request->keep_vars()}));
                  response->set_path(request->path());
                  response->set_format(ToProto(saved.format));
                  response->set_version(saved.version);
                  response->set_size(saved.size);
                  response->set_sha256(saved.sha256);
                  return absl::OkStatus();
                }),
                /*log_success=*/true);
}

grpc::Status CheckpointsService::Load(grpc::ServerContext*, const v1::LoadRequest* request,
                                      v1::LoadResponse* response) {
  return Logged("load checkpoint", request->model(), Guard([&]() -> absl::Status {
                  PARAMD_ASSIGN_OR_RETURN(io::CheckpointStore::Loaded loaded,
                                          store_->Load(LoadRequestOf(*request)));
                  response->set_format(ToProto(loaded.format));
                  response->set_created(loaded.created);
                  response->set_version(loaded.version);
                  for (const auto& key : loaded.keys.missing_keys) response->add_missing_keys(key);
                  for (const auto& key : loaded.keys.unexpected_keys)
                    response->add_unexpected_keys(key);
                  return absl::OkStatus();
                }),
                /*log_success=*/true);
}

grpc::Status CheckpointsService::List(grpc::ServerContext*, const v1::ListCheckpointsRequest*,
                                      v1::ListCheckpointsResponse* response) {
  return Logged(
      "list checkpoints", "", Guard([&]() -> absl::Status {
        PARAMD_ASSIGN_OR_RETURN(std::vector<io::CheckpointFileInfo> files, store_->List());
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
  grpc::Status status = Guard([&]() -> absl::Status {
    v1::UploadRequest message;
    if (!reader->Read(&message) || !message.has_header()) {
      return absl::InvalidArgumentError(
          "an upload starts with an UploadHeader (path, offset, total_size, sha256)");
    }
    const v1::UploadHeader& header = message.header();
    path = header.path();
    PARAMD_ASSIGN_OR_RETURN(std::unique_ptr<io::CheckpointStore::Upload> upload,
                            store_->StartUpload({.path = header.path(),
                                                 .offset = header.offset(),
                                                 .total_size = header.total_size(),
                                                 .sha256 = header.sha256()}));
    while (reader->Read(&message)) {
      if (message.has_header()) {
        return upload->Named(absl::InvalidArgumentError("an upload has one header, first"));
      }
      PARAMD_RETURN_IF_ERROR(upload->Append(message.chunk()));
    }
    if (context->IsCancelled()) return upload->BreakOff();
    PARAMD_ASSIGN_OR_RETURN(io::WrittenFile written, upload->Finish());
    response->set_path(upload->path());
    response->set_size(written.size);
    response->set_sha256(written.sha256);
    return absl::OkStatus();
  });
  return Logged("upload checkpoint", path, status, /*log_success=*/true);
}

grpc::Status CheckpointsService::UploadStatus(grpc::ServerContext*,
                                              const v1::UploadStatusRequest* request,
                                              v1::UploadStatusResponse* response) {
  return Logged("upload status", request->path(), Guard([&]() -> absl::Status {
                  PARAMD_ASSIGN_OR_RETURN(uint64_t offset, store_->UploadOffset(request->path()));
                  response->set_offset(offset);
                  return absl::OkStatus();
                }));
}

grpc::Status CheckpointsService::Download(grpc::ServerContext* context,
                                          const v1::DownloadRequest* request,
                                          grpc::ServerWriter<v1::DownloadResponse>* writer) {
  return Logged("download checkpoint", request->path(), Guard([&]() -> absl::Status {
                  PARAMD_ASSIGN_OR_RETURN(io::CheckpointStore::Download download,
                                          store_->OpenDownload(request->path(), request->offset()));
                  const io::MappedFile& file = *download.file;
                  v1::DownloadResponse message;
                  message.mutable_header()->set_size(file.size());
                  message.mutable_header()->set_sha256(download.sha256);
                  if (download.modified_unix)
                    message.mutable_header()->set_modified_unix(*download.modified_unix);
                  if (!writer->Write(message)) return absl::CancelledError("the client went away");
                  for (uint64_t at = request->offset(); at < file.size(); at += kChunkBytes) {
                    if (context->IsCancelled()) return absl::CancelledError("the client went away");
                    const size_t length = std::min<uint64_t>(kChunkBytes, file.size() - at);
                    message.set_chunk(reinterpret_cast<const char*>(file.data() + at), length);
                    if (!writer->Write(message))
                      return absl::CancelledError("the client went away");
                  }
                  return absl::OkStatus();
                }));
}

grpc::Status CheckpointsService::Snapshot(grpc::ServerContext*, const v1::SnapshotRequest* request,
                                          v1::SnapshotResponse* response) {
  return Logged(
      "snapshot", "", Guard([&]() -> absl::Status {
        if (snapshots_ == nullptr) {
          return absl::FailedPreconditionError("this daemon keeps no snapshots (no --data-dir)");
        }
        std::vector<std::string> names(request->models().begin(), request->models().end());
        PARAMD_ASSIGN_OR_RETURN(std::vector<io::Snapshots::Taken> taken, snapshots_->Take(names));
        for (const io::Snapshots::Taken& entry : taken) {
          v1::ModelSnapshot* snapshot = response->add_snapshots();
          snapshot->set_model(entry.model);
          snapshot->set_version(entry.version);
        }
        return absl::OkStatus();
      }),
      /*log_success=*/true);
}

}  // namespace paramd::service
