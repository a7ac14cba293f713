// Note [Row-major GEMM on cuBLASLt]
// cuBLASLt is column-major. A row-major m×n C is the column-major n×m matrix C^T, and
// C^T = op(B)^T · op(A)^T, so the product is issued with the operands swapped: cuBLASLt's A
// is our B (n×k after its op), its B is our A (k×m), its C/D is n×m with ld = ldc. A
// row-major matrix stored r×c with leading dimension ld reads column-major as c×r with the
// same ld, so our transposes carry over unchanged. The bias, one value per column of the
// row-major C, is one value per row of cuBLASLt's D: exactly its BIAS epilogue.
//
// Note [Fused epilogues]
// cuBLASLt fuses bias, ReLU and GELU, but its GELU is the tanh approximation, and its ReLU
// epilogue is max(x, 0), which turns NaN into 0 where PyTorch's relu keeps NaN. So only the
// bias and GELU-tanh are fused (PlanGemmEpilogue in gemm_plan.h); exact (erf) GELU, ReLU and
// the other activations run as one element-wise pass after the product. The bias is fused
// only when it is 16-byte aligned (CanFuseBias): a view at an odd element offset would fault
// in cuBLASLt's vector loads; then the same pass adds it, and GELU-tanh moves to the pass
// with it (act(x) + bias is not act(x + bias)). When cuBLASLt finds no algorithm for a fused
// epilogue (alignment, an unusual leading dimension), the product runs plain and the pass
// applies bias and activation; that miss is cached, so the heuristic is not asked again.
// k == 0 is never given to cuBLASLt: the result is epilogue(bias) (or of zeros).
//
// Note [16-bit epilogues round once]
// The CPU backend computes GEMM + bias + activation in float32 and rounds a float16 or
// bfloat16 result once. cuBLASLt's own epilogue does the same (it works on the float32
// accumulator), but a pass after a product written in 16 bits would round twice. So when a
// 16-bit product needs the pass, cuBLASLt writes D in float32 (A and B 16-bit, C and D
// CUDA_R_32F, CUBLAS_COMPUTE_32F: a documented cublasLtMatmul combination, the one
// PyTorch's bgemm<bf16, float> uses) into scratch, and the pass applies bias and activation
// to that and rounds once into the output. The scratch is at most kStagingBytes: a larger
// product runs in row blocks. float32 products keep the in-place pass (no extra traffic).
// Even ReLU, which commutes with rounding, is staged: it does not for the sign of a float16
// underflow (-1e-30 rounds to -0, relu(-0) = -0; the CPU gives relu(-1e-30) = +0).
//
// Note [16-bit GEMM numerics]
// gemm.h promises float32 accumulation for float16 and bfloat16, which goes beyond
// PyTorch's defaults (torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction and
// allow_bf16_reduced_precision_reduction are True, letting cuBLAS reduce split-K partial
// sums in 16 bits). The preference's reduction-scheme mask allows only reductions in the
// compute type (float32), so a 16-bit product is rounded once, at the end, as on the CPU
// backend; the tests compare with the CPU at one 16-bit rounding of the result
// (backend_ops_test.cc: gemm_bf16_large_k; cuda_backend_test.cc: 16-bit epilogues).
#include "kernels/cuda/gemm.h"

#include <algorithm>
#include <atomic>
#include <memory>

#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/gemm_plan.h"
#include "kernels/cuda/launch.h"
#include "base/status_macros.h"

namespace paramd::kernels::cuda {
namespace {

// A 16-bit product's float32 staging (Note [16-bit epilogues round once]) takes at most this
// much scratch; a larger one runs in row blocks.
constexpr size_t kStagingBytes = size_t{64} << 20;

std::atomic<bool>& ForcedUnfused() {
  static std::atomic<bool> forced{false};
  return forced;
}

struct DescDeleter {
  void operator()(cublasLtMatmulDescOpaque_t* p) const { cublasLtMatmulDescDestroy(p); }
  void operator()(cublasLtMatrixLayoutOpaque_t* p) const { cublasLtMatrixLayoutDestroy(p); }
  void operator()(cublasLtMatmulPreferenceOpaque_t* p) const { cublasLtMatmulPreferenceDestroy(p); }
};
using MatmulDesc = std::unique_ptr<cublasLtMatmulDescOpaque_t, DescDeleter>;
using Layout = std::unique_ptr<cublasLtMatrixLayoutOpaque_t, DescDeleter>;
using Preference = std::unique_ptr<cublasLtMatmulPreferenceOpaque_t, DescDeleter>;

cudaDataType_t CudaType(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return CUDA_R_16F;
    case DType::kBFloat16:
      return CUDA_R_16BF;
    default:
      return CUDA_R_32F;
  }
}

cublasLtEpilogue_t CublasEpilogue(LtEpilogue epilogue) {
  switch (epilogue) {
    case LtEpilogue::kBias:
      return CUBLASLT_EPILOGUE_BIAS;
    case LtEpilogue::kGelu:
      return CUBLASLT_EPILOGUE_GELU;
    case LtEpilogue::kGeluBias:
      return CUBLASLT_EPILOGUE_GELU_BIAS;
    case LtEpilogue::kDefault:
      break;
  }
  return CUBLASLT_EPILOGUE_DEFAULT;
}

PlanCache<cublasLtMatmulAlgo_t>& Plans() {
  static auto* const cache = new PlanCache<cublasLtMatmulAlgo_t>();
  return *cache;
}

template <typename T>
cublasStatus_t SetDesc(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                       const T& value) {
  return cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(value));
}

template <typename T>
cublasStatus_t SetLayout(cublasLtMatrixLayout_t layout, cublasLtMatrixLayoutAttribute_t attr,
                         const T& value) {
  return cublasLtMatrixLayoutSetAttribute(layout, attr, &value, sizeof(value));
}

// Runs the product with `epilogue` fused, writing D = g.c (ldc, stride_c) as `out_dtype`
// (g.dtype, or float32 for a staged 16-bit product); with gemm.accumulate, D = A·B + D.
// NOT_SUPPORTED (as UNIMPLEMENTED) when cuBLASLt has no algorithm for it, so the caller can
// fall back.
absl::Status Matmul(CudaContext& context, const BatchedGemm& gemm, LtEpilogue fused,
                    DType out_dtype) {
  const GemmArgs& g = gemm.args;
  const int d = context.device();
  const cudaDataType_t type = CudaType(g.dtype);
  const cublasLtEpilogue_t epilogue = CublasEpilogue(fused);
  const bool with_bias = LtEpilogueHasBias(fused);

  cublasLtMatmulDesc_t raw_desc = nullptr;
  PARAMD_CUBLAS_RETURN_IF_ERROR(d, cublasLtMatmulDescCreate(&raw_desc, CUBLAS_COMPUTE_32F,
                                                            CUDA_R_32F));
  MatmulDesc desc(raw_desc);
  // Operands swapped (Note [Row-major GEMM on cuBLASLt]).
  const cublasOperation_t op_a = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  PARAMD_CUBLAS_RETURN_IF_ERROR(d, SetDesc(raw_desc, CUBLASLT_MATMUL_DESC_TRANSA, op_a));
  PARAMD_CUBLAS_RETURN_IF_ERROR(d, SetDesc(raw_desc, CUBLASLT_MATMUL_DESC_TRANSB, op_b));
  PARAMD_CUBLAS_RETURN_IF_ERROR(d, SetDesc(raw_desc, CUBLASLT_MATMUL_DESC_EPILOGUE, epilogue));
  if (with_bias) {
    PARAMD_CUBLAS_RETURN_IF_ERROR(d, SetDesc(raw_desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, g.bias));
  }

  // cuBLASLt's A is our B: stored k×n (n×k transposed) row-major, i.e. column-major n×k
  // (k×n); its B is our A likewise.
  const uint64_t a_rows = g.trans_b ? g.k : g.n, a_cols = g.trans_b ? g.n : g.k;
  const uint64_t b_rows = g.trans_a ? g.m : g.k, b_cols = g.trans_a ? g.k : g.m;
  cublasLtMatrixLayout_t raw_a = nullptr, raw_b = nullptr, raw_c = nullptr;
  PARAMD_CUBLAS_RETURN_IF_ERROR(d, cublasLtMatrixLayoutCreate(&raw_a, type, a_rows, a_cols, g.ldb));
  Layout layout_a(raw_a);
  PARAMD_CUBLAS_RETURN_IF_ERROR(d, cublasLtMatrixLayoutCreate(&raw_b, type, b_rows, b_cols, g.lda));
  Layout layout_b(raw_b);
  PARAMD_CUBLAS_RETURN_IF_ERROR(
      d, cublasLtMatrixLayoutCreate(&raw_c, CudaType(out_dtype), g.n, g.m, g.ldc));
  Layout layout_c(raw_c);
  if (gemm.batch > 1) {
    const int32_t count = static_cast<int32_t>(gemm.batch);
    const std::pair<cublasLtMatrixLayout_t, int64_t> layouts[] = {
        {raw_a, gemm.stride_b}, {raw_b, gemm.stride_a}, {raw_c, gemm.stride_c}};
    for (const auto& [layout, stride] : layouts) {
      PARAMD_CUBLAS_RETURN_IF_ERROR(d,
                                    SetLayout(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, count));
      PARAMD_CUBLAS_RETURN_IF_ERROR(
          d, SetLayout(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, stride));
    }
  }

  const GemmPlanKey key = MakeGemmPlanKey(d, g, gemm.batch, gemm.stride_a, gemm.stride_b,
                                          gemm.stride_c, static_cast<int>(epilogue), with_bias,
                                          out_dtype);
  cublasLtMatmulAlgo_t algo;
  const PlanLookup lookup = Plans().Find(key, &algo);
  // A product cuBLASLt had no algorithm for is not asked again (heuristics cost tens of
  // microseconds per call); the caller falls back at once.
  if (lookup == PlanLookup::kNoAlgorithm) {
    return absl::UnimplementedError("cuBLASLt has no algorithm for this product");
  }
  if (lookup == PlanLookup::kUnknown) {
    cublasLtMatmulPreference_t raw_pref = nullptr;
    PARAMD_CUBLAS_RETURN_IF_ERROR(d, cublasLtMatmulPreferenceCreate(&raw_pref));
    Preference pref(raw_pref);
    const uint64_t workspace = context.workspace_size();
    PARAMD_CUBLAS_RETURN_IF_ERROR(
        d, cublasLtMatmulPreferenceSetAttribute(raw_pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                &workspace, sizeof(workspace)));
    // Note [16-bit GEMM numerics]: split-K partial sums stay in float32 (the compute
    // type); reductions in the output type (INPLACE, OUTPUT_TYPE) would round them to 16 bits.
    const uint32_t reduction = g.dtype == DType::kFloat32 ? CUBLASLT_REDUCTION_SCHEME_MASK
                                                          : CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE;
    const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> preferences[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_a},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_b},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_c},
        {CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK, reduction}};
    for (const auto& [attr, value] : preferences) {
      PARAMD_CUBLAS_RETURN_IF_ERROR(
          d, cublasLtMatmulPreferenceSetAttribute(raw_pref, attr, &value, sizeof(value)));
    }
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t heuristic = cublasLtMatmulAlgoGetHeuristic(
        context.lt(), raw_desc, raw_a, raw_b, raw_c, raw_c, raw_pref, 1, &result, &found);
    if (heuristic == CUBLAS_STATUS_NOT_SUPPORTED ||
        (heuristic == CUBLAS_STATUS_SUCCESS && found == 0)) {
      Plans().InsertMiss(key);
      return absl::UnimplementedError("cuBLASLt has no algorithm for this product");
    }
    PARAMD_CUBLAS_RETURN_IF_ERROR(d, heuristic);
    algo = result.algo;
    Plans().Insert(key, algo);
  }
  // beta = 1 reads C = D in place (same layout, which cuBLASLt requires for C == D).
  const float alpha = 1.0f, beta = gemm.accumulate ? 1.0f : 0.0f;
  PARAMD_CUBLAS_RETURN_IF_ERROR(
      d, cublasLtMatmul(context.lt(), raw_desc, &alpha, g.b, raw_a, g.a, raw_b, &beta, g.c, raw_c,
                        g.c, raw_c, &algo, context.workspace(), context.workspace_size(),
                        context.stream()));
  return absl::OkStatus();
}

// A 16-bit product through float32 scratch (Note [16-bit epilogues round once]): the whole
// batch at once when it fits kStagingBytes, else one product at a time in row blocks.
absl::Status RunStaged(CudaContext& context, GemmScratch& scratch, const BatchedGemm& gemm,
                       const GemmEpiloguePlan& plan) {
  const GemmArgs& g = gemm.args;
  const int d = context.device();
  const int64_t row_bytes = g.n * static_cast<int64_t>(sizeof(float));
  const int64_t limit = static_cast<int64_t>(kStagingBytes);
  const bool whole = gemm.batch * g.m * row_bytes <= limit;
  const int64_t items = whole ? gemm.batch : 1;
  const int64_t rows = whole ? g.m : std::clamp<int64_t>(limit / row_bytes, 1, g.m);
  const size_t bytes = static_cast<size_t>(items * rows * row_bytes);
  PARAMD_ASSIGN_OR_RETURN(void* staging, scratch.Allocate(bytes));
  const int64_t element = static_cast<int64_t>(ElementSize(g.dtype));
  absl::Status status;
  for (int64_t b0 = 0; status.ok() && b0 < gemm.batch; b0 += items) {
    for (int64_t r0 = 0; status.ok() && r0 < g.m; r0 += rows) {
      const int64_t block = std::min(rows, g.m - r0);
      // Rows r0.. of op(A): rows of A stored m×k, columns of A stored k×m.
      const int64_t a_offset = b0 * gemm.stride_a + (g.trans_a ? r0 : r0 * g.lda);
      BatchedGemm part = gemm;
      part.args.m = block;
      part.args.a = static_cast<const char*>(g.a) + a_offset * element;
      part.args.b = static_cast<const char*>(g.b) + b0 * gemm.stride_b * element;
      part.args.bias = nullptr;
      part.args.epilogue = UnaryOp::kIdentity;
      part.args.c = staging;
      part.args.ldc = g.n;
      part.batch = items;
      part.stride_c = block * g.n;
      status = Matmul(context, part, LtEpilogue::kDefault, DType::kFloat32);
      if (!status.ok()) break;
      char* out = static_cast<char*>(g.c) + (b0 * gemm.stride_c + r0 * g.ldc) * element;
      status = CudaStatus(
          LaunchBiasActivation(g.dtype, out, items, gemm.stride_c, block, g.n, g.ldc,
                               plan.pass_bias ? g.bias : nullptr, plan.pass_activation,
                               static_cast<const float*>(staging), /*accumulate=*/false,
                               context.stream()),
          "LaunchBiasActivation", __FILE__, __LINE__, d);
    }
  }
  scratch.Free(staging, bytes);
  return status;
}

// The product with `plan`'s epilogue: fused, then the pass in place, or staged.
absl::Status RunPlanned(CudaContext& context, GemmScratch& scratch, const BatchedGemm& gemm,
                        const GemmEpiloguePlan& plan) {
  if (plan.float32_output) return RunStaged(context, scratch, gemm, plan);
  const GemmArgs& g = gemm.args;
  PARAMD_RETURN_IF_ERROR(Matmul(context, gemm, plan.fused, g.dtype));
  if (!plan.has_pass()) return absl::OkStatus();
  PARAMD_CUDA_RETURN_IF_ERROR(
      context.device(),
      LaunchBiasActivation(g.dtype, g.c, gemm.batch, gemm.stride_c, g.m, g.n, g.ldc,
                           plan.pass_bias ? g.bias : nullptr, plan.pass_activation,
                           /*staged=*/nullptr, /*accumulate=*/true, context.stream()));
  return absl::OkStatus();
}

}  // namespace

void ForceUnfusedEpilogueForTesting(bool force) {
  ForcedUnfused().store(force, std::memory_order_relaxed);
}

absl::Status RunGemm(CudaContext& context, GemmScratch& scratch, const BatchedGemm& gemm) {
  const GemmArgs& g = gemm.args;
  const int d = context.device();
  if (g.m == 0 || g.n == 0 || gemm.batch == 0) return absl::OkStatus();
  if (gemm.accumulate && (g.bias != nullptr || g.epilogue != UnaryOp::kIdentity)) {
    return absl::InternalError("an accumulating GEMM takes no bias and no activation");
  }
  if (g.k == 0) {
    if (gemm.accumulate) return absl::OkStatus();  // D = 0 + D
    PARAMD_CUDA_RETURN_IF_ERROR(
        d, LaunchBiasActivation(g.dtype, g.c, gemm.batch, gemm.stride_c, g.m, g.n, g.ldc, g.bias,
                                g.epilogue, /*staged=*/nullptr, /*accumulate=*/false,
                                context.stream()));
    return absl::OkStatus();
  }
  // The calling thread's stream gets its workspace on its first product (context.h).
  PARAMD_RETURN_IF_ERROR(context.EnsureWorkspace());
  const bool forced = ForcedUnfused().load(std::memory_order_relaxed);
  const GemmEpiloguePlan plan = PlanGemmEpilogue(g.dtype, g.epilogue, g.bias != nullptr,
                                                 CanFuseBias(g.bias), /*fuse=*/!forced);
  const absl::Status status = RunPlanned(context, scratch, gemm, plan);
  if (status.code() != absl::StatusCode::kUnimplemented || plan.fused == LtEpilogue::kDefault) {
    return status;
  }
  // No algorithm with the epilogue fused: plain product, then bias and activation.
  return RunPlanned(context, scratch, gemm,
                    PlanGemmEpilogue(g.dtype, g.epilogue, g.bias != nullptr, CanFuseBias(g.bias),
                                     /*fuse=*/false));
}

}  // namespace paramd::kernels::cuda
