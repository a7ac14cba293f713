// softmax / log_softmax along one dimension, max-subtracted, as the CPU backend computes it
// (x - max, exp, a float32 sum; log variant x - max - log(sum)).
//
// Note [Softmax over columns]
// Along the last dimension (inner == 1) a row is contiguous: one block per row, its threads
// striding along it. Along any other dimension a row's elements are `inner` apart, and a
// block per row would have neighbouring threads read addresses `inner` elements apart. There
// each thread owns a column (o, i) instead, with the 32 threads of a warp on 32 neighbouring
// columns (flattened o * inner + i), so each step k reads neighbouring addresses; it runs
// the CPU's two passes (max, then the sum of exponentials) down its column, in the CPU's
// order. Few, long columns (softmax over dim 0 of a tall, narrow tensor) get up to 32
// threads per column (threadIdx.y) whose partial results meet in shared memory; many
// columns get 8 tiles of 32 per block (threadIdx.z) instead (softmax_plan.h). Tiles
// grid-stride, so any number of rows works; offsets are 64-bit.
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"
#include "kernels/cuda/softmax_plan.h"

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

// Combines the threadIdx.y partials of each column (blockDim.x == 32), in y order; every
// thread of the column gets the result. Ends with a barrier, so `partial` may be reused.
template <typename Op>
__device__ float ColumnReduce(float value, Op op, float* partial) {
  if (blockDim.y == 1) return value;  // uniform over the block
  partial[threadIdx.y * 32 + threadIdx.x] = value;
  __syncthreads();
  float result = partial[threadIdx.x];
  for (unsigned y = 1; y < blockDim.y; ++y) result = op(result, partial[y * 32 + threadIdx.x]);
  __syncthreads();
  return result;
}

// Note [Softmax over columns]. `columns` = outer * inner; block (32, threads_y,
// tiles_per_block), one of threads_y and tiles_per_block being 1.
template <typename T>
__global__ void SoftmaxColumnsKernel(const T* in, T* out, int64_t columns, int64_t tiles,
                                     int64_t size, int64_t inner, bool log) {
  __shared__ float partial[32 * 32];
  // Every thread of a block makes the same number of trips, so the barriers in ColumnReduce
  // are reached by all of them; a thread past the last column only contributes identities.
  for (int64_t first = static_cast<int64_t>(blockIdx.x) * blockDim.z; first < tiles;
       first += static_cast<int64_t>(gridDim.x) * blockDim.z) {
    const int64_t column = (first + threadIdx.z) * 32 + threadIdx.x;
    const bool active = column < columns;
    const int64_t o = active ? column / inner : 0, i = active ? column % inner : 0;
    const T* src = in + o * size * inner + i;
    T* dst = out + o * size * inner + i;
    float max = -INFINITY;
    if (active) {
      for (int64_t k = threadIdx.y; k < size; k += blockDim.y) {
        max = MaxOp()(ToFloat(src[k * inner]), max);
      }
    }
    max = ColumnReduce(max, MaxOp(), partial);
    float sum = 0.0f;
    if (active) {
      for (int64_t k = threadIdx.y; k < size; k += blockDim.y) {
        sum += expf(ToFloat(src[k * inner]) - max);
      }
    }
    sum = ColumnReduce(sum, SumOp(), partial);
    if (!active) continue;
    if (log) {
      const float shift = max + logf(sum);
      for (int64_t k = threadIdx.y; k < size; k += blockDim.y) {
        dst[k * inner] = FromFloat<T>(ToFloat(src[k * inner]) - shift);
      }
    } else {
      const float inv = 1.0f / sum;
      for (int64_t k = threadIdx.y; k < size; k += blockDim.y) {
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
  return DispatchMath(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* in = static_cast<const T*>(x.data);
    T* out = static_cast<T*>(args.output.data);
    if (inner == 1) {
      const int threads = size >= 256 ? 256 : (size >= 64 ? 64 : 32);
      const unsigned blocks = static_cast<unsigned>(outer < 65536 ? outer : 65536);
      SoftmaxKernel<T><<<blocks, threads, 0, stream>>>(in, out, outer, size, 1, args.log);
    } else {
      const SoftmaxColumnsLaunch launch = PlanSoftmaxColumns(outer * inner, size);
      const dim3 block(32, launch.threads_y, launch.tiles_per_block);
      SoftmaxColumnsKernel<T><<<launch.blocks, block, 0, stream>>>(
          in, out, outer * inner, launch.tiles, size, inner, args.log);
    }
    return cudaGetLastError();
  });
}

}  // namespace paramd::kernels::cuda
