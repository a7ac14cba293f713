// The program engine: runs the forward program of a custom container (DESIGN.md section 6:
// a list of child calls and ops over named values) on a Runner, and checks programs when a
// spec is built (forward.h's ValidateForwardProgram).
//
// Ownership and thread-safety as the Runner's (runner.h): one call per pass and thread.
// Internal to server/core.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "server/core/module.h"
#include "server/core/runner.h"
#include "server/core/tensor.h"

namespace paramd::core {

// Runs the forward program of `module` (at `path`) on `input`; `extra` holds further named
// values (the root's named inputs), or is null. Errors name the module and the step
// ("the root module (MLP), forward step 2 (op 'view'): ...").
absl::StatusOr<Tensor> RunProgram(Runner& runner, const Module& module, const std::string& path,
                                  const Tensor& input, const ValueMap* extra);

}  // namespace paramd::core
