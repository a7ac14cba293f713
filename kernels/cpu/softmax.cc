// softmax and log_softmax along one dimension, max-subtracted as ATen computes them.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/op_checks.h"
#include "base/status_macros.h"

namespace paramd::kernels {

absl::Status CpuBackend::Softmax(const SoftmaxArgs& args) {
  const DType dtype = args.input.dtype;
  PARAMD_RETURN_IF_ERROR(CheckSoftmax(*this, args));
  const ConstTensorView& x = args.input;
  int64_t outer = 1, inner = 1;
  const int64_t size = x.rank == 0 ? 1 : x.shape[args.dim];
  for (int d = 0; d < args.dim; ++d) outer *= x.shape[d];
  for (int d = args.dim + 1; d < x.rank; ++d) inner *= x.shape[d];
  if (x.numel() == 0) return absl::OkStatus();
  const cpu::FloatIn input(x.data, dtype, x.numel());
  cpu::FloatOut output(args.output.data, dtype, x.numel());
  const bool log = args.log;
  cpu::ParallelFor(outer * inner, size * 10, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t o = row / inner, i = row % inner;
      const float* src = input.get() + o * size * inner + i;
      float* dst = output.get() + o * size * inner + i;
      float max = -std::numeric_limits<float>::infinity();
      for (int64_t k = 0; k < size; ++k) max = std::max(max, src[k * inner]);
      float sum = 0.0f;
      for (int64_t k = 0; k < size; ++k) {
        const float e = std::exp(src[k * inner] - max);
        if (!log) dst[k * inner] = e;
        sum += e;
      }
      if (log) {
        const float shift = max + std::log(sum);
        for (int64_t k = 0; k < size; ++k) dst[k * inner] = src[k * inner] - shift;
      } else {
        const float inv = 1.0f / sum;
        for (int64_t k = 0; k < size; ++k) dst[k * inner] *= inv;
      }
    }
  });
  output.Finish();
  return absl::OkStatus();
}

}  // namespace paramd::kernels
