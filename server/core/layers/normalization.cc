// nn.BatchNorm1d, nn.BatchNorm2d and nn.LayerNorm.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/core/layers/builtin.h"
#include "server/core/py_format.h"

namespace paramd::core {
namespace {

// _NormBase.__init__, shared by BatchNorm1d and BatchNorm2d (they differ only in the input
// rank forward accepts).
absl::Status BuildBatchNorm(ArgReader& args, Module& module, InitRng& rng) {
  PARAMD_ASSIGN_OR_RETURN(const int64_t num_features, args.Int("num_features"));
  PARAMD_RETURN_IF_ERROR(args.Float("eps", 1e-5).status());
  PARAMD_RETURN_IF_ERROR(args.OptionalFloat("momentum", 0.1).status());
  PARAMD_ASSIGN_OR_RETURN(const bool affine, args.Bool("affine", true));
  PARAMD_ASSIGN_OR_RETURN(const bool track_running_stats, args.Bool("track_running_stats", true));
  PARAMD_ASSIGN_OR_RETURN(const DType dtype, args.Dtype());
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  const Shape shape = {num_features};
  PARAMD_RETURN_IF_ERROR(CheckNoNegativeDimension(shape));
  module.SetArgs(args.TakeNormalized());

  // reset_parameters: weight ones, bias zeros, running_mean zeros, running_var ones,
  // num_batches_tracked 0 (always int64, whatever `dtype` is).
  if (affine) {
    PARAMD_RETURN_IF_ERROR(AddParameter(module, "weight", Tensor::Full(dtype, shape, 1.0)));
    PARAMD_RETURN_IF_ERROR(AddParameter(module, "bias", Tensor::Full(dtype, shape, 0.0)));
  } else {
    PARAMD_RETURN_IF_ERROR(module.RegisterParameter("weight", nullptr));
    PARAMD_RETURN_IF_ERROR(module.RegisterParameter("bias", nullptr));
  }
  if (track_running_stats) {
    PARAMD_RETURN_IF_ERROR(AddBuffer(module, "running_mean", Tensor::Full(dtype, shape, 0.0)));
    PARAMD_RETURN_IF_ERROR(AddBuffer(module, "running_var", Tensor::Full(dtype, shape, 1.0)));
    return AddBuffer(module, "num_batches_tracked", Tensor::Full(DType::kInt64, {}, 0.0));
  }
  PARAMD_RETURN_IF_ERROR(module.RegisterBuffer("running_mean", nullptr));
  PARAMD_RETURN_IF_ERROR(module.RegisterBuffer("running_var", nullptr));
  return module.RegisterBuffer("num_batches_tracked", nullptr);
}

std::string BatchNormExtraRepr(const Module& module) {
  return absl::StrCat(PyRepr(ArgOf(module, "num_features")), ", eps=", PyRepr(ArgOf(module, "eps")),
                      ", momentum=", PyRepr(ArgOf(module, "momentum")),
                      ", affine=", PyRepr(ArgOf(module, "affine")),
                      ", track_running_stats=", PyRepr(ArgOf(module, "track_running_stats")));
}

absl::Status BuildLayerNorm(ArgReader& args, Module& module, InitRng& rng) {
  // Any number of dimensions: Note [ArgReader sequences] in builtin.h.
  PARAMD_ASSIGN_OR_RETURN(const std::vector<int64_t> normalized_shape,
                          args.IntOrTuple("normalized_shape", 0));
  PARAMD_RETURN_IF_ERROR(args.Float("eps", 1e-5).status());
  PARAMD_ASSIGN_OR_RETURN(const bool elementwise_affine, args.Bool("elementwise_affine", true));
  PARAMD_ASSIGN_OR_RETURN(const bool bias, args.Bool("bias", true));
  PARAMD_ASSIGN_OR_RETURN(const DType dtype, args.Dtype());
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  const Shape shape(normalized_shape.begin(), normalized_shape.end());
  PARAMD_RETURN_IF_ERROR(CheckNoNegativeDimension(shape));
  // LayerNorm keeps `tuple(normalized_shape)`, so an int is stored as a one-element list.
  args.Put("normalized_shape", nlohmann::ordered_json(normalized_shape));
  module.SetArgs(args.TakeNormalized());

  if (!elementwise_affine) {
    PARAMD_RETURN_IF_ERROR(module.RegisterParameter("weight", nullptr));
    return module.RegisterParameter("bias", nullptr);
  }
  PARAMD_RETURN_IF_ERROR(AddParameter(module, "weight", Tensor::Full(dtype, shape, 1.0)));
  if (!bias) return module.RegisterParameter("bias", nullptr);
  return AddParameter(module, "bias", Tensor::Full(dtype, shape, 0.0));
}

std::string LayerNormExtraRepr(const Module& module) {
  return absl::StrCat(PyRepr(ArgOf(module, "normalized_shape")),
                      ", eps=", PyRepr(ArgOf(module, "eps")),
                      ", elementwise_affine=", PyRepr(ArgOf(module, "elementwise_affine")));
}

constexpr int kBatchNormVersion = 2;

}  // namespace

const LayerDef& BatchNorm1dLayer() {
  static const auto* const def = new LayerDef{
      .type = "BatchNorm1d",
      .module_version = kBatchNormVersion,
      .fills_num_batches_tracked = true,
      .build = &BuildBatchNorm,
      .extra_repr = &BatchNormExtraRepr,
      .attributes = {"num_features", "eps", "momentum", "affine", "track_running_stats"},
  };
  return *def;
}

const LayerDef& BatchNorm2dLayer() {
  static const auto* const def = new LayerDef{
      .type = "BatchNorm2d",
      .module_version = kBatchNormVersion,
      .fills_num_batches_tracked = true,
      .build = &BuildBatchNorm,
      .extra_repr = &BatchNormExtraRepr,
      .attributes = {"num_features", "eps", "momentum", "affine", "track_running_stats"},
  };
  return *def;
}

const LayerDef& LayerNormLayer() {
  static const auto* const def = new LayerDef{
      .type = "LayerNorm",
      .build = &BuildLayerNorm,
      .extra_repr = &LayerNormExtraRepr,
      .attributes = {"normalized_shape", "eps", "elementwise_affine"},
  };
  return *def;
}

}  // namespace paramd::core
