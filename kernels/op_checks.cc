#include "kernels/op_checks.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/optimizer_math.h"

namespace paramd::kernels {
namespace {

absl::Status Invalid(absl::string_view message) { return absl::InvalidArgumentError(message); }

// Input and output of an op that maps elements one to one: same count and dtype.
absl::Status CheckOneToOne(const ConstTensorView& input, const TensorView& output,
                           absl::string_view name) {
  PARAMD_RETURN_IF_ERROR(RequireContiguous(input, absl::StrCat(name, " input")));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(output, absl::StrCat(name, " output")));
  if (output.numel() != input.numel() || output.dtype != input.dtype) {
    return Invalid(absl::StrCat(name, ": input and output must match"));
  }
  return absl::OkStatus();
}

absl::StatusOr<PoolPlanes> CheckPool(const ConstTensorView& x, const TensorView& y,
                                     absl::string_view name) {
  PARAMD_RETURN_IF_ERROR(RequireContiguous(x, absl::StrCat(name, " input")));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(y, absl::StrCat(name, " output")));
  if (x.rank < 2 || y.rank != x.rank || x.dtype != y.dtype) {
    return Invalid(
        absl::StrCat(name, ": input and output need the same rank (at least 2) and dtype"));
  }
  for (int d = 0; d + 2 < x.rank; ++d) {
    if (x.shape[d] != y.shape[d]) {
      return Invalid(absl::StrCat(name, ": input and output differ before the last two dimensions"));
    }
  }
  PoolPlanes p{.count = 1,
               .height = x.shape[x.rank - 2],
               .width = x.shape[x.rank - 1],
               .out_h = y.shape[y.rank - 2],
               .out_w = y.shape[y.rank - 1]};
  for (int d = 0; d + 2 < x.rank; ++d) p.count *= x.shape[d];
  return p;
}

}  // namespace

bool IsMathDType(DType dtype) {
  return dtype == DType::kFloat32 || dtype == DType::kFloat16 ||
         dtype == DType::kBFloat16;
}

bool SupportedByBuiltInBackends(const OpQuery& query) {
  switch (query.kind) {
    case OpKind::kEmbedding:
      return IsMathDType(query.dtype) && (query.index_dtype == DType::kInt64 ||
                                          query.index_dtype == DType::kInt32);
    case OpKind::kCat:
    case OpKind::kConvert:
    case OpKind::kFill:
      return true;  // copies work for every dtype
    case OpKind::kOptimizerStep:
      return false;  // a backend that has it says so itself
    default:
      return IsMathDType(query.dtype);
  }
}

absl::Status RequireContiguous(const ConstTensorView& view, absl::string_view what) {
  if (view.rank < 0 || view.rank > kMaxRank) {
    return Invalid(absl::StrCat(what, ": rank ", view.rank, " is outside [0, ", kMaxRank, "]"));
  }
  if (!view.is_contiguous()) return Invalid(absl::StrCat(what, " must be contiguous"));
  if (view.data == nullptr && view.numel() > 0) return Invalid(absl::StrCat(what, " has no data"));
  return absl::OkStatus();
}

absl::Status CheckGemm(const Backend& backend, const GemmArgs& args) {
  PARAMD_RETURN_IF_ERROR(
      backend.Supports({.kind = OpKind::kGemm, .dtype = args.dtype, .unary = args.epilogue}));
  const int64_t m = args.m, n = args.n, k = args.k;
  if (m < 0 || n < 0 || k < 0) return Invalid("gemm: negative size");
  const int64_t a_cols = args.trans_a ? m : k;
  const int64_t b_cols = args.trans_b ? k : n;
  // With k == 0 neither A nor B is read.
  if ((k > 0 && m > 0 && args.lda < std::max<int64_t>(a_cols, 1)) ||
      (k > 0 && n > 0 && args.ldb < std::max<int64_t>(b_cols, 1)) ||
      (m > 0 && args.ldc < std::max<int64_t>(n, 1))) {
    return Invalid("gemm: a leading dimension is smaller than its row");
  }
  return absl::OkStatus();
}

absl::StatusOr<ConvGeometry> CheckConv2d(const Backend& backend, const Conv2dArgs& args) {
  PARAMD_RETURN_IF_ERROR(backend.Supports({.kind = OpKind::kConv2d, .dtype = args.input.dtype}));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.input, "conv2d input"));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.weight, "conv2d weight"));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.output, "conv2d output"));
  const ConstTensorView& x = args.input;
  const ConstTensorView& w = args.weight;
  const TensorView& y = args.output;
  if (x.rank != 4 || w.rank != 4 || y.rank != 4 || w.dtype != x.dtype || y.dtype != x.dtype) {
    return Invalid("conv2d: input, weight and output must be 4-D, one dtype");
  }
  const int64_t groups = args.groups;
  const int64_t out_channels = w.shape[0];
  if (groups < 1 || x.shape[1] != w.shape[1] * groups || out_channels % groups != 0 ||
      y.shape[0] != x.shape[0] || y.shape[1] != out_channels) {
    return Invalid("conv2d: channel counts do not match the groups");
  }
  for (int d = 0; d < 2; ++d) {
    if (args.stride[d] < 1 || args.dilation[d] < 1 || args.padding[d] < 0) {
      return Invalid("conv2d: bad stride, dilation or padding");
    }
  }
  return ConvGeometry{.channels = w.shape[1],
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
}

absl::StatusOr<PoolPlanes> CheckMaxPool2d(const Backend& backend, const MaxPool2dArgs& args) {
  PARAMD_RETURN_IF_ERROR(
      backend.Supports({.kind = OpKind::kMaxPool2d, .dtype = args.input.dtype}));
  PARAMD_ASSIGN_OR_RETURN(PoolPlanes planes, CheckPool(args.input, args.output, "max_pool2d"));
  for (int d = 0; d < 2; ++d) {
    if (args.kernel[d] < 1 || args.stride[d] < 1 || args.dilation[d] < 1 || args.padding[d] < 0) {
      return Invalid("max_pool2d: bad kernel, stride, dilation or padding");
    }
  }
  return planes;
}

absl::StatusOr<PoolPlanes> CheckAvgPool2d(const Backend& backend, const AvgPool2dArgs& args) {
  PARAMD_RETURN_IF_ERROR(
      backend.Supports({.kind = OpKind::kAvgPool2d, .dtype = args.input.dtype}));
  PARAMD_ASSIGN_OR_RETURN(PoolPlanes planes, CheckPool(args.input, args.output, "avg_pool2d"));
  for (int d = 0; d < 2; ++d) {
    if (args.kernel[d] < 1 || args.stride[d] < 1 || args.padding[d] < 0) {
      return Invalid("avg_pool2d: bad kernel, stride or padding");
    }
  }
  return planes;
}

absl::StatusOr<PoolPlanes> CheckAdaptiveAvgPool2d(const Backend& backend,
                                                  const AdaptiveAvgPool2dArgs& args) {
  PARAMD_RETURN_IF_ERROR(
      backend.Supports({.kind = OpKind::kAdaptiveAvgPool2d, .dtype = args.input.dtype}));
  PARAMD_ASSIGN_OR_RETURN(PoolPlanes planes,
                          CheckPool(args.input, args.output, "adaptive_avg_pool2d"));
  // An output cell would average nothing (PyTorch refuses empty planes too).
  if (args.output.numel() > 0 && (planes.height == 0 || planes.width == 0)) {
    return Invalid("adaptive_avg_pool2d: empty input planes");
  }
  return planes;
}

absl::Status CheckBatchNorm(const Backend& backend, const BatchNormArgs& args) {
  PARAMD_RETURN_IF_ERROR(
      backend.Supports({.kind = OpKind::kBatchNorm, .dtype = args.input.dtype}));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.input, "batch_norm input"));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.output, "batch_norm output"));
  const ConstTensorView& x = args.input;
  if (x.rank < 2 || args.output.rank != x.rank || args.output.dtype != x.dtype ||
      args.output.numel() != x.numel()) {
    return Invalid("batch_norm: input and output must match, rank >= 2");
  }
  if (!args.use_batch_stats && (args.running_mean == nullptr || args.running_var == nullptr)) {
    return Invalid("batch_norm: running statistics are required in eval");
  }
  if ((args.num_batches_tracked == nullptr) != (args.new_num_batches_tracked == nullptr) ||
      (args.cumulative_average && args.num_batches_tracked == nullptr) ||
      (args.num_batches_tracked != nullptr && !args.use_batch_stats)) {
    return Invalid("batch_norm: a batch count needs its successor and batch statistics");
  }
  return absl::OkStatus();
}

absl::Status CheckLayerNorm(const Backend& backend, const LayerNormArgs& args) {
  PARAMD_RETURN_IF_ERROR(
      backend.Supports({.kind = OpKind::kLayerNorm, .dtype = args.input.dtype}));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.input, "layer_norm input"));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.output, "layer_norm output"));
  const int64_t total = args.input.numel();
  const int64_t size = args.normalized_size;
  if (args.output.numel() != total || args.output.dtype != args.input.dtype || size < 0 ||
      (size == 0 ? total != 0 : total % size != 0)) {
    return Invalid("layer_norm: shapes do not match normalized_size");
  }
  return absl::OkStatus();
}

absl::Status CheckUnary(const Backend& backend, const UnaryArgs& args) {
  PARAMD_RETURN_IF_ERROR(
      backend.Supports({.kind = OpKind::kUnary, .dtype = args.input.dtype, .unary = args.op}));
  return CheckOneToOne(args.input, args.output, "unary");
}

absl::Status CheckBinary(const Backend& backend, const BinaryArgs& args) {
  const DType dtype = args.output.dtype;
  PARAMD_RETURN_IF_ERROR(
      backend.Supports({.kind = OpKind::kBinary, .dtype = dtype, .binary = args.op}));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.output, "binary output"));
  const int rank = args.output.rank;
  if (args.a.rank != rank || args.b.rank != rank || args.a.dtype != dtype ||
      args.b.dtype != dtype) {
    return Invalid("binary: operands must have the output's rank and dtype");
  }
  for (int d = 0; d < rank; ++d) {
    if (args.a.shape[d] != args.output.shape[d] || args.b.shape[d] != args.output.shape[d]) {
      return Invalid("binary: operands must be expanded to the output shape");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckSoftmax(const Backend& backend, const SoftmaxArgs& args) {
  PARAMD_RETURN_IF_ERROR(backend.Supports({.kind = OpKind::kSoftmax, .dtype = args.input.dtype}));
  PARAMD_RETURN_IF_ERROR(CheckOneToOne(args.input, args.output, "softmax"));
  // A 0-dim tensor is a single row of one element.
  if (args.dim < 0 || args.dim >= std::max(args.input.rank, 1)) {
    return Invalid("softmax: dim out of range");
  }
  return absl::OkStatus();
}

absl::Status CheckEmbedding(const Backend& backend, const EmbeddingArgs& args) {
  const ConstTensorView& w = args.weight;
  PARAMD_RETURN_IF_ERROR(backend.Supports(
      {.kind = OpKind::kEmbedding, .dtype = w.dtype, .index_dtype = args.indices.dtype}));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(w, "embedding weight"));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.indices, "embedding indices"));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.output, "embedding output"));
  if (w.rank != 2 || args.output.dtype != w.dtype) {
    return Invalid("embedding: weight must be 2-D, output of its dtype");
  }
  if (args.output.numel() != args.indices.numel() * w.shape[1]) {
    return Invalid("embedding: output must be [*indices.shape, dim]");
  }
  return absl::OkStatus();
}

absl::Status CheckDropout(const Backend& backend, const DropoutArgs& args) {
  PARAMD_RETURN_IF_ERROR(backend.Supports({.kind = OpKind::kDropout, .dtype = args.input.dtype}));
  PARAMD_RETURN_IF_ERROR(CheckOneToOne(args.input, args.output, "dropout"));
  if (!(args.p >= 0.0 && args.p <= 1.0)) return Invalid("dropout: p must be in [0, 1]");
  return absl::OkStatus();
}

absl::Status CheckConvert(const Backend& backend, const ConvertArgs& args) {
  PARAMD_RETURN_IF_ERROR(backend.Supports(
      {.kind = OpKind::kConvert, .dtype = args.input.dtype, .out_dtype = args.output.dtype}));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(args.output, "convert output"));
  bool same = args.input.rank == args.output.rank;
  for (int d = 0; same && d < args.input.rank; ++d) {
    same = args.input.shape[d] == args.output.shape[d];
  }
  if (!same) return Invalid("convert: input and output must have one shape");
  if (args.input.data == nullptr && args.output.numel() > 0) {
    return Invalid("convert input has no data");
  }
  return absl::OkStatus();
}

absl::Status CheckFill(const Backend& backend, const FillArgs& args) {
  PARAMD_RETURN_IF_ERROR(backend.Supports({.kind = OpKind::kFill, .dtype = args.output.dtype}));
  return RequireContiguous(args.output, "fill output");
}

absl::Status CheckCat(const Backend& backend, const CatArgs& args) {
  const TensorView& out = args.output;
  PARAMD_RETURN_IF_ERROR(backend.Supports({.kind = OpKind::kCat, .dtype = out.dtype}));
  PARAMD_RETURN_IF_ERROR(RequireContiguous(out, "cat output"));
  if (args.dim < 0 || args.dim >= out.rank) return Invalid("cat: dim out of range");
  int64_t along = 0;
  for (const ConstTensorView& in : args.inputs) {
    if (in.numel() == 0) continue;
    bool ok = in.rank == out.rank && in.dtype == out.dtype && in.data != nullptr;
    for (int d = 0; ok && d < out.rank; ++d) ok = d == args.dim || in.shape[d] == out.shape[d];
    if (!ok) return Invalid("cat: inputs must match the output's shape");
    along += in.shape[args.dim];
  }
  if (along != out.shape[args.dim]) return Invalid("cat: the inputs do not fill the output");
  return absl::OkStatus();
}

absl::Status CheckOptimizerStep(const Backend& backend, const OptimizerStepArgs& args) {
  PARAMD_RETURN_IF_ERROR(
      backend.Supports({.kind = OpKind::kOptimizerStep, .dtype = args.dtype}));
  const int states = args.algorithm == OptimizerAlgorithm::kSgd ? (args.momentum != 0 ? 1 : 0)
                                                                 : (args.amsgrad ? 3 : 2);
  for (const OptimizerTensor& t : args.tensors) {
    if (t.numel < 0) return Invalid("optimizer step: negative element count");
    if (t.numel == 0) continue;
    if (t.param == nullptr || t.grad == nullptr || t.param_out == nullptr) {
      return Invalid("optimizer step: a tensor has no data");
    }
    // SGD's first momentum step sets the buffer from the gradient and reads no old one.
    const bool needs_input = !(args.algorithm == OptimizerAlgorithm::kSgd && t.first_step);
    for (int k = 0; k < states; ++k) {
      if (t.state_out[k] == nullptr || (needs_input && t.state_in[k] == nullptr)) {
        return Invalid(absl::StrCat("optimizer step: state tensor ", k, " has no data"));
      }
    }
  }
  // torch's own refusal, with its text: nothing has been written yet.
  if (OptimizerScalarsOverflow(args)) return Invalid(kOptimizerScalarOverflow);
  return absl::OkStatus();
}

}  // namespace paramd::kernels
