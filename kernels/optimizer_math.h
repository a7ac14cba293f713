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

// Whether a scalar torch converts to float32 with a range check is finite and past
// float32's range, where torch's step raises "value cannot be converted to type float
// without overflow" (kOptimizerScalarOverflow). ATen checks the Scalar arguments of `add`'s
// alpha, `lerp`'s weight, `addcmul`'s and `addcdiv`'s value: SGD's -lr, weight_decay (when
// not 0), 1 - dampening (once a buffer exists) and momentum (nesterov); Adam's -step_size,
// weight_decay (not decoupled, not 0), 1 - beta1 and 1 - beta2. A plain `mul_` by a Python
// float (momentum, beta2, AdamW's 1 - lr * weight_decay) and `add_(eps)` are unchecked: the
// value rounds to infinity there, as MakeOptimizerScalars rounds it.
bool OptimizerScalarsOverflow(const OptimizerStepArgs& args);
inline constexpr const char kOptimizerScalarOverflow[] =
    "value cannot be converted to type float without overflow";

// Defined in a file compiled without floating-point contraction, so no host compiler turns
// 1 - lr * weight_decay into a fused multiply-add that Python would not do.
OptimizerScalars MakeOptimizerScalars(const OptimizerStepArgs& args);

}  // namespace paramd::kernels
