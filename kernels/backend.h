// A compute backend owns memory and math for one kind of device. The core allocates every
// tensor's storage through the backend of the tensor's device and never touches device
// memory directly; backends know nothing of modules or parameter names.
//
// Thread-safety: every method may be called from any thread at once.
//
// Note [Work across threads]
// A device backend may queue work and return before it runs (kernels/ops.h: the work one
// thread issues runs in order). Work issued from different threads is not ordered (the CUDA
// backend gives each thread its own stream), so callers keep three rules:
//   - Publish complete data: before another thread can see device memory a thread wrote
//     with ops, the writer calls Synchronize (CopyFromHost waits on its own).
//   - Free nothing under another thread's work: Free is ordered after the freeing thread's
//     own work only, so a thread that queued work reading memory it does not own (a pinned
//     model version's tensors) synchronizes before it lets go of that memory, error paths
//     included.
//   - Errors found while work runs (a kernel fault, a bad embedding index) are reported by
//     the issuing thread's next Synchronize or CopyToHost; a request starts with
//     DiscardDeferredErrors so that it never reports what an earlier request on the thread
//     left unreported.
// Host backends run every op before it returns, and keep the rules for free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/ops.h"
#include "base/device.h"

namespace paramd::kernels {

class Backend {
 public:
  virtual ~Backend() = default;

  virtual Device device() const = 0;

  // Allocates `nbytes` bytes aligned to at least 64. RESOURCE_EXHAUSTED when the memory limit
  // (SetMemoryLimit) or the device itself cannot hold them. Zero bytes gives a valid pointer.
  virtual absl::StatusOr<void*> Allocate(size_t nbytes) = 0;
  // Frees memory from Allocate; `nbytes` must be the size it was allocated with.
  virtual void Free(void* data, size_t nbytes) = 0;

  // Copies between host memory and this device's memory, or within the device.
  virtual absl::Status CopyFromHost(void* device_dst, const void* host_src, size_t nbytes) = 0;
  virtual absl::Status CopyToHost(void* host_dst, const void* device_src, size_t nbytes) = 0;
  virtual absl::Status CopyWithinDevice(void* dst, const void* src, size_t nbytes) = 0;

  // Bytes currently allocated through this backend, and the ceiling (0 = none).
  virtual size_t bytes_in_use() const = 0;
  virtual void SetMemoryLimit(size_t max_bytes) = 0;

  // Reservations (Note [Write reservations] in server/core/storage.h): Reserve counts
  // `nbytes` against the limit as Allocate would, without allocating them (RESOURCE_EXHAUSTED
  // as Allocate); AllocateReserved allocates bytes a reservation already counts, and
  // Unreserve gives back reserved bytes nothing was allocated from. Memory from
  // AllocateReserved is freed with Free like any other. The defaults count nothing (a
  // backend without a limit of its own).
  virtual absl::Status Reserve(size_t nbytes) {
    (void)nbytes;
    return absl::OkStatus();
  }
  virtual absl::StatusOr<void*> AllocateReserved(size_t nbytes) { return Allocate(nbytes); }
  virtual void Unreserve(size_t nbytes) { (void)nbytes; }
  // Returns the cached free blocks that no allocation took for `idle` (a backend that keeps
  // none does nothing). The daemon calls it once a second (Note [Host block cache]).
  virtual void ReleaseIdleCache(int64_t idle_ns) { (void)idle_ns; }

  // Ops (kernels/ops.h). Supports answers OK when this backend runs the op as asked and
  // UNIMPLEMENTED (naming the op, dtype and device) otherwise; each op returns the same
  // UNIMPLEMENTED when called anyway. The defaults support nothing, so a backend fills in
  // the families it has.
  virtual absl::Status Supports(const OpQuery& query) const;
  virtual absl::Status Gemm(const GemmArgs& args);
  virtual absl::Status Conv2d(const Conv2dArgs& args);
  virtual absl::Status MaxPool2d(const MaxPool2dArgs& args);
  virtual absl::Status AvgPool2d(const AvgPool2dArgs& args);
  virtual absl::Status AdaptiveAvgPool2d(const AdaptiveAvgPool2dArgs& args);
  virtual absl::Status BatchNorm(const BatchNormArgs& args);
  virtual absl::Status LayerNorm(const LayerNormArgs& args);
  virtual absl::Status Unary(const UnaryArgs& args);
  virtual absl::Status Binary(const BinaryArgs& args);
  virtual absl::Status Softmax(const SoftmaxArgs& args);
  virtual absl::Status Embedding(const EmbeddingArgs& args);
  virtual absl::Status Dropout(const DropoutArgs& args);
  virtual absl::Status Cat(const CatArgs& args);
  virtual absl::Status Convert(const ConvertArgs& args);
  virtual absl::Status OptimizerStep(const OptimizerStepArgs& args);
  virtual absl::Status Fill(const FillArgs& args);

  // Waits until every op and copy the calling thread issued so far on this backend has
  // finished; the first error of its asynchronous ops surfaces here if not earlier. Host
  // backends return at once.
  virtual absl::Status Synchronize() { return absl::OkStatus(); }
  // Drops the calling thread's errors that its earlier work found but no Synchronize or
  // CopyToHost has reported yet (Note [Work across threads]); a request calls it first.
  // Waits for nothing. Host backends have none.
  virtual void DiscardDeferredErrors() {}

 protected:
  // The UNIMPLEMENTED status for `query` on this backend.
  absl::Status Unsupported(const OpQuery& query) const;
};

// The backend for `device`. CPU always exists. A CUDA device gets FAILED_PRECONDITION when
// the build has no CUDA support or the machine has no such GPU. The returned backend lives
// for the whole process.
absl::StatusOr<Backend*> GetBackend(const Device& device);

// The ceiling on each GPU's memory (--max-gpu-memory; 0, the default: the device's own
// memory), set on every CUDA backend that exists and on each one created later. The CPU's
// ceiling (--max-memory) is the CPU backend's SetMemoryLimit.
void SetGpuMemoryLimit(size_t max_bytes);

// Makes GetBackend(device) answer `backend` (not owned; nullptr ends it) ahead of the real
// lookup, for tests that need a second device where no GPU is present. Thread-safe, but
// only for tests: a storage allocated through one backend must be freed through it.
void SetBackendForTesting(const Device& device, Backend* backend);

// One visible GPU, as the CUDA runtime reports it.
struct GpuInfo {
  int index = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  size_t total_memory = 0;
};

// Lists the GPUs. FAILED_PRECONDITION when there are none, when no usable driver is present
// (a toolkit without a driver counts as no GPU), or when built without CUDA.
absl::StatusOr<std::vector<GpuInfo>> QueryGpus();

}  // namespace paramd::kernels
