// CheckpointStore: the checkpoint files clients name (--checkpoint-dir) and everything done
// with them: saving a model to one, loading one into a model (or creating the model from
// it), listing them, resumable uploads and downloads. Every path goes through the
// directory's confinement (checkpoint_dir.h); every write goes through one FileSystem, so a
// fault-injecting one covers saves and uploads alike.
//
// Ownership: borrows the registry and the FileSystem, which must outlive the store. An
// Upload borrows its store. Thread-safety: every method may be called from any thread.
// A save or load pins one model version and never blocks other calls on the model; two
// uploads of one path are refused rather than interleaved (Note [Uploads in flight]).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/core/load_state_dict.h"
#include "server/core/registry.h"
#include "server/io/checkpoint.h"
#include "server/io/checkpoint_dir.h"
#include "server/io/file_system.h"
#include "server/io/mapped_file.h"
#include "server/io/upload.h"

namespace paramd::io {

class CheckpointStore {
 public:
  CheckpointStore(CheckpointDir directory, core::ModelRegistry* registry,
                  FileSystem& fs = FileSystem::Posix())
      : directory_(std::move(directory)), registry_(registry), fs_(&fs) {}

  const CheckpointDir& directory() const { return directory_; }

  struct SaveRequest {
    std::string model;
    std::string path;  // relative to the checkpoint directory
    // Unset: safetensors for a `.safetensors` path, PyTorch's otherwise (FormatForSave).
    std::optional<CheckpointFormat> format;
    bool keep_vars = false;
  };
  struct Saved {
    CheckpointFormat format = CheckpointFormat::kSafetensors;
    uint64_t version = 0;  // the version the file holds
    uint64_t size = 0;
    std::string sha256;
  };
  // Writes the model's state_dict, spec and version at one pinned version, atomically.
  // Errors: the format's and the path's (INVALID_ARGUMENT, PERMISSION_DENIED), NOT_FOUND
  // for the model, the file system's.
  absl::StatusOr<Saved> Save(const SaveRequest& request);

  struct LoadRequest {
    std::string model;
    std::string path;
    // torch.load's map_location: one location, or a mapping (either, not both).
    std::string map_location;
    std::vector<std::pair<std::string, std::string>> location_map;
    core::LoadOptions options;
    std::optional<uint64_t> if_version;
    // Only for a model that does not exist yet: its spec (default: the file's) and its
    // device (default cpu).
    std::string spec_json;
    std::string device;
  };
  struct Loaded {
    CheckpointFormat format = CheckpointFormat::kSafetensors;
    bool created = false;
    uint64_t version = 0;
    core::IncompatibleKeys keys;
  };
  // Loads the file into the model (load_state_dict, atomically), or creates the model from
  // the file when it does not exist: from the request's spec, else the file's, at the
  // file's version when the spec came from it (version 1 otherwise). ALREADY_EXISTS for a
  // spec given for an existing model; FAILED_PRECONDITION for a missing model and a file
  // without a spec; the file's and load_state_dict's errors otherwise.
  absl::StatusOr<Loaded> Load(const LoadRequest& request);

  struct Listed {
    CheckpointFileInfo file;
    // From the file's first bytes (SniffFileFormat), whatever its name; unset when neither.
    std::optional<CheckpointFormat> format;
  };
  // Every checkpoint file, sorted by path.
  absl::StatusOr<std::vector<Listed>> List() const;

  // One upload in progress (PartialUpload), holding its path until destroyed. Errors
  // name the file ("upload of 'a.pt': ...").
  class Upload {
   public:
    ~Upload();
    Upload(const Upload&) = delete;
    Upload& operator=(const Upload&) = delete;

    const std::string& path() const { return path_; }
    uint64_t size() const { return partial_.size(); }
    absl::Status Append(absl::string_view piece);
    // The stream broke off: keeps the bytes for a resume and returns CANCELLED saying
    // where to resume (or the error that kept them from being kept).
    absl::Status BreakOff();
    // All bytes are in: checks the digest and puts the file in place (PartialUpload::Finish).
    absl::StatusOr<WrittenFile> Finish();
    // `status` with this upload's path in front of its message.
    absl::Status Named(const absl::Status& status) const;

   private:
    friend class CheckpointStore;
    Upload(CheckpointStore* store, std::string path, std::string target, std::string sha256,
           PartialUpload partial)
        : store_(store),
          path_(std::move(path)),
          target_(std::move(target)),
          sha256_(std::move(sha256)),
          partial_(std::move(partial)) {}

    CheckpointStore* const store_;
    const std::string path_;    // as the client named it
    const std::string target_;  // absolute
    const std::string sha256_;  // expected, lower-case hex
    PartialUpload partial_;
  };
  struct UploadHeader {
    std::string path;
    uint64_t offset = 0;
    uint64_t total_size = 0;
    std::string sha256;  // hex, either case
  };
  // Starts (offset 0) or resumes (offset = UploadOffset) the upload of `header.path`.
  // INVALID_ARGUMENT for a malformed digest, ABORTED when that path is being uploaded by
  // another call, PartialUpload::Open's errors otherwise.
  absl::StatusOr<std::unique_ptr<Upload>> StartUpload(const UploadHeader& header);
  // The bytes of an unfinished upload of `path` kept so far (0 when none).
  absl::StatusOr<uint64_t> UploadOffset(const std::string& path) const;

  struct Download {
    std::shared_ptr<const MappedFile> file;  // pins the bytes even if a save replaces them
    std::string sha256;                      // of the whole file
    std::optional<int64_t> modified_unix;
  };
  // Opens `path` for a download from `offset`; OUT_OF_RANGE past its end. The digest is
  // kept from paramd's own writes or hashed once (Note [Kept digests]).
  absl::StatusOr<Download> OpenDownload(const std::string& path, uint64_t offset);

 private:
  std::string DigestOf(const MappedFile& file);
  void KeepDigest(const std::string& path, const WrittenFile& written);
  void EndUpload(const std::string& target);

  const CheckpointDir directory_;
  core::ModelRegistry* const registry_;
  FileSystem* const fs_;

  absl::Mutex uploads_mu_;
  // Absolute paths of the uploads in progress.
  absl::flat_hash_set<std::string> uploads_in_flight_ ABSL_GUARDED_BY(uploads_mu_);

  absl::Mutex digests_mu_;
  struct KeptDigest {
    FileIdentity identity;
    std::string sha256;
    int64_t taken_unix_ns;  // when the bytes were hashed
  };
  // By absolute path.
  absl::flat_hash_map<std::string, KeptDigest> digests_ ABSL_GUARDED_BY(digests_mu_);
};

}  // namespace paramd::io
