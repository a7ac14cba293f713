#include "server/main/heap_trimmer.h"

#include <algorithm>
#include <utility>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace paramd {
namespace {

#if defined(__GLIBC__)
// Bytes in free heap blocks, in every arena.
size_t FreeHeapBytes() { return mallinfo2().fordblks; }
void Trim() { malloc_trim(0); }
// Note [Freed memory stays warm]: by default glibc maps blocks from 128 KiB on (raising that
// bar only as it sees such blocks freed) and shrinks an arena whenever its free top passes
// twice the bar, so gRPC's receive buffers kept coming back as fresh pages: the daemon took
// a page fault per 4 KiB on most of what a write sent it (about a million per 4 GiB pushed)
// and pushes ran at 0.6-0.8 of a raw gRPC stream. Fixed at glibc's own largest bar (32 MiB)
// with arenas shrinking only past that much free at their top, freed buffers are reused
// warm: pushes ran at 0.91-1.06 of the raw stream (bench/wire_bench, two vCPUs). The trim
// threshold is not raised further because malloc_trim cannot shrink a thread arena's top:
// at 64 MiB a refused oversized message left 72 MiB resident for good. For the same reason
// there are at most four arenas, so what their tops keep stays within 4 x 32 MiB: without
// the cap the soak's anonymous peak rose by 95 MiB (tests/soak).
void KeepFreedMemory() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 32 << 20);
  mallopt(M_ARENA_MAX, 4);
}
#else
size_t FreeHeapBytes() { return 0; }
void Trim() {}
void KeepFreedMemory() {}
#endif

}  // namespace

HeapTrimmer::HeapTrimmer(absl::Duration period, size_t threshold, std::function<void()> on_tick)
    : period_(period), threshold_(threshold), on_tick_(std::move(on_tick)) {
  KeepFreedMemory();
  thread_ = std::thread([this] { Run(); });
}

HeapTrimmer::~HeapTrimmer() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void HeapTrimmer::Run() {
  // Free bytes after the last trim (or the lowest seen since): blocks freed and taken again
  // in between are resident again, so growth is measured from the low point.
  size_t low = FreeHeapBytes();
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(&stopping_), period_)) {
    if (on_tick_) on_tick_();
    const size_t free_bytes = FreeHeapBytes();
    if (free_bytes < low + threshold_) {
      low = std::min(low, free_bytes);
      continue;
    }
    Trim();
    low = FreeHeapBytes();
  }
}

}  // namespace paramd
