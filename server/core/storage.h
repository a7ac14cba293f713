// Storage: one block of bytes on one device, allocated through that device's backend.
//
// Ownership: held by shared_ptr; every Tensor viewing it keeps it alive. Once a storage is
// reachable from a published model version it is never written again (see Note [Snapshot
// publication] in model.h): writers allocate a new storage instead. Thread-safe to share.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "base/device.h"

namespace paramd::kernels {
class Backend;
}  // namespace paramd::kernels

namespace paramd::core {

// Note [Write reservations]
// A write that says up front how many bytes it will bring (WriteOptions.reserve_bytes) sets
// them aside before any of them arrive, so that a write that cannot fit is refused at once
// instead of after streaming most of its data. The reserved bytes count against the
// device's limit (--max-memory) from the moment they are reserved, as if allocated; the
// write's tensors are then allocated from the reservation while it lasts (and as usual past
// it), and what is left goes back when the reservation is destroyed. Cached free blocks give
// way to a reservation as to an allocation (Note [Host block cache] in
// kernels/cpu/cpu_backend.h).
//
// Thread-safety: one reservation is used by one thread at a time.
class MemoryReservation {
 public:
  // `nbytes` set aside on `device`: RESOURCE_EXHAUSTED (the backend's text, naming the limit)
  // when they do not fit; FAILED_PRECONDITION for a device this process cannot use.
  static absl::StatusOr<std::unique_ptr<MemoryReservation>> Make(const Device& device,
                                                                 size_t nbytes);
  // Gives back what is left.
  ~MemoryReservation();
  MemoryReservation(const MemoryReservation&) = delete;
  MemoryReservation& operator=(const MemoryReservation&) = delete;

  const Device& device() const { return device_; }
  // Bytes still set aside.
  size_t remaining() const { return remaining_; }
  // Sets aside `nbytes` more, if they fit (false, and nothing changes, when not).
  bool Grow(size_t nbytes);

 private:
  friend class Storage;
  MemoryReservation(const Device& device, kernels::Backend* backend, size_t nbytes)
      : device_(device), backend_(backend), remaining_(nbytes) {}

  Device device_;
  kernels::Backend* backend_;  // lives for the process
  size_t remaining_;
};

class Storage {
 public:
  // Uninitialised bytes on `device`. RESOURCE_EXHAUSTED over the memory limit;
  // FAILED_PRECONDITION for a device this process cannot use. With a `reservation` for the
  // same device that still holds `nbytes`, they come out of it (no limit check: they were
  // counted when reserved); otherwise they are allocated as usual.
  static absl::StatusOr<std::shared_ptr<Storage>> Allocate(
      const Device& device, size_t nbytes, MemoryReservation* reservation = nullptr);

  // Wraps memory owned elsewhere (a memory-mapped file, say); `release` runs when the last
  // reference goes.
  static std::shared_ptr<Storage> Wrap(const Device& device, void* data, size_t nbytes,
                                       std::function<void()> release);

  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() { return data_; }
  const void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  const Device& device() const { return device_; }
  // Made by Wrap: memory the backend did not allocate (and --max-memory does not count).
  bool wrapped() const { return wrapped_; }

 private:
  Storage(const Device& device, void* data, size_t nbytes, std::function<void()> release,
          bool wrapped)
      : device_(device), data_(data), nbytes_(nbytes), release_(std::move(release)),
        wrapped_(wrapped) {}

  Device device_;
  void* data_;
  size_t nbytes_;
  std::function<void()> release_;
  bool wrapped_;
};

}  // namespace paramd::core
