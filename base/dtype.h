// Element types of paramd tensors: the ten PyTorch dtypes a state_dict of an ordinary
// model holds, named as PyTorch names them. Values; thread-safe.
#pragma once

#include "absl/strings/string_view.h"
#include <cstddef>
#include <string>

#include "absl/status/statusor.h"

namespace paramd {

enum class DType {
  kFloat32,
  kFloat64,
  kFloat16,
  kBFloat16,
  kInt64,
  kInt32,
  kInt16,
  kInt8,
  kUInt8,
  kBool,
};

inline constexpr DType kAllDTypes[] = {DType::kFloat32, DType::kFloat64, DType::kFloat16,
                                       DType::kBFloat16, DType::kInt64,   DType::kInt32,
                                       DType::kInt16,   DType::kInt8,    DType::kUInt8,
                                       DType::kBool};

size_t ElementSize(DType dtype);
bool IsFloatingPoint(DType dtype);

// "float32", "bfloat16", "int64", ... as in `str(torch.float32)` without the "torch.".
absl::string_view DTypeName(DType dtype);

// Accepts the canonical names, PyTorch's aliases ("float", "double", "half", "long", "int",
// "short") and a "torch." prefix. INVALID_ARGUMENT lists the accepted names otherwise.
absl::StatusOr<DType> ParseDType(absl::string_view name);

}  // namespace paramd
