// nn.Module.load_state_dict with PyTorch's exact rules (pytorch-semantics.md section 4):
// missing and unexpected keys, size mismatches, the 0-dim BC quirk, BatchNorm's
// num_batches_tracked rule, strict and assign, and PyTorch's message text and order.
//
// Unlike PyTorch it is atomic: PlanLoadStateDict checks everything and prepares every new
// tensor without touching the tree; only LoadPlan::Commit changes it, and it cannot fail.
// So a failed load changes nothing.
//
// Thread-safety: planning reads the tree and commit writes it; the caller serialises
// writers and keeps readers out during Commit (Model does).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "server/core/module.h"

namespace paramd::core {

struct StateDictInput {
  // Keys and tensors in the caller's order (the order of the OrderedDict being loaded).
  // The model may take these tensors over instead of copying them (when dtype, device and
  // layout already match, and they do not view a file), so the caller must not write them
  // afterwards.
  std::vector<std::pair<std::string, Tensor>> entries;
  // `state_dict._metadata` (module prefix -> version), when the input carries one. A plain
  // dict (safetensors, a hand-built mapping) has none, and then BatchNorm never reports a
  // missing num_batches_tracked.
  std::optional<absl::flat_hash_map<std::string, int>> metadata;
};

// `_IncompatibleKeys`.
struct IncompatibleKeys {
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
};

struct LoadOptions {
  bool strict = true;
  // Replace the module's tensors with the checkpoint's (dtype, device, storage) instead of
  // copying into them.
  bool assign = false;
  // Lets the plan install tensors over wrapped storages (a file's mapping) as they are. Only
  // for files the caller owns and never rewrites in place (the daemon's own snapshots); any
  // other load copies them (load_state_dict.cc, Note [Loaded tensors own their memory]).
  bool keep_mapped = false;
  // Polled before each tensor is copied; when it returns true the plan stops with
  // CANCELLED, frees the copies it made and changes nothing. May be empty.
  std::function<bool()> cancelled;
  // When set, receives the missing and unexpected keys the check found, also when the load
  // is refused with PyTorch's error: a caller that must cut that text (a status message) can
  // still hand over the whole lists. Borrowed; written by the thread that plans.
  IncompatibleKeys* found = nullptr;
};

class LoadPlan {
 public:
  const IncompatibleKeys& keys() const { return keys_; }
  // Publishes every planned write in traversal order (so a tensor reached twice ends with
  // the later key's value, as in PyTorch). `version` becomes each written tensor's version.
  void Commit(uint64_t version);

  // One planned change of a module slot; internal to the planner.
  struct Write {
    Module* module;
    std::string name;
    bool is_parameter;
    std::shared_ptr<TensorSlot> slot;  // copy: the slot to update; null for assign
    Tensor value;
    bool requires_grad = true;  // assign: taken from the replaced Parameter
  };

 private:
  friend absl::StatusOr<LoadPlan> PlanLoadStateDict(const std::shared_ptr<Module>& root,
                                                    const StateDictInput& input,
                                                    const LoadOptions& options);
  std::vector<Write> writes_;
  IncompatibleKeys keys_;
};

// Validates `input` against the tree and prepares the new tensors. Errors:
// INVALID_ARGUMENT with PyTorch's RuntimeError text ("Error(s) in loading state_dict for
// MLP:\n\tMissing key(s) in state_dict: ..."), or for a duplicate key in `input`;
// RESOURCE_EXHAUSTED when the new tensors do not fit in memory.
absl::StatusOr<LoadPlan> PlanLoadStateDict(const std::shared_ptr<Module>& root,
                                           const StateDictInput& input, const LoadOptions& options);

// Plan and commit in one step, for callers that own the tree outright (no Model).
absl::StatusOr<IncompatibleKeys> LoadStateDict(const std::shared_ptr<Module>& root,
                                               const StateDictInput& input,
                                               const LoadOptions& options, uint64_t version = 0);

// `repr(_IncompatibleKeys)`: "<All keys matched successfully>" or
// "_IncompatibleKeys(missing_keys=['a'], unexpected_keys=[])".
std::string IncompatibleKeysRepr(const IncompatibleKeys& keys);

}  // namespace paramd::core
