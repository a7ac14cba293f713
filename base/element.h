// Element-type dispatch for CPU loops (the core's and the CPU backend's): maps a DType to
// the C++ type that stores it and converts between them as PyTorch's casts do.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>

#include "base/dtype.h"
#include "base/half.h"

namespace paramd {

struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls `fn(TypeTag<T>{})` with T the storage type of `dtype`.
template <typename Fn>
decltype(auto) VisitDType(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32: return fn(TypeTag<float>{});
    case DType::kFloat64: return fn(TypeTag<double>{});
    case DType::kFloat16: return fn(TypeTag<Half>{});
    case DType::kBFloat16: return fn(TypeTag<BFloat16>{});
    case DType::kInt64: return fn(TypeTag<int64_t>{});
    case DType::kInt32: return fn(TypeTag<int32_t>{});
    case DType::kInt16: return fn(TypeTag<int16_t>{});
    case DType::kInt8: return fn(TypeTag<int8_t>{});
    case DType::kUInt8: return fn(TypeTag<uint8_t>{});
    case DType::kBool: return fn(TypeTag<bool>{});
  }
  return fn(TypeTag<float>{});
}

// The arithmetic type a stored value widens to before conversion.
template <typename T>
using Widened = std::conditional_t<std::is_same_v<T, Half> || std::is_same_v<T, BFloat16>, float, T>;

template <typename T>
Widened<T> Widen(T value) {
  if constexpr (std::is_same_v<T, Half>) {
    return HalfBitsToFloat(value.bits);
  } else if constexpr (std::is_same_v<T, BFloat16>) {
    return BFloat16BitsToFloat(value.bits);
  } else {
    return value;
  }
}

template <typename Dst, typename Src>
Dst CastElement(Src src) {
  const auto wide = Widen(src);
  using Wide = decltype(wide);
  if constexpr (std::is_same_v<Dst, Half>) {
    return Half{FloatToHalfBits(static_cast<float>(wide))};
  } else if constexpr (std::is_same_v<Dst, BFloat16>) {
    return BFloat16{FloatToBFloat16Bits(static_cast<float>(wide))};
  } else if constexpr (std::is_same_v<Dst, bool>) {
    return wide != Wide{0};
  } else if constexpr (std::is_integral_v<Dst> && std::is_floating_point_v<Wide>) {
    // Defined where C++ leaves it undefined: NaN gives 0, out-of-range saturates to int64
    // and then narrows as an integer cast would.
    if (std::isnan(wide)) return Dst{0};
    constexpr double kMax = 9223372036854775807.0;
    const double clamped = std::fmax(-kMax - 1.0, std::fmin(static_cast<double>(wide), kMax));
    const int64_t whole =
        clamped >= kMax ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(clamped);
    return static_cast<Dst>(whole);
  } else {
    return static_cast<Dst>(wide);
  }
}

}  // namespace paramd
