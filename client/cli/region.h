// paramctl's `KEY[REGION]` syntax: a dotted state_dict key optionally followed by one
// index or slice per leading dimension, as Python subscripts write them:
//
//   2.weight            the whole tensor
//   2.weight[0,0]       element (0, 0): each index i selects [i, i+1), keeping the dim
//   2.weight[1:3]       rows 1 and 2, every column
//   2.weight[:, -1]     the last column (negative values count from the end)
//   2.weight[:2, 1:]    open ends run to the start / end of the dimension
//
// Parsing needs no tensor; resolving a parsed region into the [start, stop) ranges the
// server takes needs the tensor's shape. Indices out of range are an error with PyTorch's
// message; slice bounds are clamped as Python clamps them. Steps (`a:b:c`) are refused.
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "paramd/client.h"

namespace paramd::cli {

// One subscript: an index, or a slice with optional ends.
struct Subscript {
  bool is_index = false;
  int64_t index = 0;             // when is_index
  std::optional<int64_t> start;  // when !is_index; nullopt = open
  std::optional<int64_t> stop;   // when !is_index; nullopt = open
};

struct KeyRegion {
  std::string key;
  // Empty: no region (the whole tensor).
  std::vector<Subscript> subscripts;

  // True when resolving needs the tensor's shape (an open end or a negative value).
  bool NeedsShape() const;
};

// Splits "KEY[SUBSCRIPTS]" into the key and its subscripts. INVALID_ARGUMENT (with the
// offending text) for an empty key, an unclosed or empty bracket, a step, or a subscript
// that is not an integer or slice.
absl::StatusOr<KeyRegion> ParseKeyRegion(absl::string_view text);

// The [start, stop) ranges of `subscripts` on a tensor of `shape`. INVALID_ARGUMENT for
// more subscripts than dimensions or an index out of range ("index 5 is out of bounds for
// dimension 0 with size 2", PyTorch's text).
absl::StatusOr<client::Region> ResolveRegion(const std::vector<Subscript>& subscripts,
                                             const std::vector<int64_t>& shape);

// The same without a shape: only for subscripts where NeedsShape() is false.
absl::StatusOr<client::Region> ResolveRegionWithoutShape(const std::vector<Subscript>& subscripts);

// The shape of `region` applied to a tensor of `shape` (later dimensions whole).
std::vector<int64_t> RegionShape(const client::Region& region, const std::vector<int64_t>& shape);

// "[0:1, 2:4]" for messages.
std::string RegionString(const client::Region& region);

}  // namespace paramd::cli
