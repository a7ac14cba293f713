// paramd.v1.Checkpoints: checkpoint files in --checkpoint-dir (save, load, list, upload,
// download) and snapshots in --data-dir. Translates between proto, the core and io; no
// format or math code here. Saves and loads pin one model version and never block other
// calls on the model; the file work runs on the calling gRPC thread.
// Thread-safety: all methods may run concurrently. Two uploads of one path are serialised.
#pragma once

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "paramd/v1/checkpoints.grpc.pb.h"
#include "server/core/registry.h"
#include "server/io/checkpoint_dir.h"
#include "server/io/file_system.h"
#include "server/io/mapped_file.h"
#include "server/service/snapshots.h"

namespace paramd::service {

class CheckpointsService final : public v1::Checkpoints::Service {
 public:
  // Borrows all three; `snapshots` may be null (no data directory: Snapshot is refused).
  CheckpointsService(core::ModelRegistry* registry, const io::CheckpointDir* directory,
                     Snapshots* snapshots)
      : registry_(registry), directory_(directory), snapshots_(snapshots) {}

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
  // The SHA-256 of the mapped `file`: kept from when paramd wrote it (Save, Upload) or
  // hashed once and kept, so that downloads, resumed ones included, do not hash the file
  // again (Note [Kept digests]).
  std::string DigestOf(const io::MappedFile& file);
  void KeepDigest(const std::string& path, const io::WrittenFile& written);

  absl::Status DoUpload(grpc::ServerContext* context, grpc::ServerReader<v1::UploadRequest>* reader,
                        v1::UploadResponse* response, std::string& path);

  core::ModelRegistry* const registry_;
  const io::CheckpointDir* const directory_;
  Snapshots* const snapshots_;
  absl::Mutex uploads_mu_;
  absl::flat_hash_set<std::string> uploads_in_flight_ ABSL_GUARDED_BY(uploads_mu_);
  absl::Mutex digests_mu_;
  struct KeptDigest {
    io::FileIdentity identity;
    std::string sha256;
    int64_t taken_unix_ns;  // when the bytes were hashed
  };
  // By absolute path.
  absl::flat_hash_map<std::string, KeptDigest> digests_ ABSL_GUARDED_BY(digests_mu_);
};

}  // namespace paramd::service
