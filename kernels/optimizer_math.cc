#include "kernels/optimizer_math.h"

#include <cmath>
#include <limits>

namespace paramd::kernels {

namespace {

// c10's overflows<float>(double): infinity and NaN convert, finite values past the range do
// not.
bool Overflows(double value) {
  return std::isfinite(value) && std::abs(value) > std::numeric_limits<float>::max();
}

}  // namespace

bool OptimizerScalarsOverflow(const OptimizerStepArgs& args) {
  if (args.algorithm == OptimizerAlgorithm::kSgd) {
    bool has_buffer = false;
    for (const OptimizerTensor& t : args.tensors) has_buffer = has_buffer || !t.first_step;
    return Overflows(-args.lr) || (args.weight_decay != 0 && Overflows(args.weight_decay)) ||
           (args.momentum != 0 && ((has_buffer && Overflows(1 - args.dampening)) ||
                                   (args.nesterov && Overflows(args.momentum))));
  }
  if (args.weight_decay != 0 && !args.decoupled_weight_decay && Overflows(args.weight_decay)) {
    return true;
  }
  if (Overflows(1 - args.beta1) || Overflows(1 - args.beta2)) return true;
  for (const OptimizerTensor& t : args.tensors) {
    if (Overflows(-t.step_size)) return true;
  }
  return false;
}

OptimizerScalars MakeOptimizerScalars(const OptimizerStepArgs& args) {
  OptimizerScalars s{};
  s.weight_decay = static_cast<float>(args.weight_decay);
  s.neg_lr = static_cast<float>(-args.lr);
  s.momentum = static_cast<float>(args.momentum);
  s.one_minus_dampening = static_cast<float>(1 - args.dampening);
  const float weight = static_cast<float>(1 - args.beta1);
  s.lerp_from_start = std::abs(weight) < 0.5f;
  s.lerp_coeff = s.lerp_from_start ? weight : weight - 1.0f;
  s.beta2 = static_cast<float>(args.beta2);
  s.one_minus_beta2 = static_cast<float>(1 - args.beta2);
  s.eps = static_cast<float>(args.eps);
  s.decay = static_cast<float>(1 - args.lr * args.weight_decay);
  return s;
}

}  // namespace paramd::kernels
