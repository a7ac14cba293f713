#include "server/service/checkpoints_service.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/status_macros.h"
#include "server/service/answer_stream.h"
#include "server/service/status_util.h"
#include "server/service/tensor_codec.h"
#include "server/service/unary_call.h"

namespace paramd::service {
namespace {

v1::CheckpointFormat ToProto(io::CheckpointFormat format) {
  return format == io::CheckpointFormat::kSafetensors ? v1::CHECKPOINT_FORMAT_SAFETENSORS
                                                      : v1::CHECKPOINT_FORMAT_TORCH;
}

// The format a request names; unset when it leaves the choice to the store (FormatForSave).
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
  load.optimizer = request.optimizer();
  return load;
}

// Upload: the header opens the upload in the store, each chunk is appended on a worker,
// and the end of the stream finishes the file (or keeps its bytes when the client went
// away). One read or one append is in flight at a time.
class UploadReactor final : public grpc::ServerReadReactor<v1::UploadRequest> {
 public:
  UploadReactor(grpc::CallbackServerContext* context, io::CheckpointStore* store,
                Executor* executor, v1::UploadResponse* response)
      : context_(context), store_(store), response_(response) {
    absl::StatusOr<std::shared_ptr<Executor::Ticket>> ticket = executor->Admit();
    if (!ticket.ok()) {
      Done(ticket.status());
      return;
    }
    ticket_ = *std::move(ticket);
    StartRead(&message_);
  }

  void OnReadDone(bool ok) override {
    ticket_->Run([this, ok] {
      absl::Status status;
      const grpc::Status guarded = Guard([&] {
        status = ok ? Take() : End();
        return status;
      });
      if (ok && guarded.ok()) {
        StartRead(&message_);
        return;
      }
      Done(FromGrpcStatus(guarded));
    });
  }
  void OnDone() override { delete this; }

 private:
  // One message: the header first, then chunks.
  absl::Status Take() {
    if (upload_ == nullptr) {
      if (!message_.has_header()) return NoHeader();
      const v1::UploadHeader& header = message_.header();
      path_ = header.path();
      PARAMD_ASSIGN_OR_RETURN(upload_, store_->StartUpload({.path = header.path(),
                                                            .offset = header.offset(),
                                                            .total_size = header.total_size(),
                                                            .sha256 = header.sha256()}));
      return absl::OkStatus();
    }
    if (message_.has_header()) {
      return upload_->Named(absl::InvalidArgumentError("an upload has one header, first"));
    }
    return upload_->Append(message_.chunk());
  }

  // The stream ended.
  absl::Status End() {
    if (upload_ == nullptr) return NoHeader();
    if (context_->IsCancelled()) return upload_->BreakOff();
    PARAMD_ASSIGN_OR_RETURN(io::WrittenFile written, upload_->Finish());
    response_->set_path(upload_->path());
    response_->set_size(written.size);
    response_->set_sha256(written.sha256);
    return absl::OkStatus();
  }

  static absl::Status NoHeader() {
    return absl::InvalidArgumentError(
        "an upload starts with an UploadHeader (path, offset, total_size, sha256)");
  }

  void Done(const absl::Status& status) {
    upload_.reset();  // frees the path for the next upload of it
    ticket_.reset();
    Finish(Logged("upload checkpoint", path_, ToGrpcStatus(status), /*log_success=*/true));
  }

  grpc::CallbackServerContext* const context_;
  io::CheckpointStore* const store_;
  v1::UploadResponse* const response_;
  std::shared_ptr<Executor::Ticket> ticket_;
  v1::UploadRequest message_;
  std::string path_;
  std::unique_ptr<io::CheckpointStore::Upload> upload_;
};

// Download: the file is opened (and hashed, if its digest is not kept) on a worker, then
// its chunks go out one write at a time from the mapping, which pins the bytes even if a
// save replaces the file meanwhile.
class DownloadReactor final : public grpc::ServerWriteReactor<v1::DownloadResponse> {
 public:
  DownloadReactor(grpc::CallbackServerContext* context, io::CheckpointStore* store,
                  Executor* executor, const v1::DownloadRequest* request)
      : context_(context), request_(request), at_(request->offset()) {
    absl::StatusOr<std::shared_ptr<Executor::Ticket>> ticket = executor->Admit();
    if (!ticket.ok()) {
      Done(ticket.status());
      return;
    }
    // The task holds the only reference (why: FinishOnExecutor in unary_call.h).
    Executor::Ticket* runner = ticket->get();
    runner->Run([this, store, ticket = *std::move(ticket)]() mutable {
      absl::StatusOr<io::CheckpointStore::Download> download;
      const grpc::Status guarded = Guard([&] {
        download = context_->IsCancelled()
                       ? absl::CancelledError("the client went away")
                       : store->OpenDownload(request_->path(), request_->offset());
        return download.status();
      });
      ticket.reset();
      if (!guarded.ok()) {
        Done(FromGrpcStatus(guarded));
        return;
      }
      file_ = download->file;
      message_.mutable_header()->set_size(file_->size());
      message_.mutable_header()->set_sha256(download->sha256);
      if (download->modified_unix) {
        message_.mutable_header()->set_modified_unix(*download->modified_unix);
      }
      StartWrite(&message_);
    });
  }

  void OnWriteDone(bool ok) override {
    if (!ok) return Done(absl::CancelledError("the client went away"));
    if (at_ >= file_->size()) return Done(absl::OkStatus());
    if (context_->IsCancelled()) return Done(absl::CancelledError("the client went away"));
    const grpc::Status copied = Guard([&] {
      const size_t length = std::min<uint64_t>(kChunkBytes, file_->size() - at_);
      message_.set_chunk(reinterpret_cast<const char*>(file_->data() + at_), length);
      at_ += length;
      return absl::OkStatus();
    });
    if (!copied.ok()) return Done(FromGrpcStatus(copied));
    StartWrite(&message_);
  }
  void OnDone() override { delete this; }

 private:
  void Done(const absl::Status& status) {
    Finish(Logged("download checkpoint", request_->path(), ToGrpcStatus(status)));
  }

  grpc::CallbackServerContext* const context_;
  const v1::DownloadRequest* const request_;
  std::shared_ptr<const io::MappedFile> file_;
  uint64_t at_;
  v1::DownloadResponse message_;
};

}  // namespace

grpc::ServerUnaryReactor* CheckpointsService::Save(grpc::CallbackServerContext* context,
                                                   const v1::SaveRequest* request,
                                                   v1::SaveResponse* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerUnaryReactor>(
          auth_, context, "/paramd.v1.Checkpoints/Save")) {
    return refused;
  }
  return FinishOnExecutor(context, *executor_, "save checkpoint", request->model(), [=, this] {
    return Logged("save checkpoint", request->model(), Guard([&]() -> absl::Status {
                    PARAMD_ASSIGN_OR_RETURN(std::optional<io::CheckpointFormat> format,
                                            FormatOf(request->format()));
                    const absl::Time start = absl::Now();
                    PARAMD_ASSIGN_OR_RETURN(io::CheckpointStore::Saved saved,
                                            store_->Save({.model = request->model(),
                                                          .path = request->path(),
                                                          .format = format,
                                                          .keep_vars = request->keep_vars(),
                                                          .optimizer = request->optimizer(),
                                                          .sha256 = request->return_sha256()}));
                    if (metrics_ != nullptr) {
                      metrics_->ObserveCheckpoint(Metrics::CheckpointOp::kSave,
                                                  absl::ToDoubleSeconds(absl::Now() - start),
                                                  saved.size);
                    }
                    response->set_path(request->path());
                    response->set_format(ToProto(saved.format));
                    response->set_version(saved.version);
                    response->set_size(saved.size);
                    response->set_sha256(saved.sha256);
                    return absl::OkStatus();
                  }),
                  /*log_success=*/true);
  });
}

grpc::ServerWriteReactor<v1::LoadResponse>* CheckpointsService::Load(
    grpc::CallbackServerContext* context, const v1::LoadRequest* request) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerWriteReactor<v1::LoadResponse>>(
          auth_, context, "/paramd.v1.Checkpoints/Load")) {
    return refused;
  }
  auto answer = [=, this] {
    v1::LoadResponse head;
    core::IncompatibleKeys keys;
    absl::Status status;
    const grpc::Status guarded = Guard([&]() -> absl::Status {
      status = [&]() -> absl::Status {
        io::CheckpointStore::LoadRequest load = LoadRequestOf(*request);
        load.options.cancelled = [context] { return context->IsCancelled(); };
        load.options.found = &keys;
        const absl::Time start = absl::Now();
        PARAMD_ASSIGN_OR_RETURN(io::CheckpointStore::Loaded loaded, store_->Load(load));
        if (metrics_ != nullptr) {
          metrics_->ObserveCheckpoint(Metrics::CheckpointOp::kLoad,
                                      absl::ToDoubleSeconds(absl::Now() - start), loaded.size);
        }
        head.set_format(ToProto(loaded.format));
        head.set_created(loaded.created);
        head.set_version(loaded.version);
        keys = std::move(loaded.keys);
        return absl::OkStatus();
      }();
      return status;
    });
    if (!guarded.ok() && status.ok()) return StreamedAnswer<v1::LoadResponse>{{}, guarded};
    return LoadAnswer(head, keys, status);
  };
  return new AnswerStreamReactor<v1::LoadResponse>(context, *executor_, "load checkpoint",
                                                   request->model(), std::move(answer),
                                                   /*log_success=*/true);
}

grpc::ServerWriteReactor<v1::ListCheckpointsResponse>* CheckpointsService::List(
    grpc::CallbackServerContext* context, const v1::ListCheckpointsRequest* /*request*/) {
  using Reactor = grpc::ServerWriteReactor<v1::ListCheckpointsResponse>;
  if (auto* refused = RefuseUnlessAllowed<Reactor>(auth_, context, "/paramd.v1.Checkpoints/List")) {
    return refused;
  }
  auto answer = [this] {
    StreamedAnswer<v1::ListCheckpointsResponse> answer;
    answer.status = Guard([&]() -> absl::Status {
      PARAMD_ASSIGN_OR_RETURN(std::vector<io::CheckpointStore::Listed> files, store_->List());
      MessageSplitter<v1::ListCheckpointsResponse> out{v1::ListCheckpointsResponse()};
      for (const io::CheckpointStore::Listed& listed : files) {
        v1::CheckpointFile file;
        file.set_path(listed.file.path);
        file.set_size(listed.file.size);
        file.set_modified_unix(listed.file.modified_unix);
        file.set_format(listed.format ? ToProto(*listed.format)
                                      : v1::CHECKPOINT_FORMAT_UNSPECIFIED);
        // The field's tag and length take at most 6 bytes more.
        *out.Room(file.ByteSizeLong() + 6)->add_files() = std::move(file);
      }
      answer.messages = std::move(out).Take();
      return absl::OkStatus();
    });
    if (!answer.status.ok()) answer.messages.clear();
    return answer;
  };
  return new AnswerStreamReactor<v1::ListCheckpointsResponse>(context, *executor_,
                                                              "list checkpoints", "",
                                                              std::move(answer));
}

grpc::ServerReadReactor<v1::UploadRequest>* CheckpointsService::Upload(
    grpc::CallbackServerContext* context, v1::UploadResponse* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerReadReactor<v1::UploadRequest>>(
          auth_, context, "/paramd.v1.Checkpoints/Upload")) {
    return refused;
  }
  return new UploadReactor(context, store_, executor_, response);
}

grpc::ServerUnaryReactor* CheckpointsService::UploadStatus(grpc::CallbackServerContext* context,
                                                           const v1::UploadStatusRequest* request,
                                                           v1::UploadStatusResponse* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerUnaryReactor>(
          auth_, context, "/paramd.v1.Checkpoints/UploadStatus")) {
    return refused;
  }
  return FinishInline(context, [&] {
    return Logged("upload status", request->path(), Guard([&]() -> absl::Status {
                    PARAMD_ASSIGN_OR_RETURN(uint64_t offset, store_->UploadOffset(request->path()));
                    response->set_offset(offset);
                    return absl::OkStatus();
                  }));
  });
}

grpc::ServerWriteReactor<v1::DownloadResponse>* CheckpointsService::Download(
    grpc::CallbackServerContext* context, const v1::DownloadRequest* request) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerWriteReactor<v1::DownloadResponse>>(
          auth_, context, "/paramd.v1.Checkpoints/Download")) {
    return refused;
  }
  return new DownloadReactor(context, store_, executor_, request);
}

grpc::ServerWriteReactor<v1::SnapshotResponse>* CheckpointsService::Snapshot(
    grpc::CallbackServerContext* context, const v1::SnapshotRequest* request) {
  using Reactor = grpc::ServerWriteReactor<v1::SnapshotResponse>;
  if (auto* refused =
          RefuseUnlessAllowed<Reactor>(auth_, context, "/paramd.v1.Checkpoints/Snapshot")) {
    return refused;
  }
  auto answer = [=, this] {
    StreamedAnswer<v1::SnapshotResponse> answer;
    answer.status = Guard([&]() -> absl::Status {
      if (snapshots_ == nullptr) {
        return absl::FailedPreconditionError("this daemon keeps no snapshots (no --data-dir)");
      }
      std::vector<std::string> names(request->models().begin(), request->models().end());
      PARAMD_ASSIGN_OR_RETURN(std::vector<io::Snapshots::Taken> taken, snapshots_->Take(names));
      MessageSplitter<v1::SnapshotResponse> out{v1::SnapshotResponse()};
      for (const io::Snapshots::Taken& entry : taken) {
        // The entry's fields, tags and lengths take at most 20 bytes more than the name.
        v1::ModelSnapshot* snapshot = out.Room(entry.model.size() + 20)->add_snapshots();
        snapshot->set_model(entry.model);
        snapshot->set_version(entry.version);
      }
      answer.messages = std::move(out).Take();
      return absl::OkStatus();
    });
    if (!answer.status.ok()) answer.messages.clear();
    return answer;
  };
  return new AnswerStreamReactor<v1::SnapshotResponse>(context, *executor_, "snapshot", "",
                                                       std::move(answer),
                                                       /*log_success=*/true);
}

}  // namespace paramd::service
