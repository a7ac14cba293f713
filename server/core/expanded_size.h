// How big a module tree is once every shared module is listed once per path, as PyTorch's
// traversals list it: state_dict() has a key for every path of every tensor, and
// named_modules(remove_duplicate=False) and state_dict()._metadata an entry for every path
// of every module (pytorch-semantics.md sections 2 and 3). A chain of d modules each using
// the next one twice has 2^d paths, so a few kilobytes of spec can describe more keys than
// any machine can list; the daemon refuses such a model before anything walks its paths.
//
// Note [Expanded size]
// The counts are sums over each module's children, memoised per distinct module, so they
// cost time linear in the modules and registry slots of the tree, never in its paths, and
// the arithmetic saturates at UINT64_MAX (a depth-200 chain neither overflows nor wraps).
// Every walk over paths (GetStateDict, NamedModules and NamedParameters/NamedBuffers with
// remove_duplicate=false, Repr, load_state_dict, Forward, snapshots and saves) costs in
// proportion to these counts, so a model that passes CheckExpandedSize can be walked. The
// daemon checks at every point where a tree is built (specs: CreateModel, Checkpoints.Load,
// restores) or its structure changes (RegisterParameter, RegisterBuffer, TieParameters).
//
// Note [Structure memory]
// A tree's structure takes host memory besides its tensors' bytes: each module object (its
// registries, its layer's arguments), each parameter or buffer slot (the Parameter, Tensor
// and Storage objects and the name) and each child slot. A spec of 200,000 ReLUs in one
// Sequential is 3.2 MB of JSON and tensor-free, yet about 170 MB resident. So every model
// charges an estimate of it against --max-memory for as long as it lives (Model::
// ChargeStructure): kModuleBytes per distinct module, kTensorSlotBytes per parameter or
// buffer slot, kChildSlotBytes per child slot, plus their names' bytes. The constants are
// rounded up from measurements of the daemon's resident memory per model: a ReLU module
// about 870 bytes, a parameter of one element about 750, a Linear(1, 1) about 2.3 KB.
// Counted per distinct object, in the same linear walk as the expanded size.
//
// Pure functions; the caller keeps writers out of the tree while they run.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "server/core/module.h"

namespace paramd::core {

// The default of --max-state-dict-keys: 2^20. The largest published models have a few
// thousand state_dict keys; a model past a million is a spec that shares modules along
// exponentially many paths.
inline constexpr uint64_t kDefaultMaxStateDictKeys = uint64_t{1} << 20;

// The most modules one path of a spec's tree may pass through, the root included. A spec
// without refs nests at most 128 (its JSON nests at most 256 levels, two per module); refs
// could chain modules further, and every walk of a tree recurses once per level.
inline constexpr uint64_t kMaxModuleDepth = 128;

inline constexpr uint64_t kModuleBytes = 1024;
inline constexpr uint64_t kTensorSlotBytes = 768;
inline constexpr uint64_t kChildSlotBytes = 128;

struct ExpandedSize {
  // len(state_dict()): each non-None parameter and persistent buffer once per path of its
  // module. Saturates at UINT64_MAX.
  uint64_t state_dict_keys = 0;
  // len(list(named_modules(remove_duplicate=False))) = len(state_dict()._metadata): each
  // module once per path, the root included. Saturates at UINT64_MAX.
  uint64_t module_paths = 0;
  // The most modules on one path from the root, the root included (a lone module: 1).
  uint64_t depth = 0;
  // Host memory the structure of the tree takes, estimated once per distinct module (Note
  // [Structure memory]). Only the root's count carries it. Saturates at UINT64_MAX.
  uint64_t structure_bytes = 0;
};

// What one module object and its slots take, its children aside (Note [Structure memory]).
uint64_t ModuleStructureBytes(const Module& module);

// The sizes of the tree under `root` (Note [Expanded size]). With `edited` and `planned`:
// the sizes as if the module object `edited`, wherever the tree reaches it, had `planned`'s
// registries instead (a writer's check before it commits a change to `edited`). A tree with
// a cycle (no spec or write makes one) counts as UINT64_MAX.
ExpandedSize CountExpandedSize(const Module& root, const Module* edited = nullptr,
                               const Module* planned = nullptr);

// INVALID_ARGUMENT when `size` has more state_dict keys or module paths than `max_keys`,
// naming the count, the limit and the flag:
//   "<what> 1099511627776 state_dict keys (shared modules are listed once per path, as in
//    PyTorch); the limit is 1048576 (--max-state-dict-keys)"
// `what` says whose size it is, e.g. "spec expands to".
absl::Status CheckExpandedSize(const ExpandedSize& size, uint64_t max_keys, absl::string_view what);

}  // namespace paramd::core
