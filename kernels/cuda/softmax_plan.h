// The launch shape of softmax over a dimension whose elements are `inner` > 1 apart (Note
// [Softmax over columns] in softmax.cu): a tile is 32 neighbouring columns (threadIdx.x),
// with `threads_y` threads along the softmax dimension for each (threadIdx.y), and a block
// holds `tiles_per_block` tiles (threadIdx.z). Host-side logic of the CUDA
// backend with no CUDA header, so the CPU build tests it. Pure functions; thread-safe.
#pragma once

#include <cstdint>

namespace paramd::kernels::cuda {

struct SoftmaxColumnsLaunch {
  int64_t tiles = 0;        // groups of 32 neighbouring columns
  int threads_y = 1;        // threads per column, each summing every threads_y-th element
  int tiles_per_block = 1;  // 8 with one thread per column (256-thread blocks), else 1
  unsigned blocks = 0;      // at most 65,536: the grid strides over the tiles
};

// Warps enough to fill any current GPU (132 SMs × 32 resident warps and more).
inline constexpr int64_t kSoftmaxTargetWarps = 4096;
// Each of a column's threads gets at least this many elements before another is added.
inline constexpr int64_t kSoftmaxMinPerThread = 8;

// `columns` = outer * inner, each `size` elements long. With many columns one thread per
// column sums in the CPU backend's order; few long columns get up to 32 threads each.
inline SoftmaxColumnsLaunch PlanSoftmaxColumns(int64_t columns, int64_t size) {
  SoftmaxColumnsLaunch launch;
  launch.tiles = (columns + 31) / 32;
  while (launch.threads_y < 32 && launch.tiles * launch.threads_y < kSoftmaxTargetWarps &&
         size >= 2 * launch.threads_y * kSoftmaxMinPerThread) {
    launch.threads_y *= 2;
  }
  launch.tiles_per_block = launch.threads_y == 1 ? 8 : 1;
  const int64_t blocks = (launch.tiles + launch.tiles_per_block - 1) / launch.tiles_per_block;
  launch.blocks = static_cast<unsigned>(blocks < 65536 ? blocks : 65536);
  return launch;
}

}  // namespace paramd::kernels::cuda
