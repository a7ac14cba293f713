#include "kernels/cpu/cpu_backend.h"

#include <sys/mman.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace paramd::kernels {
namespace {

constexpr size_t kAlignment = 64;
constexpr size_t kCacheMinBytes = size_t{128} << 10;
// The cache holds at most half the ceiling: an optimizer step frees what the next one
// allocates (Adam's new parameters and two moments: three times the parameters, of a model
// that needs seven times them to step at all, so at most 3/7 of the ceiling), and a quarter
// left most of a large model's step to fresh pages, which cost more than the step itself.
// Cached blocks give way to any allocation, so the cap bounds only idle memory, for 5 s.
constexpr size_t kCacheShareDivisor = 2;
// Without a ceiling the cache still stops here.
constexpr size_t kCacheDefaultMaxBytes = size_t{4} << 30;

// The size actually allocated: a multiple of the alignment, and for cached sizes a
// multiple of 64 KiB so that nearby sizes share a class.
size_t RoundedSize(size_t nbytes) {
  const size_t unit = nbytes >= kCacheMinBytes ? size_t{64} << 10 : kAlignment;
  if (nbytes == 0) return kAlignment;
  if (nbytes > SIZE_MAX - unit) return 0;
  return (nbytes + unit - 1) / unit * unit;
}

// A block this large or larger is mapped on its own, 2 MiB aligned, with huge pages asked
// for (Note [Huge pages for large blocks] in cpu_backend.h).
constexpr size_t kHugePageBytes = size_t{2} << 20;

void* MapHugeBlock(size_t rounded) {
  // One page less than a whole huge page of slack is enough to find an aligned start.
  const size_t span = rounded + kHugePageBytes - 4096;
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + kHugePageBytes - 1) & ~(uintptr_t{kHugePageBytes} - 1);
  const size_t head = aligned - start, tail = span - head - rounded;
  if (head > 0) munmap(raw, head);
  if (tail > 0) munmap(reinterpret_cast<void*>(aligned + rounded), tail);
  // Advice only: where the system's THP setting is "never" the block keeps 4 KiB pages.
  madvise(reinterpret_cast<void*>(aligned), rounded, MADV_HUGEPAGE);
  return reinterpret_cast<void*>(aligned);
}

void* AllocateBlock(size_t rounded) {
  if (rounded >= kHugePageBytes) return MapHugeBlock(rounded);
  return std::aligned_alloc(kAlignment, rounded);
}

void ReleaseBlock(void* data, size_t rounded) {
  if (rounded >= kHugePageBytes) {
    munmap(data, rounded);
  } else {
    std::free(data);
  }
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

absl::Status OverLimit(const char* verb, size_t nbytes, size_t limit, size_t in_use) {
  return absl::ResourceExhaustedError(absl::StrCat(
      verb, " ", nbytes, " bytes on cpu would exceed the memory limit of ", limit, " bytes (",
      in_use, " in use); free models or raise --max-memory"));
}

}  // namespace

CpuBackend::~CpuBackend() { EmptyCache(); }

void* CpuBackend::TakeCached(size_t rounded) {
  if (rounded < kCacheMinBytes) return nullptr;
  absl::MutexLock lock(&cache_mu_);
  auto it = cache_.find(rounded);
  if (it == cache_.end()) return nullptr;
  void* data = it->second.data;
  cache_.erase(it);
  cached_bytes_ -= rounded;
  return data;
}

absl::StatusOr<void*> CpuBackend::Allocate(size_t nbytes) {
  const size_t rounded = RoundedSize(nbytes);
  if (rounded == 0) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", nbytes, " bytes"));
  }
  // A cached block is already within the limit: in use plus cached never passes it.
  if (void* data = TakeCached(rounded)) {
    in_use_.fetch_add(nbytes);
    return data;
  }
  if (absl::Status counted = Count("allocating", nbytes); !counted.ok()) return counted;
  absl::StatusOr<void*> data = AllocateReserved(nbytes);
  if (!data.ok()) in_use_.fetch_sub(nbytes);
  return data;
}

absl::Status CpuBackend::Reserve(size_t nbytes) { return Count("reserving", nbytes); }

absl::Status CpuBackend::Count(const char* verb, size_t nbytes) {
  const size_t limit = limit_.load();
  const size_t before = in_use_.fetch_add(nbytes);
  if (limit == 0) return absl::OkStatus();
  if (before + nbytes > limit || before + nbytes < before) {
    in_use_.fetch_sub(nbytes);
    return OverLimit(verb, nbytes, limit, before);
  }
  // Cached blocks give way: in use plus cached stays within the limit.
  ShrinkCache(limit - (before + nbytes));
  return absl::OkStatus();
}

void CpuBackend::Unreserve(size_t nbytes) { in_use_.fetch_sub(nbytes); }

absl::StatusOr<void*> CpuBackend::AllocateReserved(size_t nbytes) {
  const size_t rounded = RoundedSize(nbytes);
  if (rounded == 0) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", nbytes, " bytes"));
  }
  if (void* data = TakeCached(rounded)) return data;
  void* data = AllocateBlock(rounded);
  if (data == nullptr) {
    EmptyCache();
    data = AllocateBlock(rounded);
  }
  if (data == nullptr) {
    return absl::ResourceExhaustedError(
        absl::StrCat("out of host memory allocating ", nbytes, " bytes"));
  }
  return data;
}

void CpuBackend::Free(void* data, size_t nbytes) {
  in_use_.fetch_sub(nbytes);
  const size_t rounded = RoundedSize(nbytes);
  if (rounded >= kCacheMinBytes) {
    const size_t limit = limit_.load();
    const size_t max_cached = limit != 0 ? limit / kCacheShareDivisor : kCacheDefaultMaxBytes;
    absl::MutexLock lock(&cache_mu_);
    if (cached_bytes_ + rounded <= max_cached) {
      cache_.emplace(rounded, CachedBlock{data, NowNs()});
      cached_bytes_ += rounded;
      return;
    }
  }
  ReleaseBlock(data, rounded);
}

size_t CpuBackend::bytes_cached() const {
  absl::MutexLock lock(&cache_mu_);
  return cached_bytes_;
}

void CpuBackend::ShrinkCache(size_t max_bytes) {
  std::vector<std::pair<size_t, void*>> released;
  {
    absl::MutexLock lock(&cache_mu_);
    // The largest blocks first: the fewest blocks give the room.
    while (cached_bytes_ > max_bytes) {
      auto last = std::prev(cache_.end());
      released.emplace_back(last->first, last->second.data);
      cached_bytes_ -= last->first;
      cache_.erase(last);
    }
  }
  for (const auto& [size, data] : released) ReleaseBlock(data, size);
}

void CpuBackend::ReleaseIdleCache(int64_t idle_ns) {
  const int64_t now = NowNs();
  std::vector<std::pair<size_t, void*>> released;
  {
    absl::MutexLock lock(&cache_mu_);
    for (auto it = cache_.begin(); it != cache_.end();) {
      if (now - it->second.freed_ns < idle_ns) {
        ++it;
        continue;
      }
      released.emplace_back(it->first, it->second.data);
      cached_bytes_ -= it->first;
      it = cache_.erase(it);
    }
  }
  for (const auto& [size, data] : released) ReleaseBlock(data, size);
}

void CpuBackend::EmptyCache() { ShrinkCache(0); }

absl::Status CpuBackend::CopyFromHost(void* dst, const void* src, size_t nbytes) {
  if (nbytes) std::memcpy(dst, src, nbytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyToHost(void* dst, const void* src, size_t nbytes) {
  if (nbytes) std::memcpy(dst, src, nbytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyWithinDevice(void* dst, const void* src, size_t nbytes) {
  if (nbytes) std::memmove(dst, src, nbytes);
  return absl::OkStatus();
}

}  // namespace paramd::kernels
