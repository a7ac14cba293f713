// The text PyTorch prints for a tensor: `repr(t)` as torch/_tensor_str.py builds it with
// the default print options (precision 4, threshold 1000, edge items 3, line width 80,
// automatic scientific notation). paramctl uses it to show tensors fetched from the
// server exactly as a Python session would. Pure functions; thread-safe.
#pragma once

#include <string>

#include "paramd/tensor.h"

namespace paramd::cli {

// `repr(t)` in PyTorch 2.x for a strided tensor whose bytes are `t.data`
// (little-endian, C order). Follows _tensor_str.py rule for rule:
//   - floating dtypes print in "int mode" (`1.`, `-2.`) when every finite value is
//     integral, in fixed notation with 4 decimals otherwise, and in scientific notation
//     (`1.0000e-05`) when the finite non-zero magnitudes span more than 1000x, exceed
//     1e8, or (outside int mode) fall below 1e-4; float16 and bfloat16 print their
//     float32 values. Elements are right-aligned to the widest one.
//   - integers print as Python ints, bool as True/False.
//   - more than 1000 elements are summarized with `...` keeping 3 items at each end of
//     every dimension; rows wrap at 80 columns; dimensions of rank >= 3 are separated by
//     blank lines.
//   - suffixes in PyTorch's order: `device='cuda:0'` for a non-CPU `t.device` (a bare
//     "cuda" prints as "cuda:0"), `size=(0, 3)` for an empty tensor that is not 1-d,
//     `dtype=torch.X` unless the dtype is float32, int64 or bool (an empty tensor shows
//     every dtype but float32), and `requires_grad=True` when `t.requires_grad`.
// With `as_parameter` the text is nn.Parameter's: "Parameter containing:\n" first.
// A tensor whose byte count does not match its shape and dtype prints as
// `tensor(<invalid: ...>)` naming the mismatch instead of reading out of bounds.
std::string FormatTensor(const paramd::client::HostTensor& t, bool as_parameter);

}  // namespace paramd::cli
