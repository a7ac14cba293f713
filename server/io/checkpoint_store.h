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
//
// Reads (List, UploadOffset, OpenDownload, Load) create nothing; a write creates the
// directories it needs right before it writes, and removes them again when it fails
// (Note [Directories made by writes]). Every error names paths relative to the checkpoint
// directory, never the server's absolute paths.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/core/load_state_dict.h"
#include "server/core/optim/optimizer.h"
#include "server/core/registry.h"
#include "server/io/checkpoint.h"
#include "server/io/checkpoint_dir.h"
#include "server/io/file_system.h"
#include "server/io/mapped_file.h"
#include "server/io/upload.h"

namespace paramd::io {

struct CheckpointStoreOptions {
  // The largest total_size an upload may declare (--max-upload-size).
  uint64_t max_upload_size = uint64_t{256} << 30;
  // Partial files of uploads untouched for longer are removed (--upload-expiry); zero or
  // less keeps them forever.
  absl::Duration upload_expiry = absl::Hours(24);
};

class CheckpointStore {
 public:
  using Options = CheckpointStoreOptions;

  // `optimizers`, when given, must outlive the store: saves and loads of training
  // checkpoints name optimizers from it.
  CheckpointStore(CheckpointDir directory, core::ModelRegistry* registry,
                  FileSystem& fs = FileSystem::Posix(), Options options = {},
                  core::OptimizerRegistry* optimizers = nullptr)
      : directory_(std::move(directory)),
        registry_(registry),
        optimizers_(optimizers),
        fs_(&fs),
        options_(options) {}

  const CheckpointDir& directory() const { return directory_; }

  struct SaveRequest {
    std::string model;
    std::string path;  // relative to the checkpoint directory
    // Unset: safetensors for a `.safetensors` path, PyTorch's otherwise (FormatForSave).
    std::optional<CheckpointFormat> format;
    bool keep_vars = false;
    // Set: a training checkpoint, torch.save({"model": model.state_dict(), "optimizer":
    // optimizer.state_dict()}) with this optimizer of the model (PyTorch format only).
    std::string optimizer;
    // Hash the file (SHA-256) as it is written, into Saved::sha256 (empty otherwise).
    bool sha256 = false;
  };
  struct Saved {
    CheckpointFormat format = CheckpointFormat::kSafetensors;
    uint64_t version = 0;  // the version the file holds
    uint64_t size = 0;
    std::string sha256;
  };
  // Writes the model's state_dict, spec and version at one pinned version, atomically (with
  // an optimizer: its state as it goes with that version). Errors: the format's and the
  // path's (INVALID_ARGUMENT, PERMISSION_DENIED), NOT_FOUND for the model or optimizer,
  // FAILED_PRECONDITION for an optimizer of another model, the file system's.
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
    // Set: the file is a training checkpoint; its "model" loads into the (existing) model
    // and its "optimizer" into this existing optimizer of the model, all or nothing.
    std::string optimizer;
  };
  struct Loaded {
    CheckpointFormat format = CheckpointFormat::kSafetensors;
    bool created = false;
    uint64_t version = 0;
    core::IncompatibleKeys keys;
    uint64_t size = 0;  // the file's bytes
  };
  // Loads the file into the model (load_state_dict, atomically), or creates the model from
  // the file when it does not exist: from the request's spec, else the file's, at the
  // file's version when the spec came from it (version 1 otherwise). ALREADY_EXISTS for a
  // spec given for an existing model; FAILED_PRECONDITION for a missing model and a file
  // without a spec; the file's and load_state_dict's errors otherwise. With an optimizer:
  // the model must exist (FAILED_PRECONDITION otherwise, or for an optimizer of another
  // model), the file must hold an optimizer (INVALID_ARGUMENT), and both loads are checked
  // before either changes anything (optimizer.load_state_dict's checks and messages).
  absl::StatusOr<Loaded> Load(const LoadRequest& request);

  struct Listed {
    CheckpointFileInfo file;
    // From the file's first bytes (SniffFileFormat), whatever its name; unset when neither.
    std::optional<CheckpointFormat> format;
  };
  // Every checkpoint file a client can read, sorted by path (CheckpointDir::List).
  absl::StatusOr<std::vector<Listed>> List() const;

  // Removes the partial files of uploads untouched for longer than Options::upload_expiry
  // (not those of uploads in flight); returns how many. Called when the daemon starts, and
  // by writes at most once a minute (Note [Expired uploads]).
  int RemoveExpiredUploads();

  // The directories a write pinned (so that no failing write removes them meanwhile) and
  // those it created, absolute.
  struct ParentDirs {
    std::vector<std::string> pinned;
    std::vector<std::string> created;
  };

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
           PartialUpload partial, ParentDirs parents)
        : store_(store),
          path_(std::move(path)),
          target_(std::move(target)),
          sha256_(std::move(sha256)),
          partial_(std::move(partial)),
          parents_(std::move(parents)) {}

    CheckpointStore* const store_;
    const std::string path_;    // as the client named it
    const std::string target_;  // absolute
    const std::string sha256_;  // expected, lower-case hex
    PartialUpload partial_;
    // Released when the upload ends; what it created is removed if left empty (the bytes
    // were dropped).
    ParentDirs parents_;
  };
  struct UploadHeader {
    std::string path;
    uint64_t offset = 0;
    uint64_t total_size = 0;
    std::string sha256;  // hex, either case
  };
  // Starts (offset 0) or resumes (offset = UploadOffset) the upload of `header.path`.
  // INVALID_ARGUMENT for a malformed digest or a total_size over Options::max_upload_size;
  // RESOURCE_EXHAUSTED when the bytes still to come do not fit the free space of the
  // checkpoint file system (less what other uploads in flight still need); ABORTED when
  // that path is being uploaded by another call; PartialUpload::Open's errors otherwise.
  absl::StatusOr<std::unique_ptr<Upload>> StartUpload(const UploadHeader& header);
  // The bytes of an unfinished upload of `path` kept so far (0 when none). Creates nothing.
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
  absl::StatusOr<Saved> SaveFile(const SaveRequest& request);
  absl::StatusOr<Loaded> LoadFile(const LoadRequest& request);
  absl::StatusOr<std::unique_ptr<Upload>> StartUploadOf(const UploadHeader& header);
  absl::StatusOr<Download> OpenDownloadOf(const std::string& path, uint64_t offset);
  // Claims `target` for an upload that still needs `needed` bytes; the errors of StartUpload.
  absl::Status ClaimUpload(const std::string& path, const std::string& target, uint64_t needed);
  std::string DigestOf(const MappedFile& file);
  void KeepDigest(const std::string& path, const WrittenFile& written);
  void EndUpload(const std::string& target);
  void MaybeRemoveExpiredUploads();
  // Note [Directories made by writes]
  absl::StatusOr<ParentDirs> MakeParents(const CheckpointDir::WriteTarget& target);
  void ReleaseParents(const ParentDirs& parents, bool remove_created);

  // The optimizer `name`, which must belong to `model` (the object).
  absl::StatusOr<std::shared_ptr<core::Optimizer>> OptimizerOf(
      const std::string& name, const std::shared_ptr<core::Model>& model) const;
  absl::StatusOr<Loaded> LoadWithOptimizer(const LoadRequest& request,
                                           const std::shared_ptr<core::Model>& model,
                                           core::StateDictInput input, Checkpoint& checkpoint,
                                           uint64_t size);

  const CheckpointDir directory_;
  core::ModelRegistry* const registry_;
  core::OptimizerRegistry* const optimizers_;  // may be null
  FileSystem* const fs_;
  const Options options_;

  absl::Mutex uploads_mu_;
  // Absolute paths of the uploads in progress, with the bytes each still needs.
  absl::flat_hash_map<std::string, uint64_t> uploads_in_flight_ ABSL_GUARDED_BY(uploads_mu_);
  absl::Time last_expiry_sweep_ ABSL_GUARDED_BY(uploads_mu_) = absl::InfinitePast();

  absl::Mutex dirs_mu_;
  // How many writes in flight need each directory (absolute).
  absl::flat_hash_map<std::string, int> dirs_in_use_ ABSL_GUARDED_BY(dirs_mu_);

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
