// Optimizer snapshots: what a restarted daemon needs to bring an optimizer back bound to its
// restored model (docs/training.md, "Restarts"). Written by Snapshots beside the models'.
//
// One safetensors file per optimizer: each per-parameter state tensor under
// "<index>.<key>" (the names GetOptimizerState streams: "0.exp_avg", "3.step"), and in the
// metadata, under `paramd.optimizer`, a JSON object with the optimizer's name, model, kind,
// mode, step count, the model version whose weights the state goes with, the param groups
// (parameter indices and names, every hyperparameter with its Python type; ints exactly,
// floats bit for bit: Note [Exact floats in snapshots] in optimizer_snapshot.cc) and
// `state_order`, the indices of the state entries in state_dict()'s order (safetensors keeps
// tensors sorted by name; a file without it is read in param-group order).
// Gradients are not kept: a restored optimizer starts with every `.grad` None, and neither is
// a synchronous round's timeout: the restarted daemon's --sync-round-timeout applies.
//
// Thread-safety: reentrant functions, no shared state.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/core/model.h"
#include "server/core/optim/optimizer.h"
#include "server/io/file_system.h"

namespace paramd::io {

struct OptimizerSnapshot {
  std::string name;
  std::string model;
  core::OptimizerKind kind = core::OptimizerKind::kSgd;
  // Its kind and bound; round_timeout is not kept (zero when read).
  core::OptimizerMode mode;
  uint64_t steps = 0;
  // The model version whose weights `state` goes with: a restore refuses the snapshot when
  // the model came back at another snapshot version (a stop between the two writes).
  uint64_t model_version = 0;
  core::OptimizerStateDict state;
};

// The metadata key of the JSON description.
inline constexpr char kOptimizerKey[] = "paramd.optimizer";

// Writes the snapshot atomically (temporary file, fsync, rename), as model snapshots are.
absl::Status SaveOptimizerSnapshot(const std::string& path, const OptimizerSnapshot& snapshot,
                                   FileSystem& fs = FileSystem::Posix());

// Reads a file SaveOptimizerSnapshot wrote. INVALID_ARGUMENT, saying what is wrong, for a
// file that is damaged, not an optimizer snapshot, or inconsistent (a tensor name that is
// not "<index>.<key>", an index no group lists, an unknown kind or mode).
absl::StatusOr<OptimizerSnapshot> ReadOptimizerSnapshot(const std::string& path);

// Creates the optimizer on `model` (its groups by parameter name), loads its state and step
// count. A synchronous one's rounds time out after `sync_round_timeout` (the daemon's
// --sync-round-timeout, as for an optimizer created now; zero: never). The errors of
// Optimizer::Create and LoadStateDict (a parameter the model no longer has, a state of
// another shape).
absl::StatusOr<std::shared_ptr<core::Optimizer>> RestoreOptimizer(
    const OptimizerSnapshot& snapshot, std::shared_ptr<core::Model> model,
    absl::Duration sync_round_timeout);

}  // namespace paramd::io
