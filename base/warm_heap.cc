#include "base/warm_heap.h"

#include <cstdlib>  // defines __GLIBC__ where the C library is glibc

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace paramd {

// Note [Freed memory stays warm]: by default glibc maps blocks from 128 KiB on (raising that
// bar only as it sees such blocks freed) and shrinks an arena whenever its free top passes
// twice the bar, so gRPC's receive buffers kept coming back as fresh pages:
// - the daemon took a page fault per 4 KiB on most of what a write sent it (about a million
//   per 4 GiB pushed) and pushes ran at 0.6-0.8 of a raw gRPC stream;
// - `paramctl state-dict --out` of a 512 MiB model took 17-27 thousand faults, zeroing pages
//   in the middle of recvmsg for about a tenth of its CPU.
// Fixed at glibc's own largest bar (32 MiB) with arenas shrinking only past that much free at
// their top, freed buffers are reused warm: pushes ran at 0.91-1.06 of the raw stream
// (bench/wire_bench, two vCPUs) and the paramctl pull took 4.1 thousand faults. The trim
// threshold is not raised further because malloc_trim cannot shrink a thread arena's top: at
// 64 MiB a refused oversized message left the daemon 72 MiB resident for good. For the same
// reason there are at most four arenas, so what their tops keep stays within 4 x 32 MiB:
// without the cap the soak's anonymous peak rose by 95 MiB (tests/soak).
void KeepFreedMemoryWarm() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 32 << 20);
  mallopt(M_ARENA_MAX, 4);
#endif
}

}  // namespace paramd
