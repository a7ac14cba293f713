// Client calls of paramd.v1.Checkpoints: save, load, list, upload, download, snapshot.
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "base/output_path.h"
#include "client/cpp/src/client_impl.h"

namespace paramd::client {
namespace {

v1::CheckpointFormat ToProto(CheckpointFormat format) {
  switch (format) {
    case CheckpointFormat::kSafetensors:
      return v1::CHECKPOINT_FORMAT_SAFETENSORS;
    case CheckpointFormat::kTorch:
      return v1::CHECKPOINT_FORMAT_TORCH;
    default:
      return v1::CHECKPOINT_FORMAT_UNSPECIFIED;
  }
}

CheckpointFormat FromProto(v1::CheckpointFormat format) {
  switch (format) {
    case v1::CHECKPOINT_FORMAT_SAFETENSORS:
      return CheckpointFormat::kSafetensors;
    case v1::CHECKPOINT_FORMAT_TORCH:
      return CheckpointFormat::kTorch;
    default:
      return CheckpointFormat::kFromSuffix;
  }
}

absl::Status LocalError(absl::string_view what, const std::string& path) {
  return absl::Status(errno == ENOENT ? absl::StatusCode::kNotFound
                                      : absl::StatusCode::kFailedPrecondition,
                      absl::StrCat("cannot ", what, " '", path, "': ", std::strerror(errno)));
}

// SHA-256 of a local file, streamed in pieces so that a large file is not held in memory.
absl::StatusOr<std::string> FileSha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return LocalError("read", path);
  EVP_MD_CTX* context = EVP_MD_CTX_new();
  absl::Cleanup free_context = [context] { EVP_MD_CTX_free(context); };
  EVP_DigestInit_ex(context, EVP_sha256(), nullptr);
  std::vector<char> buffer(kChunkBytes);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    EVP_DigestUpdate(context, buffer.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) return LocalError("read", path);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(context, digest, &length);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), length));
}

absl::Status WriteAll(int fd, const char* data, size_t size, const std::string& path) {
  while (size > 0) {
    const ssize_t written = ::write(fd, data, size);
    if (written < 0) {
      if (errno == EINTR) continue;
      return LocalError("write", path);
    }
    data += written;
    size -= static_cast<size_t>(written);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SaveCheckpointResult> Client::SaveCheckpoint(
    const std::string& model, const std::string& path, const SaveCheckpointOptions& options) const {
  v1::SaveRequest request;
  request.set_model(model);
  request.set_path(path);
  request.set_format(ToProto(options.format));
  request.set_keep_vars(options.keep_vars);
  request.set_optimizer(options.optimizer);
  request.set_return_sha256(options.sha256);
  v1::SaveResponse response;
  grpc::ClientContext context;
  impl_->PrepareStream(&context);  // a large save takes as long as the disk needs
  PARAMD_RETURN_IF_ERROR(
      FromGrpcStatus(impl_->checkpoints->Save(&context, request, &response), context));
  SaveCheckpointResult result;
  result.path = response.path();
  result.format = FromProto(response.format());
  result.version = response.version();
  result.size = response.size();
  result.sha256 = response.sha256();
  return result;
}

absl::StatusOr<LoadCheckpointResult> Client::LoadCheckpoint(
    const std::string& model, const std::string& path, const LoadCheckpointOptions& options) const {
  v1::LoadRequest request;
  request.set_model(model);
  request.set_path(path);
  request.set_non_strict(!options.strict);
  request.set_assign(options.assign);
  request.set_map_location(options.map_location);
  for (const auto& [from, to] : options.location_map) (*request.mutable_location_map())[from] = to;
  request.set_spec_json(options.spec_json);
  request.set_device(options.device);
  request.set_optimizer(options.optimizer);
  request.set_if_version(options.if_version);
  grpc::ClientContext context;
  impl_->PrepareStream(&context);
  std::unique_ptr<grpc::ClientReader<v1::LoadResponse>> reader =
      impl_->checkpoints->Load(&context, request);
  StreamedLoad answer;
  LoadCheckpointResult result;
  v1::LoadResponse response;
  while (reader->Read(&response)) {
    answer.Add(response);
    result.created = response.created();
    result.format = FromProto(response.format());
  }
  PARAMD_RETURN_IF_ERROR(answer.Complete(FromGrpcStatus(reader->Finish(), context)));
  result.version = answer.version;
  result.missing_keys = std::move(answer.missing_keys);
  result.unexpected_keys = std::move(answer.unexpected_keys);
  return result;
}

absl::StatusOr<std::vector<CheckpointFile>> Client::ListCheckpoints() const {
  v1::ListCheckpointsRequest request;
  std::vector<CheckpointFile> files;
  PARAMD_RETURN_IF_ERROR(impl_->ReadMessages<v1::ListCheckpointsResponse>(
      /*unary_deadline=*/true,
      [&](grpc::ClientContext* context) { return impl_->checkpoints->List(context, request); },
      [&](const v1::ListCheckpointsResponse& response) {
        for (const v1::CheckpointFile& file : response.files()) {
          files.push_back(
              {file.path(), file.size(), file.modified_unix(), FromProto(file.format())});
        }
      }));
  return files;
}

absl::StatusOr<TransferResult> Client::Upload(const std::string& local_path,
                                              const std::string& remote_path,
                                              const ProgressCallback& progress) const {
  const int fd = ::open(local_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return LocalError("open", local_path);
  absl::Cleanup close_fd = [fd] { ::close(fd); };
  struct stat st;
  if (::fstat(fd, &st) != 0) return LocalError("stat", local_path);
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("'", local_path, "' is not a regular file"));
  }
  const uint64_t total = static_cast<uint64_t>(st.st_size);
  PARAMD_ASSIGN_OR_RETURN(std::string sha256, FileSha256(local_path));

  v1::UploadStatusRequest status_request;
  status_request.set_path(remote_path);
  v1::UploadStatusResponse status_response;
  PARAMD_RETURN_IF_ERROR(impl_->Unary([&](grpc::ClientContext* context) {
    return impl_->checkpoints->UploadStatus(context, status_request, &status_response);
  }));
  // One Upload stream from `offset`.
  auto upload_from = [&](uint64_t offset) -> absl::StatusOr<TransferResult> {
    grpc::ClientContext context;
    impl_->PrepareStream(&context);
    v1::UploadResponse response;
    std::unique_ptr<grpc::ClientWriter<v1::UploadRequest>> writer =
        impl_->checkpoints->Upload(&context, &response);
    v1::UploadRequest message;
    v1::UploadHeader* header = message.mutable_header();
    header->set_path(remote_path);
    header->set_offset(offset);
    header->set_total_size(total);
    header->set_sha256(sha256);
    absl::Status local;
    if (writer->Write(message)) {
      std::string buffer;
      uint64_t at = offset;
      if (progress) progress(at, total);
      while (at < total) {
        const size_t length = std::min<uint64_t>(kChunkBytes, total - at);
        buffer.resize(length);
        const ssize_t got = ::pread(fd, buffer.data(), length, static_cast<off_t>(at));
        if (got <= 0) {
          local = got < 0 ? LocalError("read", local_path)
                          : absl::FailedPreconditionError(
                                absl::StrCat("'", local_path, "' shrank while it was uploaded"));
          context.TryCancel();
          break;
        }
        buffer.resize(static_cast<size_t>(got));
        message.set_chunk(std::move(buffer));
        if (!writer->Write(message)) break;
        buffer = std::move(*message.mutable_chunk());
        at += static_cast<uint64_t>(got);
        if (progress) progress(at, total);
      }
    }
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    PARAMD_RETURN_IF_ERROR(local);
    PARAMD_RETURN_IF_ERROR(FromGrpcStatus(status, context));
    return TransferResult{response.size(), response.sha256(), offset};
  };
  // Resume only what can be a prefix of this file; anything else starts again.
  const uint64_t offset = status_response.offset() <= total ? status_response.offset() : 0;
  absl::StatusOr<TransferResult> result = upload_from(offset);
  // The kept bytes were another file's: the checksum failed and the server dropped them
  // (INVALID_ARGUMENT, "upload the file again from offset 0"). Once more from the start.
  if (offset > 0 && result.status().code() == absl::StatusCode::kInvalidArgument) {
    result = upload_from(0);
  }
  return result;
}

absl::StatusOr<TransferResult> Client::Download(const std::string& remote_path,
                                                const std::string& local_path,
                                                const ProgressCallback& progress) const {
  // A symlink is followed; a device or FIFO is written straight into, from the start and
  // hashed on the way, for there is no part to resume or hash afterwards (Note [Writing
  // over special files] in base/output_path.h).
  PARAMD_ASSIGN_OR_RETURN(const OutputPath out, ResolveOutputPath(local_path));
  const std::string part = out.in_place ? out.path : out.path + ".part";
  // One Download stream, appending to the part from `offset`.
  auto download_from = [&](uint64_t offset) -> absl::StatusOr<TransferResult> {
    EVP_MD_CTX* hash = EVP_MD_CTX_new();
    absl::Cleanup free_hash = [hash] { EVP_MD_CTX_free(hash); };
    EVP_DigestInit_ex(hash, EVP_sha256(), nullptr);
    v1::DownloadRequest request;
    request.set_path(remote_path);
    request.set_offset(offset);
    grpc::ClientContext context;
    impl_->PrepareStream(&context);
    std::unique_ptr<grpc::ClientReader<v1::DownloadResponse>> reader =
        impl_->checkpoints->Download(&context, request);
    v1::DownloadResponse message;
    absl::Status local;
    uint64_t size = 0;
    std::string sha256;
    uint64_t at = offset;
    int fd = -1;
    absl::Cleanup close_fd = [&fd] {
      if (fd >= 0) ::close(fd);
    };
    if (reader->Read(&message)) {
      if (!message.has_header()) {
        local = absl::DataLossError("the download did not start with its header");
      } else {
        size = message.header().size();
        sha256 = message.header().sha256();
        const int named = NamedDescriptor(part);
        fd = named >= 0
                 ? ::fcntl(named, F_DUPFD_CLOEXEC, 0)
                 : ::open(part.c_str(),
                          O_WRONLY | O_CREAT | (out.in_place ? 0 : O_APPEND) | O_CLOEXEC, 0644);
        if (fd < 0) local = LocalError("open", part);
        if (progress) progress(at, size);
      }
      while (local.ok() && reader->Read(&message)) {
        if (!message.has_chunk() || at + message.chunk().size() > size) {
          local = absl::DataLossError("the download sent more or other than its header said");
          break;
        }
        local = WriteAll(fd, message.chunk().data(), message.chunk().size(), part);
        if (out.in_place) EVP_DigestUpdate(hash, message.chunk().data(), message.chunk().size());
        at += message.chunk().size();
        if (progress) progress(at, size);
      }
      if (!local.ok()) {
        context.TryCancel();
        while (reader->Read(&message)) {
        }
      }
    }
    const grpc::Status status = reader->Finish();
    PARAMD_RETURN_IF_ERROR(local);
    PARAMD_RETURN_IF_ERROR(FromGrpcStatus(status, context));
    if (out.in_place) {
      if (at != size) {
        return absl::DataLossError(absl::StrCat(
            "the download of '", remote_path, "' ended after ", at, " of ", size, " bytes; '",
            local_path, "' is not a regular file, so run it again from the start"));
      }
      if (::close(std::exchange(fd, -1)) != 0) return LocalError("write", part);
      unsigned char digest[EVP_MAX_MD_SIZE];
      unsigned int length = 0;
      EVP_DigestFinal_ex(hash, digest, &length);
      const std::string got =
          absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), length));
      if (got != sha256) {
        return absl::DataLossError(absl::StrCat(
            "the bytes of '", remote_path, "' written into '", local_path, "' have SHA-256 ", got,
            " but the server's file has ", sha256, "; download it again"));
      }
      return TransferResult{size, sha256, 0};
    }
    if (at != size) {
      return absl::DataLossError(absl::StrCat("the download of '", remote_path, "' ended after ",
                                              at, " of ", size, " bytes; run it again to resume"));
    }
    if (::fsync(fd) != 0) return LocalError("fsync", part);
    PARAMD_ASSIGN_OR_RETURN(std::string got, FileSha256(part));
    if (got != sha256) {
      ::unlink(part.c_str());
      return absl::DataLossError(absl::StrCat("the downloaded '", remote_path, "' has SHA-256 ",
                                              got, " but the server's file has ", sha256,
                                              "; the partial file was removed: download it again"));
    }
    if (::rename(part.c_str(), out.path.c_str()) != 0) return LocalError("rename", part);
    return TransferResult{size, sha256, offset};
  };
  struct stat st;
  const uint64_t offset =
      !out.in_place && ::stat(part.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  absl::StatusOr<TransferResult> result = download_from(offset);
  // A kept part longer than the file (OUT_OF_RANGE), or whose bytes were not the file's
  // beginning (DATA_LOSS with the part removed: the checksum failed), was another version's.
  // Once more from the start, as the Python client does. (A stream that broke off keeps its
  // part, to be resumed by the next run.)
  const absl::StatusCode code = result.status().code();
  if (offset > 0 && (code == absl::StatusCode::kOutOfRange ||
                     (code == absl::StatusCode::kDataLoss && ::stat(part.c_str(), &st) != 0))) {
    ::unlink(part.c_str());
    result = download_from(0);
  }
  return result;
}

absl::StatusOr<std::vector<std::pair<std::string, uint64_t>>> Client::Snapshot(
    const std::vector<std::string>& models) const {
  v1::SnapshotRequest request;
  for (const std::string& model : models) request.add_models(model);
  std::vector<std::pair<std::string, uint64_t>> out;
  PARAMD_RETURN_IF_ERROR(impl_->ReadMessages<v1::SnapshotResponse>(
      /*unary_deadline=*/false,
      [&](grpc::ClientContext* context) { return impl_->checkpoints->Snapshot(context, request); },
      [&](const v1::SnapshotResponse& response) {
        for (const v1::ModelSnapshot& snapshot : response.snapshots()) {
          out.emplace_back(snapshot.model(), snapshot.version());
        }
      }));
  return out;
}

}  // namespace paramd::client
