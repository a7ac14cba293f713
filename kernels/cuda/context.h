// The per-device CUDA state the backend's ops share, as faiss's GpuResources holds it: one
// stream every op and copy of the device is queued on, one cuBLASLt handle, one GEMM
// workspace and the device's memory pool.
//
// Ownership: Get() creates a device's context on first use and keeps it for the life of
// the process (the CUDA runtime tears everything down at exit); callers borrow it.
//
// Thread-safety: Get() is safe from any thread and creates each context once. The members
// are fixed after creation. Work queued on the one stream runs in the order it was queued,
// which gives ops.h's per-thread ordering and lets every op share the one workspace.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstddef>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace paramd::kernels::cuda {

class CudaContext {
 public:
  // The context of `device`, created on first use. FAILED_PRECONDITION when the device
  // does not exist or is unhealthy; RESOURCE_EXHAUSTED when its workspace does not fit.
  static absl::StatusOr<CudaContext*> Get(int device);

  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  int device() const { return device_; }
  cudaStream_t stream() const { return stream_; }
  cublasLtHandle_t lt() const { return lt_; }
  void* workspace() const { return workspace_; }
  size_t workspace_size() const { return workspace_size_; }
  cudaMemPool_t pool() const { return pool_; }

  // Makes the device current on the calling thread (the runtime's current device is per
  // thread) after checking its health. Every entry point of the backend calls this first.
  absl::Status Enter() const;

  // Allocates and zeroes a device int, runs `launch(flag)` (which queues kernels that may
  // set it on the stream), waits for the stream and returns the flag's value. For checks
  // whose answer decides the op's Status, such as embedding's index range. Holds no lock
  // while it waits.
  template <typename Launch>
  absl::StatusOr<int> ReadFlag(Launch&& launch);

 private:
  explicit CudaContext(int device) : device_(device) {}
  absl::Status Init();
  absl::Status FlagBegin(int** flag);
  absl::StatusOr<int> FlagEnd(int* flag);

  const int device_;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_size_ = 0;
  cudaMemPool_t pool_ = nullptr;
};

template <typename Launch>
absl::StatusOr<int> CudaContext::ReadFlag(Launch&& launch) {
  int* flag = nullptr;
  absl::Status status = FlagBegin(&flag);
  if (!status.ok()) return status;
  status = launch(flag);
  absl::StatusOr<int> value = FlagEnd(flag);
  if (!status.ok()) return status;
  return value;
}

}  // namespace paramd::kernels::cuda
