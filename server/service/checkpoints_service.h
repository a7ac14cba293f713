// paramd.v1.Checkpoints: checkpoint files in --checkpoint-dir (save, load, list, upload,
// download) and snapshots in --data-dir. Translation only: proto to io::CheckpointStore
// and io::Snapshots calls and back; the files, their confinement, digests and uploads are
// the store's. The file work runs on the calling gRPC thread.
// Thread-safety: all methods may run concurrently.
#pragma once

#include "paramd/v1/checkpoints.grpc.pb.h"
#include "server/io/checkpoint_store.h"
#include "server/io/snapshots.h"

namespace paramd::service {

class CheckpointsService final : public v1::Checkpoints::Service {
 public:
  // Borrows both; `snapshots` may be null (no data directory: Snapshot is refused).
  CheckpointsService(io::CheckpointStore* store, io::Snapshots* snapshots)
      : store_(store), snapshots_(snapshots) {}

  grpc::Status Save(grpc::ServerContext* context, const v1::SaveRequest* request,
                    v1::SaveResponse* response) override;
  grpc::Status Load(grpc::ServerContext* context, const v1::LoadRequest* request,
                    v1::LoadResponse* response) override;
  grpc::Status List(grpc::ServerContext* context, const v1::ListCheckpointsRequest* request,
                    v1::ListCheckpointsResponse* response) override;
  grpc::Status Upload(grpc::ServerContext* context, grpc::ServerReader<v1::UploadRequest>* reader,
                      v1::UploadResponse* response) override;
  grpc::Status UploadStatus(grpc::ServerContext* context, const v1::UploadStatusRequest* request,
                            v1::UploadStatusResponse* response) override;
  grpc::Status Download(grpc::ServerContext* context, const v1::DownloadRequest* request,
                        grpc::ServerWriter<v1::DownloadResponse>* writer) override;
  grpc::Status Snapshot(grpc::ServerContext* context, const v1::SnapshotRequest* request,
                        v1::SnapshotResponse* response) override;

 private:
  io::CheckpointStore* const store_;
  io::Snapshots* const snapshots_;
};

}  // namespace paramd::service
