// oneDNN's matmul for the CPU backend's large GEMMs (docs/kernels.md says why and from what
// size): C[m×n] = op(A)[m×k] · op(B)[k×n] (+ bias[n]), float32, row-major with leading
// dimensions. A primitive is made once per shape and kept; every call brings its own
// scratchpad, so one primitive runs on many threads at once (oneDNN's rule for concurrent
// execution). Internal to kernels/cpu. Thread-safe.
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace paramd::kernels::cpu {

struct MatmulShape {
  int64_t m, n, k;
  bool trans_a, trans_b;
  int64_t lda, ldb, ldc;
  bool has_bias;
};

absl::Status OneDnnMatmul(const MatmulShape& shape, const float* a, const float* b,
                          const float* bias, float* c);

}  // namespace paramd::kernels::cpu
