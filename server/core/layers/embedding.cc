// nn.Embedding: weight [num_embeddings, embedding_dim] drawn from N(0, 1), with the
// padding_idx row zeroed.
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/core/init.h"
#include "server/core/layers/builtin.h"
#include "server/core/py_format.h"

namespace paramd::core {
namespace {

absl::Status BuildEmbedding(ArgReader& args, Module& module, InitRng& rng) {
  PARAMD_ASSIGN_OR_RETURN(const int64_t num_embeddings, args.Int("num_embeddings"));
  PARAMD_ASSIGN_OR_RETURN(const int64_t embedding_dim, args.Int("embedding_dim"));
  PARAMD_ASSIGN_OR_RETURN(std::optional<int64_t> padding_idx,
                          args.OptionalInt("padding_idx", std::nullopt));
  PARAMD_RETURN_IF_ERROR(args.OptionalFloat("max_norm", std::nullopt).status());
  PARAMD_RETURN_IF_ERROR(args.Float("norm_type", 2.0).status());
  PARAMD_RETURN_IF_ERROR(args.Bool("scale_grad_by_freq", false).status());
  PARAMD_RETURN_IF_ERROR(args.Bool("sparse", false).status());
  PARAMD_ASSIGN_OR_RETURN(const DType dtype, args.Dtype());
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());

  // Embedding.__init__'s assertions, before the weight is created.
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
  const Shape shape = {num_embeddings, embedding_dim};
  PARAMD_RETURN_IF_ERROR(CheckNoNegativeDimension(shape));
  PARAMD_RETURN_IF_ERROR(RequireFloatingDType(args, "Embedding", dtype));
  module.SetArgs(args.TakeNormalized());

  PARAMD_ASSIGN_OR_RETURN(Tensor weight, InitNormal(rng, dtype, shape, 0.0, 1.0));
  // padding_idx 0 with num_embeddings 0 passes PyTorch's assertions but has no row to zero
  // (PyTorch then fails with an index error); only an existing row is zeroed here.
  if (padding_idx.has_value() && *padding_idx < num_embeddings) {
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

}  // namespace

const LayerDef& EmbeddingLayer() {
  static const auto* const def = new LayerDef{
      .type = "Embedding",
      .build = &BuildEmbedding,
      .extra_repr = &EmbeddingExtraRepr,
      .attributes = {"num_embeddings", "embedding_dim", "padding_idx", "max_norm", "norm_type",
                     "scale_grad_by_freq", "sparse"},
  };
  return *def;
}

}  // namespace paramd::core
