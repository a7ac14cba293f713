// Which strided-batched GEMMs compute one chunk of a grouped convolution from its im2col
// columns (Note [Grouped conv as batched GEMMs] in cuda_backend.cc). Host-side logic of the
// CUDA backend with no CUDA header, so the CPU build tests it. Pure functions; thread-safe.
#pragma once

#include <cstdint>

namespace paramd::kernels::cuda {

// The sizes of one chunk, in elements: `images` images of `groups` groups; each group's
// weight is group_out × patch, its columns patch × out_plane, its output group_out ×
// out_plane. One image's columns span image_columns (= groups * patch * out_plane) and its
// output out_channels * out_plane (out_channels = groups * group_out).
struct ConvChunk {
  int64_t images, groups, group_out, patch, out_plane, image_columns, out_channels;
};

// One batched GEMM: operand offsets from the weight, the columns and the chunk's output,
// and the batch with its strides.
struct ConvGemm {
  int64_t a_offset, b_offset, c_offset;
  int64_t batch, stride_a, stride_b, stride_c;
};

// min(groups, images): the loop runs over the smaller and batches over the larger.
inline int64_t ConvGemmCount(const ConvChunk& c) {
  return c.groups > c.images ? c.images : c.groups;
}

// GEMM i of ConvGemmCount(c): image i batched over the groups, or group i batched over
// the images.
inline ConvGemm ConvGemmAt(const ConvChunk& c, int64_t i) {
  if (c.groups > c.images) {
    return {.a_offset = 0,
            .b_offset = i * c.image_columns,
            .c_offset = i * c.out_channels * c.out_plane,
            .batch = c.groups,
            .stride_a = c.group_out * c.patch,
            .stride_b = c.patch * c.out_plane,
            .stride_c = c.group_out * c.out_plane};
  }
  return {.a_offset = i * c.group_out * c.patch,
          .b_offset = i * c.patch * c.out_plane,
          .c_offset = i * c.group_out * c.out_plane,
          .batch = c.images,
          .stride_a = 0,
          .stride_b = c.image_columns,
          .stride_c = c.out_channels * c.out_plane};
}

}  // namespace paramd::kernels::cuda
