// Model: a named module tree with a device (where all its tensors live), a train/eval mode
// and a version that grows with every mutation. It is the unit of consistency (DESIGN.md
// section 4).
//
// Note [Snapshot publication]
// Readers and writers never see a half-written model, and a long read never blocks a
// writer. Storages are copy-on-write: once a published version can reach a storage it is
// never written again. A writer (serialised by `writer_mu_`) reads the current tree, builds
// every new tensor in fresh storage and validates everything while readers go on; only then
// does it take `mu_` exclusively and publish by swapping pointers and bumping the version,
// which cannot fail. A reader takes `mu_` shared just long enough to copy the Tensor values
// it needs (cheap: each holds a shared_ptr to its storage), then streams them at leisure
// with no lock held; those storages stay alive and unchanged for as long as it holds them.
//
// Note [Version reservation]
// A model's versions never repeat, not even across a crash: a version a client was told
// names one state of the model forever. Versions live in memory, so a model restored from
// its last snapshot after a SIGKILL would otherwise come back at the snapshot's version and
// hand out again the numbers that named the writes made after it. A Model with a
// VersionLease therefore asks it, before handing out a version past its reserved block, to
// durably reserve a new block (written and fsynced before any version of the block is
// returned); a restore after an unclean stop starts past the end of the last reserved block.
// The reservation runs under `writer_mu_` (writers of that model wait, readers never do),
// once per block.
//
// Thread-safety: every method is safe to call from any thread.
#pragma once

#include "absl/strings/string_view.h"
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/core/load_state_dict.h"
#include "server/core/module.h"

namespace paramd::core {

// Durable reservations of model versions (Note [Version reservation]). Implementations are
// thread-safe; Reserve is called with the model's writer lock held, so it must not call back
// into the model.
class VersionLease {
 public:
  virtual ~VersionLease() = default;
  // Durably records that the model `name` may hand out versions up to the returned value
  // (>= `version`) before returning it. An error fails the write that needed the version.
  virtual absl::StatusOr<uint64_t> Reserve(const std::string& name, uint64_t version) = 0;
};

// A rectangular region: one [start, stop) range per leading dimension.
using Region = std::vector<std::pair<int64_t, int64_t>>;

class Model {
 public:
  // Takes ownership of the tree; version starts at 1 (0 means "any version" in if_version),
  // or at `version` for a model restored from a snapshot (versions never go back).
  Model(std::string name, std::shared_ptr<Module> root, Device device, uint64_t version = 1);
  // Gives back what ChargeStructure counted.
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const std::string& name() const { return name_; }
  uint64_t version() const;
  Device device() const;
  bool training() const;
  // From now on, versions are reserved through `lease` before they are handed out (the
  // registry attaches its lease to every model it adds).
  void set_version_lease(std::shared_ptr<VersionLease> lease);

  // Counts `bytes` of host memory for the tree's structure against the host's limit
  // (--max-memory; Note [Structure memory] in expanded_size.h) for as long as the model
  // lives, in place of what it counted before. RESOURCE_EXHAUSTED, with the count unchanged,
  // when more does not fit. The registry charges every model it adds; a write that changes
  // the structure charges the new size as the last step of its prepare.
  absl::Status ChargeStructure(uint64_t bytes);

  // Runs `fn(root, version)` with readers' access to one published version. `fn` must only
  // copy out what it needs (names, Tensor values, metadata) and must not block.
  template <typename Fn>
  auto Read(Fn&& fn) const {
    absl::ReaderMutexLock lock(&mu_);
    return fn(static_cast<const std::shared_ptr<Module>&>(root_), version_);
  }

  // The general write. `prepare` runs with the tree stable (other writers excluded, readers
  // not) and returns either an error (nothing changes) or a commit that applies the change
  // and must not fail. ABORTED when `if_version` is set and differs from the current version.
  // Returns the new version. FAILED_PRECONDITION when the version cannot grow any more; the
  // lease's error when no version can be reserved. Either way nothing changes.
  using Commit = std::function<void(uint64_t new_version)>;
  using Prepare = std::function<absl::StatusOr<Commit>(const std::shared_ptr<Module>& root)>;
  absl::StatusOr<uint64_t> Write(std::optional<uint64_t> if_version, const Prepare& prepare);

  // Writes `values` (converted to the tensor's dtype, as copy_ does) into the parameter or
  // buffer `key` (a dotted path), or into a region of it. Without a region the shapes must
  // match, or `values` is a single element with no more dimensions than the tensor; with
  // one, `values` must have the region's shape (size-1 dimensions aside) or a single
  // element. NOT_FOUND for an unknown key, INVALID_ARGUMENT for shape or bounds.
  absl::StatusOr<uint64_t> SetTensor(absl::string_view key, const std::optional<Region>& region,
                                     const Tensor& values, std::optional<uint64_t> if_version);

  // Several SetTensor writes applied all-or-nothing in one new version, in order (a later
  // write to the same tensor, or to a tied name, sees the earlier one). A whole-tensor write
  // whose values already have the tensor's dtype and layout takes those values over without
  // a copy: callers must not write them afterwards. An empty batch writes nothing: it
  // returns the current version (ABORTED for a stale `if_version`, as any write).
  struct TensorWrite {
    std::string key;
    std::optional<Region> region;
    Tensor values;
  };
  absl::StatusOr<uint64_t> SetTensors(const std::vector<TensorWrite>& writes,
                                      std::optional<uint64_t> if_version);

  // load_state_dict, atomically. Returns the new version and the incompatible keys.
  absl::StatusOr<std::pair<uint64_t, IncompatibleKeys>> LoadStateDict(
      const StateDictInput& input, const LoadOptions& options, std::optional<uint64_t> if_version);

  // `model.train(mode)`: every module's `training` flag.
  absl::StatusOr<uint64_t> SetTraining(bool training, std::optional<uint64_t> if_version);

  // `model.to(device)`: every parameter and buffer copied to `device` in one new version,
  // each Parameter and Buffer object kept (so tied names stay tied and shared modules
  // shared), as PyTorch's Module._apply does. On the model's own device nothing changes and
  // the current version is returned. FAILED_PRECONDITION for a device this process cannot
  // use; RESOURCE_EXHAUSTED when the copies do not fit there (the model stays where it was).
  absl::StatusOr<uint64_t> MoveTo(const Device& device, std::optional<uint64_t> if_version);

 private:
  const std::string name_;
  absl::Mutex writer_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  std::shared_ptr<VersionLease> lease_ ABSL_GUARDED_BY(writer_mu_);
  // The last version `lease_` reserved; 0 before the first reservation.
  uint64_t reserved_ ABSL_GUARDED_BY(writer_mu_) = 0;
  mutable absl::Mutex mu_;
  Device device_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<Module> root_ ABSL_GUARDED_BY(mu_);
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 1;
  absl::Mutex charge_mu_;
  uint64_t structure_bytes_ ABSL_GUARDED_BY(charge_mu_) = 0;  // what ChargeStructure counted
};

// Moves every tensor of a tree that no Model holds yet (one being built) to `device`, as
// Model::MoveTo does; on error the tree is unchanged.
absl::Status MoveUnpublishedTree(const std::shared_ptr<Module>& root, const Device& device);

// Finds the parameter or buffer at dotted path `key` (either kind, persistent or not).
// NOT_FOUND with PyTorch's lookup text for a bad module path, or naming the key otherwise.
absl::StatusOr<std::shared_ptr<TensorSlot>> FindTensorSlot(const std::shared_ptr<Module>& root,
                                                           absl::string_view key);

}  // namespace paramd::core
