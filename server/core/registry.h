// ModelRegistry: the daemon's models by name.
//
// Ownership: models are shared_ptr; a caller holding one keeps using it even after it is
// deleted from the registry (its in-flight reads finish on the version they pinned).
// Thread-safety: every method is safe from any thread; the lock is held only for map access.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/core/expanded_size.h"
#include "server/core/model.h"

namespace paramd::core {

// A model name: 1 to 128 characters from letters, digits, '_', '-' and '.', not starting
// with '.' (names become file names in the data directory). INVALID_ARGUMENT otherwise,
// naming `what` ("invalid optimizer name ..."): optimizers' names follow the same rule.
absl::Status ValidateModelName(absl::string_view name, absl::string_view what = "model");

class ModelRegistry {
 public:
  // Every model built for this registry (from a spec, a checkpoint or a snapshot) and every
  // change to a model's structure keeps its expanded size within `max_state_dict_keys`
  // state_dict keys and module paths (--max-state-dict-keys; Note [Expanded size]).
  explicit ModelRegistry(uint64_t max_state_dict_keys = kDefaultMaxStateDictKeys)
      : max_state_dict_keys_(max_state_dict_keys) {}

  uint64_t max_state_dict_keys() const { return max_state_dict_keys_; }

  // ALREADY_EXISTS when the name is taken. Attaches the registry's version lease, if any,
  // to the model (Note [Version reservation]).
  absl::Status Add(std::shared_ptr<Model> model);
  // The lease every model added from now on reserves its versions through; null: none.
  void SetVersionLease(std::shared_ptr<VersionLease> lease);
  // NOT_FOUND naming the model and how to list the others.
  absl::StatusOr<std::shared_ptr<Model>> Get(absl::string_view name) const;
  // NOT_FOUND, or ABORTED when `if_version` is set and the model moved on.
  absl::Status Remove(absl::string_view name, std::optional<uint64_t> if_version);
  // Every model, sorted by name.
  std::vector<std::shared_ptr<Model>> List() const;

 private:
  const uint64_t max_state_dict_keys_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Model>> models_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<VersionLease> lease_ ABSL_GUARDED_BY(mu_);
};

}  // namespace paramd::core
