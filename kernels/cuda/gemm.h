// Row-major GEMM on one device through cuBLASLt, with the bias and activation fused into
// the epilogue where cuBLASLt has them. Used by the backend's Gemm and by Conv2d.
// Internal to kernels/cuda. Thread-safe (all state is the context's: the calling thread's
// stream orders its work and has its own workspace; the plan cache has its own lock).
#pragma once

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/cuda/context.h"
#include "kernels/ops.h"

namespace paramd::kernels::cuda {

// GemmArgs (kernels/ops.h) repeated `batch` times, operand i at a + i * stride_a (and
// likewise b, c; the bias is shared). float32 runs in full float32 (no TF32, as PyTorch's
// default); float16 and bfloat16 accumulate in float32 and are rounded once (Note [16-bit
// epilogues round once] in gemm.cc). With `accumulate` the product is added to what c holds
// (beta = 1, in float32 before the one rounding); then args must have no bias and no
// activation.
struct BatchedGemm {
  GemmArgs args;
  int64_t batch = 1;
  int64_t stride_a = 0;
  int64_t stride_b = 0;
  int64_t stride_c = 0;
  bool accumulate = false;
};

// Device memory a product may need for one call (a 16-bit product with an epilogue stages
// its float32 result there). The backend's Scratch: counted in bytes_in_use and under the
// GPU memory ceiling; freed in stream order once the work using it is queued.
class GemmScratch {
 public:
  virtual ~GemmScratch() = default;
  virtual absl::StatusOr<void*> Allocate(size_t nbytes) = 0;
  virtual void Free(void* data, size_t nbytes) = 0;
};

// Queues the product on the calling thread's stream. The caller has entered the context and
// validated sizes and leading dimensions.
absl::Status RunGemm(CudaContext& context, GemmScratch& scratch, const BatchedGemm& gemm);

// While set, every product with a bias or an activation takes the path a cuBLASLt miss on a
// fused epilogue takes (the plain product, then the bias-and-activation pass), so tests can
// compare that path, which real heuristics rarely choose, with the CPU. Process-wide.
void ForceUnfusedEpilogueForTesting(bool force);

}  // namespace paramd::kernels::cuda
