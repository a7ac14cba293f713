// Runner::Scalar, the tensor a Python number in a program becomes: on a device it is filled
// by a kernel (Backend::Fill), with no host-to-device copy and no synchronisation, and a
// backend without Fill still gets the right value through a copy.
#include <cstring>

#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"
#include "server/core/runner.h"

namespace paramd::core {
namespace {

// Host memory posing as cuda:0, counting the round trips a GPU would pay for.
class CountingDevice final : public kernels::Backend {
 public:
  explicit CountingDevice(bool has_fill) : has_fill_(has_fill) {}
  Device device() const override { return Device::Cuda(0); }
  absl::StatusOr<void*> Allocate(size_t n) override { return cpu_.Allocate(n); }
  void Free(void* data, size_t n) override { cpu_.Free(data, n); }
  absl::Status CopyFromHost(void* d, const void* s, size_t n) override {
    ++copies_from_host;
    return cpu_.CopyFromHost(d, s, n);
  }
  absl::Status CopyToHost(void* d, const void* s, size_t n) override {
    return cpu_.CopyToHost(d, s, n);
  }
  absl::Status CopyWithinDevice(void* d, const void* s, size_t n) override {
    return cpu_.CopyWithinDevice(d, s, n);
  }
  size_t bytes_in_use() const override { return cpu_.bytes_in_use(); }
  void SetMemoryLimit(size_t n) override { cpu_.SetMemoryLimit(n); }
  absl::Status Supports(const kernels::OpQuery& q) const override {
    if (q.kind == kernels::OpKind::kFill && !has_fill_) return Unsupported(q);
    return cpu_.Supports(q);
  }
  absl::Status Fill(const kernels::FillArgs& a) override {
    return has_fill_ ? cpu_.Fill(a) : Backend::Fill(a);
  }
  absl::Status Synchronize() override {
    ++synchronizes;
    return absl::OkStatus();
  }

  int copies_from_host = 0;
  int synchronizes = 0;

 private:
  const bool has_fill_;
  kernels::CpuBackend cpu_;
};

double ReadBack(CountingDevice& device, const Tensor& t) {
  EXPECT_EQ(t.dim(), 0);
  EXPECT_EQ(t.device(), Device::Cuda(0));
  if (t.dtype() == DType::kInt64) {
    int64_t v = 0;
    EXPECT_TRUE(device.CopyToHost(&v, t.data(), sizeof(v)).ok());
    return static_cast<double>(v);
  }
  float v = 0;
  EXPECT_EQ(t.dtype(), DType::kFloat32);
  EXPECT_TRUE(device.CopyToHost(&v, t.data(), sizeof(v)).ok());
  return v;
}

TEST(RunnerScalarTest, APythonNumberOnADeviceCostsNoCopyAndNoWait) {
  CountingDevice device(/*has_fill=*/true);
  kernels::SetBackendForTesting(Device::Cuda(0), &device);
  Runner runner(&device, Device::Cuda(0), ForwardOptions{});
  auto half = runner.Scalar(DType::kFloat32, 0.5);
  auto count = runner.Scalar(DType::kInt64, 7);
  ASSERT_TRUE(half.ok()) << half.status();
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(device.copies_from_host, 0);
  EXPECT_EQ(device.synchronizes, 0);
  EXPECT_EQ(ReadBack(device, *half), 0.5);
  EXPECT_EQ(ReadBack(device, *count), 7);
  kernels::SetBackendForTesting(Device::Cuda(0), nullptr);
}

TEST(RunnerScalarTest, ABackendWithoutFillGetsTheValueByCopy) {
  CountingDevice device(/*has_fill=*/false);
  kernels::SetBackendForTesting(Device::Cuda(0), &device);
  Runner runner(&device, Device::Cuda(0), ForwardOptions{});
  auto value = runner.Scalar(DType::kFloat32, -3.25);
  ASSERT_TRUE(value.ok()) << value.status();
  EXPECT_EQ(device.copies_from_host, 1);
  EXPECT_EQ(ReadBack(device, *value), -3.25);
  kernels::SetBackendForTesting(Device::Cuda(0), nullptr);
}

TEST(FillBitsTest, ConvertsAsTensorToConvertsAPythonNumber) {
  auto as = [](DType dtype, double value) { return kernels::FillBits(dtype, value); };
  float f = 0;
  const uint64_t f_bits = as(DType::kFloat32, 1.5);
  std::memcpy(&f, &f_bits, 4);
  EXPECT_EQ(f, 1.5f);
  EXPECT_EQ(as(DType::kFloat16, 1.0), 0x3C00u);
  EXPECT_EQ(as(DType::kBFloat16, -2.0), 0xC000u);
  EXPECT_EQ(as(DType::kInt64, -2.7), static_cast<uint64_t>(int64_t{-2}));  // toward zero
  EXPECT_EQ(as(DType::kInt32, 3.9), 3u);
  EXPECT_EQ(as(DType::kBool, 0.25), 1u);
  EXPECT_EQ(as(DType::kBool, 0.0), 0u);
  EXPECT_EQ(as(DType::kUInt8, 255.0), 255u);
}

}  // namespace
}  // namespace paramd::core
