// Row-major GEMM on one device through cuBLASLt, with the bias and activation fused into
// the epilogue where cuBLASLt has them. Used by the backend's Gemm and by Conv2d.
// Internal to kernels/cuda. Thread-safe (all state is the context's: the calling thread's
// stream orders its work and has its own workspace; the plan cache has its own lock).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/context.h"
#include "kernels/ops.h"

namespace paramd::kernels::cuda {

// GemmArgs (kernels/ops.h) repeated `batch` times, operand i at a + i * stride_a (and
// likewise b, c; the bias is shared). float32 runs in full float32 (no TF32, as PyTorch's
// default); float16 and bfloat16 accumulate in float32.
struct BatchedGemm {
  GemmArgs args;
  int64_t batch = 1;
  int64_t stride_a = 0;
  int64_t stride_b = 0;
  int64_t stride_c = 0;
};

// Queues the product on the calling thread's stream. The caller has entered the context and
// validated sizes and leading dimensions.
absl::Status RunGemm(CudaContext& context, const BatchedGemm& gemm);

// While set, every product with a bias or an activation takes the path a cuBLASLt miss on a
// fused epilogue takes (the plain product, then the bias-and-activation pass), so tests can
// compare that path, which real heuristics rarely choose, with the CPU. Process-wide.
void ForceUnfusedEpilogueForTesting(bool force);

}  // namespace paramd::kernels::cuda
