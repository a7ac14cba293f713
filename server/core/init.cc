#include "server/core/init.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/status_macros.h"

namespace paramd::core {

double InitRng::Uniform(double low, double high) {
  const double unit = static_cast<double>(engine_() >> 11) * 0x1p-53;
  return low + (high - low) * unit;
}

double InitRng::Normal(double mean, double std) {
  if (has_spare_) {
    has_spare_ = false;
    return mean + std * spare_;
  }
  double u1 = 0.0;
  while (u1 <= 0.0) u1 = Uniform(0.0, 1.0);
  const double u2 = Uniform(0.0, 1.0);
  const double radius = std::sqrt(-2.0 * std::log(u1));
  const double angle = 2.0 * M_PI * u2;
  spare_ = radius * std::sin(angle);
  has_spare_ = true;
  return mean + std * radius * std::cos(angle);
}

absl::StatusOr<int64_t> FanIn(const Shape& shape) {
  if (shape.size() < 2) {
    return absl::InvalidArgumentError(
        "Fan in and fan out can not be computed for tensor with fewer than 2 dimensions");
  }
  int64_t receptive = 1;
  for (size_t d = 2; d < shape.size(); ++d) receptive *= shape[d];
  return shape[1] * receptive;
}

namespace {

// The tensor is allocated first, through its backend, so that the memory limit refuses an
// oversized init before anything else is spent on it; values are drawn and converted a
// block at a time, in the generator's order.
template <typename Draw>
absl::StatusOr<Tensor> Fill(DType dtype, Shape shape, Draw&& draw) {
  PARAMD_ASSIGN_OR_RETURN(Tensor out, Tensor::Empty(dtype, shape));
  const int64_t numel = out.numel();
  constexpr int64_t kBlock = 1 << 16;
  std::vector<double> values;
  auto* bytes = static_cast<uint8_t*>(out.mutable_data());
  for (int64_t start = 0; start < numel; start += kBlock) {
    const int64_t count = std::min(kBlock, numel - start);
    values.resize(static_cast<size_t>(count));
    for (double& value : values) value = draw();
    PARAMD_ASSIGN_OR_RETURN(Tensor block, Tensor::FromDoubles(dtype, {count}, values));
    std::memcpy(bytes + start * ElementSize(dtype), block.data(), block.nbytes());
  }
  return out;
}

}  // namespace

absl::StatusOr<Tensor> InitUniform(InitRng& rng, DType dtype, Shape shape, double low,
                                   double high) {
  return Fill(dtype, std::move(shape), [&] { return rng.Uniform(low, high); });
}

absl::StatusOr<Tensor> InitNormal(InitRng& rng, DType dtype, Shape shape, double mean,
                                  double std) {
  return Fill(dtype, std::move(shape), [&] { return rng.Normal(mean, std); });
}

absl::StatusOr<Tensor> InitKaimingUniformSqrt5(InitRng& rng, DType dtype, Shape shape) {
  PARAMD_ASSIGN_OR_RETURN(int64_t fan_in, FanIn(shape));
  if (fan_in == 0) {
    // torch.nn.init warns "Initializing zero-element tensors is a no-op" and leaves it.
    return Tensor::Full(dtype, std::move(shape), 0.0);
  }
  // gain = sqrt(2 / (1 + a^2)) with a = sqrt(5); bound = gain * sqrt(3 / fan_in).
  const double bound = std::sqrt(2.0 / 6.0) * std::sqrt(3.0 / static_cast<double>(fan_in));
  return InitUniform(rng, dtype, std::move(shape), -bound, bound);
}

absl::StatusOr<Tensor> InitFanInBias(InitRng& rng, DType dtype, Shape shape, int64_t fan_in) {
  const double bound = fan_in > 0 ? 1.0 / std::sqrt(static_cast<double>(fan_in)) : 0.0;
  return InitUniform(rng, dtype, std::move(shape), -bound, bound);
}

}  // namespace paramd::core
