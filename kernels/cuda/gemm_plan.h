// What decides a cuBLASLt algorithm for one product, as a plain value: the key of the GEMM
// plan cache, the alignments it holds, and the cache itself (a found algorithm, or the
// record that cuBLASLt has none, so a fused epilogue that failed once is not asked again).
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

struct GemmPlanKey {
  int device = 0;
  int dtype = 0;
  int64_t m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldc = 0;
  bool trans_a = false, trans_b = false;
  int epilogue = 0;  // the cuBLASLt epilogue asked for
  int64_t batch = 1, stride_a = 0, stride_b = 0, stride_c = 0;
  // In cuBLASLt's operand order (Note [Row-major GEMM on cuBLASLt]): its A is our B.
  uint32_t align_a = 0, align_b = 0, align_c = 0, align_bias = 0;

  auto Tie() const {
    return std::tie(device, dtype, m, n, k, lda, ldb, ldc, trans_a, trans_b, epilogue, batch,
                    stride_a, stride_b, stride_c, align_a, align_b, align_c, align_bias);
  }
  bool operator<(const GemmPlanKey& other) const { return Tie() < other.Tie(); }
  bool operator==(const GemmPlanKey& other) const { return Tie() == other.Tie(); }
};

// The key of `args` repeated `batch` times at the given element strides, with cuBLASLt
// epilogue `epilogue`; the bias counts only when `with_bias` (it is fused).
GemmPlanKey MakeGemmPlanKey(int device, const GemmArgs& args, int64_t batch, int64_t stride_a,
                            int64_t stride_b, int64_t stride_c, int epilogue, bool with_bias);

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
