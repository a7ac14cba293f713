// Element-wise kernels: unary activations, broadcasting binary arithmetic, dropout with the
// counter-based mask of Note [Dropout mask], and the GEMM epilogue cuBLASLt cannot fuse.
// Contiguous unary and binary kernels move 16 bytes per thread (8 float16 / bfloat16 or 4
// float32 values) when every operand is 16-byte aligned; broadcasts index in 32 bits below
// 2^31 elements (index_math.h).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"

namespace paramd::kernels::cuda {
namespace {

template <typename T>
__global__ void UnaryKernel(UnaryOp op, const T* in, T* out, int64_t n) {
  PARAMD_GRID_STRIDE(i, n) { out[i] = FromFloat<T>(ApplyUnaryDevice(op, ToFloat(in[i]))); }
}

// kWidth values of T in one 16-byte load or store.
template <typename T>
struct alignas(16) Pack {
  static constexpr int kWidth = 16 / sizeof(T);
  T v[kWidth];
};

inline bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <typename T>
__global__ void UnaryPackedKernel(UnaryOp op, const T* in, T* out, int64_t n) {
  constexpr int kWidth = Pack<T>::kWidth;
  const int64_t packs = n / kWidth;
  PARAMD_GRID_STRIDE(p, packs) {
    const Pack<T> x = reinterpret_cast<const Pack<T>*>(in)[p];
    Pack<T> y;
#pragma unroll
    for (int k = 0; k < kWidth; ++k) y.v[k] = FromFloat<T>(ApplyUnaryDevice(op, ToFloat(x.v[k])));
    reinterpret_cast<Pack<T>*>(out)[p] = y;
  }
  PARAMD_GRID_STRIDE(t, n - packs * kWidth) {
    const int64_t i = packs * kWidth + t;
    out[i] = FromFloat<T>(ApplyUnaryDevice(op, ToFloat(in[i])));
  }
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
__global__ void BinaryPackedKernel(BinaryOp op, const T* a, const T* b, T* out, int64_t n) {
  constexpr int kWidth = Pack<T>::kWidth;
  const int64_t packs = n / kWidth;
  PARAMD_GRID_STRIDE(p, packs) {
    const Pack<T> x = reinterpret_cast<const Pack<T>*>(a)[p];
    const Pack<T> y = reinterpret_cast<const Pack<T>*>(b)[p];
    Pack<T> z;
#pragma unroll
    for (int k = 0; k < kWidth; ++k) {
      z.v[k] = FromFloat<T>(ApplyBinary(op, ToFloat(x.v[k]), ToFloat(y.v[k])));
    }
    reinterpret_cast<Pack<T>*>(out)[p] = z;
  }
  PARAMD_GRID_STRIDE(t, n - packs * kWidth) {
    const int64_t i = packs * kWidth + t;
    out[i] = FromFloat<T>(ApplyBinary(op, ToFloat(a[i]), ToFloat(b[i])));
  }
}

template <typename T, typename Offsets>
__global__ void BinaryStridedKernel(BinaryOp op, const T* a, const T* b, T* out, int64_t n,
                                    Offsets offsets) {
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

// `i` runs over the batch's m×n products in C order, which is also the staged layout.
template <typename T>
__global__ void BiasActivationKernel(T* c, int64_t stride_c, int64_t m, int64_t n, int64_t ldc,
                                     const T* bias, UnaryOp act, const float* staged,
                                     bool accumulate, int64_t total) {
  PARAMD_GRID_STRIDE(i, total) {
    const int64_t j = i % n;
    const int64_t r = (i / n) % m;
    const int64_t batch = i / (n * m);
    T* at = c + batch * stride_c + r * ldc + j;
    float v = staged != nullptr ? staged[i] : (accumulate ? ToFloat(*at) : 0.0f);
    if (bias != nullptr) v += ToFloat(bias[j]);
    *at = FromFloat<T>(ApplyUnaryDevice(act, v));
  }
}

template <typename Word>
__global__ void FillKernel(Word* out, Word value, int64_t n) {
  PARAMD_GRID_STRIDE(i, n) { out[i] = value; }
}

}  // namespace

cudaError_t LaunchFill(void* out, int64_t n, size_t element_size, uint64_t bits,
                       cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  switch (element_size) {
    case 1:
      FillKernel<<<BlocksFor(n), kThreads, 0, stream>>>(static_cast<uint8_t*>(out),
                                                        static_cast<uint8_t>(bits), n);
      break;
    case 2:
      FillKernel<<<BlocksFor(n), kThreads, 0, stream>>>(static_cast<uint16_t*>(out),
                                                        static_cast<uint16_t>(bits), n);
      break;
    case 4:
      FillKernel<<<BlocksFor(n), kThreads, 0, stream>>>(static_cast<uint32_t*>(out),
                                                        static_cast<uint32_t>(bits), n);
      break;
    case 8:
      FillKernel<<<BlocksFor(n), kThreads, 0, stream>>>(static_cast<uint64_t*>(out), bits, n);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t LaunchUnary(const UnaryArgs& args, cudaStream_t stream) {
  const int64_t n = args.input.numel();
  if (n == 0) return cudaSuccess;
  return DispatchMath(args.input.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* in = static_cast<const T*>(args.input.data);
    T* out = static_cast<T*>(args.output.data);
    if (Aligned16(in) && Aligned16(out)) {
      UnaryPackedKernel<T><<<BlocksFor(n / Pack<T>::kWidth + 1), kThreads, 0, stream>>>(
          args.op, in, out, n);
    } else {
      UnaryKernel<T><<<BlocksFor(n), kThreads, 0, stream>>>(args.op, in, out, n);
    }
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
      if (Aligned16(a) && Aligned16(b) && Aligned16(out)) {
        BinaryPackedKernel<T><<<BlocksFor(n / Pack<T>::kWidth + 1), kThreads, 0, stream>>>(
            args.op, a, b, out, n);
      } else {
        BinaryContiguousKernel<T><<<BlocksFor(n), kThreads, 0, stream>>>(args.op, a, b, out, n);
      }
    } else {
      StridedOffsets<2> offsets;
      offsets.rank = args.output.rank;
      for (int d = 0; d < offsets.rank; ++d) {
        offsets.shape[d] = args.output.shape[d];
        offsets.strides[0][d] = args.a.strides[d];
        offsets.strides[1][d] = args.b.strides[d];
      }
      if (FitsInt32(n)) {
        BinaryStridedKernel<<<BlocksFor(n), kThreads, 0, stream>>>(args.op, a, b, out, n,
                                                                   StridedOffsets32<2>(offsets));
      } else {
        BinaryStridedKernel<<<BlocksFor(n), kThreads, 0, stream>>>(args.op, a, b, out, n, offsets);
      }
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
                                 UnaryOp act, const float* staged, bool accumulate,
                                 cudaStream_t stream) {
  const int64_t total = batch * m * n;
  if (total == 0) return cudaSuccess;
  return DispatchMath(dtype, [&](auto tag) {
    using T = decltype(tag);
    BiasActivationKernel<T><<<BlocksFor(total), kThreads, 0, stream>>>(
        static_cast<T*>(c), stride_c, m, n, ldc, static_cast<const T*>(bias), act, staged,
        accumulate, total);
    return cudaGetLastError();
  });
}

}  // namespace paramd::kernels::cuda
