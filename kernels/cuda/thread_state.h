// What each thread holds of a device's CUDA context, as plain host logic (no CUDA header, so
// the CPU build tests it): which of the device's pooled streams the thread queues its work on
// (handed out round robin on the thread's first use of the device and kept for the thread's
// life, as PyTorch hands out its stream pool), and the host-side bookkeeping of the thread's
// deferred embedding index check (Note [Per-thread streams] and Note [Deferred index check]
// in kernels/cuda/context.h).
//
// Ownership: a device's StreamRoundRobin and FlagSlots belong to its context, which lives for
// the process. ThreadDeviceState is the calling thread's own (thread_local); when the thread
// exits its flag slot goes back to its FlagSlots, with no CUDA call.
//
// Thread-safety: StreamRoundRobin and FlagSlots are safe from any thread. A thread reads and
// writes only its own ThreadDeviceState.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace paramd::kernels::cuda {

// Devices 0 to kMaxCudaDevices - 1 have a context; no machine paramd runs on has more.
inline constexpr int kMaxCudaDevices = 64;

// Hands out stream indices 0, 1, ..., streams - 1, 0, 1, ... in turn.
class StreamRoundRobin {
 public:
  explicit StreamRoundRobin(int streams) : streams_(streams) {}
  int Next() { return static_cast<int>(next_.fetch_add(1, std::memory_order_relaxed) % streams_); }
  int streams() const { return streams_; }

 private:
  const uint32_t streams_;
  std::atomic<uint32_t> next_{0};
};

// The slots of a device's table of index flags: one per thread that has run an embedding on
// the device. A slot comes back when its thread exits; one whose device writes may still be
// queued then (the thread never synchronized after its last embedding) is never handed out
// again, since a later owner on another stream would not be ordered after those writes.
class FlagSlots {
 public:
  // A slot given back quiescent if there is one, else a new one (0, 1, 2, ...).
  int Acquire();
  void Release(int slot, bool quiescent);
  // Slots ever handed out: the table's size.
  int size() const;

 private:
  mutable absl::Mutex mu_;
  std::vector<int> free_ ABSL_GUARDED_BY(mu_);
  int next_ ABSL_GUARDED_BY(mu_) = 0;
};

// The host side of one thread's index flag on one device.
//   armed:   an embedding that may set the flag was queued since the flag was last read or
//            cleared, so the next synchronization must read it (copy to host, clear).
//   pending: device writes to the flag (a gather, a clear) are queued and no successful
//            synchronization of the thread's stream has been seen since.
class IndexFlagState {
 public:
  void GatherQueued() { armed_ = pending_ = true; }
  // Whether the flag must be read (or cleared); disarms it: the caller queues the read and
  // clear before its synchronization, or the clear alone when it discards the flag.
  bool TakeArmed() {
    const bool armed = armed_;
    armed_ = false;
    return armed;
  }
  // The thread's stream synchronized without error: every queued write has landed.
  void Synchronized() { pending_ = false; }
  bool armed() const { return armed_; }
  bool quiescent() const { return !pending_; }

 private:
  bool armed_ = false;
  bool pending_ = false;
};

// One thread's state for one device.
struct ThreadDeviceState {
  int stream = -1;            // index in the device's stream pool; -1 until first use
  int flag_slot = -1;         // -1 until the thread's first embedding on the device
  FlagSlots* slots = nullptr;  // where flag_slot goes back when the thread exits
  int* flag_device = nullptr;  // the slot's int in device memory
  int* flag_host = nullptr;    // its pinned host mirror
  IndexFlagState flag;
};

// The calling thread's state for `device` (0 <= device < kMaxCudaDevices).
ThreadDeviceState& ThisThreadState(int device);

}  // namespace paramd::kernels::cuda
