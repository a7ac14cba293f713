// Strided conversion between any two dtypes, as Tensor.to converts (CastElement):
// 16-bit floats round to nearest even through float32, float to integer truncates toward
// zero with NaN giving 0 and out-of-range values saturating to int64 first, anything to
// bool is `!= 0`. Cat is this kernel writing into slices of its output.
#include <cmath>
#include <type_traits>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"

namespace paramd::kernels::cuda {
namespace {

template <typename T>
__device__ __forceinline__ auto Widen(T v) {
  if constexpr (std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>) {
    return ToFloat(v);
  } else {
    return v;
  }
}

template <typename Dst, typename Src>
__device__ __forceinline__ Dst Cast(Src src) {
  const auto wide = Widen(src);
  using Wide = decltype(wide);
  if constexpr (std::is_same_v<Dst, __half> || std::is_same_v<Dst, __nv_bfloat16>) {
    return FromFloat<Dst>(static_cast<float>(wide));
  } else if constexpr (std::is_same_v<Dst, bool>) {
    return wide != Wide{0};
  } else if constexpr (std::is_integral_v<Dst> && std::is_floating_point_v<Wide>) {
    if (isnan(wide)) return Dst{0};
    constexpr double kMax = 9223372036854775807.0;
    const double clamped = fmax(-kMax - 1.0, fmin(static_cast<double>(wide), kMax));
    const int64_t whole = clamped >= kMax ? INT64_MAX : static_cast<int64_t>(clamped);
    return static_cast<Dst>(whole);
  } else {
    return static_cast<Dst>(wide);
  }
}

template <typename Fn>
cudaError_t VisitDType(DType dtype, Fn&& fn) {
  switch (dtype) {
    case DType::kFloat32:
      return fn(float{});
    case DType::kFloat64:
      return fn(double{});
    case DType::kFloat16:
      return fn(__half{});
    case DType::kBFloat16:
      return fn(__nv_bfloat16{});
    case DType::kInt64:
      return fn(int64_t{});
    case DType::kInt32:
      return fn(int32_t{});
    case DType::kInt16:
      return fn(int16_t{});
    case DType::kInt8:
      return fn(int8_t{});
    case DType::kUInt8:
      return fn(uint8_t{});
    case DType::kBool:
      return fn(bool{});
  }
  return cudaErrorInvalidValue;
}

template <typename Src, typename Dst, typename Offsets>
__global__ void ConvertKernel(const Src* in, Dst* out, int64_t n, Offsets offsets) {
  PARAMD_GRID_STRIDE(i, n) {
    int64_t at[2];
    offsets.At(i, at);
    out[at[1]] = Cast<Dst>(in[at[0]]);
  }
}

size_t DTypeSize(DType dtype) {
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
    default:
      return 1;
  }
}

}  // namespace

cudaError_t LaunchConvert(const ConstTensorView& input, void* out, DType out_dtype,
                          const int64_t* out_strides, cudaStream_t stream) {
  const int64_t n = input.numel();
  if (n == 0) return cudaSuccess;
  bool out_contiguous = true;
  int64_t expected = 1;
  for (int d = input.rank - 1; d >= 0; --d) {
    if (input.shape[d] != 1 && out_strides[d] != expected) out_contiguous = false;
    expected *= input.shape[d];
  }
  if (input.dtype == out_dtype && out_contiguous && input.is_contiguous()) {
    return cudaMemcpyAsync(out, input.data, static_cast<size_t>(n) * DTypeSize(out_dtype),
                           cudaMemcpyDeviceToDevice, stream);
  }
  StridedOffsets<2> offsets;
  offsets.rank = input.rank;
  for (int d = 0; d < input.rank; ++d) {
    offsets.shape[d] = input.shape[d];
    offsets.strides[0][d] = input.strides[d];
    offsets.strides[1][d] = out_strides[d];
  }
  return VisitDType(input.dtype, [&](auto src_tag) {
    using Src = decltype(src_tag);
    return VisitDType(out_dtype, [&](auto dst_tag) {
      using Dst = decltype(dst_tag);
      if (FitsInt32(n)) {
        ConvertKernel<<<BlocksFor(n), kThreads, 0, stream>>>(
            static_cast<const Src*>(input.data), static_cast<Dst*>(out), n,
            StridedOffsets32<2>(offsets));
      } else {
        ConvertKernel<<<BlocksFor(n), kThreads, 0, stream>>>(static_cast<const Src*>(input.data),
                                                             static_cast<Dst*>(out), n, offsets);
      }
      return cudaGetLastError();
    });
  });
}

}  // namespace paramd::kernels::cuda
