// Forward passes: runs a module tree on named input tensors with PyTorch's semantics for
// every built-in module (DESIGN.md section 6) and the forward programs of custom
// containers. The math runs on the backend of the model's device (kernels/ops.h); the
// PyTorch-side checks, output shapes and error messages live with each layer (layers/),
// the runner (runner.h) and the program engine (program.h).
//
// Ownership: the result's tensors are new storages that nothing else reaches; inputs and
// the module's tensors are only read. Forward never mutates the module tree: BatchNorm's
// training-mode buffer updates come back in the result (Note [Forward buffer updates]).
// Thread-safety: Forward only reads `root`; the caller keeps the tree alive and unchanged
// for the call (pin a published version: Note [Snapshot publication] in model.h). Many
// forwards may run at once.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "nlohmann/json.hpp"
#include "server/core/module.h"
#include "server/core/tensor.h"

namespace paramd::core {

struct NamedTensor {
  std::string name;
  Tensor tensor;
};

// Note [Forward buffer updates]
// A training-mode BatchNorm with tracked statistics updates running_mean, running_var and
// num_batches_tracked, as PyTorch does in place. Published storages are immutable, so the
// forward pass computes the new values into fresh tensors and returns them; the caller
// commits them through Model's write path (SetTensors) as one new version, or drops them.
// Within one forward pass a module called twice sees its own earlier update, as in PyTorch.
// Each buffer appears once, under the dotted name of the first call that updated it, with
// its last value.
struct BufferUpdate {
  std::string name;
  Tensor value;
};

struct ForwardResult {
  // One tensor named "output".
  std::vector<NamedTensor> outputs;
  std::vector<BufferUpdate> buffer_updates;
};

struct ForwardOptions {
  // model.train() / model.eval(): Dropout and BatchNorm follow it for every module.
  bool training = false;
  // Seeds the dropout masks (Note [Dropout mask] in kernels/ops.h); the same seed, model
  // and inputs give the same output.
  uint64_t seed = 0;
  // Polled before each module call; when it returns true the forward stops with CANCELLED
  // and its intermediate tensors are freed. May be empty.
  std::function<bool()> cancelled;
};

// Runs `root` on `inputs`. One input must be named "input" (the positional argument);
// further named inputs are values the root's forward program may read by name, and only
// a custom container takes them. Inputs on another device than the model's tensors are
// copied there first; outputs stay on the model's device.
//
// Errors: INVALID_ARGUMENT for shapes, dtypes and arguments PyTorch would reject, naming
// the module path and type and using PyTorch's text where it has one ("module 'fc1'
// (Linear): mat1 and mat2 shapes cannot be multiplied (1x3 and 2x4)"); UNIMPLEMENTED for
// a module option or dtype paramd's kernels do not run; the backend's errors otherwise.
absl::StatusOr<ForwardResult> Forward(const Module& root, absl::Span<const NamedTensor> inputs,
                                      const ForwardOptions& options);
absl::StatusOr<ForwardResult> Forward(const Module& root, bool training,
                                      absl::Span<const NamedTensor> inputs);

// Checks a custom container's forward program against the module it belongs to: step
// kinds, child names, op names, argument names and types, and value names read before
// any step wrote them. INVALID_ARGUMENT naming the step ("step 2: unknown op 'rleu'").
absl::Status ValidateForwardProgram(const nlohmann::json& program, const Module& module);

}  // namespace paramd::core
