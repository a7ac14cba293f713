// The backend of one GPU (`cuda:N`): device memory from the device's stream-ordered pool
// (a caching allocator, with the byte ceiling of SetMemoryLimit), copies, and every op
// family of kernels/ops.h in float32, float16 and bfloat16 (cat and convert: every dtype).
// GEMM and convolution run on cuBLASLt (kernels/cuda/gemm.h), the rest on the kernels of
// kernels/cuda/*.cu.
//
// Ordering: every op and copy is queued on the device's one stream (CudaContext), so ops
// from one thread run in the order issued. Ops return once queued; an error a kernel hits
// while running surfaces from the next CopyToHost or Synchronize. CopyFromHost and
// CopyToHost return once the host memory is no longer needed or has been written.
// Allocate's memory may be used by ops at once; Free's release is ordered after every op
// queued before it.
//
// Errors: every CUDA or cuBLAS failure is a Status naming the call, file:line and device;
// a sticky error marks the device unhealthy and every later call is FAILED_PRECONDITION
// (Note [Sticky CUDA errors] in kernels/cuda/cuda_status.h). Nothing aborts.
//
// Thread-safety: every method may be called from any thread at once.
#pragma once

#include <atomic>
#include <memory>

#include "kernels/backend.h"

namespace paramd::kernels::cuda {

class CudaContext;

class CudaBackend final : public Backend {
 public:
  // The backend of GPU `device`, creating its context (stream, cuBLASLt handle, workspace).
  // FAILED_PRECONDITION when the device is absent or unhealthy.
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(int device);

  Device device() const override { return Device::Cuda(device_); }
  absl::StatusOr<void*> Allocate(size_t nbytes) override;
  void Free(void* data, size_t nbytes) override;
  absl::Status CopyFromHost(void* dst, const void* src, size_t nbytes) override;
  absl::Status CopyToHost(void* dst, const void* src, size_t nbytes) override;
  absl::Status CopyWithinDevice(void* dst, const void* src, size_t nbytes) override;
  size_t bytes_in_use() const override { return in_use_.load(std::memory_order_relaxed); }
  void SetMemoryLimit(size_t max_bytes) override { limit_.store(max_bytes); }
  absl::Status Synchronize() override;

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

  // OK while the device has seen no sticky error (Note [Sticky CUDA errors]); for a health
  // check to report the device as not serving.
  absl::Status Health() const;

 private:
  CudaBackend(int device, CudaContext* context) : device_(device), context_(context) {}
  // Device memory outside the accounting of bytes_in_use (scratch: im2col columns).
  absl::StatusOr<void*> Scratch(size_t nbytes);
  void FreeScratch(void* data);

  const int device_;
  CudaContext* const context_;  // borrowed; lives for the process
  std::atomic<size_t> in_use_{0};
  std::atomic<size_t> limit_{0};
};

}  // namespace paramd::kernels::cuda
