// nn.Embedding: weight [num_embeddings, embedding_dim] drawn from N(0, 1), with the
// padding_idx row zeroed.
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/core/init.h"
#include "server/core/layers/builtin.h"
#include "server/core/py_format.h"
#include "server/core/runner.h"

namespace paramd::core {
namespace {

struct EmbeddingArgs {
  int64_t num_embeddings = 0;          // required
  int64_t embedding_dim = 0;           // required
  std::optional<int64_t> padding_idx;  // wrapped into [0, num_embeddings)
  std::optional<double> max_norm;
  double norm_type = 2.0;
  bool scale_grad_by_freq = false;
  bool sparse = false;
  DType dtype = DType::kFloat32;
};

absl::StatusOr<EmbeddingArgs> ParseEmbedding(ArgReader& args) {
  EmbeddingArgs parsed;
  PARAMD_ASSIGN_OR_RETURN(parsed.num_embeddings, args.Int("num_embeddings"));
  PARAMD_ASSIGN_OR_RETURN(parsed.embedding_dim, args.Int("embedding_dim"));
  PARAMD_ASSIGN_OR_RETURN(parsed.padding_idx, args.OptionalInt("padding_idx", parsed.padding_idx));
  PARAMD_ASSIGN_OR_RETURN(parsed.max_norm, args.OptionalFloat("max_norm", parsed.max_norm));
  PARAMD_ASSIGN_OR_RETURN(parsed.norm_type, args.Float("norm_type", parsed.norm_type));
  PARAMD_ASSIGN_OR_RETURN(parsed.scale_grad_by_freq,
                          args.Bool("scale_grad_by_freq", parsed.scale_grad_by_freq));
  PARAMD_ASSIGN_OR_RETURN(parsed.sparse, args.Bool("sparse", parsed.sparse));
  PARAMD_ASSIGN_OR_RETURN(parsed.dtype, args.Dtype());
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());

  // Embedding.__init__'s assertions, before the weight is created.
  std::optional<int64_t>& padding_idx = parsed.padding_idx;
  const int64_t num_embeddings = parsed.num_embeddings;
  if (padding_idx.has_value()) {
    if (*padding_idx > 0 && *padding_idx >= num_embeddings) {
      return args.Error("padding_idx", "Padding_idx must be within num_embeddings");
    }
    if (*padding_idx < 0) {
      if (*padding_idx < -num_embeddings) {
        return args.Error("padding_idx", "Padding_idx must be within num_embeddings");
      }
      *padding_idx += num_embeddings;
      args.Put("padding_idx", *padding_idx);
    }
  }
  PARAMD_RETURN_IF_ERROR(CheckNoNegativeDimension({num_embeddings, parsed.embedding_dim}));
  PARAMD_RETURN_IF_ERROR(RequireFloatingDType(args, "Embedding", parsed.dtype));
  return parsed;
}

absl::Status InitEmbedding(const EmbeddingArgs& args, Module& module, InitRng& rng) {
  const DType dtype = args.dtype;
  PARAMD_ASSIGN_OR_RETURN(
      Tensor weight, InitNormal(rng, dtype, {args.num_embeddings, args.embedding_dim}, 0.0, 1.0));
  // padding_idx 0 with num_embeddings 0 passes PyTorch's assertions but has no row to zero
  // (PyTorch then fails with an index error); only an existing row is zeroed here.
  const std::optional<int64_t>& padding_idx = args.padding_idx;
  if (padding_idx.has_value() && *padding_idx < args.num_embeddings) {
    PARAMD_ASSIGN_OR_RETURN(const Tensor row, weight.Select(*padding_idx));
    PARAMD_ASSIGN_OR_RETURN(const Tensor zero, Tensor::Full(dtype, {}, 0.0));
    PARAMD_RETURN_IF_ERROR(CopyConvert(zero, row));
  }
  return module.RegisterParameter("weight", std::make_shared<Parameter>(std::move(weight)));
}

std::string EmbeddingExtraRepr(const Module& module) {
  std::string out = absl::StrCat(PyRepr(ArgOf(module, "num_embeddings")), ", ",
                                 PyRepr(ArgOf(module, "embedding_dim")));
  const nlohmann::ordered_json& padding_idx = ArgOf(module, "padding_idx");
  if (!padding_idx.is_null()) absl::StrAppend(&out, ", padding_idx=", PyRepr(padding_idx));
  const nlohmann::ordered_json& max_norm = ArgOf(module, "max_norm");
  if (!max_norm.is_null()) absl::StrAppend(&out, ", max_norm=", PyRepr(max_norm));
  const nlohmann::ordered_json& norm_type = ArgOf(module, "norm_type");
  if (norm_type.is_number() && norm_type.get<double>() != 2.0) {
    absl::StrAppend(&out, ", norm_type=", PyRepr(norm_type));
  }
  const nlohmann::ordered_json& scale = ArgOf(module, "scale_grad_by_freq");
  if (scale.is_boolean() && scale.get<bool>()) out += ", scale_grad_by_freq=True";
  const nlohmann::ordered_json& sparse = ArgOf(module, "sparse");
  if (sparse.is_boolean() && sparse.get<bool>()) out += ", sparse=True";
  return out;
}

absl::StatusOr<Tensor> EmbeddingForward(const EmbeddingArgs& args, const LayerCall& call,
                                        const Tensor& input) {
  Runner& run = call.runner;
  if (input.dtype() != DType::kInt64 && input.dtype() != DType::kInt32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Expected tensor for argument #1 'indices' to have one of the following scalar types: "
        "Long, Int; but got torch.",
        ScalarTypeName(input.dtype()), "Tensor instead (while checking arguments for embedding)"));
  }
  if (args.max_norm.has_value()) {
    return absl::UnimplementedError(
        "max_norm is not supported by paramd's forward: PyTorch renormalises the weight in "
        "place during forward; renormalise it on the client and set max_norm=None");
  }
  const Tensor weight = ParameterOf(call.module, "weight");
  if (!weight.defined() || weight.dim() != 2) {
    return absl::InvalidArgumentError("weight must be 2-D");
  }
  PARAMD_ASSIGN_OR_RETURN(Tensor indices, run.Contiguous(input));
  PARAMD_ASSIGN_OR_RETURN(Tensor w, run.Contiguous(weight));
  Shape shape = indices.shape();
  shape.push_back(weight.shape()[1]);
  if (static_cast<int64_t>(shape.size()) > kernels::kMaxRank) {
    return absl::UnimplementedError(
        absl::StrCat("tensors of more than ", kernels::kMaxRank, " dimensions are not supported"));
  }
  PARAMD_ASSIGN_OR_RETURN(Tensor out, run.Empty(weight.dtype(), shape));
  PARAMD_RETURN_IF_ERROR(run.backend().Embedding(
      {.weight = ConstView(w), .indices = ConstView(indices), .output = MutableView(out)}));
  return out;
}

}  // namespace

const LayerDef& EmbeddingLayer() {
  static const LayerDef* const def = MakeLayer<EmbeddingArgs>({
      .type = "Embedding",
      .parse = &ParseEmbedding,
      .init = &InitEmbedding,
      .extra_repr = &EmbeddingExtraRepr,
      .forward = &EmbeddingForward,
      .attributes = {"num_embeddings", "embedding_dim", "padding_idx", "max_norm", "norm_type",
                     "scale_grad_by_freq", "sparse"},
  });
  return *def;
}

}  // namespace paramd::core
