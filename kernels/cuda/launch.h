// The kernel launchers of kernels/cuda/*.cu, as plain functions over the op argument
// structs of kernels/ops.h, so that .cu files need no abseil and the backend (.cc) turns
// every result into an absl::Status.
//
// Contract shared by every launcher: the caller has made the device current, validated
// shapes and dtypes (the backend's checks), and passes the calling thread's stream; the work is
// queued on that stream and the result is the launch error (cudaGetLastError), never a
// wait for completion. Thread-safe: no state outside the arguments.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/ops.h"
#include "kernels/optimizer_math.h"

namespace paramd::kernels::cuda {

// elementwise.cu
cudaError_t LaunchUnary(const UnaryArgs& args, cudaStream_t stream);
cudaError_t LaunchBinary(const BinaryArgs& args, cudaStream_t stream);
// `scale` is 1 / (1 - p) as a float (0 when p == 1), the CPU backend's factor.
cudaError_t LaunchDropout(const DropoutArgs& args, float scale, cudaStream_t stream);
// Writes the element `bits` (its low `element_size` bytes: 1, 2, 4 or 8) to `n` elements.
cudaError_t LaunchFill(void* out, int64_t n, size_t element_size, uint64_t bits,
                       cudaStream_t stream);
// For each of `batch` row-major m×n matrices at c + i * stride_c with leading dimension
// ldc: c[r, j] = act(base + bias[j]), computed in float32 and rounded once, where base is
// staged[(i * m + r) * n + j] when `staged` is set (a float32 product written there
// contiguously), else c[r, j] when `accumulate`, else 0. `bias` (n values) may be null.
// This is the GEMM epilogue that cuBLASLt does not fuse (gemm.cc).
cudaError_t LaunchBiasActivation(DType dtype, void* c, int64_t batch, int64_t stride_c,
                                 int64_t m, int64_t n, int64_t ldc, const void* bias,
                                 UnaryOp act, const float* staged, bool accumulate,
                                 cudaStream_t stream);

// convert.cu: out (strides out_strides, dtype out_dtype) = input converted as Tensor.to
// does (CastElement), over the input's shape. Every dtype of DType.
cudaError_t LaunchConvert(const ConstTensorView& input, void* out, DType out_dtype,
                          const int64_t* out_strides, cudaStream_t stream);

// pooling.cu: `planes` = product of the dimensions before the last two.
cudaError_t LaunchMaxPool2d(const MaxPool2dArgs& args, cudaStream_t stream);
cudaError_t LaunchAvgPool2d(const AvgPool2dArgs& args, cudaStream_t stream);
cudaError_t LaunchAdaptiveAvgPool2d(const AdaptiveAvgPool2dArgs& args, cudaStream_t stream);

// normalization.cu
cudaError_t LaunchBatchNorm(const BatchNormArgs& args, cudaStream_t stream);
cudaError_t LaunchLayerNorm(const LayerNormArgs& args, cudaStream_t stream);

// softmax.cu
cudaError_t LaunchSoftmax(const SoftmaxArgs& args, cudaStream_t stream);

// embedding.cu. The gather (weight has `rows` rows) sets *bad_index (device memory) to 1
// when an index lies outside [0, rows) and writes zeros to that index's output row; it never
// clears *bad_index. Indices are checked even when the rows are empty.
cudaError_t LaunchEmbeddingGather(const EmbeddingArgs& args, int64_t rows, int* bad_index,
                                  cudaStream_t stream);

// conv.cu. Im2Col writes, for each of `images` NCHW images of `channels` channels, the
// [channels * kernel_h * kernel_w, out_h * out_w] column matrix (zeros for padding),
// image after image. ChannelFill writes bias[o] to every element of channel o of an
// [images, channels, plane] tensor (the C that conv's GEMM then accumulates into).
cudaError_t LaunchIm2Col(DType dtype, const void* input, int64_t images,
                         const ConvGeometry& geometry, void* columns, cudaStream_t stream);
cudaError_t LaunchChannelFill(DType dtype, void* data, int64_t images, int64_t channels,
                              int64_t plane, const void* bias, cudaStream_t stream);

// optimizer.cu: the step over every tensor of args (float32, checked by
// CheckOptimizerStep), in as few launches as the argument table allows.
cudaError_t LaunchOptimizerStep(const OptimizerStepArgs& args, const OptimizerScalars& scalars,
                                cudaStream_t stream);

}  // namespace paramd::kernels::cuda
