#include "paramd/tensor.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/half.h"

namespace paramd::client {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the wire format is little-endian; a big-endian host needs byte swapping here");

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
      return Store(out, FloatToHalfBits(static_cast<float>(value)));
    case DType::kBFloat16:
      return Store(out, FloatToBFloat16Bits(static_cast<float>(value)));
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
      return HalfBitsToFloat(Load<uint16_t>(in));
    case DType::kBFloat16:
      return BFloat16BitsToFloat(Load<uint16_t>(in));
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
