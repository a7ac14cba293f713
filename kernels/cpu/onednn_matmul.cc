#include "kernels/cpu/onednn_matmul.h"

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

struct Prepared {
  memory::desc a, b, bias, c, scratchpad;
  dnnl::matmul primitive;
};

using Key = std::tuple<int64_t, int64_t, int64_t, bool, bool, int64_t, int64_t, int64_t, bool>;

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
      prepared->a = Matrix(s.m, s.k, s.lda, s.trans_a);
      prepared->b = Matrix(s.k, s.n, s.ldb, s.trans_b);
      prepared->c = Matrix(s.m, s.n, s.ldc, false);
      if (s.has_bias) prepared->bias = Matrix(1, s.n, s.n, false);
      dnnl::primitive_attr attr;
      attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
      dnnl::matmul::primitive_desc pd(
          dnnl::matmul::desc(prepared->a, prepared->b, prepared->bias, prepared->c), attr,
          engine_);
      prepared->scratchpad = pd.scratchpad_desc();
      prepared->primitive = dnnl::matmul(pd);
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
  // op(X) is rows×cols; X is stored row-major with leading dimension ld.
  static memory::desc Matrix(int64_t rows, int64_t cols, int64_t ld, bool transposed) {
    const memory::dims strides = transposed ? memory::dims{1, ld} : memory::dims{ld, 1};
    return memory::desc({rows, cols}, memory::data_type::f32, strides);
  }

  dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
  absl::Mutex mu_;
  absl::flat_hash_map<Key, std::shared_ptr<const Prepared>> cache_ ABSL_GUARDED_BY(mu_);
};

Primitives& ThePrimitives() {
  static Primitives* const primitives = new Primitives();
  return *primitives;
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
    // Per thread: a stream, and a scratchpad that grows to the largest primitive's need
    // (half a MiB for a 4096-wide layer).
    thread_local dnnl::stream stream(engine);
    thread_local std::vector<uint8_t> scratch;
    if (scratch.size() < p.scratchpad.get_size()) scratch.resize(p.scratchpad.get_size());
    std::unordered_map<int, memory> args = {
        {DNNL_ARG_SRC, memory(p.a, engine, const_cast<float*>(a))},
        {DNNL_ARG_WEIGHTS, memory(p.b, engine, const_cast<float*>(b))},
        {DNNL_ARG_DST, memory(p.c, engine, c)},
        {DNNL_ARG_SCRATCHPAD, memory(p.scratchpad, engine, scratch.data())}};
    if (shape.has_bias) {
      args.emplace(DNNL_ARG_BIAS, memory(p.bias, engine, const_cast<float*>(bias)));
    }
    p.primitive.execute(stream, args);
    stream.wait();
  } catch (const dnnl::error& e) {
    return absl::InternalError(absl::StrCat("oneDNN matmul: ", e.what()));
  }
  return absl::OkStatus();
}

}  // namespace paramd::kernels::cpu
