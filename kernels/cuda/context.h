// The per-device CUDA state the backend's ops share, as faiss's GpuResources holds it: a
// fixed pool of streams with one GEMM workspace each, one cuBLASLt handle, the device's
// memory pool and the byte budget over it, and the table of per-thread index flags.
//
// Ownership: Get() creates a device's context on first use and keeps it for the life of
// the process (the CUDA runtime tears everything down at exit); callers borrow it.
//
// Thread-safety: every method is safe from any thread. What is "the calling thread's" (its
// stream, that stream's workspace, its index flag) is decided per thread (Note [Per-thread
// streams]): work queued from one thread runs in the order it was queued, which gives ops.h's
// per-thread ordering; work of different threads is not ordered.
//
// Note [Per-thread streams]
// Each thread queues its work on a stream of its own, not on one device-wide stream, so that
// requests overlap on the GPU and one request's deferred error (Note [Deferred index check])
// is not another's (a sticky fault still stops the whole device: Note [Sticky CUDA errors]
// in cuda_status.h). As in PyTorch's stream pool, the device has kStreams non-blocking
// streams, created with the context, handed out round robin to threads on their first call
// (thread_state.h) and kept thread-local; with more threads than streams, threads share one,
// which only orders their work more than needed. Each stream has its own cuBLASLt workspace,
// allocated from the pool on the stream's first GEMM (counted as MemoryKind::kWorkspace), so
// products on different streams never share scratch; threads sharing a stream share its
// workspace, in stream order. The cuBLASLt handle holds no stream or workspace and is shared.
//
// Note [Work across streams]
// Memory comes from the device's pool with cudaMallocAsync and goes back with cudaFreeAsync,
// both on the calling thread's stream. The pool's reuse policies (follow event dependencies,
// opportunistic reuse, internal dependencies: the defaults) hand a freed block to another
// stream only once the free is known complete or after making that stream wait for it, so
// reuse is safe as long as the free itself comes after every use of the block, on every
// stream. Freeing on one stream is ordered only after that stream's work, so the rules are
// (kernels/backend.h, Note [Work across threads], says them for any device backend):
//   - Published data is complete: a thread synchronizes its stream before another thread can
//     see what it wrote. CopyFromHost waits on its own (its source may be reused on return);
//     the core synchronizes after an optimizer step, a gradient sum, zeroed gradients and a
//     forward pass before it publishes their tensors, and moves and loads go through host
//     copies, which wait.
//   - Nothing is freed under another stream's queued work: a thread that queued work reading
//     tensors it does not own synchronizes before it lets them go. A forward synchronizes on
//     every exit, success or error, before its caller drops the pinned model version, since
//     the last reference to a tensor of that version may be dropped, and the tensor freed,
//     on any thread.
//   - The memory a thread allocated is usable at once only on its own stream; another thread
//     gets it through a publication, so after a synchronization.
// Trimming (Trim, memory_budget.h) releases only what cudaMemPoolTrimTo can safely release:
// blocks whose frees are known complete. It synchronizes every pool stream first, so that the
// frees queued on any of them count; that waits for other threads' queued work, as the one
// shared stream did before, and only on the slow path (past the ceiling, or the device full).
//
// Note [Deferred index check]
// An embedding's gather checks each index itself: an index outside [0, rows) writes zeros to
// its output row and sets the calling thread's index flag, an int in device memory (never a
// device-side assert: a trap is sticky and would poison the context for every request). The
// flag is read with the work's results: Synchronize() and CopyToHost queue a copy of it into
// pinned host memory and a clear behind the thread's work, wait once, and answer
// INVALID_ARGUMENT "index out of range in self" (PyTorch's text) when it was set. So an
// embedding costs no host round trip. Each thread has its own flag (a slot of a per-device
// table), even when threads share a stream. A request that fails for another reason before
// it synchronizes leaves its flag armed; Backend::DiscardDeferredErrors at the start of the
// next request on the thread queues its clear (and a forward synchronizes on every exit
// anyway, reading it). A slot whose thread exits with writes still queued is never reused.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstddef>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kernels/cuda/memory_budget.h"
#include "kernels/cuda/thread_state.h"

namespace paramd::kernels::cuda {

class CudaContext {
 public:
  // Streams per device (Note [Per-thread streams]): each may get a 32 MiB GEMM workspace.
  static constexpr int kStreams = 16;

  // The context of `device`, created on first use. FAILED_PRECONDITION when the device
  // does not exist or is unhealthy.
  static absl::StatusOr<CudaContext*> Get(int device);

  CudaContext(const CudaContext&) = delete;
  CudaContext& operator=(const CudaContext&) = delete;

  int device() const { return device_; }
  // The calling thread's stream (Note [Per-thread streams]).
  cudaStream_t stream() { return streams_[ThreadStream()]; }
  cublasLtHandle_t lt() const { return lt_; }
  // The GEMM workspace of the calling thread's stream: null until EnsureWorkspace made it.
  void* workspace() { return workspaces_[ThreadStream()].load(std::memory_order_acquire); }
  size_t workspace_size() const;
  // Makes the calling thread's stream's workspace, once. RESOURCE_EXHAUSTED when it does
  // not fit the device or the memory ceiling.
  absl::Status EnsureWorkspace();
  cudaMemPool_t pool() const { return pool_; }
  GpuMemoryBudget& budget() { return budget_; }

  // Makes the device current on the calling thread (the runtime's current device is per
  // thread) after checking its health. Every entry point of the backend calls this first.
  absl::Status Enter() const;

  // `nbytes` of device memory from the pool, in order on the calling thread's stream,
  // counted as `kind` (memory_budget.h's policy), aligned to 64 bytes. The caller entered.
  absl::StatusOr<void*> Allocate(size_t nbytes, MemoryKind kind);
  // Frees in order on the calling thread's stream (Note [Work across streams]).
  void Free(void* data, size_t nbytes, MemoryKind kind);

  // The calling thread's index flag, armed (Note [Deferred index check]): a kernel queued on
  // the thread's stream may set it to 1. The caller entered.
  absl::StatusOr<int*> ArmIndexFlag();
  // Waits for the calling thread's stream. Its errors, then INVALID_ARGUMENT "index out of
  // range in self" when the thread's index flag was set (which clears it). The caller
  // entered. Holds no lock while it waits.
  absl::Status SyncStream();
  // Queues the clear of the calling thread's armed index flag, so that what an earlier
  // request left there is not reported to the next. Waits for nothing; enters on its own.
  void DiscardIndexFlag();

 private:
  explicit CudaContext(int device) : device_(device), round_robin_(kStreams) {}
  absl::Status Init();
  // The calling thread's index in streams_, assigned round robin on its first call.
  int ThreadStream();
  absl::Status AcquireFlagSlot(ThreadDeviceState& state);
  // Waits for every pool stream, then hands the pool's cached memory back to the driver.
  void Trim();

  class PoolMemory;

  const int device_;
  cudaStream_t streams_[kStreams] = {};
  std::atomic<void*> workspaces_[kStreams] = {};
  StreamRoundRobin round_robin_;
  cublasLtHandle_t lt_ = nullptr;
  cudaMemPool_t pool_ = nullptr;
  GpuMemoryBudget budget_;

  // The index flags: chunks of kFlagsPerChunk ints in device memory and pinned host memory,
  // never freed; slot s lives in chunk s / kFlagsPerChunk.
  static constexpr int kFlagsPerChunk = 256;
  struct FlagChunk {
    int* device;
    int* host;
  };
  FlagSlots flag_slots_;
  absl::Mutex flag_mu_;
  std::vector<FlagChunk> flag_chunks_ ABSL_GUARDED_BY(flag_mu_);
};

}  // namespace paramd::kernels::cuda
