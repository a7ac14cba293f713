#include "server/main/heap_trimmer.h"

#include <algorithm>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

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

HeapTrimmer::HeapTrimmer(absl::Duration period, size_t threshold)
    : period_(period), threshold_(threshold) {
#if defined(__GLIBC__)
  thread_ = std::thread([this] { Run(); });
#endif
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
