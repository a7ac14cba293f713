#include "kernels/cuda/context.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/cuda_status.h"

namespace paramd::kernels::cuda {
namespace {

// cuBLASLt's own recommendation for Hopper; Ampere needs less but gains nothing from less.
constexpr size_t kWorkspaceBytes = size_t{32} << 20;

}  // namespace

// The device's stream-ordered pool, as memory_budget.h's allocation policy sees it:
// allocations on the calling thread's stream, trims after every pool stream.
class CudaContext::PoolMemory final : public DeviceMemory {
 public:
  explicit PoolMemory(CudaContext& context) : context_(context) {}
  size_t CachedBytes() override {
    uint64_t reserved = 0, used = 0;
    if (cudaMemPoolGetAttribute(context_.pool_, cudaMemPoolAttrReservedMemCurrent, &reserved) !=
            cudaSuccess ||
        cudaMemPoolGetAttribute(context_.pool_, cudaMemPoolAttrUsedMemCurrent, &used) !=
            cudaSuccess) {
      cudaGetLastError();
      return 0;
    }
    return reserved > used ? static_cast<size_t>(reserved - used) : 0;
  }
  absl::StatusOr<void*> Allocate(size_t bytes) override {
    void* data = nullptr;
    // Zero bytes still gets a distinct valid pointer, as on the CPU.
    const cudaError_t error = cudaMallocAsync(&data, std::max<size_t>(bytes, 1), context_.stream());
    if (error == cudaErrorMemoryAllocation) cudaGetLastError();  // not sticky; clear it
    if (error != cudaSuccess) {
      return CudaStatus(error, "cudaMallocAsync", __FILE__, __LINE__, context_.device());
    }
    return data;
  }
  void Trim() override { context_.Trim(); }

 private:
  CudaContext& context_;
};

absl::StatusOr<CudaContext*> CudaContext::Get(int device) {
  static absl::Mutex mu(absl::kConstInit);
  // Contexts are never destroyed: kernels may still be running on their streams at exit.
  static auto* const contexts = new std::unique_ptr<CudaContext>[kMaxCudaDevices];
  if (device < 0 || device >= kMaxCudaDevices) {
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
  for (cudaStream_t& stream : streams_) {
    PARAMD_CUDA_RETURN_IF_ERROR(d, cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  }
  PARAMD_CUDA_RETURN_IF_ERROR(d, cudaDeviceGetDefaultMemPool(&pool_, d));
  // Freed blocks stay in the pool for the next allocation instead of going back to the
  // driver at each synchronisation: a caching allocator, as PyTorch's, over the runtime's.
  uint64_t threshold = UINT64_MAX;
  PARAMD_CUDA_RETURN_IF_ERROR(
      d, cudaMemPoolSetAttribute(pool_, cudaMemPoolAttrReleaseThreshold, &threshold));
  PARAMD_CUBLAS_RETURN_IF_ERROR(d, cublasLtCreate(&lt_));
  return absl::OkStatus();
}

int CudaContext::ThreadStream() {
  ThreadDeviceState& state = ThisThreadState(device_);
  if (state.stream < 0) state.stream = round_robin_.Next();
  return state.stream;
}

size_t CudaContext::workspace_size() const { return kWorkspaceBytes; }

absl::Status CudaContext::EnsureWorkspace() {
  std::atomic<void*>& slot = workspaces_[ThreadStream()];
  if (slot.load(std::memory_order_acquire) != nullptr) return absl::OkStatus();
  // Allocated without a lock (an allocation may trim, which waits for the device); a thread
  // sharing the stream that raced us here gives its copy back.
  absl::StatusOr<void*> fresh = Allocate(kWorkspaceBytes, MemoryKind::kWorkspace);
  if (!fresh.ok()) return fresh.status();
  void* expected = nullptr;
  if (!slot.compare_exchange_strong(expected, *fresh, std::memory_order_acq_rel)) {
    Free(*fresh, kWorkspaceBytes, MemoryKind::kWorkspace);
  }
  return absl::OkStatus();
}

absl::Status CudaContext::Enter() const {
  absl::Status health = DeviceHealth(device_);
  if (!health.ok()) return health;
  PARAMD_CUDA_RETURN_IF_ERROR(device_, cudaSetDevice(device_));
  return absl::OkStatus();
}

absl::StatusOr<void*> CudaContext::Allocate(size_t nbytes, MemoryKind kind) {
  PoolMemory memory(*this);
  const std::string what = absl::StrCat("cuda:", device_);
  absl::StatusOr<void*> data = AllocateCounted(budget_, memory, nbytes, kind, what.c_str());
  if (!data.ok()) return data;
  if (reinterpret_cast<uintptr_t>(*data) % 64 != 0) {
    // Backend's contract promises 64-byte alignment; the pool gives far more in practice.
    cudaFreeAsync(*data, stream());
    budget_.Release(nbytes, kind);
    return absl::InternalError(absl::StrCat("cudaMallocAsync on cuda:", device_,
                                            " returned memory aligned to less than 64 bytes"));
  }
  return data;
}

void CudaContext::Free(void* data, size_t nbytes, MemoryKind kind) {
  budget_.Release(nbytes, kind);
  // On an unhealthy device the memory is lost with the context anyway.
  if (data == nullptr || !Enter().ok()) return;
  // A failure here can only be a sticky fault, which CudaStatus records for Health().
  CudaStatus(cudaFreeAsync(data, stream()), "cudaFreeAsync", __FILE__, __LINE__, device_)
      .IgnoreError();
}

void CudaContext::Trim() {
  // cudaMemPoolTrimTo never releases a block whose free is not known complete, so the trim
  // is safe whatever runs; waiting for every stream first lets the frees queued on all of
  // them count (Note [Work across streams]). No lock is held.
  bool synced = true;
  for (cudaStream_t stream : streams_) {
    if (cudaStreamSynchronize(stream) != cudaSuccess) synced = false;
  }
  if (synced) cudaMemPoolTrimTo(pool_, 0);
  cudaGetLastError();
}

absl::Status CudaContext::AcquireFlagSlot(ThreadDeviceState& state) {
  const int slot = flag_slots_.Acquire();
  const size_t chunk = static_cast<size_t>(slot / kFlagsPerChunk);
  int* flag_device = nullptr;
  int* flag_host = nullptr;
  {
    absl::MutexLock lock(&flag_mu_);
    while (flag_chunks_.size() <= chunk) {
      // Not counted in the budget: 1 KiB for every 256 threads that ran an embedding.
      void* device = nullptr;
      void* host = nullptr;
      cudaError_t error = cudaMalloc(&device, kFlagsPerChunk * sizeof(int));
      if (error == cudaSuccess) {
        error = cudaHostAlloc(&host, kFlagsPerChunk * sizeof(int), cudaHostAllocDefault);
        if (error != cudaSuccess) cudaFree(device);
      }
      if (error != cudaSuccess) {
        flag_slots_.Release(slot, /*quiescent=*/true);
        return CudaStatus(error, "allocating index flags", __FILE__, __LINE__, device_);
      }
      flag_chunks_.push_back({static_cast<int*>(device), static_cast<int*>(host)});
    }
    flag_device = flag_chunks_[chunk].device + slot % kFlagsPerChunk;
    flag_host = flag_chunks_[chunk].host + slot % kFlagsPerChunk;
  }
  // A new chunk's memory is uninitialised, and the clear is ordered before the thread's
  // gathers by its stream. (A reused slot is already zero: its last owner's clear landed.)
  const cudaError_t cleared = cudaMemsetAsync(flag_device, 0, sizeof(int), stream());
  if (cleared != cudaSuccess) {
    flag_slots_.Release(slot, /*quiescent=*/false);  // its value is unknown: never reused
    return CudaStatus(cleared, "cudaMemsetAsync", __FILE__, __LINE__, device_);
  }
  state.flag_slot = slot;
  state.slots = &flag_slots_;
  state.flag_device = flag_device;
  state.flag_host = flag_host;
  return absl::OkStatus();
}

absl::StatusOr<int*> CudaContext::ArmIndexFlag() {
  ThreadDeviceState& state = ThisThreadState(device_);
  if (state.flag_slot < 0) {
    absl::Status acquired = AcquireFlagSlot(state);
    if (!acquired.ok()) return acquired;
  }
  state.flag.GatherQueued();
  return state.flag_device;
}

absl::Status CudaContext::SyncStream() {
  ThreadDeviceState& state = ThisThreadState(device_);
  const cudaStream_t s = stream();
  const bool read = state.flag.TakeArmed();
  if (read) {
    PARAMD_CUDA_RETURN_IF_ERROR(device_, cudaMemcpyAsync(state.flag_host, state.flag_device,
                                                         sizeof(int), cudaMemcpyDeviceToHost, s));
    PARAMD_CUDA_RETURN_IF_ERROR(device_, cudaMemsetAsync(state.flag_device, 0, sizeof(int), s));
  }
  PARAMD_CUDA_RETURN_IF_ERROR(device_, cudaStreamSynchronize(s));
  state.flag.Synchronized();
  if (read && *state.flag_host != 0) {
    return absl::InvalidArgumentError("index out of range in self");
  }
  return absl::OkStatus();
}

void CudaContext::DiscardIndexFlag() {
  ThreadDeviceState& state = ThisThreadState(device_);
  // Nothing armed (the usual case): no CUDA call at all.
  if (!state.flag.TakeArmed() || !Enter().ok()) return;
  // Behind the earlier request's gathers on the thread's stream; the flag stays pending
  // until the next synchronization sees the clear land.
  CudaStatus(cudaMemsetAsync(state.flag_device, 0, sizeof(int), stream()), "cudaMemsetAsync",
             __FILE__, __LINE__, device_)
      .IgnoreError();
}

}  // namespace paramd::kernels::cuda
