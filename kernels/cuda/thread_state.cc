#include "kernels/cuda/thread_state.h"

namespace paramd::kernels::cuda {

int FlagSlots::Acquire() {
  absl::MutexLock lock(&mu_);
  if (!free_.empty()) {
    const int slot = free_.back();
    free_.pop_back();
    return slot;
  }
  return next_++;
}

void FlagSlots::Release(int slot, bool quiescent) {
  if (!quiescent) return;  // leaked: at most one int per thread that exits mid-request
  absl::MutexLock lock(&mu_);
  free_.push_back(slot);
}

int FlagSlots::size() const {
  absl::MutexLock lock(&mu_);
  return next_;
}

namespace {

// Every device's state of one thread; gives the flag slots back when the thread exits.
struct ThreadStates {
  ThreadDeviceState devices[kMaxCudaDevices];
  ~ThreadStates() {
    for (ThreadDeviceState& state : devices) {
      if (state.flag_slot >= 0) state.slots->Release(state.flag_slot, state.flag.quiescent());
    }
  }
};

}  // namespace

ThreadDeviceState& ThisThreadState(int device) {
  thread_local ThreadStates states;
  return states.devices[device];
}

}  // namespace paramd::kernels::cuda
