// Host-memory backend: 64-byte aligned allocations (2 MiB aligned on huge pages from 2 MiB
// on) with an optional byte ceiling, a cache of freed large blocks, and the CPU kernels of
// every op in kernels/ops.h.
//
// Note [Host block cache]
// Fresh memory costs a page fault per 4 KiB on first touch (about 2 GB/s on the machines
// paramd is measured on, slower than any copy), and every new model version allocates
// fresh storage for what it writes (copy-on-write). So blocks of 128 KiB and more are kept
// when freed and handed out again for the next allocation of the same size class, as
// PyTorch's caching allocators do. The cache never holds more than a quarter of the
// ceiling (4 GiB without one), and it gives way: bytes in use (reservations included) plus
// cached bytes never pass the ceiling, so an allocation or reservation that needs the room
// releases cached blocks first, the largest first. A block no allocation took within
// ReleaseIdleCache's `idle` is returned to the system, so that a burst of writes warms the
// next one while a daemon that stopped writing holds its models and little else.
//
// Note [Huge pages for large blocks]
// Blocks of 2 MiB and more are mapped on their own, 2 MiB aligned, with MADV_HUGEPAGE
// (transparent huge pages where the system allows them in "madvise" or "always" mode). A
// layer's weights then sit on 2 MiB pages: first touch of fresh memory ran 2.5 times as fast
// (6.5 against 2.5 GB/s) and the large MLP's forward 4% faster (fewer TLB misses while
// the GEMM streams 64 MiB weight matrices), docs/kernels.md. The tail of a block past its
// last whole 2 MiB keeps small pages, so no block grows by more than its 64 KiB rounding.
// PyTorch offers the same behind THP_MEM_ALLOC_ENABLE; here it is the default, and a host
// that wants none sets /sys/kernel/mm/transparent_hugepage/enabled to "never".
//
// Thread-safety: all methods may be called concurrently; the cache has its own mutex.
#pragma once

#include <atomic>
#include <map>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "kernels/backend.h"

namespace paramd::kernels {

class CpuBackend final : public Backend {
 public:
  ~CpuBackend() override;
  Device device() const override { return Device::Cpu(); }
  absl::StatusOr<void*> Allocate(size_t nbytes) override;
  void Free(void* data, size_t nbytes) override;
  absl::Status CopyFromHost(void* dst, const void* src, size_t nbytes) override;
  absl::Status CopyToHost(void* dst, const void* src, size_t nbytes) override;
  absl::Status CopyWithinDevice(void* dst, const void* src, size_t nbytes) override;
  size_t bytes_in_use() const override { return in_use_.load(std::memory_order_relaxed); }
  void SetMemoryLimit(size_t max_bytes) override { limit_.store(max_bytes); }
  absl::Status Reserve(size_t nbytes) override;
  absl::StatusOr<void*> AllocateReserved(size_t nbytes) override;
  void Unreserve(size_t nbytes) override;
  void ReleaseIdleCache(int64_t idle_ns) override;

  // Ops: float32 throughout, float16 and bfloat16 computed in float32 and rounded back;
  // large GEMMs through oneDNN, small ones and convolution through OpenBLAS
  // (docs/kernels.md). Each family lives in its own file under kernels/cpu/.
  absl::Status Supports(const OpQuery& query) const override;
  absl::Status Gemm(const GemmArgs& args) override;
  absl::Status Conv2d(const Conv2dArgs& args) override;
  absl::Status MaxPool2d(const MaxPool2dArgs& args) override;
  absl::Status AvgPool2d(const AvgPool2dArgs& args) override;
  absl::Status AdaptiveAvgPool2d(const AdaptiveAvgPool2dArgs& args) override;
  absl::Status BatchNorm(const BatchNormArgs& args) override;
  absl::Status LayerNorm(const LayerNormArgs& args) override;
  absl::Status Unary(const UnaryArgs& args) override;
  absl::Status Binary(const BinaryArgs& args) override;
  absl::Status Softmax(const SoftmaxArgs& args) override;
  absl::Status Embedding(const EmbeddingArgs& args) override;
  absl::Status Dropout(const DropoutArgs& args) override;
  absl::Status Cat(const CatArgs& args) override;
  absl::Status Convert(const ConvertArgs& args) override;
  absl::Status OptimizerStep(const OptimizerStepArgs& args) override;
  absl::Status Fill(const FillArgs& args) override;
  // Bytes held by the cache of freed blocks (Note [Host block cache]).
  size_t bytes_cached() const;
  // Returns every cached block to the system.
  void EmptyCache();

 private:
  struct CachedBlock {
    void* data;
    int64_t freed_ns;  // steady clock
  };
  // Counts `nbytes` as in use, or RESOURCE_EXHAUSTED ("`verb` N bytes ...") past the limit;
  // shrinks the cache so that in use plus cached stays within it.
  absl::Status Count(const char* verb, size_t nbytes);
  // A cached block of `rounded` bytes, or null.
  void* TakeCached(size_t rounded);
  // Releases cached blocks, the largest first, until at most `max_bytes` stay cached.
  void ShrinkCache(size_t max_bytes);

  std::atomic<size_t> in_use_{0};
  std::atomic<size_t> limit_{0};
  mutable absl::Mutex cache_mu_;
  // Rounded block size -> blocks of that size.
  std::multimap<size_t, CachedBlock> cache_ ABSL_GUARDED_BY(cache_mu_);
  size_t cached_bytes_ ABSL_GUARDED_BY(cache_mu_) = 0;
};

}  // namespace paramd::kernels
