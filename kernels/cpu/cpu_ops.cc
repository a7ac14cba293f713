// What the CPU backend supports, and the helpers of cpu_ops.h.
#include "kernels/cpu/cpu_ops.h"

#include "kernels/cpu/cpu_backend.h"
#include "kernels/op_checks.h"

namespace paramd::kernels {
namespace cpu {

void ParallelFor(int64_t n, int64_t cost_per_item,
                 const std::function<void(int64_t, int64_t)>& fn) {
  // Inline on purpose: OpenBLAS's own threads run every GEMM and convolution, and a second
  // pool (OpenMP's spinning workers) fighting them for two cores made the large MLP three
  // times slower (docs/kernels.md). The seam stays so a pool can return if it pays.
  if (n > 0) fn(0, n);
}

void ApplyUnaryInPlace(UnaryOp op, float* data, int64_t n) {
  switch (op) {
    case UnaryOp::kIdentity:
      return;
    case UnaryOp::kReLU:
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) data[i] = data[i] < 0.0f ? 0.0f : data[i];
      return;
    default:
      for (int64_t i = 0; i < n; ++i) data[i] = ApplyUnary(op, data[i]);
  }
}

}  // namespace cpu

absl::Status CpuBackend::Supports(const OpQuery& query) const {
  if (query.kind == OpKind::kOptimizerStep) {
    return query.dtype == DType::kFloat32 ? absl::OkStatus() : Unsupported(query);
  }
  return SupportedByBuiltInBackends(query) ? absl::OkStatus() : Unsupported(query);
}

}  // namespace paramd::kernels
