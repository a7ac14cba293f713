#include "kernels/cuda/cudnn_conv.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#ifdef PARAMD_WITH_CUDNN
#include <cudnn.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/status_macros.h"
#include "kernels/cuda/cuda_status.h"
#endif

namespace paramd::kernels::cuda {
namespace {

std::atomic<bool>& ForcedIm2Col() {
  static std::atomic<bool> forced{false};
  return forced;
}

}  // namespace

void ForceIm2ColConvForTesting(bool force) { ForcedIm2Col().store(force); }

}  // namespace paramd::kernels::cuda

#ifndef PARAMD_WITH_CUDNN

namespace paramd::kernels::cuda {

bool CudnnAvailable() { return false; }

absl::StatusOr<std::optional<CudnnConvPlan>> PlanCudnnConv(int, const Conv2dArgs&,
                                                           const ConvGeometry&) {
  return std::nullopt;
}

absl::Status RunCudnnConv(int, cudaStream_t, const Conv2dArgs&, const ConvGeometry&,
                          const CudnnConvPlan&, void*) {
  return absl::FailedPreconditionError("conv2d: this build of paramd has no cuDNN");
}

}  // namespace paramd::kernels::cuda

#else  // PARAMD_WITH_CUDNN

namespace paramd::kernels::cuda {
namespace {

// Workspace cuDNN may ask for one convolution: the im2col path's column budget.
constexpr size_t kMaxWorkspaceBytes = size_t{256} << 20;

absl::Status CudnnStatus(cudnnStatus_t status, const char* call, int device) {
  if (status == CUDNN_STATUS_SUCCESS) return absl::OkStatus();
  const std::string message = absl::StrCat(call, " on cuda:", device, ": ",
                                           cudnnGetErrorString(status), " (", status, ")");
  switch (status) {
    case CUDNN_STATUS_ALLOC_FAILED:
      return absl::ResourceExhaustedError(message);
    case CUDNN_STATUS_NOT_SUPPORTED:
      return absl::UnimplementedError(message);
    case CUDNN_STATUS_EXECUTION_FAILED: {
      // A kernel fault: let the runtime's error mark the device if it is sticky.
      const absl::Status cuda =
          CudaStatus(cudaGetLastError(), "cuDNN kernel", __FILE__, __LINE__, device);
      return cuda.ok() ? absl::InternalError(message) : cuda;
    }
    default:
      return absl::InternalError(message);
  }
}

#define PARAMD_CUDNN_RETURN_IF_ERROR(device, expr)                                   \
  do {                                                                               \
    const cudnnStatus_t paramd_cudnn_status_ = (expr);                               \
    if (paramd_cudnn_status_ != CUDNN_STATUS_SUCCESS) {                              \
      return CudnnStatus(paramd_cudnn_status_, #expr, (device));                     \
    }                                                                                \
  } while (false)

struct DescDeleter {
  void operator()(cudnnTensorStruct* p) const { cudnnDestroyTensorDescriptor(p); }
  void operator()(cudnnFilterStruct* p) const { cudnnDestroyFilterDescriptor(p); }
  void operator()(cudnnConvolutionStruct* p) const { cudnnDestroyConvolutionDescriptor(p); }
};
using TensorDesc = std::unique_ptr<cudnnTensorStruct, DescDeleter>;
using FilterDesc = std::unique_ptr<cudnnFilterStruct, DescDeleter>;
using ConvDesc = std::unique_ptr<cudnnConvolutionStruct, DescDeleter>;

cudnnDataType_t CudnnType(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return CUDNN_DATA_HALF;
    case DType::kBFloat16:
      return CUDNN_DATA_BFLOAT16;
    default:
      return CUDNN_DATA_FLOAT;
  }
}

// The descriptors of one convolution, with the math type chosen for its dtype.
struct Descriptors {
  TensorDesc x, y;
  FilterDesc w;
  ConvDesc conv;
};

bool FitsInt(int64_t value) { return value >= 0 && value <= INT_MAX; }

absl::StatusOr<Descriptors> Describe(int device, const Conv2dArgs& args, const ConvGeometry& g,
                                     cudnnMathType_t math) {
  const ConstTensorView& x = args.input;
  const ConstTensorView& w = args.weight;
  const TensorView& y = args.output;
  const cudnnDataType_t type = CudnnType(x.dtype);
  Descriptors d;
  cudnnTensorDescriptor_t x_desc = nullptr, y_desc = nullptr;
  cudnnFilterDescriptor_t w_desc = nullptr;
  cudnnConvolutionDescriptor_t conv_desc = nullptr;
  PARAMD_CUDNN_RETURN_IF_ERROR(device, cudnnCreateTensorDescriptor(&x_desc));
  d.x.reset(x_desc);
  PARAMD_CUDNN_RETURN_IF_ERROR(device, cudnnCreateTensorDescriptor(&y_desc));
  d.y.reset(y_desc);
  PARAMD_CUDNN_RETURN_IF_ERROR(device, cudnnCreateFilterDescriptor(&w_desc));
  d.w.reset(w_desc);
  PARAMD_CUDNN_RETURN_IF_ERROR(device, cudnnCreateConvolutionDescriptor(&conv_desc));
  d.conv.reset(conv_desc);
  const auto i = [](int64_t v) { return static_cast<int>(v); };
  PARAMD_CUDNN_RETURN_IF_ERROR(
      device, cudnnSetTensor4dDescriptor(x_desc, CUDNN_TENSOR_NCHW, type, i(x.shape[0]),
                                         i(x.shape[1]), i(x.shape[2]), i(x.shape[3])));
  PARAMD_CUDNN_RETURN_IF_ERROR(
      device, cudnnSetTensor4dDescriptor(y_desc, CUDNN_TENSOR_NCHW, type, i(y.shape[0]),
                                         i(y.shape[1]), i(y.shape[2]), i(y.shape[3])));
  PARAMD_CUDNN_RETURN_IF_ERROR(
      device, cudnnSetFilter4dDescriptor(w_desc, type, CUDNN_TENSOR_NCHW, i(w.shape[0]),
                                         i(w.shape[1]), i(w.shape[2]), i(w.shape[3])));
  PARAMD_CUDNN_RETURN_IF_ERROR(
      device, cudnnSetConvolution2dDescriptor(conv_desc, i(g.pad_h), i(g.pad_w), i(g.stride_h),
                                              i(g.stride_w), i(g.dilation_h), i(g.dilation_w),
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  PARAMD_CUDNN_RETURN_IF_ERROR(device,
                               cudnnSetConvolutionGroupCount(conv_desc, i(args.groups)));
  PARAMD_CUDNN_RETURN_IF_ERROR(device, cudnnSetConvolutionMathType(conv_desc, math));
  // CheckConv2d computed the output size; cuDNN must agree, or the descriptors are wrong.
  int n = 0, c = 0, h = 0, wd = 0;
  PARAMD_CUDNN_RETURN_IF_ERROR(device, cudnnGetConvolution2dForwardOutputDim(
                                           conv_desc, x_desc, w_desc, &n, &c, &h, &wd));
  if (n != y.shape[0] || c != y.shape[1] || h != y.shape[2] || wd != y.shape[3]) {
    return absl::InternalError(absl::StrCat("conv2d on cuda:", device, ": cuDNN's output [", n,
                                            ", ", c, ", ", h, ", ", wd,
                                            "] differs from the checked output shape"));
  }
  return d;
}

// Handles, one per caller at a time: a handle carries one stream, set per call.
class HandlePool {
 public:
  absl::StatusOr<cudnnHandle_t> Acquire(int device) {
    {
      absl::MutexLock lock(&mu_);
      std::vector<cudnnHandle_t>& free = free_[device];
      if (!free.empty()) {
        cudnnHandle_t handle = free.back();
        free.pop_back();
        return handle;
      }
    }
    cudnnHandle_t handle = nullptr;
    PARAMD_CUDNN_RETURN_IF_ERROR(device, cudnnCreate(&handle));
    return handle;
  }
  void Release(int device, cudnnHandle_t handle) {
    absl::MutexLock lock(&mu_);
    free_[device].push_back(handle);
  }

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<int, std::vector<cudnnHandle_t>> free_ ABSL_GUARDED_BY(mu_);
};

HandlePool& Handles() {
  static auto* pool = new HandlePool;  // never destroyed: handles outlive static teardown
  return *pool;
}

class Handle {
 public:
  static absl::StatusOr<Handle> Get(int device) {
    PARAMD_ASSIGN_OR_RETURN(cudnnHandle_t handle, Handles().Acquire(device));
    return Handle(device, handle);
  }
  Handle(Handle&& other) noexcept
      : device_(other.device_), handle_(std::exchange(other.handle_, nullptr)) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle& operator=(Handle&&) = delete;
  ~Handle() {
    if (handle_ != nullptr) Handles().Release(device_, handle_);
  }
  cudnnHandle_t get() const { return handle_; }

 private:
  Handle(int device, cudnnHandle_t handle) : device_(device), handle_(handle) {}
  int device_;
  cudnnHandle_t handle_;
};

// Every size the choice of algorithm depends on.
using PlanKey = std::array<int64_t, 17>;

PlanKey KeyOf(int device, const Conv2dArgs& args, const ConvGeometry& g) {
  const ConstTensorView& x = args.input;
  const ConstTensorView& w = args.weight;
  return {device,       static_cast<int64_t>(x.dtype),
          x.shape[0],   x.shape[1],
          x.shape[2],   x.shape[3],
          w.shape[0],   w.shape[1],
          w.shape[2],   w.shape[3],
          args.groups,  g.stride_h,
          g.stride_w,   g.pad_h,
          g.pad_w,      g.dilation_h,
          g.dilation_w};
}

class PlanCache {
 public:
  std::optional<std::optional<CudnnConvPlan>> Find(const PlanKey& key) {
    absl::MutexLock lock(&mu_);
    auto it = plans_.find(key);
    if (it == plans_.end()) return std::nullopt;
    return it->second;
  }
  void Insert(const PlanKey& key, std::optional<CudnnConvPlan> plan) {
    absl::MutexLock lock(&mu_);
    plans_.emplace(key, plan);
  }

 private:
  absl::Mutex mu_;
  // nullopt values are cached too: cuDNN found nothing acceptable for that shape.
  absl::flat_hash_map<PlanKey, std::optional<CudnnConvPlan>> plans_ ABSL_GUARDED_BY(mu_);
};

PlanCache& Plans() {
  static auto* cache = new PlanCache;
  return *cache;
}

std::atomic<bool>& Disabled() {
  static std::atomic<bool> disabled{false};
  return disabled;
}

}  // namespace

bool CudnnAvailable() { return !Disabled().load(); }

absl::StatusOr<std::optional<CudnnConvPlan>> PlanCudnnConv(int device, const Conv2dArgs& args,
                                                           const ConvGeometry& g) {
  if (ForcedIm2Col().load() || Disabled().load()) return std::nullopt;
  const ConstTensorView& x = args.input;
  const ConstTensorView& w = args.weight;
  const TensorView& y = args.output;
  constexpr int64_t kMaxElements = int64_t{1} << 31;
  for (const int64_t* shape : {x.shape, w.shape, y.shape}) {
    for (int d = 0; d < 4; ++d) {
      if (!FitsInt(shape[d])) return std::nullopt;
    }
  }
  if (x.numel() >= kMaxElements || y.numel() >= kMaxElements || w.numel() >= kMaxElements ||
      !FitsInt(args.groups) || !FitsInt(g.pad_h) || !FitsInt(g.pad_w) ||
      !FitsInt(g.stride_h) || !FitsInt(g.stride_w) || !FitsInt(g.dilation_h) ||
      !FitsInt(g.dilation_w)) {
    return std::nullopt;
  }
  const PlanKey key = KeyOf(device, args, g);
  if (std::optional<std::optional<CudnnConvPlan>> cached = Plans().Find(key)) return *cached;

  const bool full_float32 = x.dtype == DType::kFloat32;
  PARAMD_ASSIGN_OR_RETURN(
      Descriptors d,
      Describe(device, args, g, full_float32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH));
  absl::StatusOr<Handle> handle = Handle::Get(device);
  if (!handle.ok()) {
    if (handle.status().code() == absl::StatusCode::kResourceExhausted) return handle.status();
    // cuDNN cannot start here (a sub-library missing, a driver it does not support): the
    // process goes on without it, correct and slower, rather than failing every conv2d.
    Disabled().store(true);
    return std::nullopt;
  }
  int max_count = 0;
  PARAMD_CUDNN_RETURN_IF_ERROR(
      device, cudnnGetConvolutionForwardAlgorithmMaxCount(handle->get(), &max_count));
  std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(static_cast<size_t>(std::max(max_count, 1)));
  int returned = 0;
  PARAMD_CUDNN_RETURN_IF_ERROR(
      device, cudnnGetConvolutionForwardAlgorithm_v7(handle->get(), d.x.get(), d.w.get(),
                                                     d.conv.get(), d.y.get(),
                                                     static_cast<int>(perf.size()), &returned,
                                                     perf.data()));
  std::optional<CudnnConvPlan> plan;
  for (int i = 0; i < returned; ++i) {
    const cudnnConvolutionFwdAlgoPerf_t& p = perf[static_cast<size_t>(i)];
    if (p.status != CUDNN_STATUS_SUCCESS || p.memory > kMaxWorkspaceBytes ||
        p.determinism != CUDNN_DETERMINISTIC) {
      continue;
    }
    // float32 stays off tensor cores: TF32 would round the inputs to 10 mantissa bits. It
    // runs with FMA math whatever the entry reports; an algorithm with no FMA kernel is
    // then turned down at run time, and im2col takes the convolution.
    if (full_float32 && (p.mathType == CUDNN_TENSOR_OP_MATH ||
                         p.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)) {
      continue;
    }
    plan = CudnnConvPlan{.algorithm = static_cast<int>(p.algo),
                         .math = static_cast<int>(full_float32 ? CUDNN_FMA_MATH : p.mathType),
                         .workspace_bytes = p.memory};
    break;
  }
  Plans().Insert(key, plan);
  return plan;
}

absl::Status RunCudnnConv(int device, cudaStream_t stream, const Conv2dArgs& args,
                          const ConvGeometry& g, const CudnnConvPlan& plan, void* workspace) {
  const ConstTensorView& x = args.input;
  const TensorView& y = args.output;
  PARAMD_ASSIGN_OR_RETURN(
      Descriptors d, Describe(device, args, g, static_cast<cudnnMathType_t>(plan.math)));
  PARAMD_ASSIGN_OR_RETURN(Handle handle, Handle::Get(device));
  PARAMD_CUDNN_RETURN_IF_ERROR(device, cudnnSetStream(handle.get(), stream));
  // Note [cuDNN convolution]: the output starts as the bias, and cuDNN adds the product.
  const bool blend_bias = args.bias != nullptr;
  if (blend_bias) {
    PARAMD_CUDA_RETURN_IF_ERROR(device, LaunchChannelFill(y.dtype, y.data, y.shape[0], y.shape[1],
                                                          y.shape[2] * y.shape[3], args.bias,
                                                          stream));
  }
  const float alpha = 1.0f, beta = blend_bias ? 1.0f : 0.0f;
  PARAMD_CUDNN_RETURN_IF_ERROR(
      device, cudnnConvolutionForward(handle.get(), &alpha, d.x.get(), x.data, d.w.get(),
                                      args.weight.data, d.conv.get(),
                                      static_cast<cudnnConvolutionFwdAlgo_t>(plan.algorithm),
                                      workspace, plan.workspace_bytes, &beta, d.y.get(),
                                      y.data));
  return absl::OkStatus();
}

}  // namespace paramd::kernels::cuda

#endif  // PARAMD_WITH_CUDNN
