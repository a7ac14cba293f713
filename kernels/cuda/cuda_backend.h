// The backend of one GPU (`cuda:N`): device memory from the device's stream-ordered pool
// (a caching allocator, with the GPU's own byte ceiling, SetMemoryLimit: --max-gpu-memory;
// kernels/cuda/memory_budget.h), copies, and every op
// family of kernels/ops.h in float32, float16 and bfloat16 (cat and convert: every dtype;
// the optimizer step: float32, as on the CPU).
// GEMM and convolution run on cuBLASLt (kernels/cuda/gemm.h), the rest on the kernels of
// kernels/cuda/*.cu.
//
// Ordering: each calling thread queues its ops and copies on a stream of its own, taken from
// the device's stream pool (Note [Per-thread streams] in kernels/cuda/context.h), so ops from
// one thread run in the order issued and requests on different threads overlap. Ops return
// once queued; an error a kernel hits while running, and a bad embedding index (Note
// [Deferred index check]), surface from the thread's next CopyToHost or Synchronize, which
// wait for and report the calling thread's work only (a sticky fault, below, stops every
// thread). CopyFromHost and CopyToHost return once the host
// memory is no longer needed or has been written. Allocate's memory may be used at once by
// the allocating thread; Free's release is ordered after every op the freeing thread queued
// before it. Work of different threads is not ordered: what one thread writes reaches
// another after the writer's Synchronize, and memory is freed only once no other thread's
// queued work uses it (Note [Work across threads] in kernels/backend.h).
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
#include "kernels/cuda/memory_budget.h"

namespace paramd::kernels::cuda {

class CudaContext;

class CudaBackend final : public Backend {
 public:
  // The backend of GPU `device`, creating its context (streams, cuBLASLt handle, pool).
  // FAILED_PRECONDITION when the device is absent or unhealthy.
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(int device);

  Device device() const override { return Device::Cuda(device_); }
  absl::StatusOr<void*> Allocate(size_t nbytes) override;
  void Free(void* data, size_t nbytes) override;
  absl::Status CopyFromHost(void* dst, const void* src, size_t nbytes) override;
  absl::Status CopyToHost(void* dst, const void* src, size_t nbytes) override;
  absl::Status CopyWithinDevice(void* dst, const void* src, size_t nbytes) override;
  // What the backend holds: tensors, scratch and staging buffers of ops in flight, the GEMM
  // workspaces of the streams that ran one. The pool's cached blocks count against the
  // ceiling (trimmed past it).
  size_t bytes_in_use() const override;
  void SetMemoryLimit(size_t max_bytes) override;
  absl::Status Synchronize() override;
  void DiscardDeferredErrors() override;

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
  absl::Status Fill(const FillArgs& args) override;
  absl::Status OptimizerStep(const OptimizerStepArgs& args) override;

  // OK while the device has seen no sticky error (Note [Sticky CUDA errors]); for a health
  // check to report the device as not serving.
  absl::Status Health() const;

 private:
  CudaBackend(int device, CudaContext* context);
  // Device memory for one op (im2col columns, staging copies), counted in bytes_in_use and
  // under the ceiling like a tensor's, freed in stream order once the op's work is queued.
  absl::StatusOr<void*> Scratch(size_t nbytes);
  void FreeScratch(void* data, size_t nbytes);
  absl::StatusOr<void*> AllocateKind(size_t nbytes, MemoryKind kind);
  void FreeKind(void* data, size_t nbytes, MemoryKind kind);

  const int device_;
  CudaContext* const context_;  // borrowed; lives for the process; holds the memory budget
};

}  // namespace paramd::kernels::cuda
