// Element-wise kernels: unary activations, broadcasting binary arithmetic, dropout with the
// counter-based mask of Note [Dropout mask], and the GEMM epilogue cuBLASLt cannot fuse.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"

namespace paramd::kernels::cuda {
namespace {

template <typename T>
__global__ void UnaryKernel(UnaryOp op, const T* in, T* out, int64_t n) {
  PARAMD_GRID_STRIDE(i, n) { out[i] = FromFloat<T>(ApplyUnaryDevice(op, ToFloat(in[i]))); }
}

__device__ __forceinline__ float ApplyBinary(BinaryOp op, float a, float b) {
  switch (op) {
    case BinaryOp::kAdd:
      return a + b;
    case BinaryOp::kSub:
      return a - b;
    case BinaryOp::kMul:
      return a * b;
    case BinaryOp::kDiv:
      return a / b;
  }
  return a;
}

// Both operands contiguous: no index arithmetic.
template <typename T>
__global__ void BinaryContiguousKernel(BinaryOp op, const T* a, const T* b, T* out, int64_t n) {
  PARAMD_GRID_STRIDE(i, n) { out[i] = FromFloat<T>(ApplyBinary(op, ToFloat(a[i]), ToFloat(b[i]))); }
}

template <typename T>
__global__ void BinaryStridedKernel(BinaryOp op, const T* a, const T* b, T* out, int64_t n,
                                    StridedOffsets<2> offsets) {
  PARAMD_GRID_STRIDE(i, n) {
    int64_t at[2];
    offsets.At(i, at);
    out[i] = FromFloat<T>(ApplyBinary(op, ToFloat(a[at[0]]), ToFloat(b[at[1]])));
  }
}

template <typename T>
__global__ void DropoutKernel(const T* in, T* out, int64_t n, double p, float scale,
                              uint64_t seed) {
  PARAMD_GRID_STRIDE(i, n) {
    const bool keep = p < 1.0 && DropoutUniform(seed, static_cast<uint64_t>(i)) >= p;
    out[i] = FromFloat<T>(keep ? ToFloat(in[i]) * scale : 0.0f);
  }
}

template <typename T>
__global__ void BiasActivationKernel(T* c, int64_t stride_c, int64_t m, int64_t n, int64_t ldc,
                                     const T* bias, UnaryOp act, bool accumulate, int64_t total) {
  PARAMD_GRID_STRIDE(i, total) {
    const int64_t j = i % n;
    const int64_t r = (i / n) % m;
    const int64_t batch = i / (n * m);
    T* at = c + batch * stride_c + r * ldc + j;
    float v = accumulate ? ToFloat(*at) : 0.0f;
    if (bias != nullptr) v += ToFloat(bias[j]);
    *at = FromFloat<T>(ApplyUnaryDevice(act, v));
  }
}

}  // namespace

cudaError_t LaunchUnary(const UnaryArgs& args, cudaStream_t stream) {
  const int64_t n = args.input.numel();
  if (n == 0) return cudaSuccess;
  return DispatchMath(args.input.dtype, [&](auto tag) {
    using T = decltype(tag);
    UnaryKernel<T><<<BlocksFor(n), kThreads, 0, stream>>>(
        args.op, static_cast<const T*>(args.input.data), static_cast<T*>(args.output.data), n);
    return cudaGetLastError();
  });
}

cudaError_t LaunchBinary(const BinaryArgs& args, cudaStream_t stream) {
  const int64_t n = args.output.numel();
  if (n == 0) return cudaSuccess;
  return DispatchMath(args.output.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* a = static_cast<const T*>(args.a.data);
    const T* b = static_cast<const T*>(args.b.data);
    T* out = static_cast<T*>(args.output.data);
    if (args.a.is_contiguous() && args.b.is_contiguous()) {
      BinaryContiguousKernel<T><<<BlocksFor(n), kThreads, 0, stream>>>(args.op, a, b, out, n);
    } else {
      StridedOffsets<2> offsets;
      offsets.rank = args.output.rank;
      for (int d = 0; d < offsets.rank; ++d) {
        offsets.shape[d] = args.output.shape[d];
        offsets.strides[0][d] = args.a.strides[d];
        offsets.strides[1][d] = args.b.strides[d];
      }
      BinaryStridedKernel<T><<<BlocksFor(n), kThreads, 0, stream>>>(args.op, a, b, out, n,
                                                                     offsets);
    }
    return cudaGetLastError();
  });
}

cudaError_t LaunchDropout(const DropoutArgs& args, float scale, cudaStream_t stream) {
  const int64_t n = args.input.numel();
  if (n == 0) return cudaSuccess;
  return DispatchMath(args.input.dtype, [&](auto tag) {
    using T = decltype(tag);
    DropoutKernel<T><<<BlocksFor(n), kThreads, 0, stream>>>(
        static_cast<const T*>(args.input.data), static_cast<T*>(args.output.data), n, args.p,
        scale, args.seed);
    return cudaGetLastError();
  });
}

cudaError_t LaunchBiasActivation(DType dtype, void* c, int64_t batch, int64_t stride_c,
                                 int64_t m, int64_t n, int64_t ldc, const void* bias,
                                 UnaryOp act, bool accumulate, cudaStream_t stream) {
  const int64_t total = batch * m * n;
  if (total == 0) return cudaSuccess;
  return DispatchMath(dtype, [&](auto tag) {
    using T = decltype(tag);
    BiasActivationKernel<T><<<BlocksFor(total), kThreads, 0, stream>>>(
        static_cast<T*>(c), stride_c, m, n, ldc, static_cast<const T*>(bias), act, accumulate,
        total);
    return cudaGetLastError();
  });
}

}  // namespace paramd::kernels::cuda
