// Snapshots: each model's latest state in the data directory, so that a restarted daemon
// comes back with the models it had (DESIGN.md sections 7 and 9).
//
// One file per model, `<data-dir>/models/<name>.safetensors`, written atomically through
// io::SaveCheckpoint with the model's exported spec, version, mode and the time of the
// snapshot in its metadata. A model is only rewritten when its version moved since its
// last snapshot. Deleting a model removes its snapshot, so it does not come back.
//
// Versions: Open makes the registry reserve each model's versions in `<name>.versions`
// beside its snapshot (VersionFiles; Note [Version reservation] in server/core/model.h).
// Shutdown removes those files once the final snapshot holds every model's current version;
// RestoreAll starts a model that still has one (an unclean stop) past its reserved block,
// so no version a client was told is ever handed out again.
//
// Optimizers (docs/training.md, "Restarts"): with an optimizer registry, each optimizer of
// a snapshotted model is written to `<data-dir>/optimizers/<name>.safetensors`
// (optimizer_snapshot.h) together with its model, from a state that goes with the model
// version the model's snapshot holds: the optimizer's state is taken, the model pinned, and
// both taken again if the optimizer changed meanwhile. An optimizer file is rewritten when
// its model's is or when the optimizer changed. RestoreAll brings the optimizers back after
// the models, bound to them; one whose file cannot be read, whose model did not come back,
// or whose state goes with another model version is logged as an error and skipped (its
// file left for inspection), never stopping a model from coming back. Optimizers deleted,
// or whose model was deleted, lose their file at the next snapshot (and with the model's
// Forget).
//
// Leftovers: Open removes the temporary files (`.<name>.safetensors.tmp-*`,
// `.<name>.versions.tmp-*`) that a process killed mid-write left in the directory, and logs
// each one.
//
// Thread-safety: every method may be called from any thread; writes and removals of one
// model's snapshot are serialised (a per-model busy mark, waited on without holding a lock
// across the I/O), and a snapshot pins one model version (it never blocks writers).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/core/optim/optimizer.h"
#include "server/core/registry.h"
#include "server/io/file_system.h"
#include "server/io/version_files.h"

namespace paramd::io {

class Snapshots {
 public:
  struct Taken {
    std::string model;
    uint64_t version = 0;
    bool written = false;  // false: the snapshot on disk already had this version
  };

  // Creates `<data_dir>/models` when missing and removes the temporary files a crashed
  // process left there; sets the registry's version lease. `registry` and `fs` (which
  // writes the snapshot and reservation files) must outlive this.
  // `optimizers`, when given, must outlive this too; its optimizers are snapshotted and
  // restored with their models, the synchronous ones with rounds that time out after
  // `sync_round_timeout` (--sync-round-timeout; zero: never).
  static absl::StatusOr<std::unique_ptr<Snapshots>> Open(
      const std::string& data_dir, core::ModelRegistry* registry,
      FileSystem& fs = FileSystem::Posix(), core::OptimizerRegistry* optimizers = nullptr,
      absl::Duration sync_round_timeout = absl::ZeroDuration());

  // Snapshots the named models (every model when `names` is empty). NOT_FOUND for an
  // unknown name; the first failing write's status otherwise (the others still run).
  absl::StatusOr<std::vector<Taken>> Take(const std::vector<std::string>& names);
  // The final snapshot, once no more writes can come: Take({}), then, for every model whose
  // snapshot now holds its current version, removes its version reservation (a clean stop:
  // the model comes back at the same version). Returns Take's result; on an error the
  // failing models keep their reservations and the error names them.
  absl::StatusOr<std::vector<Taken>> Shutdown();
  // Removes the snapshot and version reservation of a deleted model; waits for a snapshot
  // of it that is being written.
  void Forget(const std::string& name);
  // Recreates every snapshotted model into the registry, logging what it restored and from
  // when; a snapshot that cannot be read (or carries a version >= 2^63) is logged as an
  // error naming the model and left in place for inspection. A model with a version
  // reservation left from an unclean stop comes back at one past its reserved block.
  // Returns how many models it restored. Then restores the optimizers (see above).
  int RestoreAll();

 private:
  Snapshots(std::string directory, std::string optimizer_directory, core::ModelRegistry* registry,
            core::OptimizerRegistry* optimizers, absl::Duration sync_round_timeout, FileSystem& fs)
      : directory_(directory),
        optimizer_directory_(std::move(optimizer_directory)),
        registry_(registry),
        optimizers_(optimizers),
        sync_round_timeout_(sync_round_timeout),
        fs_(&fs),
        versions_(std::make_shared<VersionFiles>(std::move(directory), fs)) {}
  std::string PathOf(const std::string& name) const;
  std::string OptimizerPathOf(const std::string& name) const;
  // Removes the temporary files of writes that never finished in `directory`; returns how
  // many.
  int RemoveLeftovers(const std::string& directory);
  // One optimizer's state taken for a snapshot.
  struct Captured {
    std::shared_ptr<core::Optimizer> optimizer;
    core::Optimizer::Summary summary;
    core::OptimizerStateDict state;
  };
  // The optimizers of `model` (the object, not only the name).
  std::vector<std::shared_ptr<core::Optimizer>> OptimizersOf(
      const std::shared_ptr<core::Model>& model) const;
  // Writes the captured optimizers of a model whose snapshot holds `version` (those that
  // changed, or all when `model_written`); the first error.
  absl::Status WriteOptimizers(const std::vector<Captured>& captured, uint64_t version,
                               bool model_written);
  // Removes the files of optimizers that were deleted or whose model was (only of
  // `model` when not empty).
  void SweepOptimizers(const std::string& model = "");
  void RemoveOptimizerFile(const std::string& name);
  int RestoreOptimizers();
  absl::Status RestoreOptimizerFile(const std::string& file);
  // Writes one model's snapshot unless the file already holds its version. Marks the model
  // busy for the write; called with no lock held.
  absl::StatusOr<Taken> TakeOne(const std::shared_ptr<core::Model>& model);
  // Waits until no write or removal of `name` runs, then marks it busy / not busy.
  void Acquire(const std::string& name) ABSL_LOCKS_EXCLUDED(mu_);
  void Release(const std::string& name) ABSL_LOCKS_EXCLUDED(mu_);
  // Recreates the model `name` from its snapshot `file` into the registry.
  absl::Status Restore(const std::string& name, const std::string& file);

  const std::string directory_;
  const std::string optimizer_directory_;
  core::ModelRegistry* const registry_;
  core::OptimizerRegistry* const optimizers_;  // may be null
  const absl::Duration sync_round_timeout_;
  FileSystem* const fs_;
  const std::shared_ptr<VersionFiles> versions_;
  absl::Mutex mu_;
  // The version each model's snapshot file holds.
  absl::flat_hash_map<std::string, uint64_t> saved_ ABSL_GUARDED_BY(mu_);
  // The models whose snapshot file is being written or removed right now; no lock is held
  // across that I/O, others wait for the mark to go.
  absl::flat_hash_set<std::string> busy_ ABSL_GUARDED_BY(mu_);
  // The optimizers whose file this process wrote or restored, by name.
  struct SavedOptimizer {
    std::weak_ptr<core::Optimizer> optimizer;
    std::string model;
    uint64_t changes = 0;
    uint64_t model_version = 0;
  };
  absl::flat_hash_map<std::string, SavedOptimizer> saved_optimizers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace paramd::io
