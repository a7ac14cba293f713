// Plain-C++ view of the CUDA device query, so that .cu files need no abseil and .cc files
// need no CUDA headers. Thread-safe (the CUDA runtime is).
#pragma once

#include <cstddef>

namespace paramd::kernels::cuda {

struct RawGpuInfo {
  char name[256];
  int compute_major;
  int compute_minor;
  size_t total_memory;
};

// Number of visible GPUs, or -1 with `error` filled (e.g. an insufficient driver).
int CountDevices(char* error, size_t error_size);
bool DescribeDevice(int index, RawGpuInfo* info, char* error, size_t error_size);

}  // namespace paramd::kernels::cuda
