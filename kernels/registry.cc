#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"

namespace paramd::kernels {

absl::StatusOr<Backend*> GetBackend(const core::Device& device) {
  if (device.is_cpu()) {
    static CpuBackend* const cpu = new CpuBackend();
    return cpu;
  }
  // GPU memory arrives with the CUDA backend; until then a CUDA device is refused with
  // the reason the device query gives (no GPU, no driver, or no CUDA in this build).
  auto gpus = QueryGpus();
  if (!gpus.ok()) return gpus.status();
  return absl::FailedPreconditionError(absl::StrCat(
      "device ", device.ToString(),
      ": tensors on CUDA devices are not supported by this paramd yet; use device 'cpu'"));
}

}  // namespace paramd::kernels
