#include "kernels/cuda/cuda_backend.h"

#include <algorithm>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/conv_plan.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/cudnn_conv.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/launch.h"
#include "kernels/op_checks.h"
#include "kernels/optimizer_math.h"
#include "base/status_macros.h"

namespace paramd::kernels::cuda {
namespace {

// Im2col columns are made this many bytes at a time at most (more images per chunk
// means fewer, larger GEMMs).
constexpr size_t kIm2ColChunkBytes = size_t{256} << 20;

// The backend's Scratch and FreeScratch as a GEMM's scratch (gemm.h), from two lambdas
// (the member functions are private).
template <typename AllocateFn, typename FreeFn>
class ScratchOf final : public GemmScratch {
 public:
  ScratchOf(AllocateFn allocate, FreeFn free) : allocate_(allocate), free_(free) {}
  absl::StatusOr<void*> Allocate(size_t nbytes) override { return allocate_(nbytes); }
  void Free(void* data, size_t nbytes) override { free_(data, nbytes); }

 private:
  AllocateFn allocate_;
  FreeFn free_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(int device) {
  PARAMD_ASSIGN_OR_RETURN(CudaContext * context, CudaContext::Get(device));
  return std::unique_ptr<CudaBackend>(new CudaBackend(device, context));
}

absl::Status CudaBackend::Health() const { return DeviceHealth(device_); }

// ---------------------------------------------------------------------------------------
// Memory and copies.

CudaBackend::CudaBackend(int device, CudaContext* context) : device_(device), context_(context) {}

absl::StatusOr<void*> CudaBackend::Allocate(size_t nbytes) {
  return AllocateKind(nbytes, MemoryKind::kTensor);
}

void CudaBackend::Free(void* data, size_t nbytes) { FreeKind(data, nbytes, MemoryKind::kTensor); }

size_t CudaBackend::bytes_in_use() const { return context_->budget().held(); }

void CudaBackend::SetMemoryLimit(size_t max_bytes) { context_->budget().set_limit(max_bytes); }

absl::StatusOr<void*> CudaBackend::AllocateKind(size_t nbytes, MemoryKind kind) {
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  return context_->Allocate(nbytes, kind);
}

void CudaBackend::FreeKind(void* data, size_t nbytes, MemoryKind kind) {
  context_->Free(data, nbytes, kind);
}

absl::StatusOr<void*> CudaBackend::Scratch(size_t nbytes) {
  return AllocateKind(nbytes, MemoryKind::kScratch);
}

void CudaBackend::FreeScratch(void* data, size_t nbytes) {
  if (data == nullptr) return;
  FreeKind(data, nbytes, MemoryKind::kScratch);
}

absl::Status CudaBackend::CopyFromHost(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return absl::OkStatus();
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  const cudaStream_t stream = context_->stream();
  PARAMD_CUDA_RETURN_IF_ERROR(device_,
                              cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyHostToDevice, stream));
  // The caller may reuse `src` on return; from pinned memory the copy is still in flight.
  PARAMD_CUDA_RETURN_IF_ERROR(device_, cudaStreamSynchronize(stream));
  return absl::OkStatus();
}

absl::Status CudaBackend::CopyToHost(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0) return absl::OkStatus();
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  const cudaStream_t stream = context_->stream();
  PARAMD_CUDA_RETURN_IF_ERROR(device_,
                              cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToHost, stream));
  // Reports the thread's deferred index check with the data (Note [Deferred index check]).
  return context_->SyncStream();
}

absl::Status CudaBackend::CopyWithinDevice(void* dst, const void* src, size_t nbytes) {
  if (nbytes == 0 || dst == src) return absl::OkStatus();
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  const cudaStream_t stream = context_->stream();
  const char* d = static_cast<const char*>(dst);
  const char* s = static_cast<const char*>(src);
  if (d < s + nbytes && s < d + nbytes) {
    // Overlapping ranges (memmove semantics, as the CPU backend): through a staging copy.
    PARAMD_ASSIGN_OR_RETURN(void* staging, Scratch(nbytes));
    const cudaError_t first =
        cudaMemcpyAsync(staging, src, nbytes, cudaMemcpyDeviceToDevice, stream);
    const cudaError_t second =
        first == cudaSuccess
            ? cudaMemcpyAsync(dst, staging, nbytes, cudaMemcpyDeviceToDevice, stream)
            : cudaSuccess;
    FreeScratch(staging, nbytes);
    PARAMD_CUDA_RETURN_IF_ERROR(device_, first);
    PARAMD_CUDA_RETURN_IF_ERROR(device_, second);
    return absl::OkStatus();
  }
  PARAMD_CUDA_RETURN_IF_ERROR(device_,
                              cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, stream));
  return absl::OkStatus();
}

absl::Status CudaBackend::Synchronize() {
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  return context_->SyncStream();
}

void CudaBackend::DiscardDeferredErrors() { context_->DiscardIndexFlag(); }

// ---------------------------------------------------------------------------------------
// Ops.

absl::Status CudaBackend::Supports(const OpQuery& query) const {
  if (query.kind == OpKind::kOptimizerStep) {
    return query.dtype == DType::kFloat32 ? absl::OkStatus() : Unsupported(query);
  }
  return SupportedByBuiltInBackends(query) ? absl::OkStatus() : Unsupported(query);
}

absl::Status CudaBackend::Gemm(const GemmArgs& args) {
  PARAMD_RETURN_IF_ERROR(CheckGemm(*this, args));
  if (args.m == 0 || args.n == 0) return absl::OkStatus();
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  ScratchOf scratch([this](size_t n) { return Scratch(n); },
                    [this](void* p, size_t n) { FreeScratch(p, n); });
  return RunGemm(*context_, scratch, {.args = args});
}

// Note [Conv bias]
// The CPU backend writes the bias into the output and lets sgemm add the product to it
// (beta = 1), all in float32, rounding a 16-bit result once. The GPU does the same: the
// output is filled with the broadcast bias (exact: the bias is already in the output's
// dtype), then every GEMM accumulates into it (beta = 1), so cuBLASLt forms bias + A·B in
// float32 and rounds once. Adding the bias after a 16-bit product would round twice; a
// float32 product with a fused per-channel bias does not exist in cuBLASLt (its bias runs
// along the other dimension). The fill costs what the bias pass it replaces cost.
//
// Note [Grouped conv as batched GEMMs]
// Per chunk of images the products are out[n, g] = weight_g · columns[n, g] over every
// image n and group g. cuBLASLt batches along one stride, and the weight has no stride
// along n while the columns have none along g alone, so one call cannot cover both: the
// loop runs over the smaller of groups and images and batches over the larger, so a
// depthwise conv with 512 channels issues one GEMM per image, not one per channel. Strides,
// in elements, from the im2col layout [image][group][patch rows][out_plane] (the direct 1×1
// path reads the input [image][group][group_in][plane], the same with patch = group_in and
// out_plane = in_plane): over images a = 0, b = image_columns, c = out_channels * out_plane;
// over groups a = group_out * patch, b = patch * out_plane, c = group_out * out_plane
// (conv_plan.h; cuda_host_logic_test.cc runs them as plain loops against a direct conv).
absl::Status CudaBackend::Conv2d(const Conv2dArgs& args) {
  PARAMD_ASSIGN_OR_RETURN(ConvGeometry g, CheckConv2d(*this, args));
  const ConstTensorView& x = args.input;
  const ConstTensorView& w = args.weight;
  const TensorView& y = args.output;
  const int64_t groups = args.groups;
  const int64_t batch = x.shape[0], in_channels = x.shape[1], out_channels = w.shape[0];
  if (y.numel() == 0) return absl::OkStatus();
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  const cudaStream_t stream = context_->stream();
  // The im2col kernel writes the columns of every group of an image at once.
  g.channels = in_channels;
  const size_t element = ElementSize(x.dtype);
  const int64_t group_in = w.shape[1], group_out = out_channels / groups;
  const int64_t patch = group_in * g.kernel_h * g.kernel_w;
  const int64_t out_plane = g.out_h * g.out_w, in_plane = g.height * g.width;

  if (patch > 0) {
    PARAMD_ASSIGN_OR_RETURN(const std::optional<CudnnConvPlan> plan,
                            PlanCudnnConv(device_, args, g));
    if (plan.has_value()) {
      void* workspace = nullptr;
      if (plan->workspace_bytes > 0) {
        PARAMD_ASSIGN_OR_RETURN(workspace, Scratch(plan->workspace_bytes));
      }
      const absl::Status status = RunCudnnConv(device_, stream, args, g, *plan, workspace);
      FreeScratch(workspace, plan->workspace_bytes);
      // A configuration cuDNN turns down only when asked to run it goes to im2col.
      if (status.code() != absl::StatusCode::kUnimplemented) return status;
    }
  }
  // Note [Conv bias]: the output starts as the bias (or zeros where there is no product).
  if (args.bias != nullptr) {
    PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchChannelFill(x.dtype, y.data, batch, out_channels,
                                                           out_plane, args.bias, stream));
  } else if (patch == 0) {
    PARAMD_CUDA_RETURN_IF_ERROR(device_,
                                cudaMemsetAsync(y.data, 0, y.numel() * element, stream));
  }
  if (patch == 0) return absl::OkStatus();

  // A 1×1 kernel with stride 1 and no padding reads the input in place as its columns.
  const bool direct = g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 &&
                      g.stride_w == 1 && g.pad_h == 0 && g.pad_w == 0 &&
                      g.out_h == g.height && g.out_w == g.width;
  const int64_t image_columns = in_channels * g.kernel_h * g.kernel_w * out_plane;
  const int64_t chunk =
      direct ? batch
             : std::clamp<int64_t>(
                   static_cast<int64_t>(kIm2ColChunkBytes / (image_columns * element)), 1, batch);
  void* columns = nullptr;
  const size_t column_bytes = direct ? 0 : chunk * image_columns * element;
  if (!direct) {
    PARAMD_ASSIGN_OR_RETURN(columns, Scratch(column_bytes));
  }
  ScratchOf scratch([this](size_t n) { return Scratch(n); },
                    [this](void* p, size_t n) { FreeScratch(p, n); });
  const char* weight = static_cast<const char*>(w.data);
  absl::Status status;
  for (int64_t n0 = 0; status.ok() && n0 < batch; n0 += chunk) {
    const int64_t images = std::min(chunk, batch - n0);
    const char* image = static_cast<const char*>(x.data) + n0 * in_channels * in_plane * element;
    if (!direct) {
      status = CudaStatus(LaunchIm2Col(x.dtype, image, images, g, columns, stream),
                          "LaunchIm2Col", __FILE__, __LINE__, device_);
    }
    const char* source = direct ? image : static_cast<const char*>(columns);
    char* out = static_cast<char*>(y.data) + n0 * out_channels * out_plane * element;
    // Note [Grouped conv as batched GEMMs]: min(groups, images) launches.
    const ConvChunk sizes{.images = images,
                          .groups = groups,
                          .group_out = group_out,
                          .patch = patch,
                          .out_plane = out_plane,
                          .image_columns = image_columns,
                          .out_channels = out_channels};
    for (int64_t i = 0; status.ok() && i < ConvGemmCount(sizes); ++i) {
      const ConvGemm at = ConvGemmAt(sizes, i);
      BatchedGemm gemm{
          .args = {.dtype = x.dtype,
                   .m = group_out,
                   .n = out_plane,
                   .k = patch,
                   .a = weight + at.a_offset * element,
                   .lda = patch,
                   .b = source + at.b_offset * element,
                   .ldb = out_plane,
                   .c = out + at.c_offset * element,
                   .ldc = out_plane},
          .batch = at.batch,
          .stride_a = at.stride_a,
          .stride_b = at.stride_b,
          .stride_c = at.stride_c,
          .accumulate = args.bias != nullptr};
      status = RunGemm(*context_, scratch, gemm);
    }
  }
  FreeScratch(columns, column_bytes);
  return status;
}

absl::Status CudaBackend::MaxPool2d(const MaxPool2dArgs& args) {
  PARAMD_RETURN_IF_ERROR(CheckMaxPool2d(*this, args).status());
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchMaxPool2d(args, context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::AvgPool2d(const AvgPool2dArgs& args) {
  PARAMD_RETURN_IF_ERROR(CheckAvgPool2d(*this, args).status());
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchAvgPool2d(args, context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::AdaptiveAvgPool2d(const AdaptiveAvgPool2dArgs& args) {
  PARAMD_RETURN_IF_ERROR(CheckAdaptiveAvgPool2d(*this, args).status());
  if (args.output.numel() == 0) return absl::OkStatus();
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchAdaptiveAvgPool2d(args, context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::BatchNorm(const BatchNormArgs& args) {
  PARAMD_RETURN_IF_ERROR(CheckBatchNorm(*this, args));
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchBatchNorm(args, context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::LayerNorm(const LayerNormArgs& args) {
  PARAMD_RETURN_IF_ERROR(CheckLayerNorm(*this, args));
  if (args.input.numel() == 0) return absl::OkStatus();
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchLayerNorm(args, context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::Unary(const UnaryArgs& args) {
  PARAMD_RETURN_IF_ERROR(CheckUnary(*this, args));
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchUnary(args, context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::Binary(const BinaryArgs& args) {
  PARAMD_RETURN_IF_ERROR(CheckBinary(*this, args));
  if (args.output.numel() == 0) return absl::OkStatus();
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchBinary(args, context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::Softmax(const SoftmaxArgs& args) {
  PARAMD_RETURN_IF_ERROR(CheckSoftmax(*this, args));
  if (args.input.numel() == 0) return absl::OkStatus();
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchSoftmax(args, context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::Embedding(const EmbeddingArgs& args) {
  PARAMD_RETURN_IF_ERROR(CheckEmbedding(*this, args));
  if (args.indices.numel() == 0) return absl::OkStatus();
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  // The gather checks every index and sets the thread's flag for a bad one, which the next
  // Synchronize or CopyToHost reports (Note [Deferred index check]): no host round trip.
  PARAMD_ASSIGN_OR_RETURN(int* const bad_index, context_->ArmIndexFlag());
  PARAMD_CUDA_RETURN_IF_ERROR(
      device_, LaunchEmbeddingGather(args, args.weight.shape[0], bad_index, context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::Dropout(const DropoutArgs& args) {
  PARAMD_RETURN_IF_ERROR(CheckDropout(*this, args));
  // The CPU backend's factor, rounded to float once on the host.
  const float scale = args.p < 1.0 ? static_cast<float>(1.0 / (1.0 - args.p)) : 0.0f;
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchDropout(args, scale, context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::Convert(const ConvertArgs& args) {
  PARAMD_RETURN_IF_ERROR(CheckConvert(*this, args));
  if (args.output.numel() == 0) return absl::OkStatus();
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(
      device_, LaunchConvert(args.input, args.output.data, args.output.dtype, args.output.strides,
                             context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::Fill(const FillArgs& args) {
  PARAMD_RETURN_IF_ERROR(CheckFill(*this, args));
  if (args.output.numel() == 0) return absl::OkStatus();
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  // The value travels as a kernel argument: no host copy, no wait.
  PARAMD_CUDA_RETURN_IF_ERROR(
      device_, LaunchFill(args.output.data, args.output.numel(), ElementSize(args.output.dtype),
                          FillBits(args.output.dtype, args.value), context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::OptimizerStep(const OptimizerStepArgs& args) {
  PARAMD_RETURN_IF_ERROR(CheckOptimizerStep(*this, args));
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(
      device_, LaunchOptimizerStep(args, MakeOptimizerScalars(args), context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::Cat(const CatArgs& args) {
  const TensorView& out = args.output;
  PARAMD_RETURN_IF_ERROR(CheckCat(*this, args));
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  const size_t element = ElementSize(out.dtype);
  int64_t offset = 0;
  for (const ConstTensorView& in : args.inputs) {
    if (in.numel() == 0) continue;
    PARAMD_CUDA_RETURN_IF_ERROR(
        device_, LaunchConvert(in,
                               static_cast<char*>(out.data) +
                                   offset * out.strides[args.dim] * static_cast<int64_t>(element),
                               out.dtype, out.strides, context_->stream()));
    offset += in.shape[args.dim];
  }
  return absl::OkStatus();
}

}  // namespace paramd::kernels::cuda
