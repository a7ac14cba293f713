// KeepFreedMemoryWarm: makes glibc keep freed heap memory for reuse instead of handing its
// pages back at (almost) every free, so that gRPC's receive buffers, freed and taken again
// for every message, do not come back as fresh pages that each cost a fault (Note [Freed
// memory stays warm] in warm_heap.cc). For programs, which own their process's allocator:
// paramctl calls it first thing, paramd as its HeapTrimmer starts; the client library does
// not.
//
// Thread-safety: may be called with other threads running; what it sets applies to later
// allocations and frees (arenas made before it stay). Does nothing where the C library is
// not glibc.
#pragma once

namespace paramd {

void KeepFreedMemoryWarm();

}  // namespace paramd
