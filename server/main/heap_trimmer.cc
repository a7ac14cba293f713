#include "server/main/heap_trimmer.h"

#include <algorithm>
#include <utility>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "base/warm_heap.h"

namespace paramd {
namespace {

#if defined(__GLIBC__)
// Bytes in free heap blocks, in every arena.
size_t FreeHeapBytes() { return mallinfo2().fordblks; }
void Trim() { malloc_trim(0); }
#else
size_t FreeHeapBytes() { return 0; }
void Trim() {}
#endif

}  // namespace

HeapTrimmer::HeapTrimmer(absl::Duration period, size_t threshold, std::function<void()> on_tick)
    : period_(period), threshold_(threshold), on_tick_(std::move(on_tick)) {
  KeepFreedMemoryWarm();
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
