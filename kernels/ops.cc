#include "kernels/ops.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/element.h"
#include "kernels/backend.h"

namespace paramd::kernels {

absl::string_view OpKindName(OpKind kind) {
  switch (kind) {
    case OpKind::kGemm:
      return "gemm";
    case OpKind::kConv2d:
      return "conv2d";
    case OpKind::kMaxPool2d:
      return "max_pool2d";
    case OpKind::kAvgPool2d:
      return "avg_pool2d";
    case OpKind::kAdaptiveAvgPool2d:
      return "adaptive_avg_pool2d";
    case OpKind::kBatchNorm:
      return "batch_norm";
    case OpKind::kLayerNorm:
      return "layer_norm";
    case OpKind::kUnary:
      return "unary";
    case OpKind::kBinary:
      return "binary";
    case OpKind::kSoftmax:
      return "softmax";
    case OpKind::kEmbedding:
      return "embedding";
    case OpKind::kDropout:
      return "dropout";
    case OpKind::kCat:
      return "cat";
    case OpKind::kConvert:
      return "convert";
    case OpKind::kOptimizerStep:
      return "optimizer step";
    case OpKind::kFill:
      return "fill";
  }
  return "unknown op";
}

absl::string_view UnaryOpName(UnaryOp op) {
  switch (op) {
    case UnaryOp::kIdentity:
      return "identity";
    case UnaryOp::kReLU:
      return "relu";
    case UnaryOp::kGELU:
      return "gelu";
    case UnaryOp::kGELUTanh:
      return "gelu(approximate='tanh')";
    case UnaryOp::kSiLU:
      return "silu";
    case UnaryOp::kSigmoid:
      return "sigmoid";
    case UnaryOp::kTanh:
      return "tanh";
  }
  return "unknown unary op";
}

absl::string_view BinaryOpName(BinaryOp op) {
  switch (op) {
    case BinaryOp::kAdd:
      return "add";
    case BinaryOp::kSub:
      return "sub";
    case BinaryOp::kMul:
      return "mul";
    case BinaryOp::kDiv:
      return "div";
  }
  return "unknown binary op";
}

absl::Status Backend::Unsupported(const OpQuery& query) const {
  std::string what(OpKindName(query.kind));
  if (query.kind == OpKind::kUnary) what = std::string(UnaryOpName(query.unary));
  if (query.kind == OpKind::kBinary) what = std::string(BinaryOpName(query.binary));
  if (query.kind == OpKind::kGemm && query.unary != UnaryOp::kIdentity) {
    absl::StrAppend(&what, " with a fused ", UnaryOpName(query.unary));
  }
  std::string types(DTypeName(query.dtype));
  if (query.kind == OpKind::kConvert) {
    absl::StrAppend(&types, " to ", DTypeName(query.out_dtype));
  }
  if (query.kind == OpKind::kEmbedding) {
    absl::StrAppend(&types, " with ", DTypeName(query.index_dtype), " indices");
  }
  return absl::UnimplementedError(
      absl::StrCat("the ", device().ToString(), " backend has no ", what, " kernel for ", types));
}

absl::Status Backend::Supports(const OpQuery& query) const { return Unsupported(query); }

absl::Status Backend::Gemm(const GemmArgs& args) {
  return Unsupported({.kind = OpKind::kGemm, .dtype = args.dtype, .unary = args.epilogue});
}
absl::Status Backend::Conv2d(const Conv2dArgs& args) {
  return Unsupported({.kind = OpKind::kConv2d, .dtype = args.input.dtype});
}
absl::Status Backend::MaxPool2d(const MaxPool2dArgs& args) {
  return Unsupported({.kind = OpKind::kMaxPool2d, .dtype = args.input.dtype});
}
absl::Status Backend::AvgPool2d(const AvgPool2dArgs& args) {
  return Unsupported({.kind = OpKind::kAvgPool2d, .dtype = args.input.dtype});
}
absl::Status Backend::AdaptiveAvgPool2d(const AdaptiveAvgPool2dArgs& args) {
  return Unsupported({.kind = OpKind::kAdaptiveAvgPool2d, .dtype = args.input.dtype});
}
absl::Status Backend::BatchNorm(const BatchNormArgs& args) {
  return Unsupported({.kind = OpKind::kBatchNorm, .dtype = args.input.dtype});
}
absl::Status Backend::LayerNorm(const LayerNormArgs& args) {
  return Unsupported({.kind = OpKind::kLayerNorm, .dtype = args.input.dtype});
}
absl::Status Backend::Unary(const UnaryArgs& args) {
  return Unsupported({.kind = OpKind::kUnary, .dtype = args.input.dtype, .unary = args.op});
}
absl::Status Backend::Binary(const BinaryArgs& args) {
  return Unsupported({.kind = OpKind::kBinary, .dtype = args.a.dtype, .binary = args.op});
}
absl::Status Backend::Softmax(const SoftmaxArgs& args) {
  return Unsupported({.kind = OpKind::kSoftmax, .dtype = args.input.dtype});
}
absl::Status Backend::Embedding(const EmbeddingArgs& args) {
  return Unsupported(
      {.kind = OpKind::kEmbedding, .dtype = args.weight.dtype, .index_dtype = args.indices.dtype});
}
absl::Status Backend::Dropout(const DropoutArgs& args) {
  return Unsupported({.kind = OpKind::kDropout, .dtype = args.input.dtype});
}
absl::Status Backend::Cat(const CatArgs& args) {
  return Unsupported({.kind = OpKind::kCat, .dtype = args.output.dtype});
}
absl::Status Backend::OptimizerStep(const OptimizerStepArgs& args) {
  return Unsupported({.kind = OpKind::kOptimizerStep, .dtype = args.dtype});
}
absl::Status Backend::Fill(const FillArgs& args) {
  return Unsupported({.kind = OpKind::kFill, .dtype = args.output.dtype});
}

uint64_t FillBits(DType dtype, double value) {
  uint64_t bits = 0;
  VisitDType(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T element = CastElement<T>(value);
    static_assert(sizeof(T) <= sizeof(bits));
    std::memcpy(&bits, &element, sizeof(T));
  });
  return bits;
}

absl::Status Backend::Convert(const ConvertArgs& args) {
  return Unsupported(
      {.kind = OpKind::kConvert, .dtype = args.input.dtype, .out_dtype = args.output.dtype});
}

}  // namespace paramd::kernels
