// GEMM through oneDNN's matmul for large products and OpenBLAS's cblas_sgemm for the rest
// (the bias folded into C before the product), the activation applied row by row after.
#include <cblas.h>

#include <algorithm>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/onednn_matmul.h"
#include "kernels/op_checks.h"
#include "base/status_macros.h"

namespace paramd::kernels {
namespace {

// From this many multiply-adds on, oneDNN's matmul runs the GEMM: 25 to 30% faster than
// OpenBLAS on large layers (docs/kernels.md), while below it the few microseconds each
// oneDNN call costs would show.
constexpr int64_t kOneDnnMinMacs = int64_t{1} << 22;

// Elements spanned by a row-major rows×cols matrix with leading dimension ld.
int64_t Extent(int64_t rows, int64_t cols, int64_t ld) {
  return rows == 0 || cols == 0 ? 0 : (rows - 1) * ld + cols;
}

}  // namespace

absl::Status CpuBackend::Gemm(const GemmArgs& args) {
  PARAMD_RETURN_IF_ERROR(CheckGemm(*this, args));
  const int64_t m = args.m, n = args.n, k = args.k;
  const int64_t a_rows = args.trans_a ? k : m, a_cols = args.trans_a ? m : k;
  const int64_t b_rows = args.trans_b ? n : k, b_cols = args.trans_b ? k : n;
  if (m == 0 || n == 0) return absl::OkStatus();

  const cpu::FloatIn a(args.a, args.dtype, Extent(a_rows, a_cols, args.lda));
  const cpu::FloatIn b(args.b, args.dtype, Extent(b_rows, b_cols, args.ldb));
  const cpu::FloatIn bias(args.bias, args.dtype, n);
  const bool staged = args.dtype != DType::kFloat32;
  const int64_t ldc = staged ? n : args.ldc;
  std::vector<float> c_copy;
  float* c = static_cast<float*>(args.c);
  if (staged) {
    c_copy.resize(static_cast<size_t>(m * n));
    c = c_copy.data();
  }

  // In double: three int64 sizes may overflow their product.
  if (static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k) >=
      static_cast<double>(kOneDnnMinMacs)) {
    PARAMD_RETURN_IF_ERROR(cpu::OneDnnMatmul({.m = m,
                                              .n = n,
                                              .k = k,
                                              .trans_a = args.trans_a,
                                              .trans_b = args.trans_b,
                                              .lda = args.lda,
                                              .ldb = args.ldb,
                                              .ldc = ldc,
                                              .has_bias = bias.get() != nullptr},
                                             a.get(), b.get(), bias.get(), c));
  } else if (k > 0) {
    if (bias.get() != nullptr) {
      for (int64_t i = 0; i < m; ++i) std::copy(bias.get(), bias.get() + n, c + i * ldc);
    }
    cblas_sgemm(CblasRowMajor, args.trans_a ? CblasTrans : CblasNoTrans,
                args.trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
                static_cast<blasint>(n), static_cast<blasint>(k), 1.0f, a.get(),
                static_cast<blasint>(args.lda), b.get(), static_cast<blasint>(args.ldb),
                bias.get() != nullptr ? 1.0f : 0.0f, c, static_cast<blasint>(ldc));
  } else if (bias.get() != nullptr) {
    for (int64_t i = 0; i < m; ++i) std::copy(bias.get(), bias.get() + n, c + i * ldc);
  } else {
    for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.0f);
  }
  if (args.epilogue != UnaryOp::kIdentity) {
    cpu::ParallelFor(m, n * 8, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) cpu::ApplyUnaryInPlace(args.epilogue, c + i * ldc, n);
    });
  }
  if (staged) {
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        cpu::StoreFloat(args.c, args.dtype, i * args.ldc + j, c[i * n + j]);
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace paramd::kernels
