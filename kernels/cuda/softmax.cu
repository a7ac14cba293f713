// softmax / log_softmax along one dimension: one block per row (a row is the `size`
// elements `inner` apart), max-subtracted, as the CPU backend computes it.
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"

namespace paramd::kernels::cuda {
namespace {

template <typename T>
__global__ void SoftmaxKernel(const T* in, T* out, int64_t rows, int64_t size, int64_t inner,
                              bool log) {
  __shared__ float scratch[32];
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t o = row / inner, i = row % inner;
    const T* src = in + o * size * inner + i;
    T* dst = out + o * size * inner + i;
    float max = -INFINITY;
    for (int64_t k = threadIdx.x; k < size; k += blockDim.x) {
      max = MaxOp()(ToFloat(src[k * inner]), max);
    }
    max = BlockReduce(max, MaxOp(), -INFINITY, scratch);
    float sum = 0.0f;
    for (int64_t k = threadIdx.x; k < size; k += blockDim.x) {
      sum += expf(ToFloat(src[k * inner]) - max);
    }
    sum = BlockReduce(sum, SumOp(), 0.0f, scratch);
    if (log) {
      const float shift = max + logf(sum);
      for (int64_t k = threadIdx.x; k < size; k += blockDim.x) {
        dst[k * inner] = FromFloat<T>(ToFloat(src[k * inner]) - shift);
      }
    } else {
      const float inv = 1.0f / sum;
      for (int64_t k = threadIdx.x; k < size; k += blockDim.x) {
        dst[k * inner] = FromFloat<T>(expf(ToFloat(src[k * inner]) - max) * inv);
      }
    }
  }
}

}  // namespace

cudaError_t LaunchSoftmax(const SoftmaxArgs& args, cudaStream_t stream) {
  const ConstTensorView& x = args.input;
  if (x.numel() == 0) return cudaSuccess;
  int64_t outer = 1, inner = 1;
  const int64_t size = x.rank == 0 ? 1 : x.shape[args.dim];
  for (int d = 0; d < args.dim; ++d) outer *= x.shape[d];
  for (int d = args.dim + 1; d < x.rank; ++d) inner *= x.shape[d];
  const int64_t rows = outer * inner;
  const int threads = size >= 256 ? 256 : (size >= 64 ? 64 : 32);
  const unsigned blocks = static_cast<unsigned>(rows < 65536 ? rows : 65536);
  return DispatchMath(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    SoftmaxKernel<T><<<blocks, threads, 0, stream>>>(static_cast<const T*>(x.data),
                                                     static_cast<T*>(args.output.data), rows,
                                                     size, inner, args.log);
    return cudaGetLastError();
  });
}

}  // namespace paramd::kernels::cuda
