// CUDA, cuBLAS and cuBLASLt results as absl::Status, and the health of each device.
//
// Every failed call becomes a Status naming the call, the source file:line and the device
// ("cudaMallocAsync(&data, rounded, stream) on cuda:0 at kernels/cuda/cuda_backend.cc:88:
// cudaErrorMemoryAllocation (out of memory)"), with a code chosen by what the caller can do:
// RESOURCE_EXHAUSTED for out of memory, FAILED_PRECONDITION for a missing or unusable
// device or driver, UNIMPLEMENTED for a cuBLAS configuration the library lacks, INTERNAL
// for everything that is a fault (a kernel's illegal address, an invalid launch).
//
// Note [Sticky CUDA errors]
// Some errors (an illegal address, a kernel trap, an uncorrectable ECC error) poison the
// device's context: every later call on it fails, and only a new process recovers. The
// first such error marks the device unhealthy; from then on DeviceHealth(device) is
// FAILED_PRECONDITION carrying that first error, the CUDA backend refuses new work on the
// device with it, and a health check reports the device as not serving. Other errors are
// cleared from the runtime's last-error slot at once, so that they are not reported again
// by an unrelated later launch. Nothing here aborts the process.
//
// Thread-safe: the health table has its own lock.
#pragma once

#include <cublasLt.h>
#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include "absl/status/status.h"

namespace paramd::kernels::cuda {

// OK for cudaSuccess; otherwise the Status for `error` raised by `call` at file:line on
// device `device` (-1: no particular device). Marks the device unhealthy for a sticky error.
absl::Status CudaStatus(cudaError_t error, const char* call, const char* file, int line,
                        int device);
absl::Status CublasStatus(cublasStatus_t status, const char* call, const char* file, int line,
                          int device);

// Whether `error` leaves the device's context unusable (Note [Sticky CUDA errors]).
bool IsStickyError(cudaError_t error);

// OK while `device` has seen no sticky error; FAILED_PRECONDITION naming the first one after.
absl::Status DeviceHealth(int device);

}  // namespace paramd::kernels::cuda

// Returns the Status of a failed CUDA runtime call from the enclosing function. `device` is
// the device index the call ran on.
#define PARAMD_CUDA_RETURN_IF_ERROR(device, expr)                                       \
  do {                                                                                  \
    const cudaError_t paramd_cuda_error_ = (expr);                                      \
    if (paramd_cuda_error_ != cudaSuccess) {                                            \
      return ::paramd::kernels::cuda::CudaStatus(paramd_cuda_error_, #expr, __FILE__,   \
                                                 __LINE__, (device));                   \
    }                                                                                   \
  } while (false)

// The same for cuBLAS and cuBLASLt calls.
#define PARAMD_CUBLAS_RETURN_IF_ERROR(device, expr)                                      \
  do {                                                                                   \
    const cublasStatus_t paramd_cublas_status_ = (expr);                                 \
    if (paramd_cublas_status_ != CUBLAS_STATUS_SUCCESS) {                                \
      return ::paramd::kernels::cuda::CublasStatus(paramd_cublas_status_, #expr, __FILE__, \
                                                   __LINE__, (device));                  \
    }                                                                                    \
  } while (false)
