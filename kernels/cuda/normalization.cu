// batch_norm and layer_norm: statistics (training-mode batch norm: one block per channel;
// layer norm: one block per row) accumulated in double in two passes, as the CPU backend
// does, so the two backends agree to float32 rounding. Eval-mode batch norm has no
// statistics to gather and runs element-wise over the whole tensor (a few dozen channel
// blocks would leave most of a 132-SM GPU idle), with 32-bit index math below 2^31
// elements.
#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"

namespace paramd::kernels::cuda {
namespace {

template <typename T>
__global__ void BatchNormKernel(const T* in, T* out, int64_t batch, int64_t channels,
                                int64_t inner, const T* weight, const T* bias,
                                const T* running_mean, const T* running_var, bool use_batch_stats,
                                double momentum, double eps, T* new_running_mean,
                                T* new_running_var, const int64_t* num_batches_tracked,
                                int64_t* new_num_batches_tracked, bool cumulative_average) {
  __shared__ double scratch[32];
  const int64_t c = blockIdx.x;
  if (num_batches_tracked != nullptr) {
    const int64_t next = *num_batches_tracked + 1;
    if (c == 0 && threadIdx.x == 0) *new_num_batches_tracked = next;
    if (cumulative_average) momentum = 1.0 / static_cast<double>(next);
  }
  const int64_t count = batch * inner;
  double mean = 0.0, var = 0.0;
  if (use_batch_stats) {
    double sum = 0.0;
    for (int64_t k = threadIdx.x; k < count; k += blockDim.x) {
      sum += ToFloat(in[((k / inner) * channels + c) * inner + k % inner]);
    }
    sum = BlockReduce(sum, SumOp(), 0.0, scratch);
    mean = count > 0 ? sum / static_cast<double>(count) : 0.0;
    double squares = 0.0;
    for (int64_t k = threadIdx.x; k < count; k += blockDim.x) {
      const double d = ToFloat(in[((k / inner) * channels + c) * inner + k % inner]) - mean;
      squares += d * d;
    }
    squares = BlockReduce(squares, SumOp(), 0.0, scratch);
    var = count > 0 ? squares / static_cast<double>(count) : 0.0;
    if (threadIdx.x == 0) {
      if (new_running_mean != nullptr && running_mean != nullptr) {
        const double old = ToFloat(running_mean[c]);
        new_running_mean[c] =
            FromFloat<T>(static_cast<float>((1.0 - momentum) * old + momentum * mean));
      }
      if (new_running_var != nullptr && running_var != nullptr) {
        const double old = ToFloat(running_var[c]);
        const double unbiased = count > 1 ? squares / static_cast<double>(count - 1) : NAN;
        new_running_var[c] =
            FromFloat<T>(static_cast<float>((1.0 - momentum) * old + momentum * unbiased));
      }
    }
  } else {
    mean = ToFloat(running_mean[c]);
    var = ToFloat(running_var[c]);
  }
  const double invstd = 1.0 / sqrt(var + eps);
  const double w = weight != nullptr ? ToFloat(weight[c]) : 1.0;
  const double b = bias != nullptr ? ToFloat(bias[c]) : 0.0;
  // y = x * scale + shift, as ATen folds it.
  const float scale = static_cast<float>(w * invstd);
  const float shift = static_cast<float>(b - mean * w * invstd);
  for (int64_t k = threadIdx.x; k < count; k += blockDim.x) {
    const int64_t at = ((k / inner) * channels + c) * inner + k % inner;
    out[at] = FromFloat<T>(ToFloat(in[at]) * scale + shift);
  }
}

// Eval mode: y = x * scale[c] + shift[c] with the running statistics, scale and shift folded
// in double and rounded to float as BatchNormKernel does, per element.
template <typename T, typename Index>
__global__ void BatchNormEvalKernel(const T* in, T* out, Index total, Index inner,
                                    Index channels, FastDivider inner_div,
                                    FastDivider channel_div,
                                    const T* weight, const T* bias, const T* running_mean,
                                    const T* running_var, double eps) {
  for (Index at = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; at < total;
       at += static_cast<Index>(gridDim.x) * blockDim.x) {
    Index c;
    if constexpr (sizeof(Index) == 4) {
      uint32_t channel;
      channel_div.DivMod(inner_div.Div(at), &channel);
      c = channel;
    } else {
      c = (at / inner) % channels;
    }
    const double mean = ToFloat(running_mean[c]);
    const double invstd = 1.0 / sqrt(static_cast<double>(ToFloat(running_var[c])) + eps);
    const double w = weight != nullptr ? ToFloat(weight[c]) : 1.0;
    const double b = bias != nullptr ? ToFloat(bias[c]) : 0.0;
    const float scale = static_cast<float>(w * invstd);
    const float shift = static_cast<float>(b - mean * w * invstd);
    out[at] = FromFloat<T>(ToFloat(in[at]) * scale + shift);
  }
}

template <typename T>
__global__ void LayerNormKernel(const T* in, T* out, int64_t rows, int64_t size, const T* weight,
                                const T* bias, double eps) {
  __shared__ double scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* row = in + r * size;
    T* dst = out + r * size;
    double sum = 0.0;
    for (int64_t i = threadIdx.x; i < size; i += blockDim.x) sum += ToFloat(row[i]);
    const double mean = BlockReduce(sum, SumOp(), 0.0, scratch) / static_cast<double>(size);
    double squares = 0.0;
    for (int64_t i = threadIdx.x; i < size; i += blockDim.x) {
      const double d = ToFloat(row[i]) - mean;
      squares += d * d;
    }
    squares = BlockReduce(squares, SumOp(), 0.0, scratch);
    const float rstd = static_cast<float>(1.0 / sqrt(squares / size + eps));
    const float m = static_cast<float>(mean);
    for (int64_t i = threadIdx.x; i < size; i += blockDim.x) {
      float v = (ToFloat(row[i]) - m) * rstd;
      if (weight != nullptr) v *= ToFloat(weight[i]);
      if (bias != nullptr) v += ToFloat(bias[i]);
      dst[i] = FromFloat<T>(v);
    }
  }
}

}  // namespace

cudaError_t LaunchBatchNorm(const BatchNormArgs& args, cudaStream_t stream) {
  const ConstTensorView& x = args.input;
  const int64_t batch = x.shape[0], channels = x.shape[1];
  int64_t inner = 1;
  for (int d = 2; d < x.rank; ++d) inner *= x.shape[d];
  if (channels == 0) return cudaSuccess;
  const int64_t total = batch * channels * inner;
  if (!args.use_batch_stats) {
    if (total == 0) return cudaSuccess;
    return DispatchMath(x.dtype, [&](auto tag) {
      using T = decltype(tag);
      const T* in = static_cast<const T*>(x.data);
      T* out = static_cast<T*>(args.output.data);
      const T* w = static_cast<const T*>(args.weight);
      const T* b = static_cast<const T*>(args.bias);
      const T* mean = static_cast<const T*>(args.running_mean);
      const T* var = static_cast<const T*>(args.running_var);
      if (FitsInt32(total)) {
        BatchNormEvalKernel<T, uint32_t><<<BlocksFor(total), kThreads, 0, stream>>>(
            in, out, static_cast<uint32_t>(total), static_cast<uint32_t>(inner),
            static_cast<uint32_t>(channels), FastDivider(static_cast<uint32_t>(inner)),
            FastDivider(static_cast<uint32_t>(channels)), w, b, mean, var, args.eps);
      } else {
        BatchNormEvalKernel<T, int64_t><<<BlocksFor(total), kThreads, 0, stream>>>(
            in, out, total, inner, channels, FastDivider(), FastDivider(), w, b, mean, var,
            args.eps);
      }
      return cudaGetLastError();
    });
  }
  return DispatchMath(x.dtype, [&](auto tag) {
    using T = decltype(tag);
    BatchNormKernel<T><<<static_cast<unsigned>(channels), kThreads, 0, stream>>>(
        static_cast<const T*>(x.data), static_cast<T*>(args.output.data), batch, channels, inner,
        static_cast<const T*>(args.weight), static_cast<const T*>(args.bias),
        static_cast<const T*>(args.running_mean), static_cast<const T*>(args.running_var),
        args.use_batch_stats, args.momentum, args.eps, static_cast<T*>(args.new_running_mean),
        static_cast<T*>(args.new_running_var), args.num_batches_tracked,
        args.new_num_batches_tracked, args.cumulative_average);
    return cudaGetLastError();
  });
}

cudaError_t LaunchLayerNorm(const LayerNormArgs& args, cudaStream_t stream) {
  const int64_t total = args.input.numel();
  if (total == 0) return cudaSuccess;
  const int64_t size = args.normalized_size;
  const int64_t rows = total / size;
  const int threads = size >= 256 ? 256 : (size >= 64 ? 64 : 32);
  const unsigned blocks = static_cast<unsigned>(rows < 65536 ? rows : 65536);
  return DispatchMath(args.input.dtype, [&](auto tag) {
    using T = decltype(tag);
    LayerNormKernel<T><<<blocks, threads, 0, stream>>>(
        static_cast<const T*>(args.input.data), static_cast<T*>(args.output.data), rows, size,
        static_cast<const T*>(args.weight), static_cast<const T*>(args.bias), args.eps);
    return cudaGetLastError();
  });
}

}  // namespace paramd::kernels::cuda
