#include "kernels/cuda/memory_budget.h"

#include "absl/strings/str_cat.h"

namespace paramd::kernels::cuda {

bool GpuMemoryBudget::TryReserve(size_t bytes, MemoryKind kind) {
  const size_t limit = limit_.load();
  size_t held = held_.load();
  while (true) {
    const size_t after = held + bytes;
    if (after < held) return false;  // overflow
    if (limit != 0 && after > limit) return false;
    if (held_.compare_exchange_weak(held, after)) break;
  }
  by_kind_[static_cast<int>(kind)].fetch_add(bytes);
  return true;
}

void GpuMemoryBudget::Release(size_t bytes, MemoryKind kind) {
  held_.fetch_sub(bytes);
  by_kind_[static_cast<int>(kind)].fetch_sub(bytes);
}

absl::StatusOr<void*> AllocateCounted(GpuMemoryBudget& budget, DeviceMemory& memory, size_t bytes,
                                      MemoryKind kind, const char* what) {
  if (!budget.TryReserve(bytes, kind)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "allocating ", bytes, " bytes on ", what, " would exceed the GPU memory limit of ",
        budget.limit(), " bytes (", budget.held(), " in use); free models or raise --max-gpu-memory"));
  }
  // The pool's cached blocks count against the ceiling: past it, they go back to the driver.
  if (budget.OverWith(memory.CachedBytes())) memory.Trim();
  absl::StatusOr<void*> data = memory.Allocate(bytes);
  if (!data.ok() && data.status().code() == absl::StatusCode::kResourceExhausted) {
    // The pool may hold freed blocks of other sizes: hand them back and try once more.
    memory.Trim();
    data = memory.Allocate(bytes);
  }
  if (!data.ok()) {
    budget.Release(bytes, kind);
    return absl::Status(data.status().code(),
                        absl::StrCat("allocating ", bytes, " bytes on ", what,
                                     " failed: ", data.status().message()));
  }
  return data;
}

}  // namespace paramd::kernels::cuda
