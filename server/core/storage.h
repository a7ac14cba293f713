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

namespace paramd::core {

class Storage {
 public:
  // Uninitialised bytes on `device`. RESOURCE_EXHAUSTED over the memory limit;
  // FAILED_PRECONDITION for a device this process cannot use.
  static absl::StatusOr<std::shared_ptr<Storage>> Allocate(const Device& device, size_t nbytes);

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

 private:
  Storage(const Device& device, void* data, size_t nbytes, std::function<void()> release)
      : device_(device), data_(data), nbytes_(nbytes), release_(std::move(release)) {}

  Device device_;
  void* data_;
  size_t nbytes_;
  std::function<void()> release_;
};

}  // namespace paramd::core
