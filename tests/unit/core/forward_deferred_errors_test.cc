// A forward pass on a device that reports errors late, as the CUDA backend reports a bad
// embedding index (Note [Work across threads] in kernels/backend.h): the error comes from
// the pass's final synchronization, the pass synchronizes on every exit (its caller then
// drops the pinned model), and what one request left unreported never reaches the next.
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "base/status_macros.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/core/forward.h"
#include "server/core/model.h"
#include "tests/unit/core/test_util.h"

namespace paramd::core {
namespace {

using ::testing::HasSubstr;
using testing::Build;
using testing::MakeTensor;
using testing::Values;

// The CPU kernels posing as cuda:0, whose embedding defers its index error to the next
// Synchronize or CopyToHost (and writes zeros for the bad rows meanwhile).
class DeferringDevice final : public kernels::Backend {
 public:
  Device device() const override { return Device::Cuda(0); }
  absl::StatusOr<void*> Allocate(size_t n) override { return cpu_.Allocate(n); }
  void Free(void* data, size_t n) override { cpu_.Free(data, n); }
  absl::Status CopyFromHost(void* d, const void* s, size_t n) override {
    return cpu_.CopyFromHost(d, s, n);
  }
  absl::Status CopyToHost(void* d, const void* s, size_t n) override {
    PARAMD_RETURN_IF_ERROR(cpu_.CopyToHost(d, s, n));
    return TakeDeferred();
  }
  absl::Status CopyWithinDevice(void* d, const void* s, size_t n) override {
    return cpu_.CopyWithinDevice(d, s, n);
  }
  size_t bytes_in_use() const override { return cpu_.bytes_in_use(); }
  void SetMemoryLimit(size_t n) override { cpu_.SetMemoryLimit(n); }
  absl::Status Supports(const kernels::OpQuery& q) const override { return cpu_.Supports(q); }
  absl::Status Gemm(const kernels::GemmArgs& a) override { return cpu_.Gemm(a); }
  absl::Status Unary(const kernels::UnaryArgs& a) override { return cpu_.Unary(a); }
  absl::Status Binary(const kernels::BinaryArgs& a) override { return cpu_.Binary(a); }
  absl::Status Convert(const kernels::ConvertArgs& a) override { return cpu_.Convert(a); }
  absl::Status Fill(const kernels::FillArgs& a) override { return cpu_.Fill(a); }
  absl::Status Embedding(const kernels::EmbeddingArgs& a) override {
    const absl::Status status = cpu_.Embedding(a);
    if (status.code() != absl::StatusCode::kInvalidArgument) return status;
    std::memset(a.output.data, 0, a.output.numel() * ElementSize(a.output.dtype));
    deferred = status;
    return absl::OkStatus();
  }
  absl::Status Synchronize() override {
    ++synchronizes;
    return TakeDeferred();
  }
  void DiscardDeferredErrors() override {
    ++discards;
    deferred = absl::OkStatus();
  }

  absl::Status deferred;
  int synchronizes = 0;
  int discards = 0;

 private:
  absl::Status TakeDeferred() {
    absl::Status status = deferred;
    deferred = absl::OkStatus();
    return status;
  }

  kernels::CpuBackend cpu_;
};

class ForwardDeferredErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override { kernels::SetBackendForTesting(Device::Cuda(0), &device_); }
  void TearDown() override { kernels::SetBackendForTesting(Device::Cuda(0), nullptr); }

  // Embedding(5, 2) followed by Linear(in_features), on the device.
  std::shared_ptr<Module> EmbeddingThenLinear(int in_features) {
    auto model = Build(absl::StrCat(
        R"({"type": "Sequential", "children": [)",
        R"({"type": "Embedding", "args": {"num_embeddings": 5, "embedding_dim": 2}},)",
        R"({"type": "Linear", "args": {"in_features": )", in_features,
        R"(, "out_features": 3}}]})"), 3);
    EXPECT_TRUE(MoveUnpublishedTree(model, Device::Cuda(0)).ok());
    return model;
  }

  absl::StatusOr<ForwardResult> Run(const Module& model, std::vector<double> indices,
                                    ForwardOptions options = {}) {
    const int64_t n = static_cast<int64_t>(indices.size());
    return Forward(model, {{"input", MakeTensor({n}, std::move(indices), DType::kInt64)}},
                   options);
  }

  DeferringDevice device_;
};

TEST_F(ForwardDeferredErrorsTest, ABadIndexIsReportedAtTheEndOfThePass) {
  auto model = EmbeddingThenLinear(2);
  const absl::StatusOr<ForwardResult> bad = Run(*model, {1, 7});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("index out of range in self"));
  // The same thread's next request is unaffected.
  const absl::StatusOr<ForwardResult> good = Run(*model, {1, 4});
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(Values(good->outputs[0].tensor).size(), 6u);
}

// The pass fails later for a reason of its own (the Linear's shapes): it still waits for its
// queued work, and the earlier op's error is the one reported, as on the CPU.
TEST_F(ForwardDeferredErrorsTest, AFailedPassStillSynchronizesAndReportsTheEarlierError) {
  auto model = EmbeddingThenLinear(4);
  device_.synchronizes = 0;
  const absl::StatusOr<ForwardResult> bad = Run(*model, {1, 7});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("index out of range in self"));
  EXPECT_GE(device_.synchronizes, 1);
  // With good indices the Linear's own error is what comes back, after a synchronization.
  device_.synchronizes = 0;
  const absl::StatusOr<ForwardResult> shapes = Run(*model, {1, 4});
  EXPECT_EQ(shapes.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(shapes.status().message(), HasSubstr("cannot be multiplied"));
  EXPECT_GE(device_.synchronizes, 1);
  EXPECT_TRUE(device_.deferred.ok());
}

TEST_F(ForwardDeferredErrorsTest, ACancelledPassStillSynchronizes) {
  auto model = EmbeddingThenLinear(2);
  device_.synchronizes = 0;
  const absl::StatusOr<ForwardResult> cancelled =
      Run(*model, {1, 4}, ForwardOptions{.cancelled = [] { return true; }});
  EXPECT_EQ(cancelled.status().code(), absl::StatusCode::kCancelled);
  EXPECT_GE(device_.synchronizes, 1);
}

// An error an earlier request on the thread left unreported (it failed before it
// synchronized) is dropped when the next request starts, not reported as its own.
TEST_F(ForwardDeferredErrorsTest, AnEarlierRequestsUnreportedErrorDoesNotLeak) {
  auto model = EmbeddingThenLinear(2);
  device_.discards = 0;
  device_.deferred = absl::InvalidArgumentError("index out of range in self");
  const absl::StatusOr<ForwardResult> good = Run(*model, {0, 3});
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(device_.discards, 1);
}

}  // namespace
}  // namespace paramd::core
