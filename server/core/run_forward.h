// RunForward: one forward pass on a Model, as a client asks for it: pin a published
// version, run core::Forward on it with no lock held, and commit a training-mode forward's
// BatchNorm statistics through the model's write path (Note [Forward version]).
//
// Ownership: the answer's tensors are new storages nothing else reaches; `inputs` are only
// read. Thread-safety: any number of RunForward calls and writers may run on one model at
// once; the forward itself holds no model lock.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/core/forward.h"
#include "server/core/model.h"

namespace paramd::core {

// Which mode the forward runs in: the model's own (model.training), or one chosen for
// this call only (the model's flag is left alone).
enum class ForwardMode { kModel, kTrain, kEval };

struct RunForwardOptions {
  ForwardMode mode = ForwardMode::kModel;
  // Seeds the dropout masks (ForwardOptions::seed).
  uint64_t seed = 0;
  // Answer only from this version: ABORTED when the model is elsewhere, and no retry.
  std::optional<uint64_t> if_version;
  // Polled before each attempt and before each module call inside it; when it returns
  // true the call ends with CANCELLED and nothing is committed. May be empty.
  std::function<bool()> cancelled;
  // Asked before a training-mode forward runs, with whether the mode is the pinned
  // version's own (kModel) rather than the caller's: such a forward may commit, so a caller
  // allowed only to read is refused here. A non-OK answer ends the call with it; nothing
  // runs and nothing is committed. May be empty (allowed).
  std::function<absl::Status(bool model_mode)> may_train;
};

struct ForwardAnswer {
  // The version whose weights computed the outputs.
  uint64_t version = 0;
  // The version that holds the committed BatchNorm statistics; 0 when there were none.
  uint64_t updated_version = 0;
  bool training = false;
  std::vector<NamedTensor> outputs;
};

// Note [Forward version]
// A forward reads one pinned version V and answers with V. In training mode its
// BatchNorm running-statistics updates are committed with if_version = V, so they become
// exactly V + 1 and no other write falls between the weights that were read and the
// statistics that were written (as if the forward had held the model, which is what
// PyTorch's in-place update does). When a writer publishes first, the statistics computed
// from V are stale: the forward runs again on the newer version, up to kForwardAttempts
// times, then fails with ABORTED. A caller that pinned V itself (if_version) gets ABORTED at
// once instead, since it asked for V's answer.
inline constexpr int kForwardAttempts = 4;

// Runs `model` on `inputs` (core::Forward's contract for names, devices and errors).
// ABORTED when `if_version` does not match or the statistics could not be committed in
// kForwardAttempts tries; CANCELLED when `cancelled` says so.
absl::StatusOr<ForwardAnswer> RunForward(Model& model, absl::Span<const NamedTensor> inputs,
                                         const RunForwardOptions& options);

}  // namespace paramd::core
