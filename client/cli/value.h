// Tensors as JSON for paramctl: `--value` text (a number, a boolean, or nested lists of
// them, like torch.tensor's data argument) into a HostTensor of a given dtype, and a
// HostTensor's elements back into nested JSON lists for `--json` output. Pure functions;
// thread-safe.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "paramd/tensor.h"

namespace paramd::cli {

// `text` as a tensor of `dtype`: a scalar gives a 0-dim tensor, nested lists give their
// shape. Values convert as a cast to `dtype` does; integers go to integer dtypes exactly
// (no detour through double). INVALID_ARGUMENT for text that is not JSON, ragged lists,
// or elements that are not numbers or booleans.
absl::StatusOr<client::HostTensor> ParseValueJson(absl::string_view text, client::DType dtype);

// The elements of `tensor` as nested lists following its shape (a bare value for a 0-dim
// tensor): integers for integer dtypes, booleans for bool, numbers for floating dtypes
// (NaN and infinities as the strings "nan", "inf", "-inf", since JSON has no such numbers).
nlohmann::json TensorValuesJson(const client::HostTensor& tensor);

}  // namespace paramd::cli
