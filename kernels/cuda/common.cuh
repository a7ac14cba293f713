// Device-side building blocks shared by the kernel files of kernels/cuda: 16-bit loads and stores
// through float32, dtype dispatch, strided offsets and launch geometry. Internal to
// kernels/cuda; included only by .cu files. Stateless.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/index_math.h"
#include "kernels/ops.h"

namespace paramd::kernels::cuda {

// Math in float32; float16 and bfloat16 are widened on load and rounded to nearest even
// on store, as the CPU backend does, so both backends round once per output.
template <typename T>
__device__ __forceinline__ float ToFloat(T v) {
  return static_cast<float>(v);
}
template <>
__device__ __forceinline__ float ToFloat<__half>(__half v) {
  return __half2float(v);
}
template <>
__device__ __forceinline__ float ToFloat<__nv_bfloat16>(__nv_bfloat16 v) {
  return __bfloat162float(v);
}

template <typename T>
__device__ __forceinline__ T FromFloat(float v) {
  return static_cast<T>(v);
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Calls fn(T{}) with T the device storage type of a math dtype (float32, float16,
// bfloat16); cudaErrorInvalidValue for any other dtype (the backend's Supports refuses
// those before a launch).
template <typename Fn>
cudaError_t DispatchMath(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32:
      return fn(float{});
    case DType::kFloat16:
      return fn(__half{});
    case DType::kBFloat16:
      return fn(__nv_bfloat16{});
    default:
      return cudaErrorInvalidValue;
  }
}

__device__ __forceinline__ float ApplyUnaryDevice(UnaryOp op, float x) {
  switch (op) {
    case UnaryOp::kIdentity:
      return x;
    case UnaryOp::kReLU:
      return x < 0.0f ? 0.0f : x;
    case UnaryOp::kGELU:
      return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case UnaryOp::kGELUTanh: {
      const float inner = 0.79788456080286536f * (x + 0.044715f * x * x * x);
      return 0.5f * x * (1.0f + tanhf(inner));
    }
    case UnaryOp::kSiLU:
      return x / (1.0f + expf(-x));
    case UnaryOp::kSigmoid:
      return 1.0f / (1.0f + expf(-x));
    case UnaryOp::kTanh:
      return tanhf(x);
  }
  return x;
}

// Element offsets of kOperands strided operands at one C-order position of `shape`.
template <int kOperands>
struct StridedOffsets {
  int rank = 0;
  int64_t shape[kMaxRank] = {};
  int64_t strides[kOperands][kMaxRank] = {};

  __device__ __forceinline__ void At(int64_t linear, int64_t (&offsets)[kOperands]) const {
    for (int j = 0; j < kOperands; ++j) offsets[j] = 0;
    for (int d = rank - 1; d >= 0; --d) {
      const int64_t index = linear % shape[d];
      linear /= shape[d];
      for (int j = 0; j < kOperands; ++j) offsets[j] += index * strides[j][d];
    }
  }
};

// StridedOffsets for fewer than 2^31 elements: the position is split with 32-bit
// multiply-shift division (index_math.h) instead of emulated 64-bit `/` and `%`; the offsets
// themselves stay 64-bit (a view may reach far into a larger storage).
template <int kOperands>
struct StridedOffsets32 {
  int rank = 0;
  FastDivider shape[kMaxRank];
  int64_t strides[kOperands][kMaxRank] = {};

  StridedOffsets32() = default;
  explicit StridedOffsets32(const StridedOffsets<kOperands>& wide) : rank(wide.rank) {
    for (int d = 0; d < rank; ++d) {
      shape[d] = FastDivider(static_cast<uint32_t>(wide.shape[d]));
      for (int j = 0; j < kOperands; ++j) strides[j][d] = wide.strides[j][d];
    }
  }

  __device__ __forceinline__ void At(int64_t position, int64_t (&offsets)[kOperands]) const {
    uint32_t linear = static_cast<uint32_t>(position);
    for (int j = 0; j < kOperands; ++j) offsets[j] = 0;
    for (int d = rank - 1; d >= 0; --d) {
      uint32_t index;
      linear = shape[d].DivMod(linear, &index);
      for (int j = 0; j < kOperands; ++j) offsets[j] += static_cast<int64_t>(index) * strides[j][d];
    }
  }
};

inline constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n items: enough to fill any current GPU, few enough
// that a huge tensor does not launch millions of blocks.
inline unsigned BlocksFor(int64_t n, int threads = kThreads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65536 ? 65536 : blocks));
}

#define PARAMD_GRID_STRIDE(i, n)                                                       \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

}  // namespace paramd::kernels::cuda

namespace paramd::kernels::cuda {

struct SumOp {
  template <typename T>
  __device__ __forceinline__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct MaxOp {
  __device__ __forceinline__ float operator()(float a, float b) const {
    // NaN wins, as std::max over a row does not guarantee but ATen's softmax does.
    return (a != a || a > b) ? a : b;
  }
};

// Reduces `value` over the block (blockDim.x a multiple of 32, at most 1024) and returns the
// result to every thread. `identity` fills the lanes of warps the block does not have.
// `scratch` holds 32 values in shared memory; the call ends with a barrier so the scratch
// may be reused at once.
template <typename T, typename Op>
__device__ T BlockReduce(T value, Op op, T identity, T* scratch) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  for (int offset = 16; offset > 0; offset /= 2) {
    value = op(value, __shfl_down_sync(0xffffffffu, value, offset));
  }
  if (lane == 0) scratch[warp] = value;
  __syncthreads();
  if (warp == 0) {
    const int warps = blockDim.x / 32;
    value = lane < warps ? scratch[lane] : identity;
    for (int offset = 16; offset > 0; offset /= 2) {
      value = op(value, __shfl_down_sync(0xffffffffu, value, offset));
    }
    if (lane == 0) scratch[0] = value;
  }
  __syncthreads();
  value = scratch[0];
  __syncthreads();
  return value;
}

}  // namespace paramd::kernels::cuda
