// Host-memory backend: 64-byte aligned allocations with an optional byte ceiling.
// Thread-safe: the byte count is atomic and allocation uses the C library's allocator.
#pragma once

#include <atomic>

#include "kernels/backend.h"

namespace paramd::kernels {

class CpuBackend final : public Backend {
 public:
  core::Device device() const override { return core::Device::Cpu(); }
  absl::StatusOr<void*> Allocate(size_t nbytes) override;
  void Free(void* data, size_t nbytes) override;
  absl::Status CopyFromHost(void* dst, const void* src, size_t nbytes) override;
  absl::Status CopyToHost(void* dst, const void* src, size_t nbytes) override;
  absl::Status CopyWithinDevice(void* dst, const void* src, size_t nbytes) override;
  size_t bytes_in_use() const override { return in_use_.load(std::memory_order_relaxed); }
  void SetMemoryLimit(size_t max_bytes) override { limit_.store(max_bytes); }

 private:
  std::atomic<size_t> in_use_{0};
  std::atomic<size_t> limit_{0};
};

}  // namespace paramd::kernels
