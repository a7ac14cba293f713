#include "kernels/cuda/gemm_plan.h"

#include "base/dtype.h"

namespace paramd::kernels::cuda {

uint32_t PointerAlignment(const void* p, int64_t batch_stride_bytes) {
  uintptr_t bits = reinterpret_cast<uintptr_t>(p) | 256;
  if (batch_stride_bytes != 0) bits |= static_cast<uintptr_t>(batch_stride_bytes);
  return static_cast<uint32_t>(bits & (~bits + 1));
}

GemmEpiloguePlan PlanGemmEpilogue(DType dtype, UnaryOp activation, bool has_bias,
                                  bool bias_fusable, bool fuse) {
  GemmEpiloguePlan plan;
  const bool bias_fused = fuse && has_bias && bias_fusable;
  // GELU-tanh is fused only where the bias is too: act(x) + bias is not act(x + bias).
  const bool activation_fused =
      activation == UnaryOp::kIdentity ||
      (fuse && activation == UnaryOp::kGELUTanh && has_bias == bias_fused);
  if (activation_fused && activation == UnaryOp::kGELUTanh) {
    plan.fused = bias_fused ? LtEpilogue::kGeluBias : LtEpilogue::kGelu;
  } else {
    plan.fused = bias_fused ? LtEpilogue::kBias : LtEpilogue::kDefault;
  }
  plan.pass_bias = has_bias && !bias_fused;
  plan.pass_activation = activation_fused ? UnaryOp::kIdentity : activation;
  if (dtype != DType::kFloat32 && plan.has_pass()) {
    // A 16-bit output the pass would read back and round again: the plain product goes to
    // float32 scratch and the pass does all of the epilogue, rounding once.
    plan.fused = LtEpilogue::kDefault;
    plan.float32_output = true;
    plan.pass_bias = has_bias;
    plan.pass_activation = activation;
  }
  return plan;
}

GemmPlanKey MakeGemmPlanKey(int device, const GemmArgs& g, int64_t batch, int64_t stride_a,
                            int64_t stride_b, int64_t stride_c, int epilogue, bool with_bias,
                            DType out_dtype) {
  const int64_t element = static_cast<int64_t>(ElementSize(g.dtype));
  const int64_t out_element = static_cast<int64_t>(ElementSize(out_dtype));
  const bool batched = batch > 1;
  return GemmPlanKey{
      .device = device,
      .dtype = static_cast<int>(g.dtype),
      .out_dtype = static_cast<int>(out_dtype),
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
      .align_c = PointerAlignment(g.c, batched ? stride_c * out_element : 0),
      .align_bias = with_bias ? PointerAlignment(g.bias) : 0,
  };
}

}  // namespace paramd::kernels::cuda
