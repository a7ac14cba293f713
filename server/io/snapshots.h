// Snapshots: each model's latest state in the data directory, so that a restarted daemon
// comes back with the models it had (DESIGN.md sections 7 and 9).
//
// One file per model, `<data-dir>/models/<name>.safetensors`, written atomically through
// io::SaveCheckpoint with the model's exported spec, version, mode and the time of the
// snapshot in its metadata. A model is only rewritten when its version moved since its
// last snapshot. Deleting a model removes its snapshot, so it does not come back.
//
// Thread-safety: every method may be called from any thread; snapshots of one model are
// serialised, and a snapshot pins one model version (it never blocks writers).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/core/registry.h"
#include "server/io/file_system.h"

namespace paramd::io {

class Snapshots {
 public:
  struct Taken {
    std::string model;
    uint64_t version = 0;
    bool written = false;  // false: the snapshot on disk already had this version
  };

  // Creates `<data_dir>/models` when missing. `registry` and `fs` (which writes the
  // snapshot files) must outlive this.
  static absl::StatusOr<std::unique_ptr<Snapshots>> Open(const std::string& data_dir,
                                                         core::ModelRegistry* registry,
                                                         FileSystem& fs = FileSystem::Posix());

  // Snapshots the named models (every model when `names` is empty). NOT_FOUND for an
  // unknown name; the first failing write's status otherwise (the others still run).
  absl::StatusOr<std::vector<Taken>> Take(const std::vector<std::string>& names);
  // Removes the snapshot of a deleted model.
  void Forget(const std::string& name);
  // Recreates every snapshotted model into the registry, logging what it restored and from
  // when; a snapshot that cannot be read is logged and left in place for inspection.
  // Returns how many models it restored.
  int RestoreAll();

 private:
  Snapshots(std::string directory, core::ModelRegistry* registry, FileSystem& fs)
      : directory_(std::move(directory)), registry_(registry), fs_(&fs) {}
  std::string PathOf(const std::string& name) const;
  // Recreates the model `name` from its snapshot `file` into the registry.
  absl::Status Restore(const std::string& name, const std::string& file);

  const std::string directory_;
  core::ModelRegistry* const registry_;
  FileSystem* const fs_;
  absl::Mutex mu_;
  // The version each model's snapshot file holds.
  absl::flat_hash_map<std::string, uint64_t> saved_ ABSL_GUARDED_BY(mu_);
  // Held across one snapshot write, so two writers of one file never overlap.
  absl::Mutex write_mu_;
};

}  // namespace paramd::io
