// CUDA runtime calls behind kernels/cuda/device_query.h. Kept free of abseil so nvcc only
// sees the CUDA headers.
#include <cuda_runtime.h>

#include <cstdio>

#include "kernels/cuda/device_query.h"

namespace paramd::kernels::cuda {

int CountDevices(char* error, size_t error_size) {
  int count = 0;
  const cudaError_t result = cudaGetDeviceCount(&count);
  if (result != cudaSuccess) {
    std::snprintf(error, error_size, "cudaGetDeviceCount: %s (%s)", cudaGetErrorName(result),
                  cudaGetErrorString(result));
    // Clear the error so later runtime calls are not poisoned by it.
    cudaGetLastError();
    return -1;
  }
  return count;
}

bool DescribeDevice(int index, RawGpuInfo* info, char* error, size_t error_size) {
  cudaDeviceProp prop{};
  const cudaError_t result = cudaGetDeviceProperties(&prop, index);
  if (result != cudaSuccess) {
    std::snprintf(error, error_size, "cudaGetDeviceProperties(%d): %s", index,
                  cudaGetErrorString(result));
    cudaGetLastError();
    return false;
  }
  std::snprintf(info->name, sizeof(info->name), "%s", prop.name);
  info->compute_major = prop.major;
  info->compute_minor = prop.minor;
  info->total_memory = prop.totalGlobalMem;
  return true;
}

}  // namespace paramd::kernels::cuda
