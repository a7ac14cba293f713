#include "absl/strings/str_cat.h"
#include "kernels/backend.h"

#ifdef PARAMD_WITH_CUDA
#include "kernels/cuda/device_query.h"
#endif

namespace paramd::kernels {

absl::StatusOr<std::vector<GpuInfo>> QueryGpus() {
#ifdef PARAMD_WITH_CUDA
  char error[512] = {0};
  const int count = cuda::CountDevices(error, sizeof(error));
  if (count < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("no usable CUDA device: ", error, "; use device 'cpu'"));
  }
  if (count == 0) {
    return absl::FailedPreconditionError("no CUDA device is present; use device 'cpu'");
  }
  std::vector<GpuInfo> gpus;
  for (int i = 0; i < count; ++i) {
    cuda::RawGpuInfo raw{};
    if (!cuda::DescribeDevice(i, &raw, error, sizeof(error))) {
      return absl::FailedPreconditionError(error);
    }
    gpus.push_back(GpuInfo{i, raw.name, raw.compute_major, raw.compute_minor, raw.total_memory});
  }
  return gpus;
#else
  return absl::FailedPreconditionError(
      "paramd was built without CUDA support; use device 'cpu' or rebuild where nvcc is present");
#endif
}

}  // namespace paramd::kernels
