// The optimizer step (OptimizerStepArgs in kernels/ops.h): SGD and Adam/AdamW fused over all
// tensors of a parameter group. The elements of the group are cut into blocks that the
// calling thread and, for large groups, a few helper threads take in turn; each block runs a
// loop written for the vectoriser, specialised on the options so the loop has no branch.
//
// Rounding follows Note [Optimizer arithmetic]: this file is compiled with
// -ffp-contract=off, and every fused multiply-add is an explicit std::fma. Where the CPU has
// FMA (x86-64 with AVX2, or AVX-512), the loops run in a copy compiled for it so std::fma is
// one instruction; elsewhere std::fma is the C library's, exact but slower.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "kernels/cpu/cpu_backend.h"
#include "kernels/op_checks.h"
#include "kernels/optimizer_math.h"

namespace paramd::kernels {
namespace {

// The instruction sets the loops are compiled for: every one rounds the same (IEEE
// single-precision add, multiply, divide, square root and fused multiply-add are exact
// to the last bit on all of them); wider vectors only do more elements per instruction,
// which matters for Adam's divisions and square root.
enum class Isa { kPlain, kFma, kAvx512 };

#if defined(__x86_64__) && defined(__GNUC__)
#define PARAMD_FMA_TARGET __attribute__((target("avx2,fma")))
#define PARAMD_AVX512_TARGET \
  __attribute__((target("avx512f,avx512vl,avx2,fma,prefer-vector-width=512")))
// For code written with AVX-512 intrinsics: no vector-width preference to state, and clang
// (the fuzzing build) knows no prefer-vector-width in a target attribute.
#define PARAMD_AVX512_INTRINSICS_TARGET __attribute__((target("avx512f,avx512vl,avx2,fma")))
Isa BestIsa() {
  static const Isa best = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")
                              ? Isa::kAvx512
                              : (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
                                     ? Isa::kFma
                                     : Isa::kPlain);
  return best;
}
#else
#define PARAMD_FMA_TARGET
#define PARAMD_AVX512_TARGET
Isa BestIsa() { return Isa::kPlain; }
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

// An Adam tensor's arrays as floats: the parameter and its gradient, the moments (and for
// amsgrad the running maximum of the second) as read and as written, the new parameter.
struct AdamArrays {
  explicit AdamArrays(const OptimizerTensor& t)
      : p(static_cast<const float*>(t.param)),
        g(static_cast<const float*>(t.grad)),
        m_in(static_cast<const float*>(t.state_in[0])),
        v_in(static_cast<const float*>(t.state_in[1])),
        vmax_in(static_cast<const float*>(t.state_in[2])),
        m_out(static_cast<float*>(t.state_out[0])),
        v_out(static_cast<float*>(t.state_out[1])),
        vmax_out(static_cast<float*>(t.state_out[2])),
        p_out(static_cast<float*>(t.param_out)) {}

  const float* p;
  const float* g;
  const float* m_in;
  const float* v_in;
  const float* vmax_in;
  float* m_out;
  float* v_out;
  float* vmax_out;
  float* p_out;
};

// kDecay: 0 none, 1 L2 (added to the gradient), 2 decoupled (AdamW).
template <bool kMaximize, int kDecay, bool kAmsgrad>
[[gnu::always_inline]] inline void AdamBlock(const Scalars& s, const OptimizerTensor& t,
                                              int64_t begin, int64_t end) {
  const AdamArrays a(t);
  const float bias_correction2_sqrt = static_cast<float>(t.bias_correction2_sqrt);
  const float neg_step_size = static_cast<float>(-t.step_size);
#pragma omp simd
  for (int64_t i = begin; i < end; ++i) {
    float grad = kMaximize ? -a.g[i] : a.g[i];
    float param = a.p[i];
    if constexpr (kDecay == 2) param = param * s.decay;
    if constexpr (kDecay == 1) grad = std::fma(param, s.weight_decay, grad);
    const float m_old = a.m_in[i];
    const float m = std::fma(s.lerp_coeff, grad - m_old, s.lerp_from_start ? m_old : grad);
    const float v = std::fma(s.one_minus_beta2 * grad, grad, a.v_in[i] * s.beta2);
    a.m_out[i] = m;
    a.v_out[i] = v;
    float second = v;
    if constexpr (kAmsgrad) {
      // torch.maximum: NaN wins.
      const float previous = a.vmax_in[i];
      second = previous > v ? previous : v;
      if (previous != previous) second = previous;
      if (v != v) second = v;
      a.vmax_out[i] = second;
    }
    const float denom = std::sqrt(second) / bias_correction2_sqrt + s.eps;
    a.p_out[i] = param + (neg_step_size * m) / denom;
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
PARAMD_AVX512_TARGET void SgdAvx512(const Scalars& s, const OptimizerTensor& t, int64_t begin,
                                    int64_t end) {
  SgdBlock<kMaximize, kDecay, kMomentum, kNesterov>(s, t, begin, end);
}
template <bool kMaximize, int kDecay, bool kAmsgrad>
PARAMD_AVX512_TARGET void AdamAvx512(const Scalars& s, const OptimizerTensor& t, int64_t begin,
                                     int64_t end) {
  AdamBlock<kMaximize, kDecay, kAmsgrad>(s, t, begin, end);
}

#if defined(__x86_64__) && defined(__GNUC__)
// AdamBlock's arithmetic, operation for operation (so rounding for rounding), 16 lanes at a
// time, its results stored from the registers with non-temporal stores: StreamedBlock's
// trip through stack buffers costs three stores and three loads per element more, which
// this compute-bound loop (two divisions and a square root per element) feels. The tail of
// fewer than 16 elements runs through AdamBlock into the outputs directly.
// Inputs are asked for this many elements (1 KiB) ahead: four read streams per thread,
// and the hardware prefetcher alone left the loop a few percent short (docs/benchmarks.md).
constexpr int64_t kPrefetchAhead = 256;
template <bool kMaximize, int kDecay, bool kAmsgrad>
PARAMD_AVX512_INTRINSICS_TARGET void AdamStreamedAvx512(const Scalars& s,
                                                        const OptimizerTensor& t, int64_t begin,
                                                        int64_t end) {
  const AdamArrays a(t);
  const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32(INT32_MIN));
  const __m512 decay = _mm512_set1_ps(s.decay);
  const __m512 weight_decay = _mm512_set1_ps(s.weight_decay);
  const __m512 lerp_coeff = _mm512_set1_ps(s.lerp_coeff);
  const __m512 beta2 = _mm512_set1_ps(s.beta2);
  const __m512 one_minus_beta2 = _mm512_set1_ps(s.one_minus_beta2);
  const __m512 eps = _mm512_set1_ps(s.eps);
  const __m512 bias_correction2_sqrt = _mm512_set1_ps(static_cast<float>(t.bias_correction2_sqrt));
  const __m512 neg_step_size = _mm512_set1_ps(static_cast<float>(-t.step_size));
  int64_t i = begin;
  for (; i + 16 <= end; i += 16) {
    if (i + kPrefetchAhead < end) {
      _mm_prefetch(reinterpret_cast<const char*>(a.g + i + kPrefetchAhead), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(a.p + i + kPrefetchAhead), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(a.m_in + i + kPrefetchAhead), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(a.v_in + i + kPrefetchAhead), _MM_HINT_T0);
    }
    __m512 grad = _mm512_loadu_ps(a.g + i);
    if constexpr (kMaximize) {
      grad = _mm512_castsi512_ps(
          _mm512_xor_si512(_mm512_castps_si512(grad), _mm512_castps_si512(sign)));
    }
    __m512 param = _mm512_loadu_ps(a.p + i);
    if constexpr (kDecay == 2) param = _mm512_mul_ps(param, decay);
    if constexpr (kDecay == 1) grad = _mm512_fmadd_ps(param, weight_decay, grad);
    const __m512 m_old = _mm512_loadu_ps(a.m_in + i);
    const __m512 m = _mm512_fmadd_ps(lerp_coeff, _mm512_sub_ps(grad, m_old),
                                     s.lerp_from_start ? m_old : grad);
    const __m512 v = _mm512_fmadd_ps(_mm512_mul_ps(one_minus_beta2, grad), grad,
                                     _mm512_mul_ps(_mm512_loadu_ps(a.v_in + i), beta2));
    _mm512_stream_ps(a.m_out + i, m);
    _mm512_stream_ps(a.v_out + i, v);
    __m512 second = v;
    if constexpr (kAmsgrad) {
      // torch.maximum: NaN wins, as in AdamBlock.
      const __m512 previous = _mm512_loadu_ps(a.vmax_in + i);
      second = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(previous, v, _CMP_GT_OQ), v, previous);
      second = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(previous, previous, _CMP_UNORD_Q), second,
                                    previous);
      second = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), second, v);
      _mm512_stream_ps(a.vmax_out + i, second);
    }
    // The all-lanes mask form of sqrt: GCC 12 warns on _mm512_sqrt_ps's undefined source.
    const __m512 root = _mm512_maskz_sqrt_ps(0xFFFF, second);
    const __m512 denom = _mm512_add_ps(_mm512_div_ps(root, bias_correction2_sqrt), eps);
    _mm512_stream_ps(a.p_out + i,
                     _mm512_add_ps(param, _mm512_div_ps(_mm512_mul_ps(neg_step_size, m), denom)));
  }
  if (i < end) AdamBlock<kMaximize, kDecay, kAmsgrad>(s, t, i, end);
}

#else
template <bool kMaximize, int kDecay, bool kAmsgrad>
void AdamStreamedAvx512(const Scalars& s, const OptimizerTensor& t, int64_t begin, int64_t end) {
  AdamBlock<kMaximize, kDecay, kAmsgrad>(s, t, begin, end);
}
#endif

template <bool kMaximize, bool kDecay, int kMomentum, bool kNesterov>
BlockFn SgdFor(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return &SgdAvx512<kMaximize, kDecay, kMomentum, kNesterov>;
    case Isa::kFma: return &SgdFma<kMaximize, kDecay, kMomentum, kNesterov>;
    case Isa::kPlain: break;
  }
  return &SgdPlain<kMaximize, kDecay, kMomentum, kNesterov>;
}

// The specialisation for one tensor's options (the momentum phase can differ per tensor).
BlockFn SgdKernel(const OptimizerStepArgs& args, bool first_step, Isa isa) {
  const bool decay = args.weight_decay != 0;
  const int momentum = args.momentum == 0 ? 0 : (first_step ? 1 : 2);
  // Four booleans and a three-way phase: spelled out once as a table of instantiations.
#define PARAMD_SGD_CASE(mx, dc, mo, ne)                                              \
  if (args.maximize == mx && decay == dc && momentum == mo && args.nesterov == ne) \
    return SgdFor<mx, dc, mo, ne>(isa);
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

// `streamed`: the kernel that stores its outputs with non-temporal stores itself, where the
// CPU has AVX-512 (elsewhere StreamedBlock streams the plain kernel's results).
template <bool kMaximize, int kDecay, bool kAmsgrad>
BlockFn AdamFor(Isa isa, bool streamed) {
  switch (isa) {
    case Isa::kAvx512:
      return streamed ? &AdamStreamedAvx512<kMaximize, kDecay, kAmsgrad>
                      : &AdamAvx512<kMaximize, kDecay, kAmsgrad>;
    case Isa::kFma: return &AdamFma<kMaximize, kDecay, kAmsgrad>;
    case Isa::kPlain: break;
  }
  return &AdamPlain<kMaximize, kDecay, kAmsgrad>;
}

BlockFn AdamKernel(const OptimizerStepArgs& args, Isa isa, bool streamed = false) {
  const int decay = args.weight_decay == 0 ? 0 : (args.decoupled_weight_decay ? 2 : 1);
#define PARAMD_ADAM_CASE(mx, dc, am)                            \
  if (args.maximize == mx && decay == dc && args.amsgrad == am) \
    return AdamFor<mx, dc, am>(isa, streamed);
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

// The Adam kernel that streams its own outputs, or null where there is none (SGD, or a CPU
// without AVX-512).
BlockFn AdamStreamedKernel(const OptimizerStepArgs& args, Isa isa) {
  if (isa != Isa::kAvx512 || args.algorithm == OptimizerAlgorithm::kSgd) return nullptr;
  return AdamKernel(args, isa, /*streamed=*/true);
}

// Note [Streamed optimizer outputs]
// A step is out of place (copy-on-write): its outputs are memory the step did not read, so
// each output cache line written by a plain store is first read from memory (a
// read-for-ownership) only to be overwritten: 40 bytes of traffic per Adam element where an
// in-place step, such as torch's fused Adam, moves 28. For tensors past the caches, the
// kernel computes runs of kStreamRun elements into buffers on the stack, which stay in L1,
// and writes them out with non-temporal stores, which skip that read. The arithmetic is the
// same kernel's; only where its results land first differs. Where the CPU has AVX-512, Adam
// skips the stack buffers too: AdamStreamedAvx512 stores its results from the registers
// (outputs 64-byte aligned; blocks start at multiples of kBlockElements, so each block's
// do): three stores and three loads per element fewer in a loop that its divisions and
// square root already keep busy.
constexpr int64_t kStreamRun = 512;
// Tensors smaller than this stay in the caches, where plain stores are cheaper.
constexpr int64_t kStreamElements = int64_t{1} << 20;

#if defined(__x86_64__) && defined(__GNUC__)
// Copies `n` floats from `from` (32-byte aligned) to `to` (32-byte aligned) with
// non-temporal stores. The caller fences before others read `to` (StreamFence).
PARAMD_FMA_TARGET void StreamOut(const float* from, float* to, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_stream_ps(to + i, _mm256_load_ps(from + i));
  for (; i < n; ++i) to[i] = from[i];
}
void StreamFence() { _mm_sfence(); }
bool Streamable(const void* p) { return reinterpret_cast<uintptr_t>(p) % 32 == 0; }
bool Streamable64(const void* p) { return reinterpret_cast<uintptr_t>(p) % 64 == 0; }
#else
void StreamOut(const float* from, float* to, int64_t n) {
  std::memcpy(to, from, static_cast<size_t>(n) * sizeof(float));
}
void StreamFence() {}
bool Streamable(const void*) { return false; }
bool Streamable64(const void*) { return false; }
#endif

// Runs `kernel` over elements [begin, end) of `t` a run at a time into stack buffers, then
// streams each run to the outputs (Note [Streamed optimizer outputs]).
void StreamedBlock(BlockFn kernel, const Scalars& s, const OptimizerTensor& t, int64_t begin,
                   int64_t end) {
  alignas(64) float runs[4][kStreamRun];
  const auto in = [](const void* p, int64_t at) -> const void* {
    return p == nullptr ? nullptr : static_cast<const float*>(p) + at;
  };
  OptimizerTensor run = t;
  run.param_out = runs[0];
  for (int k = 0; k < 3; ++k) run.state_out[k] = t.state_out[k] == nullptr ? nullptr : runs[k + 1];
  for (int64_t at = begin; at < end; at += kStreamRun) {
    const int64_t n = std::min(kStreamRun, end - at);
    run.numel = n;
    run.param = in(t.param, at);
    run.grad = in(t.grad, at);
    for (int k = 0; k < 3; ++k) run.state_in[k] = in(t.state_in[k], at);
    kernel(s, run, 0, n);
    StreamOut(runs[0], static_cast<float*>(t.param_out) + at, n);
    for (int k = 0; k < 3; ++k) {
      if (t.state_out[k] != nullptr) {
        StreamOut(runs[k + 1], static_cast<float*>(t.state_out[k]) + at, n);
      }
    }
  }
}

// Whether tensor `t` is worth streaming and every output can take aligned streaming stores
// (blocks and runs start at multiples of 8 elements, so the outputs' alignment holds).
bool StreamTensor(const OptimizerTensor& t, Isa isa) {
  if (isa == Isa::kPlain || t.numel < kStreamElements || !Streamable(t.param_out)) return false;
  for (void* out : t.state_out) {
    if (out != nullptr && !Streamable(out)) return false;
  }
  return true;
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
  const Isa isa = BestIsa();
  std::vector<BlockFn> kernels;
  std::vector<bool> streamed;
  // Per tensor: a kernel that streams its own outputs (zmm stores need 64-byte alignment).
  std::vector<BlockFn> direct;
  const BlockFn adam_streamed = AdamStreamedKernel(args, isa);
  std::vector<Block> blocks;
  int64_t total = 0;
  for (size_t i = 0; i < args.tensors.size(); ++i) {
    const OptimizerTensor& t = args.tensors[i];
    kernels.push_back(args.algorithm == OptimizerAlgorithm::kSgd
                          ? SgdKernel(args, t.first_step, isa)
                          : AdamKernel(args, isa));
    if (kernels.back() == nullptr) return absl::InternalError("optimizer step: no kernel");
    streamed.push_back(StreamTensor(t, isa));
    bool aligned = Streamable64(t.param_out);
    for (void* out : t.state_out) aligned = aligned && (out == nullptr || Streamable64(out));
    direct.push_back(streamed.back() && aligned ? adam_streamed : nullptr);
    for (int64_t begin = 0; begin < t.numel; begin += kBlockElements) {
      blocks.push_back({i, begin, std::min(t.numel, begin + kBlockElements)});
    }
    total += t.numel;
  }
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t b = next.fetch_add(1); b < blocks.size(); b = next.fetch_add(1)) {
      const Block& block = blocks[b];
      if (direct[block.tensor] != nullptr) {
        direct[block.tensor](scalars, args.tensors[block.tensor], block.begin, block.end);
      } else if (streamed[block.tensor]) {
        StreamedBlock(kernels[block.tensor], scalars, args.tensors[block.tensor], block.begin,
                      block.end);
      } else {
        kernels[block.tensor](scalars, args.tensors[block.tensor], block.begin, block.end);
      }
    }
    StreamFence();  // the streamed stores are seen by whoever joins this thread
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
