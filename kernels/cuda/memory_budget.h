// The byte accounting of one GPU, as plain host logic (no CUDA header, so the CPU build tests
// it): what the backend holds (tensors, the im2col scratch and staging copies, the streams'
// GEMM workspaces) plus what the stream-ordered pool keeps cached after frees, against the GPU's
// own ceiling (--max-gpu-memory, Backend::SetMemoryLimit on a CUDA backend).
//
// Every device allocation goes through AllocateCounted: it reserves the bytes (held + new
// must stay within the ceiling), trims the pool when held + cached would pass it, and when
// the device itself is out of memory it trims and retries once. So the GPU footprint stays
// at the ceiling plus the pool's unreleasable slack (the unused tail of chunks still in use),
// and a RESOURCE_EXHAUSTED answer leaves the accounting as it was. bytes_in_use() reports
// what is held; the cached blocks count against the ceiling through the trim.
//
// Thread-safety: GpuMemoryBudget is safe from any thread (atomics; a reservation never
// takes more than the ceiling even when threads race). DeviceMemory's implementations say.
#pragma once

#include <atomic>
#include <cstddef>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace paramd::kernels::cuda {

enum class MemoryKind { kTensor = 0, kScratch = 1, kWorkspace = 2 };

class GpuMemoryBudget {
 public:
  // 0: no ceiling of our own (the device's memory is the limit).
  void set_limit(size_t bytes) { limit_.store(bytes); }
  size_t limit() const { return limit_.load(); }

  // Takes `bytes` of `kind` when held + bytes stays within the ceiling (or there is none);
  // false, and nothing taken, otherwise.
  bool TryReserve(size_t bytes, MemoryKind kind);
  // Whether the pool's `cached` bytes on top of what is held pass the ceiling.
  bool OverWith(size_t cached) const {
    const size_t limit = limit_.load(), held = held_.load();
    return limit != 0 && (held + cached > limit || held + cached < held);
  }
  void Release(size_t bytes, MemoryKind kind);

  size_t held() const { return held_.load(std::memory_order_relaxed); }
  size_t held(MemoryKind kind) const {
    return by_kind_[static_cast<int>(kind)].load(std::memory_order_relaxed);
  }

 private:
  std::atomic<size_t> limit_{0};
  std::atomic<size_t> held_{0};
  std::atomic<size_t> by_kind_[3] = {};
};

// The device side of an allocation, so that the policy above is tested without a GPU.
class DeviceMemory {
 public:
  virtual ~DeviceMemory() = default;
  // Bytes the pool keeps cached: reserved from the driver but not handed out.
  virtual size_t CachedBytes() = 0;
  // RESOURCE_EXHAUSTED when the device is out of memory; other errors as they are.
  virtual absl::StatusOr<void*> Allocate(size_t bytes) = 0;
  // Waits for pending frees and hands the pool's cached memory back to the driver.
  virtual void Trim() = 0;
};

// Allocates `bytes` of `kind` through `memory` within `budget` (the policy at the top of the
// file). `what` names the device in messages ("cuda:0").
absl::StatusOr<void*> AllocateCounted(GpuMemoryBudget& budget, DeviceMemory& memory, size_t bytes,
                                      MemoryKind kind, const char* what);

}  // namespace paramd::kernels::cuda
