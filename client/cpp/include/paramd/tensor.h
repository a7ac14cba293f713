// HostTensor: a tensor's bytes in the client's memory, as they travel on the wire
// (little-endian, C-contiguous), with the metadata the server sends along. A plain value;
// copying it copies the bytes. Not thread-safe to mutate from several threads.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "base/dtype.h"

namespace paramd::client {

// The dtype vocabulary is the server's own (base/dtype.h): one table of names, sizes and
// PyTorch's aliases for every part of paramd.
using ::paramd::DType;
using ::paramd::DTypeName;
using ::paramd::ElementSize;
using ::paramd::ParseDType;

struct HostTensor {
  DType dtype = DType::kFloat32;
  std::vector<int64_t> shape;
  // numel * ElementSize(dtype) bytes.
  std::string data;

  // Set by the server in responses.
  std::string device;
  bool is_parameter = false;
  bool requires_grad = false;
  uint64_t version = 0;
  std::vector<std::string> tied_with;

  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * ElementSize(dtype); }

  // A tensor of `dtype` and `shape` from `values` converted as a cast would (float16 and
  // bfloat16 round to nearest even). INVALID_ARGUMENT if the count does not match.
  static absl::StatusOr<HostTensor> FromDoubles(DType dtype, std::vector<int64_t> shape,
                                                const std::vector<double>& values);
  // The elements in C order as doubles.
  std::vector<double> ToDoubles() const;
};

}  // namespace paramd::client
