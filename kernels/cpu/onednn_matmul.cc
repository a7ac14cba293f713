#include "kernels/cpu/onednn_matmul.h"

#include <algorithm>
#include <memory>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace paramd::kernels::cpu {
namespace {

using dnnl::memory;

// Note [Skinny products run transposed]
// A Linear layer at a small batch is C[m×n] = X[m×k] · Wᵀ with m far below n and k: each
// weight element serves only m rows. Given that shape, oneDNN's brgemm copies the whole
// weight matrix into its blocked layout on every call (W is k-contiguous, its kernel wants
// n-contiguous panels), and the copy costs as much as the arithmetic. The same product
// transposed, Cᵀ[n×m] = W · Xᵀ, hands oneDNN W as the left operand, which its kernel reads
// in place (one broadcast per element, each serving the whole batch from registers); only
// the small Xᵀ is packed. The transposed result then goes into C through one oneDNN
// reorder, and the bias is added row by row (oneDNN's matmul takes a bias along rows only
// in its reference implementation). Measured on 64×4096×4096 (docs/kernels.md): 300 against
// 253 GFLOP/s. For m above 64, or n under 16·m, the direct product is as fast or faster.
bool RunTransposed(const MatmulShape& s) { return s.m >= 8 && s.m <= 64 && s.n >= 16 * s.m; }

struct Prepared {
  bool transposed;
  memory::desc src, weights, bias, dst, scratchpad;
  dnnl::matmul primitive;
  // Transposed only: C seen as n×m, and the reorder from dst (the n×m product) into it.
  memory::desc c_view, transpose_scratchpad;
  dnnl::reorder transpose;
};

using Key = std::tuple<int64_t, int64_t, int64_t, bool, bool, int64_t, int64_t, int64_t, bool>;

// op(X) is rows×cols; X is stored row-major with leading dimension ld. `flip` describes
// op(X)ᵀ instead, on the same memory.
memory::desc Matrix(int64_t rows, int64_t cols, int64_t ld, bool transposed, bool flip = false) {
  if (flip) return Matrix(cols, rows, ld, !transposed);
  const memory::dims strides = transposed ? memory::dims{1, ld} : memory::dims{ld, 1};
  return memory::desc({rows, cols}, memory::data_type::f32, strides);
}

class Primitives {
 public:
  const dnnl::engine& engine() const { return engine_; }

  absl::StatusOr<std::shared_ptr<const Prepared>> Get(const MatmulShape& s) {
    const Key key{s.m, s.n, s.k, s.trans_a, s.trans_b, s.lda, s.ldb, s.ldc, s.has_bias};
    {
      absl::MutexLock lock(&mu_);
      auto it = cache_.find(key);
      if (it != cache_.end()) return it->second;
    }
    // Made outside the lock: creation takes tens of microseconds, and two threads making
    // the same primitive at once only waste one.
    auto prepared = std::make_shared<Prepared>();
    try {
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      Prepared& p = *prepared;
      p.transposed = RunTransposed(s);
      if (p.transposed) {
        p.src = Matrix(s.k, s.n, s.ldb, s.trans_b, /*flip=*/true);
        p.weights = Matrix(s.m, s.k, s.lda, s.trans_a, /*flip=*/true);
        p.dst = Matrix(s.n, s.m, s.m, false);
        p.c_view = Matrix(s.m, s.n, s.ldc, false, /*flip=*/true);
        dnnl::reorder::primitive_desc transpose(engine_, p.dst, engine_, p.c_view, attr);
        p.transpose_scratchpad = transpose.scratchpad_desc();
        p.transpose = dnnl::reorder(transpose);
      } else {
        p.src = Matrix(s.m, s.k, s.lda, s.trans_a);
        p.weights = Matrix(s.k, s.n, s.ldb, s.trans_b);
        p.dst = Matrix(s.m, s.n, s.ldc, false);
        if (s.has_bias) p.bias = Matrix(1, s.n, s.n, false);
      }
      dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(p.src, p.weights, p.bias, p.dst),
                                      attr, engine_);
      p.scratchpad = pd.scratchpad_desc();
      p.primitive = dnnl::matmul(pd);
    } catch (const dnnl::error& e) {
      return absl::InternalError(absl::StrCat("oneDNN matmul ", s.m, "x", s.k, " by ", s.k,
                                              "x", s.n, ": ", e.what()));
    }
    absl::MutexLock lock(&mu_);
    // Shapes follow batch sizes; a bound keeps a daemon that sees many from growing.
    if (cache_.size() >= 1024) cache_.clear();
    cache_.emplace(key, prepared);
    return prepared;
  }

 private:
  dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
  absl::Mutex mu_;
  absl::flat_hash_map<Key, std::shared_ptr<const Prepared>> cache_ ABSL_GUARDED_BY(mu_);
};

Primitives& ThePrimitives() {
  static Primitives* const primitives = new Primitives();
  return *primitives;
}

// Grows `buffer` to at least `bytes` and returns its data.
uint8_t* AtLeast(std::vector<uint8_t>& buffer, size_t bytes) {
  if (buffer.size() < bytes) buffer.resize(bytes);
  return buffer.data();
}

}  // namespace

absl::Status OneDnnMatmul(const MatmulShape& shape, const float* a, const float* b,
                          const float* bias, float* c) {
  Primitives& primitives = ThePrimitives();
  absl::StatusOr<std::shared_ptr<const Prepared>> prepared = primitives.Get(shape);
  if (!prepared.ok()) return prepared.status();
  const Prepared& p = **prepared;
  const dnnl::engine& engine = primitives.engine();
  try {
    // Per thread: a stream, a scratchpad that grows to the largest primitive's need (half a
    // MiB for a 4096-wide layer), and the transposed product (m·n floats, m at most 64).
    thread_local dnnl::stream stream(engine);
    thread_local std::vector<uint8_t> scratch, product;
    // The matmul and the transposing reorder run one after the other, so they share it.
    uint8_t* const scratch_data = AtLeast(
        scratch, std::max(p.scratchpad.get_size(), p.transpose_scratchpad.get_size()));
    memory scratchpad(p.scratchpad, engine, scratch_data);
    const float* src = p.transposed ? b : a;
    const float* weights = p.transposed ? a : b;
    memory dst = p.transposed ? memory(p.dst, engine, AtLeast(product, p.dst.get_size()))
                              : memory(p.dst, engine, c);
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC, memory(p.src, engine, const_cast<float*>(src))},
        {DNNL_ARG_WEIGHTS, memory(p.weights, engine, const_cast<float*>(weights))},
        {DNNL_ARG_DST, dst},
        {DNNL_ARG_SCRATCHPAD, scratchpad}};
    if (!p.transposed && shape.has_bias) {
      args.emplace(DNNL_ARG_BIAS, memory(p.bias, engine, const_cast<float*>(bias)));
    }
    p.primitive.execute(stream, args);
    if (p.transposed) {
      p.transpose.execute(stream, {{DNNL_ARG_FROM, dst},
                                   {DNNL_ARG_TO, memory(p.c_view, engine, c)},
                                   {DNNL_ARG_SCRATCHPAD,
                                    memory(p.transpose_scratchpad, engine, scratch_data)}});
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("oneDNN matmul: ", e.what()));
  }
  if (p.transposed && shape.has_bias) {
    for (int64_t i = 0; i < shape.m; ++i) {
      float* row = c + i * shape.ldc;
#pragma omp simd
      for (int64_t j = 0; j < shape.n; ++j) row[j] += bias[j];
    }
  }
  return absl::OkStatus();
}

}  // namespace paramd::kernels::cpu
