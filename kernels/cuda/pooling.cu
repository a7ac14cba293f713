// max_pool2d, avg_pool2d and adaptive_avg_pool2d: one thread per output element over the
// last two dimensions, every leading dimension flattened into planes. Window and divisor
// rules are the CPU backend's (ATen's).
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"

namespace paramd::kernels::cuda {
namespace {

struct Planes {
  int64_t count, height, width, out_h, out_w;
};

Planes PlanesOf(const ConstTensorView& x, const TensorView& y) {
  Planes p{1, x.shape[x.rank - 2], x.shape[x.rank - 1], y.shape[y.rank - 2], y.shape[y.rank - 1]};
  for (int d = 0; d + 2 < x.rank; ++d) p.count *= x.shape[d];
  return p;
}

struct Window {
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
};

template <typename T>
__global__ void MaxPoolKernel(const T* in, T* out, Planes p, Window w, int64_t total) {
  PARAMD_GRID_STRIDE(index, total) {
    const int64_t ow = index % p.out_w, oh = (index / p.out_w) % p.out_h;
    const int64_t plane = index / (p.out_w * p.out_h);
    const T* src = in + plane * p.height * p.width;
    float best = -INFINITY;
    for (int64_t i = 0; i < w.kh; ++i) {
      const int64_t ih = oh * w.sh - w.ph + i * w.dh;
      if (ih < 0 || ih >= p.height) continue;
      for (int64_t j = 0; j < w.kw; ++j) {
        const int64_t iw = ow * w.sw - w.pw + j * w.dw;
        if (iw < 0 || iw >= p.width) continue;
        const float v = ToFloat(src[ih * p.width + iw]);
        // As ATen: a NaN wins and stays.
        best = (v > best || v != v) ? v : best;
      }
    }
    out[index] = FromFloat<T>(best);
  }
}

template <typename T>
__global__ void AvgPoolKernel(const T* in, T* out, Planes p, Window w, bool count_include_pad,
                              int64_t divisor_override, int64_t total) {
  PARAMD_GRID_STRIDE(index, total) {
    const int64_t ow = index % p.out_w, oh = (index / p.out_w) % p.out_h;
    const int64_t plane = index / (p.out_w * p.out_h);
    const T* src = in + plane * p.height * p.width;
    // The window clipped to the padded input, then to the input (ATen's divisors).
    const int64_t h_start = oh * w.sh - w.ph, w_start = ow * w.sw - w.pw;
    const int64_t h_stop = min(h_start + w.kh, p.height + w.ph);
    const int64_t w_stop = min(w_start + w.kw, p.width + w.pw);
    const int64_t padded_size = (h_stop - h_start) * (w_stop - w_start);
    const int64_t h0 = max(h_start, int64_t{0}), h1 = min(h_stop, p.height);
    const int64_t w0 = max(w_start, int64_t{0}), w1 = min(w_stop, p.width);
    float sum = 0.0f;
    for (int64_t ih = h0; ih < h1; ++ih) {
      for (int64_t iw = w0; iw < w1; ++iw) sum += ToFloat(src[ih * p.width + iw]);
    }
    float result = 0.0f;
    if (h1 > h0 && w1 > w0) {
      int64_t divisor = count_include_pad ? padded_size : (h1 - h0) * (w1 - w0);
      if (divisor_override != 0) divisor = divisor_override;
      result = sum / static_cast<float>(divisor);
    }
    out[index] = FromFloat<T>(result);
  }
}

template <typename T>
__global__ void AdaptiveAvgPoolKernel(const T* in, T* out, Planes p, int64_t total) {
  PARAMD_GRID_STRIDE(index, total) {
    const int64_t ow = index % p.out_w, oh = (index / p.out_w) % p.out_h;
    const int64_t plane = index / (p.out_w * p.out_h);
    const T* src = in + plane * p.height * p.width;
    // ATen's start_index / end_index.
    const int64_t h0 = (oh * p.height) / p.out_h;
    const int64_t h1 = ((oh + 1) * p.height + p.out_h - 1) / p.out_h;
    const int64_t w0 = (ow * p.width) / p.out_w;
    const int64_t w1 = ((ow + 1) * p.width + p.out_w - 1) / p.out_w;
    float sum = 0.0f;
    for (int64_t ih = h0; ih < h1; ++ih) {
      for (int64_t iw = w0; iw < w1; ++iw) sum += ToFloat(src[ih * p.width + iw]);
    }
    out[index] = FromFloat<T>(sum / static_cast<float>((h1 - h0) * (w1 - w0)));
  }
}

}  // namespace

cudaError_t LaunchMaxPool2d(const MaxPool2dArgs& args, cudaStream_t stream) {
  const Planes p = PlanesOf(args.input, args.output);
  const Window w{args.kernel[0], args.kernel[1], args.stride[0],   args.stride[1],
                 args.padding[0], args.padding[1], args.dilation[0], args.dilation[1]};
  const int64_t total = args.output.numel();
  if (total == 0) return cudaSuccess;
  return DispatchMath(args.input.dtype, [&](auto tag) {
    using T = decltype(tag);
    MaxPoolKernel<T><<<BlocksFor(total), kThreads, 0, stream>>>(
        static_cast<const T*>(args.input.data), static_cast<T*>(args.output.data), p, w, total);
    return cudaGetLastError();
  });
}

cudaError_t LaunchAvgPool2d(const AvgPool2dArgs& args, cudaStream_t stream) {
  const Planes p = PlanesOf(args.input, args.output);
  const Window w{args.kernel[0], args.kernel[1], args.stride[0], args.stride[1],
                 args.padding[0], args.padding[1], 1, 1};
  const int64_t total = args.output.numel();
  if (total == 0) return cudaSuccess;
  return DispatchMath(args.input.dtype, [&](auto tag) {
    using T = decltype(tag);
    AvgPoolKernel<T><<<BlocksFor(total), kThreads, 0, stream>>>(
        static_cast<const T*>(args.input.data), static_cast<T*>(args.output.data), p, w,
        args.count_include_pad, args.divisor_override, total);
    return cudaGetLastError();
  });
}

cudaError_t LaunchAdaptiveAvgPool2d(const AdaptiveAvgPool2dArgs& args, cudaStream_t stream) {
  const Planes p = PlanesOf(args.input, args.output);
  const int64_t total = args.output.numel();
  if (total == 0) return cudaSuccess;
  return DispatchMath(args.input.dtype, [&](auto tag) {
    using T = decltype(tag);
    AdaptiveAvgPoolKernel<T><<<BlocksFor(total), kThreads, 0, stream>>>(
        static_cast<const T*>(args.input.data), static_cast<T*>(args.output.data), p, total);
    return cudaGetLastError();
  });
}

}  // namespace paramd::kernels::cuda
