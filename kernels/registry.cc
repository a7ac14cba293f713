#include <algorithm>
#include <atomic>
#include <memory>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "kernels/backend.h"
#include "kernels/cpu/cpu_backend.h"
#include "base/status_macros.h"

#ifdef PARAMD_WITH_CUDA
#include "kernels/cuda/cuda_backend.h"
#endif

namespace paramd::kernels {

namespace {

struct TestBackends {
  absl::Mutex mu;
  std::vector<std::pair<Device, Backend*>> backends ABSL_GUARDED_BY(mu);
  std::atomic<bool> any{false};
};

TestBackends& TheTestBackends() {
  static TestBackends* const test_backends = new TestBackends();
  return *test_backends;
}

std::atomic<size_t> g_gpu_memory_limit{0};

#ifdef PARAMD_WITH_CUDA
// The CUDA backends, one per device, created on first use and kept for the process.
struct CudaBackends {
  absl::Mutex mu;
  std::vector<std::unique_ptr<cuda::CudaBackend>> backends ABSL_GUARDED_BY(mu);
};

CudaBackends& TheCudaBackends() {
  static CudaBackends* const cuda_backends = new CudaBackends();
  return *cuda_backends;
}
#endif

}  // namespace

void SetGpuMemoryLimit(size_t max_bytes) {
  g_gpu_memory_limit.store(max_bytes);
#ifdef PARAMD_WITH_CUDA
  CudaBackends& cuda = TheCudaBackends();
  absl::MutexLock lock(&cuda.mu);
  for (const auto& backend : cuda.backends) {
    if (backend != nullptr) backend->SetMemoryLimit(max_bytes);
  }
#endif
}

void SetBackendForTesting(const Device& device, Backend* backend) {
  TestBackends& tests = TheTestBackends();
  absl::MutexLock lock(&tests.mu);
  auto& list = tests.backends;
  list.erase(std::remove_if(list.begin(), list.end(),
                            [&](const auto& entry) { return entry.first == device; }),
             list.end());
  if (backend != nullptr) list.emplace_back(device, backend);
  tests.any.store(!list.empty());
}

absl::StatusOr<Backend*> GetBackend(const Device& device) {
  if (TestBackends& tests = TheTestBackends(); tests.any.load(std::memory_order_relaxed)) {
    absl::MutexLock lock(&tests.mu);
    for (const auto& [registered, backend] : tests.backends) {
      if (registered == device) return backend;
    }
  }
  if (device.is_cpu()) {
    static CpuBackend* const cpu = new CpuBackend();
    return cpu;
  }
#ifdef PARAMD_WITH_CUDA
  // "cuda" without an index is the current device, which paramd never changes from 0.
  const int index = device.index < 0 ? 0 : device.index;
  // Backends live for the process, as the CPU one does. The device query runs only until a
  // device's backend exists: storage allocation asks for the backend every time.
  CudaBackends& cuda = TheCudaBackends();
  auto* const backends = &cuda.backends;
  absl::MutexLock lock(&cuda.mu);
  if (index < static_cast<int>(backends->size()) && (*backends)[index] != nullptr) {
    return (*backends)[index].get();
  }
  // Without a GPU (no device, no driver) the device query's reason is the answer.
  PARAMD_ASSIGN_OR_RETURN(const std::vector<GpuInfo> gpus, QueryGpus());
  if (index >= static_cast<int>(gpus.size())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", device.ToString(), " does not exist: this machine has ", gpus.size(),
        " GPU(s), cuda:0 to cuda:", gpus.size() - 1, "; use one of those or device 'cpu'"));
  }
  if (backends->size() < gpus.size()) backends->resize(gpus.size());
  std::unique_ptr<cuda::CudaBackend>& slot = (*backends)[index];
  // A failed creation (streams or the cuBLASLt handle not made) is retried by the next call.
  PARAMD_ASSIGN_OR_RETURN(slot, cuda::CudaBackend::Create(index));
  slot->SetMemoryLimit(g_gpu_memory_limit.load());
  return slot.get();
#else
  // QueryGpus says why: this build has no CUDA support.
  return QueryGpus().status();
#endif
}

}  // namespace paramd::kernels
