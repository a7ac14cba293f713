// embedding: an index check, then a row gather. The backend runs the check and reads its
// flag before the gather is queued, so a bad index leaves the output untouched, as on the
// CPU.
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
                             int64_t total) {
  PARAMD_GRID_STRIDE(i, total) {
    const int64_t row = i / dim;
    out[i] = weight[static_cast<int64_t>(indices[row]) * dim + i % dim];
  }
}

template <typename Fn>
cudaError_t DispatchIndex(DType dtype, Fn&& fn) {
  if (dtype == DType::kInt64) return fn(int64_t{});
  if (dtype == DType::kInt32) return fn(int32_t{});
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t LaunchEmbeddingCheck(const ConstTensorView& indices, int64_t rows, int* bad_index,
                                 cudaStream_t stream) {
  const int64_t count = indices.numel();
  if (count == 0) return cudaSuccess;
  return DispatchIndex(indices.dtype, [&](auto tag) {
    using Index = decltype(tag);
    CheckKernel<Index><<<BlocksFor(count), kThreads, 0, stream>>>(
        static_cast<const Index*>(indices.data), count, rows, bad_index);
    return cudaGetLastError();
  });
}

cudaError_t LaunchEmbeddingGather(const EmbeddingArgs& args, cudaStream_t stream) {
  const int64_t dim = args.weight.shape[1];
  const int64_t total = args.indices.numel() * dim;
  if (total == 0) return cudaSuccess;
  const bool wide = args.weight.dtype == DType::kFloat32;
  return DispatchIndex(args.indices.dtype, [&](auto tag) {
    using Index = decltype(tag);
    const Index* indices = static_cast<const Index*>(args.indices.data);
    if (wide) {
      GatherKernel<Index, uint32_t><<<BlocksFor(total), kThreads, 0, stream>>>(
          static_cast<const uint32_t*>(args.weight.data), indices,
          static_cast<uint32_t*>(args.output.data), dim, total);
    } else {
      GatherKernel<Index, uint16_t><<<BlocksFor(total), kThreads, 0, stream>>>(
          static_cast<const uint16_t*>(args.weight.data), indices,
          static_cast<uint16_t*>(args.output.data), dim, total);
    }
    return cudaGetLastError();
  });
}

}  // namespace paramd::kernels::cuda
