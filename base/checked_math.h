// Overflow-checked arithmetic on sizes that come from outside (shapes in specs, tensor
// headers, forward programs, files): the one place a product of client-given dimensions is
// formed, so that none wraps around into a small, wrong size. Reentrant, header-only.
#pragma once

#include <cstdint>
#include <optional>

#include "absl/types/span.h"

namespace paramd {

// `a * b`, or nullopt when it does not fit in int64_t.
inline std::optional<int64_t> CheckedMul(int64_t a, int64_t b) {
  int64_t product;
  if (__builtin_mul_overflow(a, b, &product)) return std::nullopt;
  return product;
}

// `a + b`, or nullopt when it does not fit in int64_t.
inline std::optional<int64_t> CheckedAdd(int64_t a, int64_t b) {
  int64_t sum;
  if (__builtin_add_overflow(a, b, &sum)) return std::nullopt;
  return sum;
}

// The product of `values`, or nullopt when it does not fit in int64_t. A zero makes the
// product zero whatever the other values are (as the exact product is), in any order.
inline std::optional<int64_t> CheckedProduct(absl::Span<const int64_t> values) {
  int64_t product = 1;
  bool overflowed = false;
  for (int64_t value : values) {
    if (value == 0) return 0;
    if (overflowed) continue;
    const std::optional<int64_t> next = CheckedMul(product, value);
    if (next) {
      product = *next;
    } else {
      overflowed = true;
    }
  }
  if (overflowed) return std::nullopt;
  return product;
}

}  // namespace paramd
