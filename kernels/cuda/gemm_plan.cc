#include "kernels/cuda/gemm_plan.h"

#include "base/dtype.h"

namespace paramd::kernels::cuda {

uint32_t PointerAlignment(const void* p, int64_t batch_stride_bytes) {
  uintptr_t bits = reinterpret_cast<uintptr_t>(p) | 256;
  if (batch_stride_bytes != 0) bits |= static_cast<uintptr_t>(batch_stride_bytes);
  return static_cast<uint32_t>(bits & (~bits + 1));
}

GemmPlanKey MakeGemmPlanKey(int device, const GemmArgs& g, int64_t batch, int64_t stride_a,
                            int64_t stride_b, int64_t stride_c, int epilogue, bool with_bias) {
  const int64_t element = static_cast<int64_t>(ElementSize(g.dtype));
  const bool batched = batch > 1;
  return GemmPlanKey{
      .device = device,
      .dtype = static_cast<int>(g.dtype),
      .m = g.m,
      .n = g.n,
      .k = g.k,
      .lda = g.lda,
      .ldb = g.ldb,
      .ldc = g.ldc,
      .trans_a = g.trans_a,
      .trans_b = g.trans_b,
      .epilogue = epilogue,
      .batch = batch,
      .stride_a = batched ? stride_a : 0,
      .stride_b = batched ? stride_b : 0,
      .stride_c = batched ? stride_c : 0,
      .align_a = PointerAlignment(g.b, batched ? stride_b * element : 0),
      .align_b = PointerAlignment(g.a, batched ? stride_a * element : 0),
      .align_c = PointerAlignment(g.c, batched ? stride_c * element : 0),
      .align_bias = with_bias ? PointerAlignment(g.bias) : 0,
  };
}

}  // namespace paramd::kernels::cuda
