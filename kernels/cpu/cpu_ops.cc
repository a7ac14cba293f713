// What the CPU backend supports, and the helpers of cpu_ops.h.
#include "kernels/cpu/cpu_ops.h"

#include "kernels/cpu/cpu_backend.h"

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

absl::Status RequireContiguous(const ConstTensorView& view, absl::string_view what) {
  if (view.rank < 0 || view.rank > kMaxRank) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": rank ", view.rank, " is outside [0, ", kMaxRank, "]"));
  }
  if (!view.is_contiguous()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " must be contiguous"));
  }
  if (view.data == nullptr && view.numel() > 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has no data"));
  }
  return absl::OkStatus();
}

}  // namespace cpu

absl::Status CpuBackend::Supports(const OpQuery& query) const {
  bool ok = cpu::IsMathDType(query.dtype);
  switch (query.kind) {
    case OpKind::kEmbedding:
      ok = ok &&
           (query.index_dtype == core::DType::kInt64 || query.index_dtype == core::DType::kInt32);
      break;
    case OpKind::kCat:
    case OpKind::kConvert:
      // Copies work for every dtype.
      ok = true;
      break;
    default:
      break;
  }
  return ok ? absl::OkStatus() : Unsupported(query);
}

}  // namespace paramd::kernels
