// The optimizer step (OptimizerStepArgs in kernels/ops.h) on the GPU: SGD and Adam/AdamW as
// tensor-list kernels, one launch for up to kTensorsPerLaunch tensors of a group (so one
// launch for most groups). Each block takes one chunk of kChunk elements of one tensor; the
// table of tensors and where their chunks begin travels in the kernel's arguments, read in
// place (__grid_constant__). Within a chunk the index math is 32-bit; tensors whose pointers
// are all 16-byte aligned move four elements per load and store.
//
// Rounding is the CPU kernel's, bit for bit (Note [Optimizer arithmetic]): every fused
// multiply-add is an explicit __fmaf_rn where kernels/cpu/optimizer.cc calls std::fma, and
// every other product, sum, quotient and square root is an explicitly rounded intrinsic, so
// nvcc's default contraction (-fmad=true) cannot fuse what the CPU rounds twice. The float32
// scalars come from MakeOptimizerScalars, as on the CPU.
#include <cstdint>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/launch.h"

namespace paramd::kernels::cuda {
namespace {

constexpr int kStepThreads = 256;
// A multiple of 4 * kStepThreads, so every chunk starts 16-byte aligned when its tensor does.
constexpr int kChunk = 8192;
// Sized so that the arguments stay within the classic 4 KiB kernel-parameter limit.
constexpr int kTensorsPerLaunch = 32;
constexpr int64_t kMaxChunksPerLaunch = 0x7fffffff;  // gridDim.x

struct StepTensor {
  const float* param;
  const float* grad;
  float* param_out;
  const float* state_in[3];
  float* state_out[3];
  int64_t numel;
  float neg_step_size;          // Adam: -lr / (1 - beta1^t), rounded from double
  float bias_correction2_sqrt;  // Adam: (1 - beta2^t)^0.5, rounded from double
  bool first_step;              // SGD: the momentum buffer is created from the gradient
  bool vectorised;              // every pointer 16-byte aligned
};

struct StepBatch {
  int count;
  uint32_t first_chunk[kTensorsPerLaunch + 1];  // first_chunk[count] = the grid's size
  StepTensor tensors[kTensorsPerLaunch];
};

struct StepOptions {
  OptimizerScalars s;
  bool maximize;
  bool decay;      // SGD: L2 weight decay
  bool momentum;   // SGD
  bool nesterov;   // SGD
  int adam_decay;  // Adam: 0 none, 1 L2 (into the gradient), 2 decoupled (AdamW)
  bool amsgrad;    // Adam
};

static_assert(sizeof(StepBatch) + sizeof(StepOptions) <= 4000, "kernel arguments too large");

// kernels/cpu/optimizer.cc's SgdBlock for one element.
__device__ __forceinline__ float SgdElement(const StepOptions& o, bool first_step, float p, float g,
                                            float buf_old, float* buf_new) {
  float d = o.maximize ? -g : g;
  if (o.decay) d = __fmaf_rn(p, o.s.weight_decay, d);
  if (o.momentum) {
    const float b =
        first_step ? d : __fmaf_rn(d, o.s.one_minus_dampening, __fmul_rn(buf_old, o.s.momentum));
    *buf_new = b;
    d = o.nesterov ? __fmaf_rn(b, o.s.momentum, d) : b;
  }
  return __fmaf_rn(d, o.s.neg_lr, p);
}

// kernels/cpu/optimizer.cc's AdamBlock for one element.
__device__ __forceinline__ float AdamElement(const StepOptions& o, const StepTensor& t, float p,
                                             float g, float* m, float* v, float* vmax) {
  float grad = o.maximize ? -g : g;
  float param = p;
  if (o.adam_decay == 2) param = __fmul_rn(param, o.s.decay);
  if (o.adam_decay == 1) grad = __fmaf_rn(param, o.s.weight_decay, grad);
  const float m_old = *m;
  *m = __fmaf_rn(o.s.lerp_coeff, __fsub_rn(grad, m_old), o.s.lerp_from_start ? m_old : grad);
  *v = __fmaf_rn(__fmul_rn(o.s.one_minus_beta2, grad), grad, __fmul_rn(*v, o.s.beta2));
  float second = *v;
  if (o.amsgrad) {
    // torch.maximum: NaN wins.
    const float previous = *vmax;
    second = previous > second ? previous : second;
    if (isnan(previous)) second = previous;
    if (isnan(*v)) second = *v;
    *vmax = second;
  }
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(second), t.bias_correction2_sqrt), o.s.eps);
  return __fadd_rn(param, __fdiv_rn(__fmul_rn(t.neg_step_size, *m), denom));
}

template <int kWidth>
__device__ __forceinline__ void Load(const float* data, int i, float (&v)[kWidth]) {
  if constexpr (kWidth == 4) {
    const float4 x = *reinterpret_cast<const float4*>(data + i);
    v[0] = x.x;
    v[1] = x.y;
    v[2] = x.z;
    v[3] = x.w;
  } else {
    v[0] = data[i];
  }
}

template <int kWidth>
__device__ __forceinline__ void Store(float* data, int i, const float (&v)[kWidth]) {
  if constexpr (kWidth == 4) {
    *reinterpret_cast<float4*>(data + i) = make_float4(v[0], v[1], v[2], v[3]);
  } else {
    data[i] = v[0];
  }
}

// Elements [i, i + kWidth) of a chunk. Every input is read before any output is written, so
// an output may be its own input's memory.
template <bool kAdam, int kWidth>
__device__ __forceinline__ void StepAt(const StepOptions& o, const StepTensor& t, int64_t base,
                                       int i) {
  float p[kWidth], g[kWidth], out[kWidth];
  Load<kWidth>(t.param + base, i, p);
  Load<kWidth>(t.grad + base, i, g);
  if constexpr (kAdam) {
    float m[kWidth], v[kWidth], vmax[kWidth] = {};
    Load<kWidth>(t.state_in[0] + base, i, m);
    Load<kWidth>(t.state_in[1] + base, i, v);
    if (o.amsgrad) Load<kWidth>(t.state_in[2] + base, i, vmax);
#pragma unroll
    for (int k = 0; k < kWidth; ++k) out[k] = AdamElement(o, t, p[k], g[k], &m[k], &v[k], &vmax[k]);
    Store<kWidth>(t.state_out[0] + base, i, m);
    Store<kWidth>(t.state_out[1] + base, i, v);
    if (o.amsgrad) Store<kWidth>(t.state_out[2] + base, i, vmax);
  } else {
    float buf[kWidth] = {};
    if (o.momentum && !t.first_step) Load<kWidth>(t.state_in[0] + base, i, buf);
#pragma unroll
    for (int k = 0; k < kWidth; ++k)
      out[k] = SgdElement(o, t.first_step, p[k], g[k], buf[k], &buf[k]);
    if (o.momentum) Store<kWidth>(t.state_out[0] + base, i, buf);
  }
  Store<kWidth>(t.param_out + base, i, out);
}

template <bool kAdam>
__global__ void __launch_bounds__(kStepThreads)
    StepKernel(const __grid_constant__ StepBatch batch, const StepOptions options) {
  int which = 0;
  while (blockIdx.x >= batch.first_chunk[which + 1]) ++which;
  const StepTensor& t = batch.tensors[which];
  const int64_t base = static_cast<int64_t>(blockIdx.x - batch.first_chunk[which]) * kChunk;
  const int64_t left = t.numel - base;
  const int n = left < kChunk ? static_cast<int>(left) : kChunk;
  int tail = 0;
  if (t.vectorised) {
    tail = n & ~3;
    for (int i = threadIdx.x * 4; i < tail; i += kStepThreads * 4) {
      StepAt<kAdam, 4>(options, t, base, i);
    }
  }
  for (int i = tail + static_cast<int>(threadIdx.x); i < n; i += kStepThreads) {
    StepAt<kAdam, 1>(options, t, base, i);
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

cudaError_t LaunchOptimizerStep(const OptimizerStepArgs& args, const OptimizerScalars& scalars,
                                cudaStream_t stream) {
  const bool adam = args.algorithm == OptimizerAlgorithm::kAdam;
  StepOptions options{};
  options.s = scalars;
  options.maximize = args.maximize;
  options.decay = args.weight_decay != 0;
  options.momentum = args.momentum != 0;
  options.nesterov = args.nesterov;
  options.adam_decay = args.weight_decay == 0 ? 0 : (args.decoupled_weight_decay ? 2 : 1);
  options.amsgrad = args.amsgrad;

  StepBatch batch{};
  int64_t chunks = 0;
  auto launch = [&]() -> cudaError_t {
    if (batch.count == 0) return cudaSuccess;
    batch.first_chunk[batch.count] = static_cast<uint32_t>(chunks);
    const unsigned grid = static_cast<unsigned>(chunks);
    if (adam) {
      StepKernel<true><<<grid, kStepThreads, 0, stream>>>(batch, options);
    } else {
      StepKernel<false><<<grid, kStepThreads, 0, stream>>>(batch, options);
    }
    batch.count = 0;
    chunks = 0;
    return cudaGetLastError();
  };
  for (const OptimizerTensor& in : args.tensors) {
    if (in.numel == 0) continue;
    const int64_t tensor_chunks = (in.numel + kChunk - 1) / kChunk;
    if (tensor_chunks > kMaxChunksPerLaunch) return cudaErrorInvalidValue;
    if (batch.count == kTensorsPerLaunch || chunks + tensor_chunks > kMaxChunksPerLaunch) {
      if (const cudaError_t error = launch(); error != cudaSuccess) return error;
    }
    StepTensor& t = batch.tensors[batch.count];
    t.param = static_cast<const float*>(in.param);
    t.grad = static_cast<const float*>(in.grad);
    t.param_out = static_cast<float*>(in.param_out);
    bool aligned = Aligned16(in.param) && Aligned16(in.grad) && Aligned16(in.param_out);
    for (int k = 0; k < 3; ++k) {
      t.state_in[k] = static_cast<const float*>(in.state_in[k]);
      t.state_out[k] = static_cast<float*>(in.state_out[k]);
      aligned = aligned && Aligned16(in.state_in[k]) && Aligned16(in.state_out[k]);
    }
    t.numel = in.numel;
    t.neg_step_size = static_cast<float>(-in.step_size);
    t.bias_correction2_sqrt = static_cast<float>(in.bias_correction2_sqrt);
    t.first_step = in.first_step;
    t.vectorised = aligned;
    batch.first_chunk[batch.count] = static_cast<uint32_t>(chunks);
    chunks += tensor_chunks;
    ++batch.count;
  }
  return launch();
}

}  // namespace paramd::kernels::cuda
