// The optimizer step (OptimizerStepArgs in kernels/ops.h): SGD and Adam/AdamW fused over all
// tensors of a parameter group. The elements of the group are cut into blocks that the
// calling thread and, for large groups, a few helper threads take in turn; each block runs a
// loop written for the vectoriser, specialised on the options so the loop has no branch.
//
// Rounding follows Note [Optimizer arithmetic]: this file is compiled with
// -ffp-contract=off, and every fused multiply-add is an explicit std::fma. Where the CPU has
// FMA (x86-64 with AVX2), the loops run in a copy compiled for it so std::fma is one
// instruction; elsewhere std::fma is the C library's, exact but slower.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/op_checks.h"
#include "kernels/optimizer_math.h"

namespace paramd::kernels {
namespace {

#if defined(__x86_64__) && defined(__GNUC__)
#define PARAMD_FMA_TARGET __attribute__((target("avx2,fma")))
bool HaveFma() {
  static const bool have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return have;
}
#else
#define PARAMD_FMA_TARGET
bool HaveFma() { return false; }
#endif

// The step's float32 scalars, shared with every backend (kernels/optimizer_math.h).
using Scalars = OptimizerScalars;

// kMomentum: 0 none, 1 the buffer's first step (buf = grad), 2 later steps.
template <bool kMaximize, bool kDecay, int kMomentum, bool kNesterov>
[[gnu::always_inline]] inline void SgdBlock(const Scalars& s, const OptimizerTensor& t,
                                             int64_t begin, int64_t end) {
  const float* p = static_cast<const float*>(t.param);
  const float* g = static_cast<const float*>(t.grad);
  const float* buf_in = static_cast<const float*>(t.state_in[0]);
  float* buf_out = static_cast<float*>(t.state_out[0]);
  float* p_out = static_cast<float*>(t.param_out);
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    float d = kMaximize ? -g[i] : g[i];
    if constexpr (kDecay) d = std::fma(p[i], s.weight_decay, d);
    if constexpr (kMomentum != 0) {
      float b = d;
      if constexpr (kMomentum == 2) b = std::fma(d, s.one_minus_dampening, buf_in[i] * s.momentum);
      buf_out[i] = b;
      d = kNesterov ? std::fma(b, s.momentum, d) : b;
    }
    p_out[i] = std::fma(d, s.neg_lr, p[i]);
  }
}

// kDecay: 0 none, 1 L2 (added to the gradient), 2 decoupled (AdamW).
template <bool kMaximize, int kDecay, bool kAmsgrad>
[[gnu::always_inline]] inline void AdamBlock(const Scalars& s, const OptimizerTensor& t,
                                              int64_t begin, int64_t end) {
  const float* p = static_cast<const float*>(t.param);
  const float* g = static_cast<const float*>(t.grad);
  const float* m_in = static_cast<const float*>(t.state_in[0]);
  const float* v_in = static_cast<const float*>(t.state_in[1]);
  const float* vmax_in = static_cast<const float*>(t.state_in[2]);
  float* m_out = static_cast<float*>(t.state_out[0]);
  float* v_out = static_cast<float*>(t.state_out[1]);
  float* vmax_out = static_cast<float*>(t.state_out[2]);
  float* p_out = static_cast<float*>(t.param_out);
  const float bias_correction2_sqrt = static_cast<float>(t.bias_correction2_sqrt);
  const float neg_step_size = static_cast<float>(-t.step_size);
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    float grad = kMaximize ? -g[i] : g[i];
    float param = p[i];
    if constexpr (kDecay == 2) param = param * s.decay;
    if constexpr (kDecay == 1) grad = std::fma(param, s.weight_decay, grad);
    const float m_old = m_in[i];
    const float m = std::fma(s.lerp_coeff, grad - m_old, s.lerp_from_start ? m_old : grad);
    const float v = std::fma(s.one_minus_beta2 * grad, grad, v_in[i] * s.beta2);
    m_out[i] = m;
    v_out[i] = v;
    float second = v;
    if constexpr (kAmsgrad) {
      // torch.maximum: NaN wins.
      const float previous = vmax_in[i];
      second = previous > v ? previous : v;
      if (previous != previous) second = previous;
      if (v != v) second = v;
      vmax_out[i] = second;
    }
    const float denom = std::sqrt(second) / bias_correction2_sqrt + s.eps;
    p_out[i] = param + (neg_step_size * m) / denom;
  }
}

using BlockFn = void (*)(const Scalars&, const OptimizerTensor&, int64_t, int64_t);

template <bool kMaximize, bool kDecay, int kMomentum, bool kNesterov>
void SgdPlain(const Scalars& s, const OptimizerTensor& t, int64_t begin, int64_t end) {
  SgdBlock<kMaximize, kDecay, kMomentum, kNesterov>(s, t, begin, end);
}
template <bool kMaximize, bool kDecay, int kMomentum, bool kNesterov>
PARAMD_FMA_TARGET void SgdFma(const Scalars& s, const OptimizerTensor& t, int64_t begin,
                              int64_t end) {
  SgdBlock<kMaximize, kDecay, kMomentum, kNesterov>(s, t, begin, end);
}
template <bool kMaximize, int kDecay, bool kAmsgrad>
void AdamPlain(const Scalars& s, const OptimizerTensor& t, int64_t begin, int64_t end) {
  AdamBlock<kMaximize, kDecay, kAmsgrad>(s, t, begin, end);
}
template <bool kMaximize, int kDecay, bool kAmsgrad>
PARAMD_FMA_TARGET void AdamFma(const Scalars& s, const OptimizerTensor& t, int64_t begin,
                               int64_t end) {
  AdamBlock<kMaximize, kDecay, kAmsgrad>(s, t, begin, end);
}

template <bool kMaximize, bool kDecay, int kMomentum, bool kNesterov>
BlockFn SgdFor(bool fma) {
  return fma ? &SgdFma<kMaximize, kDecay, kMomentum, kNesterov>
             : &SgdPlain<kMaximize, kDecay, kMomentum, kNesterov>;
}

// The specialisation for one tensor's options (the momentum phase can differ per tensor).
BlockFn SgdKernel(const OptimizerStepArgs& args, bool first_step, bool fma) {
  const bool decay = args.weight_decay != 0;
  const int momentum = args.momentum == 0 ? 0 : (first_step ? 1 : 2);
  // Four booleans and a three-way phase: spelled out once as a table of instantiations.
#define PARAMD_SGD_CASE(mx, dc, mo, ne)                                              \
  if (args.maximize == mx && decay == dc && momentum == mo && args.nesterov == ne) \
    return SgdFor<mx, dc, mo, ne>(fma);
#define PARAMD_SGD_CASES(mx, dc)                                                             \
  PARAMD_SGD_CASE(mx, dc, 0, false) PARAMD_SGD_CASE(mx, dc, 1, false)                      \
  PARAMD_SGD_CASE(mx, dc, 2, false) PARAMD_SGD_CASE(mx, dc, 0, true)                       \
  PARAMD_SGD_CASE(mx, dc, 1, true) PARAMD_SGD_CASE(mx, dc, 2, true)
  PARAMD_SGD_CASES(false, false)
  PARAMD_SGD_CASES(false, true)
  PARAMD_SGD_CASES(true, false)
  PARAMD_SGD_CASES(true, true)
#undef PARAMD_SGD_CASES
#undef PARAMD_SGD_CASE
  return nullptr;
}

template <bool kMaximize, int kDecay, bool kAmsgrad>
BlockFn AdamFor(bool fma) {
  return fma ? &AdamFma<kMaximize, kDecay, kAmsgrad> : &AdamPlain<kMaximize, kDecay, kAmsgrad>;
}

BlockFn AdamKernel(const OptimizerStepArgs& args, bool fma) {
  const int decay = args.weight_decay == 0 ? 0 : (args.decoupled_weight_decay ? 2 : 1);
#define PARAMD_ADAM_CASE(mx, dc, am) \
  if (args.maximize == mx && decay == dc && args.amsgrad == am) return AdamFor<mx, dc, am>(fma);
#define PARAMD_ADAM_CASES(mx, am) \
  PARAMD_ADAM_CASE(mx, 0, am) PARAMD_ADAM_CASE(mx, 1, am) PARAMD_ADAM_CASE(mx, 2, am)
  PARAMD_ADAM_CASES(false, false)
  PARAMD_ADAM_CASES(false, true)
  PARAMD_ADAM_CASES(true, false)
  PARAMD_ADAM_CASES(true, true)
#undef PARAMD_ADAM_CASES
#undef PARAMD_ADAM_CASE
  return nullptr;
}

// One block of work: elements [begin, end) of tensor `tensor`.
struct Block {
  size_t tensor;
  int64_t begin;
  int64_t end;
};

// Elements per block: large enough that taking one costs nothing, small enough that the
// threads finish together.
constexpr int64_t kBlockElements = int64_t{1} << 16;
// Below this many elements a group runs on the calling thread alone.
constexpr int64_t kParallelElements = int64_t{1} << 19;

}  // namespace

absl::Status CpuBackend::OptimizerStep(const OptimizerStepArgs& args) {
  if (absl::Status checked = CheckOptimizerStep(*this, args); !checked.ok()) return checked;
  const Scalars scalars = MakeOptimizerScalars(args);
  const bool fma = HaveFma();
  std::vector<BlockFn> kernels;
  std::vector<Block> blocks;
  int64_t total = 0;
  for (size_t i = 0; i < args.tensors.size(); ++i) {
    const OptimizerTensor& t = args.tensors[i];
    kernels.push_back(args.algorithm == OptimizerAlgorithm::kSgd
                          ? SgdKernel(args, t.first_step, fma)
                          : AdamKernel(args, fma));
    if (kernels.back() == nullptr) return absl::InternalError("optimizer step: no kernel");
    for (int64_t begin = 0; begin < t.numel; begin += kBlockElements) {
      blocks.push_back({i, begin, std::min(t.numel, begin + kBlockElements)});
    }
    total += t.numel;
  }
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t b = next.fetch_add(1); b < blocks.size(); b = next.fetch_add(1)) {
      const Block& block = blocks[b];
      kernels[block.tensor](scalars, args.tensors[block.tensor], block.begin, block.end);
    }
  };
  const int64_t hardware = std::max<int64_t>(1, std::thread::hardware_concurrency());
  const int64_t helpers =
      total < kParallelElements
          ? 0
          : std::min<int64_t>(hardware, static_cast<int64_t>(blocks.size())) - 1;
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(std::max<int64_t>(helpers, 0)));
  for (int64_t i = 0; i < helpers; ++i) threads.emplace_back(work);
  work();
  for (std::thread& thread : threads) thread.join();
  return absl::OkStatus();
}

}  // namespace paramd::kernels
