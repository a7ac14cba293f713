#include "kernels/cuda/cuda_backend.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/context.h"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/launch.h"
#include "server/common/status_macros.h"

namespace paramd::kernels::cuda {
namespace {

// Im2col columns are made this many bytes at a time at most (more images per chunk
// means fewer, larger GEMMs).
constexpr size_t kIm2ColChunkBytes = size_t{256} << 20;

bool IsMathDType(core::DType dtype) {
  return dtype == core::DType::kFloat32 || dtype == core::DType::kFloat16 ||
         dtype == core::DType::kBFloat16;
}

absl::Status RequireContiguous(const ConstTensorView& view, absl::string_view what) {
  if (view.rank < 0 || view.rank > kMaxRank) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": rank ", view.rank, " is outside [0, ", kMaxRank, "]"));
  }
  if (!view.is_contiguous()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " must be contiguous"));
  }
  if (view.data == nullptr && view.numel() > 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, " has no data"));
  }
  return absl::OkStatus();
}

absl::Status RequireSameShape(const ConstTensorView& a, const ConstTensorView& b,
                              absl::string_view what) {
  bool same = a.rank == b.rank;
  for (int d = 0; same && d < a.rank; ++d) same = a.shape[d] == b.shape[d];
  if (!same) return absl::InvalidArgumentError(absl::StrCat(what, ": input and output must match"));
  return absl::OkStatus();
}

absl::Status CheckPool(const ConstTensorView& x, const TensorView& y, absl::string_view name) {
  PARAMD_RETURN_IF_ERROR(RequireContiguous(x, absl::StrCat(name, " input")));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(y, absl::StrCat(name, " output")));
  if (x.rank < 2 || y.rank != x.rank || x.dtype != y.dtype) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": input and output need the same rank (at least 2) and dtype"));
  }
  for (int d = 0; d + 2 < x.rank; ++d) {
    if (x.shape[d] != y.shape[d]) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": input and output differ before the last two dimensions"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(int device) {
  PARAMD_ASSIGN_OR_RETURN(CudaContext * context, CudaContext::Get(device));
  return std::unique_ptr<CudaBackend>(new CudaBackend(device, context));
}

absl::Status CudaBackend::Health() const { return DeviceHealth(device_); }

// ---------------------------------------------------------------------------------------
// Memory and copies.

absl::StatusOr<void*> CudaBackend::Allocate(size_t nbytes) {
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  const size_t limit = limit_.load();
  const size_t before = in_use_.fetch_add(nbytes);
  if (limit != 0 && (before + nbytes > limit || before + nbytes < before)) {
    in_use_.fetch_sub(nbytes);
    return absl::ResourceExhaustedError(absl::StrCat(
        "allocating ", nbytes, " bytes on cuda:", device_, " would exceed the memory limit of ",
        limit, " bytes (", before, " in use); free models or raise --max-memory"));
  }
  // Zero bytes still gets a distinct valid pointer, as on the CPU.
  const size_t size = std::max<size_t>(nbytes, 1);
  void* data = nullptr;
  cudaError_t error = cudaMallocAsync(&data, size, context_->stream());
  if (error == cudaErrorMemoryAllocation) {
    // The pool may hold freed blocks of other sizes: hand them back and try once more.
    cudaGetLastError();
    if (cudaStreamSynchronize(context_->stream()) == cudaSuccess &&
        cudaMemPoolTrimTo(context_->pool(), 0) == cudaSuccess) {
      error = cudaMallocAsync(&data, size, context_->stream());
    }
  }
  if (error != cudaSuccess) {
    in_use_.fetch_sub(nbytes);
    const absl::Status status = CudaStatus(error, "cudaMallocAsync", __FILE__, __LINE__, device_);
    return absl::Status(status.code(), absl::StrCat("allocating ", nbytes, " bytes on cuda:",
                                                    device_, " failed: ", status.message()));
  }
  if (reinterpret_cast<uintptr_t>(data) % 64 != 0) {
    // Backend's contract promises 64-byte alignment; the pool gives far more in practice.
    cudaFreeAsync(data, context_->stream());
    in_use_.fetch_sub(nbytes);
    return absl::InternalError(absl::StrCat("cudaMallocAsync on cuda:", device_,
                                            " returned memory aligned to less than 64 bytes"));
  }
  return data;
}

void CudaBackend::Free(void* data, size_t nbytes) {
  in_use_.fetch_sub(nbytes);
  // On an unhealthy device the memory is lost with the context anyway.
  if (data == nullptr || !context_->Enter().ok()) return;
  // A failure here can only be a sticky fault, which CudaStatus records for Health().
  CudaStatus(cudaFreeAsync(data, context_->stream()), "cudaFreeAsync", __FILE__, __LINE__,
             device_)
      .IgnoreError();
}

absl::StatusOr<void*> CudaBackend::Scratch(size_t nbytes) {
  void* data = nullptr;
  PARAMD_CUDA_RETURN_IF_ERROR(device_,
                              cudaMallocAsync(&data, std::max<size_t>(nbytes, 1), context_->stream()));
  return data;
}

void CudaBackend::FreeScratch(void* data) {
  if (data == nullptr) return;
  CudaStatus(cudaFreeAsync(data, context_->stream()), "cudaFreeAsync", __FILE__, __LINE__,
             device_)
      .IgnoreError();
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
  PARAMD_CUDA_RETURN_IF_ERROR(device_, cudaStreamSynchronize(stream));
  return absl::OkStatus();
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
    FreeScratch(staging);
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
  PARAMD_CUDA_RETURN_IF_ERROR(device_, cudaStreamSynchronize(context_->stream()));
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// Ops.

absl::Status CudaBackend::Supports(const OpQuery& query) const {
  bool ok = IsMathDType(query.dtype);
  switch (query.kind) {
    case OpKind::kEmbedding:
      ok = ok &&
           (query.index_dtype == core::DType::kInt64 || query.index_dtype == core::DType::kInt32);
      break;
    case OpKind::kCat:
    case OpKind::kConvert:
      // Copies work for every dtype.
      ok = true;
      break;
    default:
      break;
  }
  return ok ? absl::OkStatus() : Unsupported(query);
}

absl::Status CudaBackend::Gemm(const GemmArgs& args) {
  PARAMD_RETURN_IF_ERROR(
      Supports({.kind = OpKind::kGemm, .dtype = args.dtype, .unary = args.epilogue}));
  const int64_t m = args.m, n = args.n, k = args.k;
  if (m < 0 || n < 0 || k < 0) return absl::InvalidArgumentError("gemm: negative size");
  const int64_t a_cols = args.trans_a ? m : k;
  const int64_t b_cols = args.trans_b ? k : n;
  if ((k > 0 && m > 0 && args.lda < std::max<int64_t>(a_cols, 1)) ||
      (k > 0 && n > 0 && args.ldb < std::max<int64_t>(b_cols, 1)) ||
      (m > 0 && args.ldc < std::max<int64_t>(n, 1))) {
    return absl::InvalidArgumentError("gemm: a leading dimension is smaller than its row");
  }
  if (m == 0 || n == 0) return absl::OkStatus();
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  return RunGemm(*context_, {.args = args});
}

absl::Status CudaBackend::Conv2d(const Conv2dArgs& args) {
  PARAMD_RETURN_IF_ERROR(Supports({.kind = OpKind::kConv2d, .dtype = args.input.dtype}));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.input, "conv2d input"));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.weight, "conv2d weight"));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.output, "conv2d output"));
  const ConstTensorView& x = args.input;
  const ConstTensorView& w = args.weight;
  const TensorView& y = args.output;
  if (x.rank != 4 || w.rank != 4 || y.rank != 4 || w.dtype != x.dtype || y.dtype != x.dtype) {
    return absl::InvalidArgumentError("conv2d: input, weight and output must be 4-D, one dtype");
  }
  const int64_t groups = args.groups;
  const int64_t batch = x.shape[0], in_channels = x.shape[1], out_channels = w.shape[0];
  if (groups < 1 || in_channels != w.shape[1] * groups || out_channels % groups != 0 ||
      y.shape[0] != batch || y.shape[1] != out_channels) {
    return absl::InvalidArgumentError("conv2d: channel counts do not match the groups");
  }
  for (int d = 0; d < 2; ++d) {
    if (args.stride[d] < 1 || args.dilation[d] < 1 || args.padding[d] < 0) {
      return absl::InvalidArgumentError("conv2d: bad stride, dilation or padding");
    }
  }
  if (y.numel() == 0) return absl::OkStatus();
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  const cudaStream_t stream = context_->stream();
  const ConvGeometry g{.channels = in_channels,
                       .height = x.shape[2],
                       .width = x.shape[3],
                       .kernel_h = w.shape[2],
                       .kernel_w = w.shape[3],
                       .out_h = y.shape[2],
                       .out_w = y.shape[3],
                       .stride_h = args.stride[0],
                       .stride_w = args.stride[1],
                       .pad_h = args.padding[0],
                       .pad_w = args.padding[1],
                       .dilation_h = args.dilation[0],
                       .dilation_w = args.dilation[1]};
  const size_t element = core::ElementSize(x.dtype);
  const int64_t group_in = w.shape[1], group_out = out_channels / groups;
  const int64_t patch = group_in * g.kernel_h * g.kernel_w;
  const int64_t out_plane = g.out_h * g.out_w, in_plane = g.height * g.width;

  if (patch == 0) {
    PARAMD_CUDA_RETURN_IF_ERROR(device_,
                                cudaMemsetAsync(y.data, 0, y.numel() * element, stream));
  } else {
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
    if (!direct) {
      PARAMD_ASSIGN_OR_RETURN(columns, Scratch(chunk * image_columns * element));
    }
    absl::Status status;
    for (int64_t n0 = 0; status.ok() && n0 < batch; n0 += chunk) {
      const int64_t images = std::min(chunk, batch - n0);
      const char* image = static_cast<const char*>(x.data) + n0 * in_channels * in_plane * element;
      if (!direct) {
        status = CudaStatus(LaunchIm2Col(x.dtype, image, images, g, columns, stream),
                            "LaunchIm2Col", __FILE__, __LINE__, device_);
      }
      const char* source = direct ? image : static_cast<const char*>(columns);
      // Per group, one batched product over the images: out_g[n] = weight_g · columns_g[n].
      for (int64_t gi = 0; status.ok() && gi < groups; ++gi) {
        BatchedGemm gemm{
            .args = {.dtype = x.dtype,
                     .m = group_out,
                     .n = out_plane,
                     .k = patch,
                     .a = static_cast<const char*>(w.data) + gi * group_out * patch * element,
                     .lda = patch,
                     .b = source + gi * patch * out_plane * element,
                     .ldb = out_plane,
                     .c = static_cast<char*>(y.data) +
                          (n0 * out_channels + gi * group_out) * out_plane * element,
                     .ldc = out_plane},
            .batch = images,
            .stride_a = 0,
            .stride_b = image_columns,
            .stride_c = out_channels * out_plane};
        status = RunGemm(*context_, gemm);
      }
    }
    FreeScratch(columns);
    PARAMD_RETURN_IF_ERROR(status);
  }
  if (args.bias != nullptr) {
    PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchChannelBias(x.dtype, y.data, batch, out_channels,
                                                           out_plane, args.bias, stream));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::MaxPool2d(const MaxPool2dArgs& args) {
  PARAMD_RETURN_IF_ERROR(Supports({.kind = OpKind::kMaxPool2d, .dtype = args.input.dtype}));
  PARAMD_RETURN_IF_ERROR(CheckPool(args.input, args.output, "max_pool2d"));
  for (int d = 0; d < 2; ++d) {
    if (args.kernel[d] < 1 || args.stride[d] < 1 || args.dilation[d] < 1 || args.padding[d] < 0) {
      return absl::InvalidArgumentError("max_pool2d: bad kernel, stride, dilation or padding");
    }
  }
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchMaxPool2d(args, context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::AvgPool2d(const AvgPool2dArgs& args) {
  PARAMD_RETURN_IF_ERROR(Supports({.kind = OpKind::kAvgPool2d, .dtype = args.input.dtype}));
  PARAMD_RETURN_IF_ERROR(CheckPool(args.input, args.output, "avg_pool2d"));
  for (int d = 0; d < 2; ++d) {
    if (args.kernel[d] < 1 || args.stride[d] < 1 || args.padding[d] < 0) {
      return absl::InvalidArgumentError("avg_pool2d: bad kernel, stride or padding");
    }
  }
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchAvgPool2d(args, context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::AdaptiveAvgPool2d(const AdaptiveAvgPool2dArgs& args) {
  PARAMD_RETURN_IF_ERROR(Supports({.kind = OpKind::kAdaptiveAvgPool2d, .dtype = args.input.dtype}));
  PARAMD_RETURN_IF_ERROR(CheckPool(args.input, args.output, "adaptive_avg_pool2d"));
  if (args.output.numel() == 0) return absl::OkStatus();
  if (args.input.shape[args.input.rank - 2] == 0 || args.input.shape[args.input.rank - 1] == 0) {
    return absl::InvalidArgumentError("adaptive_avg_pool2d: empty input planes");
  }
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchAdaptiveAvgPool2d(args, context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::BatchNorm(const BatchNormArgs& args) {
  PARAMD_RETURN_IF_ERROR(Supports({.kind = OpKind::kBatchNorm, .dtype = args.input.dtype}));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.input, "batch_norm input"));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.output, "batch_norm output"));
  const ConstTensorView& x = args.input;
  if (x.rank < 2 || args.output.rank != x.rank || args.output.dtype != x.dtype ||
      args.output.numel() != x.numel()) {
    return absl::InvalidArgumentError("batch_norm: input and output must match, rank >= 2");
  }
  if (!args.use_batch_stats && (args.running_mean == nullptr || args.running_var == nullptr)) {
    return absl::InvalidArgumentError("batch_norm: running statistics are required in eval");
  }
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchBatchNorm(args, context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::LayerNorm(const LayerNormArgs& args) {
  PARAMD_RETURN_IF_ERROR(Supports({.kind = OpKind::kLayerNorm, .dtype = args.input.dtype}));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.input, "layer_norm input"));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.output, "layer_norm output"));
  const int64_t total = args.input.numel();
  const int64_t size = args.normalized_size;
  if (args.output.numel() != total || args.output.dtype != args.input.dtype || size < 0 ||
      (size == 0 ? total != 0 : total % size != 0)) {
    return absl::InvalidArgumentError("layer_norm: shapes do not match normalized_size");
  }
  if (total == 0) return absl::OkStatus();
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchLayerNorm(args, context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::Unary(const UnaryArgs& args) {
  PARAMD_RETURN_IF_ERROR(
      Supports({.kind = OpKind::kUnary, .dtype = args.input.dtype, .unary = args.op}));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.input, "unary input"));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.output, "unary output"));
  if (args.output.numel() != args.input.numel() || args.output.dtype != args.input.dtype) {
    return absl::InvalidArgumentError("unary: input and output must match");
  }
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchUnary(args, context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::Binary(const BinaryArgs& args) {
  const core::DType dtype = args.output.dtype;
  PARAMD_RETURN_IF_ERROR(Supports({.kind = OpKind::kBinary, .dtype = dtype, .binary = args.op}));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.output, "binary output"));
  const int rank = args.output.rank;
  if (args.a.rank != rank || args.b.rank != rank || args.a.dtype != dtype ||
      args.b.dtype != dtype) {
    return absl::InvalidArgumentError("binary: operands must have the output's rank and dtype");
  }
  for (int d = 0; d < rank; ++d) {
    if (args.a.shape[d] != args.output.shape[d] || args.b.shape[d] != args.output.shape[d]) {
      return absl::InvalidArgumentError("binary: operands must be expanded to the output shape");
    }
  }
  if (args.output.numel() == 0) return absl::OkStatus();
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchBinary(args, context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::Softmax(const SoftmaxArgs& args) {
  const core::DType dtype = args.input.dtype;
  PARAMD_RETURN_IF_ERROR(Supports({.kind = OpKind::kSoftmax, .dtype = dtype}));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.input, "softmax input"));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.output, "softmax output"));
  if (args.output.numel() != args.input.numel() || args.output.dtype != dtype) {
    return absl::InvalidArgumentError("softmax: input and output must match");
  }
  // A 0-dim tensor is a single row of one element.
  if (args.dim < 0 || args.dim >= std::max(args.input.rank, 1)) {
    return absl::InvalidArgumentError("softmax: dim out of range");
  }
  if (args.input.numel() == 0) return absl::OkStatus();
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchSoftmax(args, context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::Embedding(const EmbeddingArgs& args) {
  const ConstTensorView& w = args.weight;
  PARAMD_RETURN_IF_ERROR(
      Supports({.kind = OpKind::kEmbedding, .dtype = w.dtype, .index_dtype = args.indices.dtype}));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(w, "embedding weight"));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.indices, "embedding indices"));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.output, "embedding output"));
  if (w.rank != 2 || args.output.dtype != w.dtype) {
    return absl::InvalidArgumentError("embedding: weight must be 2-D, output of its dtype");
  }
  const int64_t rows = w.shape[0], dim = w.shape[1];
  const int64_t count = args.indices.numel();
  if (args.output.numel() != count * dim) {
    return absl::InvalidArgumentError("embedding: output must be [*indices.shape, dim]");
  }
  if (count == 0) return absl::OkStatus();
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  const cudaStream_t stream = context_->stream();
  // Checked before the gather is queued, so a bad index leaves the output untouched.
  PARAMD_ASSIGN_OR_RETURN(const int bad, context_->ReadFlag([&](int* flag) {
    return CudaStatus(LaunchEmbeddingCheck(args.indices, rows, flag, stream),
                      "LaunchEmbeddingCheck", __FILE__, __LINE__, device_);
  }));
  if (bad != 0) return absl::InvalidArgumentError("index out of range in self");
  PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchEmbeddingGather(args, stream));
  return absl::OkStatus();
}

absl::Status CudaBackend::Dropout(const DropoutArgs& args) {
  const core::DType dtype = args.input.dtype;
  PARAMD_RETURN_IF_ERROR(Supports({.kind = OpKind::kDropout, .dtype = dtype}));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.input, "dropout input"));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.output, "dropout output"));
  if (args.output.numel() != args.input.numel() || args.output.dtype != dtype) {
    return absl::InvalidArgumentError("dropout: input and output must match");
  }
  if (!(args.p >= 0.0 && args.p <= 1.0)) {
    return absl::InvalidArgumentError("dropout: p must be in [0, 1]");
  }
  // The CPU backend's factor, rounded to float once on the host.
  const float scale = args.p < 1.0 ? static_cast<float>(1.0 / (1.0 - args.p)) : 0.0f;
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(device_, LaunchDropout(args, scale, context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::Convert(const ConvertArgs& args) {
  PARAMD_RETURN_IF_ERROR(Supports(
      {.kind = OpKind::kConvert, .dtype = args.input.dtype, .out_dtype = args.output.dtype}));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.output, "convert output"));
  PARAMD_RETURN_IF_ERROR(RequireSameShape(args.input, args.output, "convert"));
  if (args.output.numel() == 0) return absl::OkStatus();
  if (args.input.data == nullptr) return absl::InvalidArgumentError("convert input has no data");
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  PARAMD_CUDA_RETURN_IF_ERROR(
      device_, LaunchConvert(args.input, args.output.data, args.output.dtype, args.output.strides,
                             context_->stream()));
  return absl::OkStatus();
}

absl::Status CudaBackend::Cat(const CatArgs& args) {
  const TensorView& out = args.output;
  PARAMD_RETURN_IF_ERROR(Supports({.kind = OpKind::kCat, .dtype = out.dtype}));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(out, "cat output"));
  if (args.dim < 0 || args.dim >= out.rank) {
    return absl::InvalidArgumentError("cat: dim out of range");
  }
  int64_t along = 0;
  for (const ConstTensorView& in : args.inputs) {
    if (in.numel() == 0) continue;
    bool ok = in.rank == out.rank && in.dtype == out.dtype && in.data != nullptr;
    for (int d = 0; ok && d < out.rank; ++d) ok = d == args.dim || in.shape[d] == out.shape[d];
    if (!ok) return absl::InvalidArgumentError("cat: inputs must match the output's shape");
    along += in.shape[args.dim];
  }
  if (along != out.shape[args.dim]) {
    return absl::InvalidArgumentError("cat: the inputs do not fill the output");
  }
  PARAMD_RETURN_IF_ERROR(context_->Enter());
  const size_t element = core::ElementSize(out.dtype);
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
