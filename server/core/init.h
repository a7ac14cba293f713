// Seeded initialisation with PyTorch's default distributions (torch.nn.init). The values
// are reproducible for a given seed and draw order on every platform; they follow the same
// distributions as PyTorch's but not its random stream. Not thread-safe: one per build.
#pragma once

#include <cstdint>
#include <random>

#include "absl/status/statusor.h"
#include "server/core/tensor.h"

namespace paramd::core {

class InitRng {
 public:
  explicit InitRng(uint64_t seed) : engine_(seed) {}

  // Uniform on [low, high) with 53 random bits (independent of the standard library's
  // distribution implementations).
  double Uniform(double low, double high);
  // Normal(mean, std) by the Box-Muller transform.
  double Normal(double mean, double std);

 private:
  std::mt19937_64 engine_;
  bool has_spare_ = false;
  double spare_ = 0.0;
};

// fan_in as torch.nn.init._calculate_fan_in_and_fan_out computes it: shape[1] times the
// product of shape[2:] (the receptive field). INVALID_ARGUMENT below two dimensions.
absl::StatusOr<int64_t> FanIn(const Shape& shape);

// New CPU tensors of `dtype` filled as the named torch.nn.init function would.
absl::StatusOr<Tensor> InitUniform(InitRng& rng, DType dtype, Shape shape, double low, double high);
absl::StatusOr<Tensor> InitNormal(InitRng& rng, DType dtype, Shape shape, double mean, double std);
// kaiming_uniform_(w, a=sqrt(5)), which nn.Linear and nn.Conv2d use: U(-1/sqrt(fan_in), +).
absl::StatusOr<Tensor> InitKaimingUniformSqrt5(InitRng& rng, DType dtype, Shape shape);
// The bias of nn.Linear / nn.Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), zeros if fan_in is 0.
absl::StatusOr<Tensor> InitFanInBias(InitRng& rng, DType dtype, Shape shape, int64_t fan_in);

}  // namespace paramd::core
