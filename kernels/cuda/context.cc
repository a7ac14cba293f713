#include "kernels/cuda/context.h"

#include <cstdint>
#include <memory>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_status.h"

namespace paramd::kernels::cuda {
namespace {

// cuBLASLt's own recommendation for Hopper; Ampere needs less but gains nothing from less.
constexpr size_t kWorkspaceBytes = size_t{32} << 20;

}  // namespace

absl::StatusOr<CudaContext*> CudaContext::Get(int device) {
  static absl::Mutex mu(absl::kConstInit);
  // Contexts are never destroyed: kernels may still be running on their streams at exit.
  static auto* const contexts = new std::unique_ptr<CudaContext>[64];
  if (device < 0 || device >= 64) {
    return absl::FailedPreconditionError(absl::StrCat("device cuda:", device, " does not exist"));
  }
  absl::MutexLock lock(&mu);
  if (contexts[device] != nullptr) return contexts[device].get();
  std::unique_ptr<CudaContext> context(new CudaContext(device));
  absl::Status status = context->Init();
  // A failed context leaks what Init created (freeing it could hit the same fault); the
  // next Get tries again.
  if (!status.ok()) {
    (void)context.release();
    return status;
  }
  contexts[device] = std::move(context);
  return contexts[device].get();
}

absl::Status CudaContext::Init() {
  const int d = device_;
  PARAMD_CUDA_RETURN_IF_ERROR(d, cudaSetDevice(d));
  PARAMD_CUDA_RETURN_IF_ERROR(d, cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  PARAMD_CUDA_RETURN_IF_ERROR(d, cudaDeviceGetDefaultMemPool(&pool_, d));
  // Freed blocks stay in the pool for the next allocation instead of going back to the
  // driver at each synchronisation: a caching allocator, as PyTorch's, over the runtime's.
  uint64_t threshold = UINT64_MAX;
  PARAMD_CUDA_RETURN_IF_ERROR(
      d, cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &threshold));
  PARAMD_CUBLAS_RETURN_IF_ERROR(d, cublasLtCreate(&lt_));
  PARAMD_CUDA_RETURN_IF_ERROR(d, cudaMalloc(&workspace_, kWorkspaceBytes));
  workspace_size_ = kWorkspaceBytes;
  return absl::OkStatus();
}

absl::Status CudaContext::Enter() const {
  absl::Status health = DeviceHealth(device_);
  if (!health.ok()) return health;
  PARAMD_CUDA_RETURN_IF_ERROR(device_, cudaSetDevice(device_));
  return absl::OkStatus();
}

absl::Status CudaContext::FlagBegin(int** flag) {
  void* memory = nullptr;
  PARAMD_CUDA_RETURN_IF_ERROR(device_, cudaMallocAsync(&memory, sizeof(int), stream_));
  *flag = static_cast<int*>(memory);
  PARAMD_CUDA_RETURN_IF_ERROR(device_, cudaMemsetAsync(*flag, 0, sizeof(int), stream_));
  return absl::OkStatus();
}

absl::StatusOr<int> CudaContext::FlagEnd(int* flag) {
  int value = 0;
  const cudaError_t copied =
      cudaMemcpyAsync(&value, flag, sizeof(int), cudaMemcpyDeviceToHost, stream_);
  const cudaError_t freed = cudaFreeAsync(flag, stream_);
  PARAMD_CUDA_RETURN_IF_ERROR(device_, copied);
  PARAMD_CUDA_RETURN_IF_ERROR(device_, freed);
  PARAMD_CUDA_RETURN_IF_ERROR(device_, cudaStreamSynchronize(stream_));
  return value;
}

}  // namespace paramd::kernels::cuda
