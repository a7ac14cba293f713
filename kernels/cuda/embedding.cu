// embedding: a row gather that checks every index itself. A bad index sets the caller's
// flag and writes zeros to its row (never a device-side assert, which would poison the
// context); the backend reports the flag at the thread's next synchronization (Note
// [Deferred index check] in kernels/cuda/context.h).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"

namespace paramd::kernels::cuda {
namespace {

template <typename Index>
__global__ void CheckKernel(const Index* indices, int64_t count, int64_t rows, int* bad) {
  PARAMD_GRID_STRIDE(i, count) {
    const int64_t index = static_cast<int64_t>(indices[i]);
    if (index < 0 || index >= rows) *bad = 1;
  }
}

// Moves whole elements of `Word` (the element size), so one kernel serves every dtype.
template <typename Index, typename Word>
__global__ void GatherKernel(const Word* weight, const Index* indices, Word* out, int64_t dim,
                             int64_t rows, int64_t total, int* bad) {
  PARAMD_GRID_STRIDE(i, total) {
    const int64_t index = static_cast<int64_t>(indices[i / dim]);
    if (index < 0 || index >= rows) {
      *bad = 1;
      out[i] = Word{0};  // +0.0 in every float dtype
    } else {
      out[i] = weight[index * dim + i % dim];
    }
  }
}

template <typename Fn>
cudaError_t DispatchIndex(DType dtype, Fn&& fn) {
  if (dtype == DType::kInt64) return fn(int64_t{});
  if (dtype == DType::kInt32) return fn(int32_t{});
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t LaunchEmbeddingGather(const EmbeddingArgs& args, int64_t rows, int* bad_index,
                                  cudaStream_t stream) {
  const int64_t count = args.indices.numel();
  const int64_t dim = args.weight.shape[1];
  const int64_t total = count * dim;
  if (count == 0) return cudaSuccess;
  const bool wide = args.weight.dtype == DType::kFloat32;
  return DispatchIndex(args.indices.dtype, [&](auto tag) {
    using Index = decltype(tag);
    const Index* indices = static_cast<const Index*>(args.indices.data);
    if (total == 0) {
      // Rows of width 0: nothing to gather, but the indices are still checked, as on the CPU.
      CheckKernel<Index><<<BlocksFor(count), kThreads, 0, stream>>>(indices, count, rows,
                                                                    bad_index);
    } else if (wide) {
      GatherKernel<Index, uint32_t><<<BlocksFor(total), kThreads, 0, stream>>>(
          static_cast<const uint32_t*>(args.weight.data), indices,
          static_cast<uint32_t*>(args.output.data), dim, rows, total, bad_index);
    } else {
      GatherKernel<Index, uint16_t><<<BlocksFor(total), kThreads, 0, stream>>>(
          static_cast<const uint16_t*>(args.weight.data), indices,
          static_cast<uint16_t*>(args.output.data), dim, rows, total, bad_index);
    }
    return cudaGetLastError();
  });
}

}  // namespace paramd::kernels::cuda
