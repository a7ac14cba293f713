// batch_norm and layer_norm. Statistics accumulate in double so that a large batch or row
// loses no precision before the float32 result is rounded.
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/op_checks.h"
#include "base/status_macros.h"

namespace paramd::kernels {

absl::Status CpuBackend::BatchNorm(const BatchNormArgs& args) {
  PARAMD_RETURN_IF_ERROR(CheckBatchNorm(*this, args));
  const ConstTensorView& x = args.input;
  const int64_t batch = x.shape[0], channels = x.shape[1];
  int64_t inner = 1;
  for (int d = 2; d < x.rank; ++d) inner *= x.shape[d];
  const int64_t count = batch * inner;
  const DType dtype = x.dtype;
  const cpu::FloatIn input(x.data, dtype, x.numel());
  cpu::FloatOut output(args.output.data, dtype, x.numel());
  double momentum = args.momentum;
  if (args.new_num_batches_tracked != nullptr) {
    const int64_t next = *args.num_batches_tracked + 1;
    *args.new_num_batches_tracked = next;
    if (args.cumulative_average) momentum = 1.0 / static_cast<double>(next);
  }

  cpu::ParallelFor(channels, count * 4, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      double mean = 0.0, var = 0.0;
      if (args.use_batch_stats) {
        double sum = 0.0;
        for (int64_t n = 0; n < batch; ++n) {
          const float* row = input.get() + (n * channels + c) * inner;
          for (int64_t i = 0; i < inner; ++i) sum += row[i];
        }
        mean = count > 0 ? sum / static_cast<double>(count) : 0.0;
        double squares = 0.0;
        for (int64_t n = 0; n < batch; ++n) {
          const float* row = input.get() + (n * channels + c) * inner;
          for (int64_t i = 0; i < inner; ++i) {
            const double d = row[i] - mean;
            squares += d * d;
          }
        }
        var = count > 0 ? squares / static_cast<double>(count) : 0.0;
        if (args.new_running_mean != nullptr && args.running_mean != nullptr) {
          const double old = cpu::LoadFloat(args.running_mean, dtype, c);
          cpu::StoreFloat(args.new_running_mean, dtype, c,
                          static_cast<float>((1.0 - momentum) * old + momentum * mean));
        }
        if (args.new_running_var != nullptr && args.running_var != nullptr) {
          const double old = cpu::LoadFloat(args.running_var, dtype, c);
          const double unbiased = count > 1 ? squares / static_cast<double>(count - 1)
                                            : std::numeric_limits<double>::quiet_NaN();
          cpu::StoreFloat(
              args.new_running_var, dtype, c,
              static_cast<float>((1.0 - momentum) * old + momentum * unbiased));
        }
      } else {
        mean = cpu::LoadFloat(args.running_mean, dtype, c);
        var = cpu::LoadFloat(args.running_var, dtype, c);
      }
      const double invstd = 1.0 / std::sqrt(var + args.eps);
      const double w = args.weight != nullptr ? cpu::LoadFloat(args.weight, dtype, c) : 1.0;
      const double b = args.bias != nullptr ? cpu::LoadFloat(args.bias, dtype, c) : 0.0;
      // y = x * scale + shift, as ATen folds it.
      const float scale = static_cast<float>(w * invstd);
      const float shift = static_cast<float>(b - mean * w * invstd);
      for (int64_t n = 0; n < batch; ++n) {
        const float* row = input.get() + (n * channels + c) * inner;
        float* out = output.get() + (n * channels + c) * inner;
#pragma omp simd
        for (int64_t i = 0; i < inner; ++i) out[i] = row[i] * scale + shift;
      }
    }
  });
  output.Finish();
  return absl::OkStatus();
}

absl::Status CpuBackend::LayerNorm(const LayerNormArgs& args) {
  PARAMD_RETURN_IF_ERROR(CheckLayerNorm(*this, args));
  const int64_t total = args.input.numel();
  const int64_t size = args.normalized_size;
  if (total == 0) return absl::OkStatus();
  const DType dtype = args.input.dtype;
  const cpu::FloatIn input(args.input.data, dtype, total);
  const cpu::FloatIn weight(args.weight, dtype, size);
  const cpu::FloatIn bias(args.bias, dtype, size);
  cpu::FloatOut output(args.output.data, dtype, total);
  const int64_t rows = total / size;
  cpu::ParallelFor(rows, size * 4, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = input.get() + r * size;
      float* out = output.get() + r * size;
      double sum = 0.0;
      for (int64_t i = 0; i < size; ++i) sum += row[i];
      const double mean = sum / static_cast<double>(size);
      double squares = 0.0;
      for (int64_t i = 0; i < size; ++i) {
        const double d = row[i] - mean;
        squares += d * d;
      }
      const float rstd = static_cast<float>(1.0 / std::sqrt(squares / size + args.eps));
      const float m = static_cast<float>(mean);
      for (int64_t i = 0; i < size; ++i) {
        float v = (row[i] - m) * rstd;
        if (weight.get() != nullptr) v *= weight.get()[i];
        if (bias.get() != nullptr) v += bias.get()[i];
        out[i] = v;
      }
    }
  });
  output.Finish();
  return absl::OkStatus();
}

}  // namespace paramd::kernels
