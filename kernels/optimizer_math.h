// The float32 scalars of an optimizer step (OptimizerStepArgs in kernels/ops.h), computed
// once on the host for every backend, so the CPU and CUDA kernels multiply by the very same
// floats (Note [Optimizer arithmetic]). Plain data without abseil, so CUDA sources include
// it. Thread-safe: pure functions.
#pragma once

#include "kernels/ops.h"

namespace paramd::kernels {

// Each value is rounded from the double torch computes in Python, as ATen rounds a Python
// float operand to the tensor's float32.
struct OptimizerScalars {
  float weight_decay;
  float neg_lr;
  float momentum;
  float one_minus_dampening;
  // Adam. torch's lerp(start, end, w) computes start + w * (end - start) when |w| < 0.5 and
  // end + (w - 1) * (end - start) otherwise; lerp_coeff is w or w - 1 accordingly.
  float lerp_coeff;
  bool lerp_from_start;
  float beta2;
  float one_minus_beta2;
  float eps;
  float decay;  // AdamW: 1 - lr * weight_decay
};

// Defined in a file compiled without floating-point contraction, so no host compiler turns
// 1 - lr * weight_decay into a fused multiply-add that Python would not do.
OptimizerScalars MakeOptimizerScalars(const OptimizerStepArgs& args);

}  // namespace paramd::kernels
