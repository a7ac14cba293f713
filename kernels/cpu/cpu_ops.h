// Helpers shared by the CPU op families (kernels/cpu/*.cc): float32 staging of 16-bit
// operands, strided iteration, thread fan-out and the scalar element-wise functions.
// Internal to kernels/cpu. Thread-safe: no shared state.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/ops.h"
#include "base/dtype.h"
#include "base/half.h"

namespace paramd::kernels::cpu {

inline float LoadFloat(const void* data, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kFloat16:
      return HalfBitsToFloat(static_cast<const uint16_t*>(data)[i]);
    case DType::kBFloat16:
      return BFloat16BitsToFloat(static_cast<const uint16_t*>(data)[i]);
    default:
      return static_cast<const float*>(data)[i];
  }
}

inline void StoreFloat(void* data, DType dtype, int64_t i, float value) {
  switch (dtype) {
    case DType::kFloat16:
      static_cast<uint16_t*>(data)[i] = FloatToHalfBits(value);
      return;
    case DType::kBFloat16:
      static_cast<uint16_t*>(data)[i] = FloatToBFloat16Bits(value);
      return;
    default:
      static_cast<float*>(data)[i] = value;
  }
}

// `count` contiguous elements of a math dtype read as float32: the memory itself for
// float32, a converted copy otherwise. Null stays null.
class FloatIn {
 public:
  FloatIn(const void* data, DType dtype, int64_t count) {
    if (data == nullptr || dtype == DType::kFloat32) {
      ptr_ = static_cast<const float*>(data);
      return;
    }
    copy_.resize(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) copy_[i] = LoadFloat(data, dtype, i);
    ptr_ = copy_.data();
  }
  const float* get() const { return ptr_; }

 private:
  const float* ptr_ = nullptr;
  std::vector<float> copy_;
};

// `count` contiguous output elements written as float32: the memory itself for float32,
// a staging buffer otherwise that Finish() rounds into the destination.
class FloatOut {
 public:
  FloatOut(void* data, DType dtype, int64_t count)
      : data_(data), dtype_(dtype), count_(count) {
    if (data == nullptr || dtype == DType::kFloat32) {
      ptr_ = static_cast<float*>(data);
      return;
    }
    copy_.resize(static_cast<size_t>(count));
    ptr_ = copy_.data();
  }
  float* get() { return ptr_; }
  void Finish() {
    if (data_ == nullptr || dtype_ == DType::kFloat32) return;
    for (int64_t i = 0; i < count_; ++i) StoreFloat(data_, dtype_, i, copy_[i]);
  }

 private:
  void* data_;
  DType dtype_;
  int64_t count_;
  float* ptr_ = nullptr;
  std::vector<float> copy_;
};

// Runs fn(begin, end) over [0, n), where a thread pool would split the work when there is
// enough of it (`cost_per_item` in rough nanoseconds). Today it always runs inline (see
// cpu_ops.cc); callers must not depend on either.
void ParallelFor(int64_t n, int64_t cost_per_item, const std::function<void(int64_t, int64_t)>& fn);

inline float ApplyUnary(UnaryOp op, float x) {
  switch (op) {
    case UnaryOp::kIdentity:
      return x;
    // NaN stays NaN, as torch.relu keeps it.
    case UnaryOp::kReLU:
      return x < 0.0f ? 0.0f : x;
    case UnaryOp::kGELU:
      return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f));
    case UnaryOp::kGELUTanh: {
      const float inner = 0.79788456080286536f * (x + 0.044715f * x * x * x);
      return 0.5f * x * (1.0f + std::tanh(inner));
    }
    case UnaryOp::kSiLU:
      return x / (1.0f + std::exp(-x));
    case UnaryOp::kSigmoid:
      return 1.0f / (1.0f + std::exp(-x));
    case UnaryOp::kTanh:
      return std::tanh(x);
  }
  return x;
}

// Applies `op` to n contiguous floats in place.
void ApplyUnaryInPlace(UnaryOp op, float* data, int64_t n);

// Calls fn(offsets, count) for each innermost run of a C-order walk over `shape`, where
// offsets[j] is the element offset of operand j at the start of the run; each run steps
// operand j by strides[j][rank - 1]. A rank-0 walk is one run of one element.
template <int kOperands, typename Fn>
void ForEachRun(int rank, const int64_t* shape, const int64_t* const (&strides)[kOperands],
                Fn&& fn) {
  int64_t offsets[kOperands] = {};
  if (rank == 0) {
    fn(offsets, int64_t{1});
    return;
  }
  for (int d = 0; d < rank; ++d) {
    if (shape[d] == 0) return;
  }
  int64_t index[kMaxRank] = {};
  const int inner = rank - 1;
  while (true) {
    fn(offsets, shape[inner]);
    int d = inner - 1;
    for (; d >= 0; --d) {
      ++index[d];
      for (int j = 0; j < kOperands; ++j) offsets[j] += strides[j][d];
      if (index[d] < shape[d]) break;
      for (int j = 0; j < kOperands; ++j) offsets[j] -= strides[j][d] * shape[d];
      index[d] = 0;
    }
    if (d < 0) return;
  }
}

}  // namespace paramd::kernels::cpu
