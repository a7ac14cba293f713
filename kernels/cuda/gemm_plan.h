// What decides a cuBLASLt algorithm for one product, as a plain value: the key of the GEMM
// plan cache, the alignments it holds, and the cache itself (a found algorithm, or the
// record that cuBLASLt has none, so a fused epilogue that failed once is not asked again);
// and the split of a product's epilogue between cuBLASLt and the element-wise pass.
// Host-side logic of the CUDA backend with no CUDA header, so the CPU build tests it.
//
// Thread-safety: the key functions are pure; PlanCache is safe from any thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <tuple>

#include "absl/synchronization/mutex.h"
#include "kernels/ops.h"

namespace paramd::kernels::cuda {

// The largest power of two, up to 256, dividing both the address and the batch stride in
// bytes (0: none). cuBLASLt picks kernels by the alignment it is promised, and a view's
// pointer may sit at any element offset.
uint32_t PointerAlignment(const void* p, int64_t batch_stride_bytes = 0);

// Whether a bias vector may be handed to cuBLASLt's BIAS epilogue: its kernels read the bias
// with vector loads, so a view whose bias sits at an odd element offset (2-byte aligned in
// 16 bits) takes the unfused path instead of a misaligned-address fault.
inline constexpr uint32_t kFusedBiasAlignment = 16;
inline bool CanFuseBias(const void* bias) {
  return bias != nullptr && PointerAlignment(bias) >= kFusedBiasAlignment;
}

// The epilogues asked of cuBLASLt (gemm.cc maps them to cublasLtEpilogue_t).
enum class LtEpilogue { kDefault, kBias, kGelu, kGeluBias };

inline bool LtEpilogueHasBias(LtEpilogue e) {
  return e == LtEpilogue::kBias || e == LtEpilogue::kGeluBias;
}

// How one product's bias and activation are applied (Note [Fused epilogues] and
// Note [16-bit epilogues round once] in gemm.cc): what cuBLASLt fuses, and what the
// element-wise pass after it does. With `float32_output` cuBLASLt writes the product in
// float32 to scratch and the pass applies bias and activation to it and rounds once into
// the 16-bit output; otherwise the pass, if any, works in place on the output.
struct GemmEpiloguePlan {
  LtEpilogue fused = LtEpilogue::kDefault;
  bool float32_output = false;
  bool pass_bias = false;
  UnaryOp pass_activation = UnaryOp::kIdentity;

  bool has_pass() const {
    return float32_output || pass_bias || pass_activation != UnaryOp::kIdentity;
  }
};

// The plan for a product of `dtype` with `activation` and a bias (when `has_bias`; fusable
// when `bias_fusable`, CanFuseBias). `fuse` false: nothing is fused (the path after a
// cuBLASLt miss on a fused epilogue, or ForceUnfusedEpilogueForTesting).
GemmEpiloguePlan PlanGemmEpilogue(DType dtype, UnaryOp activation, bool has_bias,
                                  bool bias_fusable, bool fuse);

struct GemmPlanKey {
  int device = 0;
  int dtype = 0;
  int out_dtype = 0;  // D's type: float32 for a 16-bit product staged in float32
  int64_t m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldc = 0;
  bool trans_a = false, trans_b = false;
  int epilogue = 0;  // the cuBLASLt epilogue asked for
  int64_t batch = 1, stride_a = 0, stride_b = 0, stride_c = 0;
  // In cuBLASLt's operand order (Note [Row-major GEMM on cuBLASLt]): its A is our B.
  uint32_t align_a = 0, align_b = 0, align_c = 0, align_bias = 0;

  auto Tie() const {
    return std::tie(device, dtype, out_dtype, m, n, k, lda, ldb, ldc, trans_a, trans_b, epilogue,
                    batch, stride_a, stride_b, stride_c, align_a, align_b, align_c, align_bias);
  }
  bool operator<(const GemmPlanKey& other) const { return Tie() < other.Tie(); }
  bool operator==(const GemmPlanKey& other) const { return Tie() == other.Tie(); }
};

// The key of `args` repeated `batch` times at the given element strides, with cuBLASLt
// epilogue `epilogue`, written as `out_dtype` (args.c, ldc and stride_c are the output's,
// in its elements); the bias counts only when `with_bias` (it is fused). An algorithm
// chosen for one output type must never run with another: the type is in the key.
GemmPlanKey MakeGemmPlanKey(int device, const GemmArgs& args, int64_t batch, int64_t stride_a,
                            int64_t stride_b, int64_t stride_c, int epilogue, bool with_bias,
                            DType out_dtype);

enum class PlanLookup { kUnknown, kFound, kNoAlgorithm };

// Algorithms by key, and the keys cuBLASLt had none for. Bounded: past `capacity` entries
// it starts again empty (a server sees a few dozen shapes; a sweep must not grow it forever).
template <typename Algo>
class PlanCache {
 public:
  explicit PlanCache(size_t capacity = 4096) : capacity_(capacity) {}

  PlanLookup Find(const GemmPlanKey& key, Algo* algo) const {
    absl::MutexLock lock(&mu_);
    auto it = plans_.find(key);
    if (it == plans_.end()) return PlanLookup::kUnknown;
    if (!it->second.found) return PlanLookup::kNoAlgorithm;
    *algo = it->second.algo;
    return PlanLookup::kFound;
  }
  void Insert(const GemmPlanKey& key, const Algo& algo) { Put(key, Entry{true, algo}); }
  void InsertMiss(const GemmPlanKey& key) { Put(key, Entry{false, Algo{}}); }
  size_t size() const {
    absl::MutexLock lock(&mu_);
    return plans_.size();
  }

 private:
  struct Entry {
    bool found;
    Algo algo;
  };
  void Put(const GemmPlanKey& key, Entry entry) {
    absl::MutexLock lock(&mu_);
    if (plans_.size() >= capacity_) plans_.clear();
    plans_.insert_or_assign(key, entry);
  }

  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::map<GemmPlanKey, Entry> plans_ ABSL_GUARDED_BY(mu_);
};

}  // namespace paramd::kernels::cuda
