#include "kernels/optimizer_math.h"

#include <cmath>

namespace paramd::kernels {

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
