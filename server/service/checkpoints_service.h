// paramd.v1.Checkpoints: checkpoint files in --checkpoint-dir (save, load, list, upload,
// download) and snapshots in --data-dir. Translation only: proto to io::CheckpointStore
// and io::Snapshots calls and back; the files, their confinement, digests and uploads are
// the store's. Callback handlers: Save, Load, Snapshot, an upload's chunks and a
// download's opening (which may hash the file) run on the Executor; List and UploadStatus
// finish inline, and a download's chunks go out from the file's mapping on gRPC's threads.
// Thread-safety: all methods may run concurrently.
#pragma once

#include "paramd/v1/checkpoints.grpc.pb.h"
#include "server/io/checkpoint_store.h"
#include "server/io/snapshots.h"
#include "server/service/auth.h"
#include "server/service/executor.h"
#include "server/service/metrics.h"

namespace paramd::service {

class CheckpointsService final : public v1::Checkpoints::CallbackService {
 public:
  // Borrows all five; `snapshots` may be null (no data directory: Snapshot is refused),
  // `auth` too (every call allowed; auth.h), and `metrics` (no checkpoint metrics).
  CheckpointsService(io::CheckpointStore* store, io::Snapshots* snapshots, Executor* executor,
                     const Authenticator* auth = nullptr, Metrics* metrics = nullptr)
      : store_(store), snapshots_(snapshots), executor_(executor), auth_(auth),
        metrics_(metrics) {}

  grpc::ServerUnaryReactor* Save(grpc::CallbackServerContext* context,
                                 const v1::SaveRequest* request,
                                 v1::SaveResponse* response) override;
  // Answers with a stream (answer_stream.h): the key lists may pass one message's limit.
  grpc::ServerWriteReactor<v1::LoadResponse>* Load(grpc::CallbackServerContext* context,
                                                   const v1::LoadRequest* request) override;
  // List and Snapshot answer with streams (answer_stream.h): their lists may pass one
  // message's limit.
  grpc::ServerWriteReactor<v1::ListCheckpointsResponse>* List(
      grpc::CallbackServerContext* context, const v1::ListCheckpointsRequest* request) override;
  grpc::ServerReadReactor<v1::UploadRequest>* Upload(grpc::CallbackServerContext* context,
                                                     v1::UploadResponse* response) override;
  grpc::ServerUnaryReactor* UploadStatus(grpc::CallbackServerContext* context,
                                         const v1::UploadStatusRequest* request,
                                         v1::UploadStatusResponse* response) override;
  grpc::ServerWriteReactor<v1::DownloadResponse>* Download(
      grpc::CallbackServerContext* context, const v1::DownloadRequest* request) override;
  grpc::ServerWriteReactor<v1::SnapshotResponse>* Snapshot(
      grpc::CallbackServerContext* context, const v1::SnapshotRequest* request) override;

 private:
  io::CheckpointStore* const store_;
  io::Snapshots* const snapshots_;
  Executor* const executor_;
  const Authenticator* const auth_;  // may be null
  Metrics* const metrics_;           // may be null
};

}  // namespace paramd::service
