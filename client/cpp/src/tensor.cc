#include "paramd/tensor.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "server/core/half.h"

namespace paramd::client {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the wire format is little-endian; a big-endian host needs byte swapping here");

constexpr DType kAllDTypes[] = {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16,
                                DType::kInt64,   DType::kInt32,   DType::kInt16,   DType::kInt8,
                                DType::kUInt8,   DType::kBool};

// A value of type T from a double, as a PyTorch cast does; defined where C++ leaves it
// undefined (NaN gives 0, out-of-range saturates to int64 and then narrows as an integer
// cast would), like the server's own casts.
template <typename T>
T FromDouble(double value) {
  if constexpr (std::is_same_v<T, bool>) {
    return value != 0.0;
  } else if constexpr (std::is_floating_point_v<T>) {
    return static_cast<T>(value);
  } else {
    if (std::isnan(value)) return T{0};
    constexpr double kMax = 9223372036854775807.0;
    const double clamped = std::fmax(-kMax - 1.0, std::fmin(value, kMax));
    const int64_t whole =
        clamped >= kMax ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(clamped);
    return static_cast<T>(whole);
  }
}

template <typename T>
void Store(char* out, T value) {
  std::memcpy(out, &value, sizeof(T));
}

template <typename T>
T Load(const char* in) {
  T value;
  std::memcpy(&value, in, sizeof(T));
  return value;
}

void StoreDouble(DType dtype, double value, char* out) {
  switch (dtype) {
    case DType::kFloat32:
      return Store(out, FromDouble<float>(value));
    case DType::kFloat64:
      return Store(out, value);
    case DType::kFloat16:
      return Store(out, core::FloatToHalfBits(static_cast<float>(value)));
    case DType::kBFloat16:
      return Store(out, core::FloatToBFloat16Bits(static_cast<float>(value)));
    case DType::kInt64:
      return Store(out, FromDouble<int64_t>(value));
    case DType::kInt32:
      return Store(out, FromDouble<int32_t>(value));
    case DType::kInt16:
      return Store(out, FromDouble<int16_t>(value));
    case DType::kInt8:
      return Store(out, FromDouble<int8_t>(value));
    case DType::kUInt8:
      return Store(out, FromDouble<uint8_t>(value));
    case DType::kBool:
      return Store(out, static_cast<uint8_t>(FromDouble<bool>(value)));
  }
}

double LoadDouble(DType dtype, const char* in) {
  switch (dtype) {
    case DType::kFloat32:
      return Load<float>(in);
    case DType::kFloat64:
      return Load<double>(in);
    case DType::kFloat16:
      return core::HalfBitsToFloat(Load<uint16_t>(in));
    case DType::kBFloat16:
      return core::BFloat16BitsToFloat(Load<uint16_t>(in));
    case DType::kInt64:
      return static_cast<double>(Load<int64_t>(in));
    case DType::kInt32:
      return Load<int32_t>(in);
    case DType::kInt16:
      return Load<int16_t>(in);
    case DType::kInt8:
      return Load<int8_t>(in);
    case DType::kUInt8:
      return Load<uint8_t>(in);
    case DType::kBool:
      return Load<uint8_t>(in) != 0 ? 1.0 : 0.0;
  }
  return 0.0;
}

}  // namespace

size_t ElementSize(DType dtype) {
  switch (dtype) {
    case DType::kFloat64:
    case DType::kInt64:
      return 8;
    case DType::kFloat32:
    case DType::kInt32:
      return 4;
    case DType::kFloat16:
    case DType::kBFloat16:
    case DType::kInt16:
      return 2;
    case DType::kInt8:
    case DType::kUInt8:
    case DType::kBool:
      return 1;
  }
  return 1;
}

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat64:
      return "float64";
    case DType::kFloat16:
      return "float16";
    case DType::kBFloat16:
      return "bfloat16";
    case DType::kInt64:
      return "int64";
    case DType::kInt32:
      return "int32";
    case DType::kInt16:
      return "int16";
    case DType::kInt8:
      return "int8";
    case DType::kUInt8:
      return "uint8";
    case DType::kBool:
      return "bool";
  }
  return "?";
}

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  absl::string_view bare = name;
  absl::ConsumePrefix(&bare, "torch.");
  for (DType dtype : kAllDTypes) {
    if (bare == DTypeName(dtype)) return dtype;
  }
  struct Alias {
    absl::string_view name;
    DType dtype;
  };
  static constexpr Alias kAliases[] = {{"float", DType::kFloat32}, {"double", DType::kFloat64},
                                       {"half", DType::kFloat16},  {"long", DType::kInt64},
                                       {"int", DType::kInt32},     {"short", DType::kInt16}};
  for (const Alias& alias : kAliases) {
    if (bare == alias.name) return alias.dtype;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown dtype '", name,
      "'; expected one of float32, float64, float16, bfloat16, int64, int32, int16, int8, "
      "uint8, bool (or PyTorch's aliases float, double, half, long, int, short)"));
}

int64_t HostTensor::numel() const {
  int64_t count = 1;
  for (int64_t dim : shape) count *= dim;
  return count;
}

absl::StatusOr<HostTensor> HostTensor::FromDoubles(DType dtype, std::vector<int64_t> shape,
                                                   const std::vector<double>& values) {
  uint64_t count = 1;
  for (int64_t dim : shape) {
    if (dim < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("negative dimension ", dim, " in shape [", absl::StrJoin(shape, ", "), "]"));
    }
    count *= static_cast<uint64_t>(dim);
  }
  if (count != values.size()) {
    return absl::InvalidArgumentError(absl::StrCat("shape [", absl::StrJoin(shape, ", "), "] has ",
                                                   count, " elements but ", values.size(),
                                                   " values were given"));
  }
  HostTensor tensor;
  tensor.dtype = dtype;
  tensor.shape = std::move(shape);
  const size_t size = ElementSize(dtype);
  tensor.data.resize(values.size() * size);
  char* out = tensor.data.data();
  for (double value : values) {
    StoreDouble(dtype, value, out);
    out += size;
  }
  return tensor;
}

std::vector<double> HostTensor::ToDoubles() const {
  const size_t size = ElementSize(dtype);
  const size_t count =
      std::min(static_cast<size_t>(std::max<int64_t>(numel(), 0)), data.size() / size);
  std::vector<double> values;
  values.reserve(count);
  for (size_t i = 0; i < count; ++i) values.push_back(LoadDouble(dtype, data.data() + i * size));
  return values;
}

}  // namespace paramd::client
