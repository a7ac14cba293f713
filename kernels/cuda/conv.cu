// The two kernels around conv2d's GEMMs: im2col, and the per-channel bias written into the
// output before the GEMMs accumulate into it (Note [Conv bias] in cuda_backend.cc).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"

namespace paramd::kernels::cuda {
namespace {

template <typename T>
__global__ void Im2ColKernel(const T* input, ConvGeometry g, T* columns, int64_t total) {
  const int64_t plane = g.out_h * g.out_w;
  const int64_t patch = g.channels * g.kernel_h * g.kernel_w;
  PARAMD_GRID_STRIDE(index, total) {
    const int64_t ow = index % g.out_w;
    const int64_t oh = (index / g.out_w) % g.out_h;
    const int64_t row = (index / plane) % patch;  // (c, i, j) of the patch
    const int64_t image = index / (plane * patch);
    const int64_t j = row % g.kernel_w, i = (row / g.kernel_w) % g.kernel_h;
    const int64_t c = row / (g.kernel_w * g.kernel_h);
    const int64_t ih = oh * g.stride_h - g.pad_h + i * g.dilation_h;
    const int64_t iw = ow * g.stride_w - g.pad_w + j * g.dilation_w;
    T value = FromFloat<T>(0.0f);
    if (ih >= 0 && ih < g.height && iw >= 0 && iw < g.width) {
      value = input[((image * g.channels + c) * g.height + ih) * g.width + iw];
    }
    columns[index] = value;
  }
}

template <typename T>
__global__ void ChannelFillKernel(T* data, int64_t channels, int64_t plane, const T* bias,
                                  int64_t total) {
  PARAMD_GRID_STRIDE(index, total) { data[index] = bias[(index / plane) % channels]; }
}

}  // namespace

cudaError_t LaunchIm2Col(DType dtype, const void* input, int64_t images,
                         const ConvGeometry& g, void* columns, cudaStream_t stream) {
  const int64_t total = images * g.channels * g.kernel_h * g.kernel_w * g.out_h * g.out_w;
  if (total == 0) return cudaSuccess;
  return DispatchMath(dtype, [&](auto tag) {
    using T = decltype(tag);
    Im2ColKernel<T><<<BlocksFor(total), kThreads, 0, stream>>>(static_cast<const T*>(input), g,
                                                               static_cast<T*>(columns), total);
    return cudaGetLastError();
  });
}

cudaError_t LaunchChannelFill(DType dtype, void* data, int64_t images, int64_t channels,
                              int64_t plane, const void* bias, cudaStream_t stream) {
  const int64_t total = images * channels * plane;
  if (total == 0) return cudaSuccess;
  return DispatchMath(dtype, [&](auto tag) {
    using T = decltype(tag);
    ChannelFillKernel<T><<<BlocksFor(total), kThreads, 0, stream>>>(
        static_cast<T*>(data), channels, plane, static_cast<const T*>(bias), total);
    return cudaGetLastError();
  });
}

}  // namespace paramd::kernels::cuda
