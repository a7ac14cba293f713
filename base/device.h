// Where a tensor lives: `cpu`, `cuda` (the current CUDA device) or `cuda:N`, parsed and
// printed as `torch.device` does. A small value; thread-safe.
#pragma once

#include "absl/strings/string_view.h"
#include <string>

#include "absl/status/statusor.h"

namespace paramd {

enum class DeviceType { kCPU, kCUDA };

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = -1;  // -1: no index given ("cuda" means the current device, as in PyTorch)

  static Device Cpu() { return Device{}; }
  static Device Cuda(int index = -1) { return Device{DeviceType::kCUDA, index}; }

  bool is_cpu() const { return type == DeviceType::kCPU; }
  bool is_cuda() const { return type == DeviceType::kCUDA; }

  // `str(torch.device(...))`: "cpu", "cuda", "cuda:1".
  std::string ToString() const;

  friend bool operator==(const Device&, const Device&) = default;
};

// Parses "cpu", "cpu:0", "cuda", "cuda:N" with torch.device's rules; INVALID_ARGUMENT for
// anything else (unknown type, negative or malformed index).
absl::StatusOr<Device> ParseDevice(absl::string_view text);

}  // namespace paramd
