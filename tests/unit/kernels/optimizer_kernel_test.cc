// The CPU optimizer step kernel: its threaded split over a group's tensors computes what the
// same kernel computes block by block, and it refuses what it cannot run.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"

namespace paramd::kernels {
namespace {

struct Arrays {
  std::vector<float> param, grad, m, v, param_out, m_out, v_out;
  explicit Arrays(int64_t n) : param(n), grad(n), m(n), v(n), param_out(n), m_out(n), v_out(n) {
    for (int64_t i = 0; i < n; ++i) {
      param[i] = static_cast<float>((i * 7919) % 1000) / 500.0f - 1.0f;
      grad[i] = static_cast<float>((i * 104729) % 997) / 997.0f - 0.5f;
      m[i] = grad[i] * 0.1f;
      v[i] = grad[i] * grad[i] * 0.01f;
    }
  }
  OptimizerTensor Slice(int64_t begin, int64_t end) {
    OptimizerTensor t;
    t.numel = end - begin;
    t.param = param.data() + begin;
    t.grad = grad.data() + begin;
    t.param_out = param_out.data() + begin;
    t.state_in[0] = m.data() + begin;
    t.state_in[1] = v.data() + begin;
    t.state_out[0] = m_out.data() + begin;
    t.state_out[1] = v_out.data() + begin;
    t.step_size = 1e-3 / (1 - 0.9 * 0.9 * 0.9);
    t.bias_correction2_sqrt = 0.05;
    return t;
  }
};

TEST(OptimizerKernelTest, ThreadedGroupsMatchTheBlockByBlockResult) {
  CpuBackend cpu;
  const int64_t sizes[] = {3, 1 << 20, 65537, (1 << 19) + 5};
  std::vector<Arrays> whole, pieces;
  OptimizerStepArgs fused{.algorithm = OptimizerAlgorithm::kAdam, .lr = 1e-3, .weight_decay = 0.01};
  OptimizerStepArgs serial = fused;
  for (int64_t n : sizes) {
    whole.emplace_back(n);
    pieces.emplace_back(n);
  }
  for (size_t i = 0; i < whole.size(); ++i) fused.tensors.push_back(whole[i].Slice(0, sizes[i]));
  ASSERT_TRUE(cpu.OptimizerStep(fused).ok());
  for (size_t i = 0; i < pieces.size(); ++i) {
    for (int64_t begin = 0; begin < sizes[i]; begin += 1000) {
      serial.tensors = {pieces[i].Slice(begin, std::min(sizes[i], begin + 1000))};
      ASSERT_TRUE(cpu.OptimizerStep(serial).ok());
    }
  }
  for (size_t i = 0; i < whole.size(); ++i) {
    EXPECT_EQ(std::memcmp(whole[i].param_out.data(), pieces[i].param_out.data(), sizes[i] * 4), 0);
    EXPECT_EQ(std::memcmp(whole[i].v_out.data(), pieces[i].v_out.data(), sizes[i] * 4), 0);
  }
}

// The first index where `a` and `b` differ in their bits, any NaN matching any other (a
// NaN's sign and payload are not defined by the arithmetic: compilers fold a negation into
// a fused multiply-subtract, which keeps the NaN's sign); `n` when none does.
int64_t FirstDifference(const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    if (std::memcmp(a + i, b + i, sizeof(float)) != 0) return i;
  }
  return n;
}

// Tensors past kStreamElements with 32-byte aligned outputs take the streamed path (Note
// [Streamed optimizer outputs]); slices of 1000 elements never do. Both must agree bit for
// bit, for every state the kernels write (SGD's momentum buffer on its first and later
// steps, Adam's three with amsgrad), including a tail that is not a whole run or vector.
TEST(OptimizerKernelTest, StreamedLargeTensorsMatchTheSliceBySliceResult) {
  CpuBackend cpu;
  const int64_t n = (int64_t{1} << 20) + 4 * 512 + 13;
  struct Aligned {
    std::vector<float> storage;
    float* data;
    explicit Aligned(int64_t size) : storage(static_cast<size_t>(size) + 16) {
      const uintptr_t address = reinterpret_cast<uintptr_t>(storage.data());
      data = storage.data() + ((64 - address % 64) % 64) / sizeof(float);
    }
    Aligned(Aligned&&) = default;  // the buffer moves with `storage`: `data` stays valid
    Aligned(const Aligned&) = delete;
  };
  auto filled = [&](int seed) {
    Aligned a(n);
    for (int64_t i = 0; i < n; ++i) {
      a.data[i] = static_cast<float>(((i + seed) * 7919) % 1000) / 500.0f - 1.0f;
    }
    return a;
  };
  const Aligned param = filled(1);
  Aligned grad = filled(2);
  // NaN and infinity propagate through either path alike (torch.maximum's NaN rule too).
  grad.data[17] = std::numeric_limits<float>::quiet_NaN();
  grad.data[n - 3] = std::numeric_limits<float>::infinity();
  Aligned state_in[3] = {filled(3), filled(4), filled(5)};
  for (Aligned& v : state_in) {
    for (int64_t i = 0; i < n; ++i) v.data[i] = v.data[i] * v.data[i];  // Adam's v >= 0
  }
  OptimizerStepArgs sgd{.algorithm = OptimizerAlgorithm::kSgd, .lr = 0.1, .weight_decay = 0.01,
                        .momentum = 0.9, .nesterov = true};
  OptimizerStepArgs adam{.algorithm = OptimizerAlgorithm::kAdam, .lr = 1e-3, .amsgrad = true};
  // Each Adam variant has its own streamed kernel where the CPU has AVX-512.
  OptimizerStepArgs adam_l2 = adam;
  adam_l2.amsgrad = false;
  adam_l2.maximize = true;
  adam_l2.weight_decay = 0.01;
  OptimizerStepArgs adamw = adam_l2;
  adamw.maximize = false;
  adamw.decoupled_weight_decay = true;
  for (const OptimizerStepArgs& base : {sgd, adam, adam_l2, adamw}) {
    for (const bool first_step : {true, false}) {
      std::vector<Aligned> whole, sliced;
      for (int k = 0; k < 4; ++k) {
        whole.emplace_back(n);
        sliced.emplace_back(n);
      }
      auto slice = [&](std::vector<Aligned>& out, int64_t begin, int64_t end) {
        OptimizerTensor t;
        t.numel = end - begin;
        t.param = param.data + begin;
        t.grad = grad.data + begin;
        t.param_out = out[0].data + begin;
        const int states = base.algorithm == OptimizerAlgorithm::kSgd ? 1 : 3;
        for (int k = 0; k < states; ++k) {
          t.state_in[k] = first_step && base.algorithm == OptimizerAlgorithm::kSgd
                              ? nullptr
                              : state_in[k].data + begin;
          t.state_out[k] = out[k + 1].data + begin;
        }
        t.first_step = first_step;
        t.step_size = 1e-3 / (1 - 0.9 * 0.9);
        t.bias_correction2_sqrt = 0.04;
        return t;
      };
      OptimizerStepArgs args = base;
      args.tensors = {slice(whole, 0, n)};
      ASSERT_TRUE(cpu.OptimizerStep(args).ok());
      for (int64_t begin = 0; begin < n; begin += 1000) {
        args.tensors = {slice(sliced, begin, std::min(n, begin + 1000))};
        ASSERT_TRUE(cpu.OptimizerStep(args).ok());
      }
      const int outputs = base.algorithm == OptimizerAlgorithm::kSgd ? 2 : 4;
      for (int k = 0; k < outputs; ++k) {
        EXPECT_EQ(FirstDifference(whole[k].data, sliced[k].data, n), n)
            << "output " << k << (first_step ? " (first step)" : "");
      }
    }
  }
}

TEST(OptimizerKernelTest, RefusesOtherDtypesAndMissingState) {
  CpuBackend cpu;
  EXPECT_EQ(cpu.Supports({.kind = OpKind::kOptimizerStep, .dtype = DType::kFloat16}).code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_TRUE(cpu.Supports({.kind = OpKind::kOptimizerStep, .dtype = DType::kFloat32}).ok());
  Arrays arrays(4);
  OptimizerStepArgs args{.algorithm = OptimizerAlgorithm::kSgd, .momentum = 0.9};
  args.tensors = {arrays.Slice(0, 4)};
  args.tensors[0].state_in[0] = nullptr;  // a later momentum step needs the buffer
  EXPECT_EQ(cpu.OptimizerStep(args).code(), absl::StatusCode::kInvalidArgument);
  args.tensors[0].first_step = true;  // the first one does not
  EXPECT_TRUE(cpu.OptimizerStep(args).ok());
  EXPECT_EQ(arrays.m_out, arrays.grad);
}

// torch 2.15's single-tensor steps with each hyperparameter at +-1e39 (past float32, but
// finite): where ATen converts the scalar with a range check the step raises, elsewhere it
// rounds to infinity and steps on.
TEST(OptimizerKernelTest, ScalarsPastFloatsRangeAreRefusedWhereTorchChecksThem) {
  using A = OptimizerAlgorithm;
  constexpr double kBig = 1e39;
  const OptimizerStepArgs sgd{
      .algorithm = A::kSgd, .lr = 0.1, .weight_decay = 0.1, .momentum = 0.9};
  const OptimizerStepArgs adam{.algorithm = A::kAdam, .lr = 0.1, .weight_decay = 0.1};
  struct Case {
    const char* what;
    OptimizerStepArgs args;
    bool first_step;
    bool refused;
  };
  auto with = [](OptimizerStepArgs args, auto change) {
    change(args);
    return args;
  };
  const Case cases[] = {
      {"sgd lr", with(sgd, [&](auto& a) { a.lr = kBig; }), false, true},
      {"sgd -lr", with(sgd, [&](auto& a) { a.lr = -kBig; }), false, true},
      {"sgd inf lr", with(sgd, [&](auto& a) { a.lr = INFINITY; }), false, false},
      {"sgd nan lr", with(sgd, [&](auto& a) { a.lr = NAN; }), false, false},
      {"sgd weight_decay", with(sgd, [&](auto& a) { a.weight_decay = kBig; }), false, true},
      {"sgd momentum", with(sgd, [&](auto& a) { a.momentum = kBig; }), false, false},
      {"sgd nesterov momentum", with(sgd, [&](auto& a) { a.momentum = -kBig, a.nesterov = true; }),
       false, true},
      {"sgd dampening", with(sgd, [&](auto& a) { a.dampening = kBig; }), false, true},
      {"sgd dampening, no buffer", with(sgd, [&](auto& a) { a.dampening = kBig; }), true, false},
      {"adam lr", with(adam, [&](auto& a) { a.lr = kBig; }), false, true},
      {"adam weight_decay", with(adam, [&](auto& a) { a.weight_decay = -kBig; }), false, true},
      {"adamw weight_decay",
       with(adam, [&](auto& a) { a.weight_decay = kBig, a.decoupled_weight_decay = true; }), false,
       false},
      {"adam eps", with(adam, [&](auto& a) { a.eps = kBig; }), false, false},
      {"adam beta1", with(adam, [&](auto& a) { a.beta1 = kBig; }), false, true},
      {"adam beta2", with(adam, [&](auto& a) { a.beta2 = -kBig; }), false, true},
  };
  CpuBackend cpu;
  for (const Case& c : cases) {
    Arrays arrays(4);
    OptimizerStepArgs args = c.args;
    OptimizerTensor t = arrays.Slice(0, 4);
    t.first_step = c.first_step;
    t.step_size = args.lr / (1 - args.beta1);
    args.tensors = {t};
    const absl::Status status = cpu.OptimizerStep(args);
    if (c.refused) {
      EXPECT_EQ(status.message(), "value cannot be converted to type float without overflow")
          << c.what;
      EXPECT_EQ(arrays.param_out, std::vector<float>(4, 0)) << c.what;
    } else {
      EXPECT_TRUE(status.ok()) << c.what << ": " << status;
    }
  }
}

}  // namespace
}  // namespace paramd::kernels
