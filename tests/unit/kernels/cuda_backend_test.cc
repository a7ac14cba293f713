// The CUDA backend's memory, copies and error reporting. The Status mapping runs wherever
// the backend is built; everything that needs a device skips without a GPU. The ops
// themselves are compared against the CPU in backend_ops_test.cc.
#include <cstring>
#include <numeric>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"

#include "absl/cleanup/cleanup.h"
#include "tests/unit/kernels/ops_test_util.h"

#ifdef PARAMD_WITH_CUDA
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/cudnn_conv.h"
#include "kernels/cuda/gemm.h"
#endif

namespace paramd::kernels {
namespace {

using ::testing::HasSubstr;

Backend* CudaOrSkip() {
  absl::StatusOr<Backend*> backend = GetBackend(Device::Cuda(0));
  return backend.ok() ? *backend : nullptr;
}

#define SKIP_WITHOUT_GPU(backend)                                               \
  Backend* backend = CudaOrSkip();                                              \
  if (backend == nullptr) {                                                     \
    GTEST_SKIP() << "no usable GPU: " << GetBackend(Device::Cuda(0)).status(); \
  }

#ifdef PARAMD_WITH_CUDA

absl::Status FailingCall() {
  PARAMD_CUDA_RETURN_IF_ERROR(2, cudaErrorMemoryAllocation);
  return absl::OkStatus();
}

TEST(CudaStatusTest, RuntimeErrorsNameTheCallFileLineAndDevice) {
  EXPECT_TRUE(cuda::CudaStatus(cudaSuccess, "cudaFree(p)", __FILE__, __LINE__, 0).ok());
  const absl::Status oom = FailingCall();
  EXPECT_EQ(oom.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(oom.message(), HasSubstr("cudaErrorMemoryAllocation on cuda:2 at "));
  EXPECT_THAT(oom.message(), HasSubstr("cuda_backend_test.cc:"));
  EXPECT_THAT(oom.message(), HasSubstr("cudaErrorMemoryAllocation (out of memory)"));
}

TEST(CudaStatusTest, CodesSayWhatTheCallerCanDo) {
  auto code = [](cudaError_t error) {
    return cuda::CudaStatus(error, "call", __FILE__, __LINE__, 1).code();
  };
  EXPECT_EQ(code(cudaErrorMemoryAllocation), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(code(cudaErrorInsufficientDriver), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(code(cudaErrorNoDevice), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(code(cudaErrorNoKernelImageForDevice), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(code(cudaErrorInvalidValue), absl::StatusCode::kInternal);
  // None of these is sticky: the device stays healthy.
  EXPECT_TRUE(cuda::DeviceHealth(1).ok());
}

TEST(CudaStatusTest, CublasStatusesMapToCodes) {
  auto status = [](cublasStatus_t s) {
    return cuda::CublasStatus(s, "cublasLtMatmul(...)", __FILE__, __LINE__, 0);
  };
  EXPECT_TRUE(status(CUBLAS_STATUS_SUCCESS).ok());
  EXPECT_EQ(status(CUBLAS_STATUS_ALLOC_FAILED).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(status(CUBLAS_STATUS_NOT_SUPPORTED).code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(status(CUBLAS_STATUS_INVALID_VALUE).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status(CUBLAS_STATUS_EXECUTION_FAILED).code(), absl::StatusCode::kInternal);
  EXPECT_THAT(status(CUBLAS_STATUS_EXECUTION_FAILED).message(),
              HasSubstr("cublasLtMatmul(...) on cuda:0 at "));
  EXPECT_THAT(status(CUBLAS_STATUS_EXECUTION_FAILED).message(),
              HasSubstr("CUBLAS_STATUS_EXECUTION_FAILED"));
}

// Device 63 stands in for a faulted GPU so that a real cuda:0 stays usable for the others.
TEST(CudaStatusTest, StickyErrorMarksTheDeviceUnhealthyAndKeepsTheFirstError) {
  EXPECT_TRUE(cuda::IsStickyError(cudaErrorIllegalAddress));
  EXPECT_FALSE(cuda::IsStickyError(cudaErrorMemoryAllocation));
  const absl::Status fault =
      cuda::CudaStatus(cudaErrorIllegalAddress, "cudaStreamSynchronize(stream)", __FILE__,
                       __LINE__, 63);
  EXPECT_EQ(fault.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(fault.message(), HasSubstr("unusable until paramd restarts"));
  cuda::CudaStatus(cudaErrorLaunchFailure, "later", __FILE__, __LINE__, 63).IgnoreError();
  const absl::Status health = cuda::DeviceHealth(63);
  EXPECT_EQ(health.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(health.message(), HasSubstr("cudaStreamSynchronize(stream) on cuda:63"));
  EXPECT_THAT(health.message(), HasSubstr("cudaErrorIllegalAddress"));
  EXPECT_THAT(health.message(), ::testing::Not(HasSubstr("cudaErrorLaunchFailure")));
}

#endif  // PARAMD_WITH_CUDA

TEST(CudaBackendTest, AbsentDeviceIsFailedPreconditionNotACrash) {
  auto gpus = QueryGpus();
  const int missing = gpus.ok() ? static_cast<int>(gpus->size()) : 0;
  auto backend = GetBackend(Device::Cuda(missing));
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(backend.status().message(), HasSubstr("cpu"));
}

TEST(CudaBackendTest, AllocatesAlignedCountsBytesAndFrees) {
  SKIP_WITHOUT_GPU(backend);
  EXPECT_EQ(backend->device().ToString(), "cuda:0");
  const size_t before = backend->bytes_in_use();
  auto data = backend->Allocate(1000);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(*data) % 64, 0u);
  EXPECT_EQ(backend->bytes_in_use(), before + 1000);
  auto empty = backend->Allocate(0);
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_NE(*empty, nullptr);
  EXPECT_NE(*empty, *data);
  backend->Free(*empty, 0);
  backend->Free(*data, 1000);
  EXPECT_EQ(backend->bytes_in_use(), before);
  EXPECT_TRUE(backend->Synchronize().ok());
}

TEST(CudaBackendTest, CopiesRoundTripAndOverlappingCopiesActAsMemmove) {
  SKIP_WITHOUT_GPU(backend);
  std::vector<uint8_t> host(1 << 20);
  std::iota(host.begin(), host.end(), 0);
  auto data = backend->Allocate(host.size());
  ASSERT_TRUE(data.ok()) << data.status();
  ASSERT_TRUE(backend->CopyFromHost(*data, host.data(), host.size()).ok());
  // Shift everything up by 100 bytes within the same buffer.
  auto* bytes = static_cast<uint8_t*>(*data);
  ASSERT_TRUE(backend->CopyWithinDevice(bytes + 100, bytes, host.size() - 100).ok());
  std::vector<uint8_t> back(host.size());
  ASSERT_TRUE(backend->CopyToHost(back.data(), *data, back.size()).ok());
  std::vector<uint8_t> expected = host;
  std::memmove(expected.data() + 100, host.data(), host.size() - 100);
  EXPECT_EQ(back, expected);
  backend->Free(*data, host.size());
}

TEST(CudaBackendTest, MemoryLimitGivesResourceExhaustedNotACrash) {
  SKIP_WITHOUT_GPU(backend);
  const size_t base = backend->bytes_in_use();
  backend->SetMemoryLimit(base + 1000);
  auto first = backend->Allocate(600);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = backend->Allocate(600);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(second.status().message(), HasSubstr("--max-gpu-memory"));
  EXPECT_EQ(backend->bytes_in_use(), base + 600);
  backend->Free(*first, 600);
  backend->SetMemoryLimit(0);
}

// The ceiling is SetGpuMemoryLimit's (--max-gpu-memory), and an op's scratch is under it:
// an im2col column buffer that would pass it is RESOURCE_EXHAUSTED, and nothing stays held.
TEST(CudaBackendTest, ScratchCountsAgainstTheGpuMemoryLimit) {
  SKIP_WITHOUT_GPU(backend);
  const int64_t n = 2, c = 4, h = 32, w = 32, o = 8;
  const size_t in_bytes = n * c * h * w * 4, w_bytes = o * c * 9 * 4, out_bytes = n * o * h * w * 4;
  auto x = backend->Allocate(in_bytes);
  auto k = backend->Allocate(w_bytes);
  auto y = backend->Allocate(out_bytes);
  ASSERT_TRUE(x.ok() && k.ok() && y.ok());
  const size_t base = backend->bytes_in_use();
  SetGpuMemoryLimit(base + 1024);  // far less than the columns (n * c * 9 * h * w * 4 bytes)
  Conv2dArgs args;
  args.input = {.data = *x, .dtype = DType::kFloat32, .rank = 4, .shape = {n, c, h, w},
                .strides = {c * h * w, h * w, w, 1}};
  args.weight = {.data = *k, .dtype = DType::kFloat32, .rank = 4, .shape = {o, c, 3, 3},
                 .strides = {c * 9, 9, 3, 1}};
  args.output = {.data = *y, .dtype = DType::kFloat32, .rank = 4, .shape = {n, o, h, w},
                 .strides = {o * h * w, h * w, w, 1}};
  args.padding[0] = args.padding[1] = 1;
  const absl::Status status = backend->Conv2d(args);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_THAT(status.message(), HasSubstr("--max-gpu-memory"));
  EXPECT_EQ(backend->bytes_in_use(), base);
  SetGpuMemoryLimit(0);
  EXPECT_TRUE(backend->Conv2d(args).ok());
  EXPECT_TRUE(backend->Synchronize().ok());
  EXPECT_EQ(backend->bytes_in_use(), base);
  backend->Free(*x, in_bytes);
  backend->Free(*k, w_bytes);
  backend->Free(*y, out_bytes);
}

TEST(CudaBackendTest, AllocationBeyondTheDeviceIsResourceExhaustedAndTheDeviceStaysUsable) {
  SKIP_WITHOUT_GPU(backend);
  auto huge = backend->Allocate(size_t{1} << 50);  // a petabyte
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted) << huge.status();
  EXPECT_THAT(huge.status().message(), HasSubstr("cuda:0"));
  auto small = backend->Allocate(256);
  ASSERT_TRUE(small.ok()) << small.status();
  backend->Free(*small, 256);
  EXPECT_TRUE(backend->Synchronize().ok());
}

TEST(CudaBackendTest, BadEmbeddingIndexIsInvalidArgumentAndLeavesTheOutputAlone) {
  SKIP_WITHOUT_GPU(backend);
  const std::vector<float> weight(4 * 3, 1.0f);
  const std::vector<int64_t> indices = {0, 7};
  const std::vector<float> sentinel(2 * 3, -5.0f);
  auto w = backend->Allocate(weight.size() * 4);
  auto i = backend->Allocate(indices.size() * 8);
  auto o = backend->Allocate(sentinel.size() * 4);
  ASSERT_TRUE(w.ok() && i.ok() && o.ok());
  ASSERT_TRUE(backend->CopyFromHost(*w, weight.data(), weight.size() * 4).ok());
  ASSERT_TRUE(backend->CopyFromHost(*i, indices.data(), indices.size() * 8).ok());
  ASSERT_TRUE(backend->CopyFromHost(*o, sentinel.data(), sentinel.size() * 4).ok());
  EmbeddingArgs args;
  args.weight = {.data = *w, .dtype = DType::kFloat32, .rank = 2, .shape = {4, 3},
                 .strides = {3, 1}};
  args.indices = {.data = *i, .dtype = DType::kInt64, .rank = 1, .shape = {2},
                  .strides = {1}};
  args.output = {.data = *o, .dtype = DType::kFloat32, .rank = 2, .shape = {2, 3},
                 .strides = {3, 1}};
  const absl::Status status = backend->Embedding(args);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "index out of range in self");
  std::vector<float> out(sentinel.size());
  ASSERT_TRUE(backend->CopyToHost(out.data(), *o, out.size() * 4).ok());
  EXPECT_EQ(out, sentinel);
  EXPECT_TRUE(backend->Synchronize().ok());
  backend->Free(*w, weight.size() * 4);
  backend->Free(*i, indices.size() * 8);
  backend->Free(*o, sentinel.size() * 4);
}

TEST(CudaBackendTest, UnsupportedDtypeIsUnimplementedNamingTheDevice) {
  SKIP_WITHOUT_GPU(backend);
  const absl::Status status =
      backend->Supports({.kind = OpKind::kGemm, .dtype = DType::kInt64});
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(status.message(), "the cuda:0 backend has no gemm kernel for int64");
  EXPECT_EQ(backend->Gemm({.dtype = DType::kFloat64, .m = 1, .n = 1, .k = 1}).code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_TRUE(backend->Supports({.kind = OpKind::kConvert,
                                 .dtype = DType::kInt64,
                                 .out_dtype = DType::kBool})
                  .ok());
}

#ifdef PARAMD_WITH_CUDA
// The path a fused epilogue takes when cuBLASLt has no algorithm for it (the plain product,
// then the bias-and-activation pass), forced, so that it runs at all: it must give the CPU's
// answer, with the output's rows longer than the product's too.
TEST(CudaBackendTest, ForcedUnfusedEpilogueMatchesTheCpu) {
  SKIP_WITHOUT_GPU(gpu);
  Backend* cpu = *GetBackend(Device::Cpu());
  cuda::ForceUnfusedEpilogueForTesting(true);
  absl::Cleanup restore = [] { cuda::ForceUnfusedEpilogueForTesting(false); };
  const int64_t m = 12, n = 40, k = 24;
  for (const DType dtype : {DType::kFloat32, DType::kBFloat16}) {
    for (const UnaryOp epilogue : {UnaryOp::kIdentity, UnaryOp::kGELUTanh}) {
      for (const int64_t ldc : {n, n + 3}) {
        std::vector<testing::HostTensor> results;
        for (Backend* backend : {gpu, cpu}) {
          auto a = testing::DeviceTensor::Upload(backend, testing::Random(dtype, {m, k}, 1));
          auto b = testing::DeviceTensor::Upload(backend, testing::Random(dtype, {n, k}, 2));
          auto bias = testing::DeviceTensor::Upload(backend, testing::Random(dtype, {n}, 3));
          testing::DeviceTensor c(backend, dtype, {m, ldc});
          c.Poison();
          const absl::Status status =
              backend->Gemm({.dtype = dtype, .m = m, .n = n, .k = k, .a = a->data(), .lda = k,
                             .b = b->data(), .ldb = k, .trans_b = true, .bias = bias->data(),
                             .c = c.data(), .ldc = ldc, .epilogue = epilogue});
          ASSERT_TRUE(status.ok()) << status;
          results.push_back(c.Download());
        }
        const double tol = dtype == DType::kFloat32 ? 1e-4 : 3e-2;
        EXPECT_TRUE(testing::AllClose(results[0].values, results[1].values, tol, tol))
            << DTypeName(dtype) << " " << UnaryOpName(epilogue) << " ldc " << ldc;
      }
    }
  }
}

// conv2d runs on cuDNN where the build has it and on im2col plus cuBLASLt otherwise (and
// when cuDNN turns a shape down); both must give the CPU's answer, grouped, depthwise,
// strided, dilated, padded, 1x1 (im2col's direct path) and with or without a bias.
TEST(CudaBackendTest, Conv2dOnCudnnAndOnIm2ColMatchesTheCpu) {
  SKIP_WITHOUT_GPU(gpu);
  Backend* cpu = *GetBackend(Device::Cpu());
  struct Geometry {
    int64_t n, c, h, w, o, k, stride, pad, dilation, groups;
    bool bias;
  };
  const Geometry geometries[] = {
      {2, 3, 9, 11, 4, 3, 1, 1, 1, 1, true},   {3, 8, 7, 7, 8, 3, 2, 1, 1, 8, true},
      {1, 32, 12, 12, 32, 3, 1, 1, 1, 32, false}, {4, 6, 10, 10, 4, 3, 1, 2, 2, 2, true},
      {2, 16, 8, 8, 24, 1, 1, 0, 1, 1, true},   {5, 4, 6, 6, 6, 2, 2, 0, 1, 2, false},
  };
  for (const bool im2col : {false, true}) {
    cuda::ForceIm2ColConvForTesting(im2col);
    absl::Cleanup restore = [] { cuda::ForceIm2ColConvForTesting(false); };
    for (const DType dtype : {DType::kFloat32, DType::kFloat16, DType::kBFloat16}) {
      for (const Geometry& g : geometries) {
        const int64_t span = g.dilation * (g.k - 1) + 1;
        const int64_t oh = (g.h + 2 * g.pad - span) / g.stride + 1;
        const int64_t ow = (g.w + 2 * g.pad - span) / g.stride + 1;
        std::vector<testing::HostTensor> results;
        for (Backend* backend : {gpu, cpu}) {
          auto x = testing::DeviceTensor::Upload(backend,
                                                 testing::Random(dtype, {g.n, g.c, g.h, g.w}, 1));
          auto w = testing::DeviceTensor::Upload(
              backend, testing::Random(dtype, {g.o, g.c / g.groups, g.k, g.k}, 2, -0.3, 0.3));
          auto bias = testing::DeviceTensor::Upload(backend, testing::Random(dtype, {g.o}, 3));
          testing::DeviceTensor y(backend, dtype, {g.n, g.o, oh, ow});
          y.Poison();
          Conv2dArgs args{.input = x->view(),
                          .weight = w->view(),
                          .bias = g.bias ? bias->data() : nullptr,
                          .output = y.view(),
                          .groups = g.groups};
          for (int d = 0; d < 2; ++d) {
            args.stride[d] = g.stride;
            args.padding[d] = g.pad;
            args.dilation[d] = g.dilation;
          }
          const absl::Status status = backend->Conv2d(args);
          ASSERT_TRUE(status.ok()) << status;
          results.push_back(y.Download());
        }
        const double tol =
            dtype == DType::kFloat32 ? 1e-4 : (dtype == DType::kFloat16 ? 4e-3 : 3e-2);
        EXPECT_TRUE(testing::AllClose(results[0].values, results[1].values, tol, tol))
            << (im2col ? "im2col " : "default path ") << DTypeName(dtype) << " c " << g.c
            << " groups " << g.groups << " k " << g.k << " stride " << g.stride;
      }
    }
  }
}
#endif  // PARAMD_WITH_CUDA

}  // namespace
}  // namespace paramd::kernels
