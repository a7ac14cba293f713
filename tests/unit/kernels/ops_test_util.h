// Helpers for the kernel op tests: host tensors with values already rounded to their
// dtype, device buffers on any backend, and the list of backends this machine has.
#pragma once

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "kernels/ops.h"
#include "base/half.h"

namespace paramd::kernels::testing {

using Shape = std::vector<int64_t>;

inline int64_t Numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

inline Shape Strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (int d = static_cast<int>(shape.size()) - 1; d >= 0; --d) {
    strides[d] = s;
    s *= shape[d];
  }
  return strides;
}

// The value `v` becomes once stored in `dtype`.
inline double RoundTo(DType dtype, double v) {
  switch (dtype) {
    case DType::kFloat32:
      return static_cast<float>(v);
    case DType::kFloat16:
      return HalfBitsToFloat(FloatToHalfBits(static_cast<float>(v)));
    case DType::kBFloat16:
      return BFloat16BitsToFloat(FloatToBFloat16Bits(static_cast<float>(v)));
    case DType::kInt64:
    case DType::kInt32:
      return static_cast<double>(static_cast<int64_t>(v));
    // Narrow integers wrap as an integer cast does; bool is `!= 0`.
    case DType::kInt16:
      return static_cast<int16_t>(static_cast<int64_t>(v));
    case DType::kInt8:
      return static_cast<int8_t>(static_cast<int64_t>(v));
    case DType::kUInt8:
      return static_cast<uint8_t>(static_cast<int64_t>(v));
    case DType::kBool:
      return v != 0 ? 1 : 0;
    default:
      return v;
  }
}

struct HostTensor {
  DType dtype = DType::kFloat32;
  Shape shape;
  std::vector<double> values;  // C order, exactly representable in dtype

  int64_t numel() const { return Numel(shape); }

  std::vector<uint8_t> Bytes() const {
    std::vector<uint8_t> bytes(values.size() * ElementSize(dtype));
    for (size_t i = 0; i < values.size(); ++i) {
      const double v = values[i];
      switch (dtype) {
        case DType::kFloat32: {
          const float f = static_cast<float>(v);
          std::memcpy(&bytes[i * 4], &f, 4);
          break;
        }
        case DType::kFloat64:
          std::memcpy(&bytes[i * 8], &v, 8);
          break;
        case DType::kFloat16: {
          const uint16_t h = FloatToHalfBits(static_cast<float>(v));
          std::memcpy(&bytes[i * 2], &h, 2);
          break;
        }
        case DType::kBFloat16: {
          const uint16_t h = FloatToBFloat16Bits(static_cast<float>(v));
          std::memcpy(&bytes[i * 2], &h, 2);
          break;
        }
        case DType::kInt64: {
          const int64_t x = static_cast<int64_t>(v);
          std::memcpy(&bytes[i * 8], &x, 8);
          break;
        }
        case DType::kInt32: {
          const int32_t x = static_cast<int32_t>(v);
          std::memcpy(&bytes[i * 4], &x, 4);
          break;
        }
        case DType::kInt16: {
          const int16_t x = static_cast<int16_t>(v);
          std::memcpy(&bytes[i * 2], &x, 2);
          break;
        }
        case DType::kInt8:
          bytes[i] = static_cast<uint8_t>(static_cast<int8_t>(v));
          break;
        case DType::kUInt8:
          bytes[i] = static_cast<uint8_t>(v);
          break;
        case DType::kBool:
          bytes[i] = v != 0 ? 1 : 0;
          break;
      }
    }
    return bytes;
  }

  static HostTensor FromBytes(DType dtype, Shape shape, const std::vector<uint8_t>& bytes) {
    HostTensor t{dtype, std::move(shape), {}};
    t.values.resize(static_cast<size_t>(t.numel()));
    for (size_t i = 0; i < t.values.size(); ++i) {
      switch (dtype) {
        case DType::kFloat32: {
          float f;
          std::memcpy(&f, &bytes[i * 4], 4);
          t.values[i] = f;
          break;
        }
        case DType::kFloat64:
          std::memcpy(&t.values[i], &bytes[i * 8], 8);
          break;
        case DType::kFloat16:
        case DType::kBFloat16: {
          uint16_t h;
          std::memcpy(&h, &bytes[i * 2], 2);
          t.values[i] =
              dtype == DType::kFloat16 ? HalfBitsToFloat(h) : BFloat16BitsToFloat(h);
          break;
        }
        case DType::kInt64: {
          int64_t x;
          std::memcpy(&x, &bytes[i * 8], 8);
          t.values[i] = static_cast<double>(x);
          break;
        }
        case DType::kInt32: {
          int32_t x;
          std::memcpy(&x, &bytes[i * 4], 4);
          t.values[i] = x;
          break;
        }
        case DType::kInt16: {
          int16_t x;
          std::memcpy(&x, &bytes[i * 2], 2);
          t.values[i] = x;
          break;
        }
        case DType::kInt8:
          t.values[i] = static_cast<int8_t>(bytes[i]);
          break;
        case DType::kUInt8:
          t.values[i] = bytes[i];
          break;
        case DType::kBool:
          // The raw byte: a kernel that skipped an element leaves the poison's 0x5A (90).
          t.values[i] = bytes[i];
          break;
      }
    }
    return t;
  }
};

// Uniform values in [low, high), rounded to `dtype`, from a fixed seed.
inline HostTensor Random(DType dtype, Shape shape, uint32_t seed, double low = -1.0,
                         double high = 1.0) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> dist(low, high);
  HostTensor t{dtype, std::move(shape), {}};
  t.values.resize(static_cast<size_t>(t.numel()));
  for (double& v : t.values) v = RoundTo(dtype, dist(rng));
  return t;
}

inline HostTensor Values(DType dtype, Shape shape, std::vector<double> values) {
  for (double& v : values) v = RoundTo(dtype, v);
  return HostTensor{dtype, std::move(shape), std::move(values)};
}

// Memory on one backend, freed on destruction.
class DeviceTensor {
 public:
  DeviceTensor(Backend* backend, DType dtype, Shape shape)
      : backend_(backend), dtype_(dtype), shape_(std::move(shape)) {
    nbytes_ = static_cast<size_t>(Numel(shape_)) * ElementSize(dtype_);
    auto data = backend_->Allocate(nbytes_);
    EXPECT_TRUE(data.ok()) << data.status();
    data_ = data.ok() ? *data : nullptr;
  }
  static std::unique_ptr<DeviceTensor> Upload(Backend* backend, const HostTensor& host) {
    auto t = std::make_unique<DeviceTensor>(backend, host.dtype, host.shape);
    const std::vector<uint8_t> bytes = host.Bytes();
    if (!bytes.empty()) {
      EXPECT_TRUE(backend->CopyFromHost(t->data_, bytes.data(), bytes.size()).ok());
    }
    return t;
  }
  // Fills the memory with NaN (a float dtype) or 0x5A bytes (an integer one), so that a
  // kernel that skips elements fails instead of passing on what the pool's recycled memory
  // happened to hold.
  void Poison() {
    if (nbytes_ == 0) return;
    std::vector<uint8_t> bytes(nbytes_, 0x5A);
    const size_t n = nbytes_ / ElementSize(dtype_);
    for (size_t i = 0; i < n; ++i) {
      if (dtype_ == DType::kFloat32) {
        const float nan = std::numeric_limits<float>::quiet_NaN();
        std::memcpy(&bytes[i * 4], &nan, 4);
      } else if (dtype_ == DType::kFloat64) {
        const double nan = std::numeric_limits<double>::quiet_NaN();
        std::memcpy(&bytes[i * 8], &nan, 8);
      } else if (dtype_ == DType::kFloat16 || dtype_ == DType::kBFloat16) {
        const uint16_t nan = dtype_ == DType::kFloat16 ? 0x7E00 : 0x7FC0;
        std::memcpy(&bytes[i * 2], &nan, 2);
      }
    }
    EXPECT_TRUE(backend_->CopyFromHost(data_, bytes.data(), bytes.size()).ok());
  }
  ~DeviceTensor() {
    if (data_ != nullptr) backend_->Free(data_, nbytes_);
  }
  DeviceTensor(const DeviceTensor&) = delete;
  DeviceTensor& operator=(const DeviceTensor&) = delete;

  void* data() const { return data_; }
  const Shape& shape() const { return shape_; }

  TensorView view() const { return ViewOf(shape_, Strides(shape_)); }
  // A view with other shape and strides over the same memory (broadcasts, transposes).
  TensorView ViewOf(const Shape& shape, const Shape& strides) const {
    TensorView v;
    v.data = data_;
    v.dtype = dtype_;
    v.rank = static_cast<int>(shape.size());
    for (int d = 0; d < v.rank; ++d) {
      v.shape[d] = shape[d];
      v.strides[d] = strides[d];
    }
    return v;
  }

  HostTensor Download() const {
    std::vector<uint8_t> bytes(nbytes_);
    EXPECT_TRUE(backend_->Synchronize().ok());
    if (nbytes_ > 0) {
      EXPECT_TRUE(backend_->CopyToHost(bytes.data(), data_, nbytes_).ok());
    }
    return HostTensor::FromBytes(dtype_, shape_, bytes);
  }

 private:
  Backend* backend_;
  DType dtype_;
  Shape shape_;
  void* data_ = nullptr;
  size_t nbytes_ = 0;
};

// Every backend this machine has: "cpu" always, "cuda:0" where a GPU is usable.
struct NamedBackend {
  std::string name;
  Device device;
};

inline std::vector<NamedBackend> AllBackendNames() {
  return {{"cpu", Device::Cpu()}, {"cuda0", Device::Cuda(0)}};
}

// Element-wise comparison with |a - b| <= atol + rtol * |b|; NaNs must match.
inline ::testing::AssertionResult AllClose(const std::vector<double>& actual,
                                           const std::vector<double>& expected, double atol,
                                           double rtol) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << "sizes differ: " << actual.size() << " vs " << expected.size();
  }
  for (size_t i = 0; i < actual.size(); ++i) {
    const double a = actual[i], e = expected[i];
    if (std::isnan(e) || std::isnan(a)) {
      if (std::isnan(e) != std::isnan(a)) {
        return ::testing::AssertionFailure() << "at " << i << ": " << a << " vs " << e;
      }
      continue;
    }
    if (std::isinf(e) && a == e) continue;
    if (!(std::abs(a - e) <= atol + rtol * std::abs(e))) {
      return ::testing::AssertionFailure() << "at " << i << ": got " << a << ", expected " << e
                                           << " (atol " << atol << ", rtol " << rtol << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

// The distance from |v| (a value of `dtype`) to the next larger value of `dtype`.
inline double UnitInTheLastPlace(DType dtype, double v) {
  const float a = std::fabs(static_cast<float>(v));
  switch (dtype) {
    case DType::kFloat16:
      return HalfBitsToFloat(static_cast<uint16_t>(FloatToHalfBits(a) + 1)) - a;
    case DType::kBFloat16:
      return BFloat16BitsToFloat(static_cast<uint16_t>(FloatToBFloat16Bits(a) + 1)) - a;
    default:
      return std::nextafter(a, std::numeric_limits<float>::infinity()) - a;
  }
}

// Whether `actual` and `expected` (values of `dtype`) are the same float32 results rounded
// once: every element within one unit in the last place of the expected one (plus `atol`,
// for float32 differences in results near zero), and at most `max_differing` of them
// different at all. Two backends that compute in float32 and round once differ only where
// their float32 values straddle a rounding boundary, which is rare; a second rounding (a
// 16-bit intermediate, then a bias or an activation) makes a large share differ.
inline ::testing::AssertionResult SameAtOneRounding(DType dtype,
                                                    const std::vector<double>& actual,
                                                    const std::vector<double>& expected,
                                                    double atol = 4e-6,
                                                    double max_differing = 0.01) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << "sizes differ: " << actual.size() << " vs " << expected.size();
  }
  size_t differing = 0;
  for (size_t i = 0; i < actual.size(); ++i) {
    const double a = actual[i], e = expected[i];
    if (std::isnan(a) || std::isnan(e)) {
      if (std::isnan(a) != std::isnan(e)) {
        return ::testing::AssertionFailure() << "at " << i << ": " << a << " vs " << e;
      }
      continue;
    }
    if (a == e) continue;
    ++differing;
    if (!(std::fabs(a - e) <= UnitInTheLastPlace(dtype, e) + atol)) {
      return ::testing::AssertionFailure() << "at " << i << ": got " << a << ", expected " << e
                                           << " (more than one " << DTypeName(dtype)
                                           << " unit in the last place apart)";
    }
  }
  if (static_cast<double>(differing) > max_differing * static_cast<double>(actual.size())) {
    return ::testing::AssertionFailure()
           << differing << " of " << actual.size() << " elements differ by a unit in the last "
           << "place, more than one rounding of float32 results explains (a second rounding?)";
  }
  return ::testing::AssertionSuccess();
}

}  // namespace paramd::kernels::testing
