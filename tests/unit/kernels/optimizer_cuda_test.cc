// The CUDA optimizer step against the CPU backend's, bit for bit after every one of many
// steps (both round as Note [Optimizer arithmetic] says; NaN only has to stay NaN, its
// payload may differ). Every variant: SGD with momentum, dampening, nesterov, weight decay
// and maximize; Adam with amsgrad, L2 weight decay and maximize (a beta1 that takes lerp's
// other branch); AdamW. Each group has several tensors of odd sizes, some crossing the
// kernel's chunks, some one element into their allocation (not 16-byte aligned, so the
// scalar path runs), an empty one, NaN and infinities in gradients and parameters; a guard
// element either side of each view must stay untouched. Out of place and in place (an
// output over its own input). Without a GPU every case skips; tests/gpu/run.sh runs them.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"

namespace paramd::kernels {
namespace {

constexpr float kGuard = 12345.0f;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// Raw float32 memory on one backend: `offset` guard elements, the view's `n`, one guard.
class Buffer {
 public:
  Buffer(Backend* backend, int64_t n, int offset)
      : backend_(backend),
        n_(n),
        offset_(offset),
        bytes_(static_cast<size_t>(n + offset + 1) * sizeof(float)) {
    auto data = backend_->Allocate(bytes_);
    EXPECT_TRUE(data.ok()) << data.status();
    data_ = data.ok() ? static_cast<float*>(*data) : nullptr;
  }
  ~Buffer() {
    if (data_ != nullptr) backend_->Free(data_, bytes_);
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  float* view() const { return data_ + offset_; }
  // The view's values; the guards get kGuard.
  void Upload(const std::vector<float>& values) {
    std::vector<float> all(bytes_ / sizeof(float), kGuard);
    if (!values.empty()) std::copy(values.begin(), values.end(), all.begin() + offset_);
    EXPECT_TRUE(backend_->CopyFromHost(data_, all.data(), bytes_).ok());
  }
  // Everything, guards included.
  std::vector<float> Download() const {
    std::vector<float> all(bytes_ / sizeof(float));
    EXPECT_TRUE(backend_->Synchronize().ok());
    EXPECT_TRUE(backend_->CopyToHost(all.data(), data_, bytes_).ok());
    return all;
  }

 private:
  Backend* backend_;
  int64_t n_;
  int offset_;
  size_t bytes_;
  float* data_ = nullptr;
};

// Equal bits, or NaN on both sides.
::testing::AssertionResult SameFloats(const std::vector<float>& gpu,
                                      const std::vector<float>& cpu) {
  if (gpu.size() != cpu.size()) return ::testing::AssertionFailure() << "sizes differ";
  for (size_t i = 0; i < gpu.size(); ++i) {
    if (std::isnan(gpu[i]) && std::isnan(cpu[i])) continue;
    uint32_t a, b;
    std::memcpy(&a, &gpu[i], 4);
    std::memcpy(&b, &cpu[i], 4);
    if (a != b) {
      return ::testing::AssertionFailure()
             << "at " << i << ": cuda " << absl::StrCat(gpu[i]) << " (0x" << std::hex << a
             << "), cpu " << absl::StrCat(cpu[i]) << " (0x" << b << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

// Cheap deterministic values in [-1, 1).
float Draw(uint64_t seed, int64_t i) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(i) * 0xBF58476D1CE4E5B9ull;
  z ^= z >> 31;
  z *= 0x94D049BB133111EBull;
  z ^= z >> 29;
  return static_cast<float>(z >> 40) * 0x1p-23f - 1.0f;
}

// One backend's copy of a group: per tensor the parameter, gradient and state, each twice
// (read one, write the other; in place: one).
struct Group {
  struct Slot {
    int64_t n;
    std::unique_ptr<Buffer> param[2], grad, state[3][2];
  };
  Backend* backend;
  std::vector<Slot> slots;
};

int StateCount(const OptimizerStepArgs& args) {
  return args.algorithm == OptimizerAlgorithm::kSgd ? (args.momentum != 0 ? 1 : 0)
                                                    : (args.amsgrad ? 3 : 2);
}

Group MakeGroup(Backend* backend, const std::vector<int64_t>& sizes, bool in_place) {
  Group group{backend, {}};
  for (size_t i = 0; i < sizes.size(); ++i) {
    const int64_t n = sizes[i];
    const int offset = i % 2 == 1 ? 1 : 4;  // odd tensors: 4 bytes in, never 16-byte aligned
    Group::Slot slot{n, {}, nullptr, {}};
    for (int copy = 0; copy < (in_place ? 1 : 2); ++copy) {
      slot.param[copy] = std::make_unique<Buffer>(backend, n, offset);
      for (auto& state : slot.state) state[copy] = std::make_unique<Buffer>(backend, n, offset);
    }
    slot.grad = std::make_unique<Buffer>(backend, n, offset);
    std::vector<float> param(n), zeros(n, 0.0f), poison(n, kNaN);
    for (int64_t j = 0; j < n; ++j) param[j] = Draw(1000 + i, j);
    if (n > 7) param[7] = kNaN;  // a NaN parameter stays NaN
    slot.param[0]->Upload(param);
    for (auto& state : slot.state) state[0]->Upload(zeros);  // torch's zeros at step 1
    if (!in_place) {
      // Outputs start as NaN, so an element the kernel skips cannot pass.
      slot.param[1]->Upload(poison);
      for (auto& state : slot.state) state[1]->Upload(poison);
    }
    group.slots.push_back(std::move(slot));
  }
  return group;
}

// The args of step `step` (1-based): read copy `from`, write copy `to`.
OptimizerStepArgs StepArgs(const OptimizerStepArgs& options, Group& group, int step, int from,
                           int to) {
  OptimizerStepArgs args = options;
  const double t = step;
  for (Group::Slot& slot : group.slots) {
    OptimizerTensor tensor;
    tensor.numel = slot.n;
    tensor.param = slot.param[from]->view();
    tensor.grad = slot.grad->view();
    tensor.param_out = slot.param[to]->view();
    for (int k = 0; k < StateCount(options); ++k) {
      tensor.state_in[k] = slot.state[k][from]->view();
      tensor.state_out[k] = slot.state[k][to]->view();
    }
    tensor.first_step = step == 1;
    if (tensor.first_step && options.algorithm == OptimizerAlgorithm::kSgd) {
      tensor.state_in[0] = nullptr;  // SGD's `buf is None`: nothing to read
    }
    // As server/core/optim computes them, in double.
    tensor.step_size = options.lr / (1 - std::pow(options.beta1, t));
    tensor.bias_correction2_sqrt = std::pow(1 - std::pow(options.beta2, t), 0.5);
    args.tensors.push_back(tensor);
  }
  return args;
}

std::vector<float> Gradient(size_t tensor, int64_t n, int step) {
  std::vector<float> grad(n);
  for (int64_t j = 0; j < n; ++j) grad[j] = Draw(step * 7919 + tensor, j) * 2.0f;
  // Special values at fixed places and steps: each poisons its element from then on.
  if (tensor == 2 && step == 3 && n > 1) grad[1] = kNaN;
  if (tensor == 3 && step == 5 && n > 0) grad[n - 1] = kInf;
  if (tensor == 5 && step == 2 && n > 8000) grad[8000] = -kInf;
  if (tensor == 6 && step >= 4 && n > 0) grad[0] = 0.0f;
  return grad;
}

Backend* CudaOrNull() {
  absl::StatusOr<Backend*> backend = GetBackend(Device::Cuda(0));
  return backend.ok() ? *backend : nullptr;
}

// Runs `steps` steps of `options` over tensors of `sizes` on the GPU and the CPU, comparing
// every parameter and state element (and the guards) after each step.
void CompareSteps(Backend* gpu, const OptimizerStepArgs& options, const std::vector<int64_t>& sizes,
                  int steps, bool in_place) {
  Backend* cpu = *GetBackend(Device::Cpu());
  Group on_gpu = MakeGroup(gpu, sizes, in_place);
  Group on_cpu = MakeGroup(cpu, sizes, in_place);
  for (int step = 1; step <= steps; ++step) {
    const int from = in_place ? 0 : (step - 1) % 2, to = in_place ? 0 : step % 2;
    for (size_t i = 0; i < sizes.size(); ++i) {
      const std::vector<float> grad = Gradient(i, sizes[i], step);
      on_gpu.slots[i].grad->Upload(grad);
      on_cpu.slots[i].grad->Upload(grad);
    }
    const absl::Status ran = gpu->OptimizerStep(StepArgs(options, on_gpu, step, from, to));
    ASSERT_TRUE(ran.ok()) << ran;
    ASSERT_TRUE(cpu->OptimizerStep(StepArgs(options, on_cpu, step, from, to)).ok());
    for (size_t i = 0; i < sizes.size(); ++i) {
      const std::string where = absl::StrCat("step ", step, ", tensor ", i, " of ", sizes[i]);
      ASSERT_TRUE(
          SameFloats(on_gpu.slots[i].param[to]->Download(), on_cpu.slots[i].param[to]->Download()))
          << "parameter, " << where;
      for (int k = 0; k < StateCount(options); ++k) {
        ASSERT_TRUE(SameFloats(on_gpu.slots[i].state[k][to]->Download(),
                               on_cpu.slots[i].state[k][to]->Download()))
            << "state " << k << ", " << where;
      }
    }
  }
}

struct Variant {
  std::string name;
  OptimizerStepArgs options;
};

std::vector<Variant> Variants() {
  using A = OptimizerAlgorithm;
  return {
      {"Sgd", {.algorithm = A::kSgd, .lr = 0.1}},
      {"SgdMomentum", {.algorithm = A::kSgd, .lr = 0.1, .momentum = 0.9}},
      {"SgdDampeningWeightDecay",
       {.algorithm = A::kSgd, .lr = 0.05, .weight_decay = 0.01, .momentum = 0.9, .dampening = 0.3}},
      {"SgdNesterovWeightDecayMaximize",
       {.algorithm = A::kSgd,
        .lr = 0.1,
        .weight_decay = 1e-4,
        .maximize = true,
        .momentum = 0.9,
        .nesterov = true}},
      {"SgdWeightDecayMaximize",
       {.algorithm = A::kSgd, .lr = 0.3, .weight_decay = 0.1, .maximize = true}},
      {"Adam", {.algorithm = A::kAdam, .lr = 1e-3}},
      {"AdamAmsgradWeightDecay",
       {.algorithm = A::kAdam, .lr = 1e-2, .weight_decay = 0.1, .amsgrad = true}},
      {"AdamMaximizeLargeLerpWeight",
       {.algorithm = A::kAdam, .lr = 1e-2, .maximize = true, .beta1 = 0.3, .beta2 = 0.99}},
      {"AdamW",
       {.algorithm = A::kAdam, .lr = 1e-3, .weight_decay = 0.01, .decoupled_weight_decay = true}},
      {"AdamWAmsgradMaximize",
       {.algorithm = A::kAdam,
        .lr = 1e-2,
        .weight_decay = 0.05,
        .maximize = true,
        .eps = 1e-6,
        .amsgrad = true,
        .decoupled_weight_decay = true}},
  };
}

// Skips without a GPU.
class CudaOptimizerFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    gpu_ = CudaOrNull();
    if (gpu_ == nullptr) GTEST_SKIP() << "no usable GPU: " << GetBackend(Device::Cuda(0)).status();
  }
  Backend* gpu_ = nullptr;
};

class CudaOptimizerTest : public CudaOptimizerFixture,
                          public ::testing::WithParamInterface<Variant> {};
// Small cases, quick enough for the sanitizers (tests/gpu/run.sh).
class CudaOptimizerSmallTest : public CudaOptimizerFixture {};

// Sizes: one element, fewer than a vector, one vector, odd, one chunk exactly (8192), a
// chunk and a tail, several chunks, and empty; the 8193-element tensor holds the -inf.
const std::vector<int64_t> kSizes = {1, 3, 4, 1021, 8192, 8193, 20483, 0, 65537};

TEST_P(CudaOptimizerTest, MatchesTheCpuBitForBitOutOfPlace) {
  CompareSteps(gpu_, GetParam().options, kSizes, 25, /*in_place=*/false);
}

TEST_P(CudaOptimizerTest, MatchesTheCpuBitForBitInPlace) {
  CompareSteps(gpu_, GetParam().options, kSizes, 12, /*in_place=*/true);
}

INSTANTIATE_TEST_SUITE_P(Variants, CudaOptimizerTest, ::testing::ValuesIn(Variants()),
                         [](const auto& info) { return info.param.name; });

// More tensors than one launch's argument table holds (32): the group takes several.
TEST_F(CudaOptimizerSmallTest, ManyTensorsTakeSeveralLaunches) {
  std::vector<int64_t> sizes;
  for (int64_t n = 1; n <= 75; ++n) sizes.push_back(n * 3);
  for (const Variant& variant : Variants()) {
    SCOPED_TRACE(variant.name);
    CompareSteps(gpu_, variant.options, sizes, 3, /*in_place=*/false);
  }
}

// The CPU's checks and refusals, with the same codes.
TEST_F(CudaOptimizerSmallTest, RefusesWhatTheCpuRefuses) {
  EXPECT_TRUE(gpu_->Supports({.kind = OpKind::kOptimizerStep, .dtype = DType::kFloat32}).ok());
  EXPECT_EQ(gpu_->Supports({.kind = OpKind::kOptimizerStep, .dtype = DType::kBFloat16}).code(),
            absl::StatusCode::kUnimplemented);
  Buffer data(gpu_, 4, 0);
  OptimizerStepArgs args{.algorithm = OptimizerAlgorithm::kSgd, .momentum = 0.9};
  OptimizerTensor t;
  t.numel = 4;
  t.param = t.grad = t.param_out = data.view();
  t.state_out[0] = data.view();
  args.tensors = {t};  // a later momentum step without its buffer
  EXPECT_EQ(gpu_->OptimizerStep(args).code(), absl::StatusCode::kInvalidArgument);
  args.dtype = DType::kFloat16;
  EXPECT_EQ(gpu_->OptimizerStep(args).code(), absl::StatusCode::kUnimplemented);
  EXPECT_TRUE(gpu_->Synchronize().ok());
}

}  // namespace
}  // namespace paramd::kernels
