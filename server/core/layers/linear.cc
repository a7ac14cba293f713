// nn.Linear: weight [out_features, in_features] and an optional bias [out_features].
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/core/init.h"
#include "server/core/layers/builtin.h"
#include "server/core/py_format.h"

namespace paramd::core {
namespace {

absl::Status BuildLinear(ArgReader& args, Module& module, InitRng& rng) {
  PARAMD_ASSIGN_OR_RETURN(const int64_t in_features, args.Int("in_features"));
  PARAMD_ASSIGN_OR_RETURN(const int64_t out_features, args.Int("out_features"));
  PARAMD_ASSIGN_OR_RETURN(const bool bias, args.Bool("bias", true));
  PARAMD_ASSIGN_OR_RETURN(const DType dtype, args.Dtype());
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  const Shape weight_shape = {out_features, in_features};
  PARAMD_RETURN_IF_ERROR(CheckNoNegativeDimension(weight_shape));
  PARAMD_RETURN_IF_ERROR(RequireFloatingDType(args, "Linear", dtype));
  module.SetArgs(args.TakeNormalized());

  // reset_parameters draws the weight before the bias.
  PARAMD_RETURN_IF_ERROR(
      AddParameter(module, "weight", InitKaimingUniformSqrt5(rng, dtype, weight_shape)));
  if (!bias) return module.RegisterParameter("bias", nullptr);
  return AddParameter(module, "bias", InitFanInBias(rng, dtype, {out_features}, in_features));
}

std::string LinearExtraRepr(const Module& module) {
  // `bias=` reports the slot, not the argument: PyTorch prints `self.bias is not None`.
  const std::shared_ptr<Parameter>* bias = module.parameters().Find("bias");
  return absl::StrCat("in_features=", PyRepr(ArgOf(module, "in_features")),
                      ", out_features=", PyRepr(ArgOf(module, "out_features")),
                      ", bias=", PyBool(bias != nullptr && *bias != nullptr));
}

}  // namespace

const LayerDef& LinearLayer() {
  static const auto* const def = new LayerDef{
      .type = "Linear",
      .build = &BuildLinear,
      .extra_repr = &LinearExtraRepr,
      .attributes = {"in_features", "out_features"},
  };
  return *def;
}

}  // namespace paramd::core
