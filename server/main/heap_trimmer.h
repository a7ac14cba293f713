// HeapTrimmer: hands the pages of freed heap memory back to the system.
//
// gRPC receives into many small malloc blocks. When a burst of traffic ends, or a message too
// large to accept is dropped (Note [Transport memory] in server/service/server.h), glibc keeps
// the freed blocks in its arenas, so the daemon's resident memory would stay at its peak for
// good. A thread checks the heap's free bytes every `period` and, when they grew by at least
// `threshold` since it last looked, calls malloc_trim(0), which returns the free pages (the
// address space stays reserved and is reused by the next allocation).
//
// Constructing one also makes glibc keep more freed memory for reuse instead of handing it
// back at every free (KeepFreedMemoryWarm, base/warm_heap.h).
//
// Each tick first runs `on_tick` (the daemon releases the CPU backend's idle cached blocks
// there, Note [Host block cache] in kernels/cpu/cpu_backend.h), so what those blocks gave
// back to the heap is trimmed in the same tick.
//
// Thread-safety: construct and destroy from one thread; the trimming runs on its own. Does
// nothing but `on_tick` where the C library is not glibc.
#pragma once

#include <cstddef>
#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace paramd {

class HeapTrimmer {
 public:
  HeapTrimmer(absl::Duration period, size_t threshold, std::function<void()> on_tick = {});
  // Stops and joins the thread.
  ~HeapTrimmer();
  HeapTrimmer(const HeapTrimmer&) = delete;
  HeapTrimmer& operator=(const HeapTrimmer&) = delete;

 private:
  void Run();

  const absl::Duration period_;
  const size_t threshold_;
  const std::function<void()> on_tick_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace paramd
