// nn.Linear: weight [out_features, in_features] and an optional bias [out_features];
// forward is one GEMM, with a following ReLU or GELU fused as its epilogue where the
// backend can (LayerCall::epilogue).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/core/init.h"
#include "server/core/layers/builtin.h"
#include "server/core/py_format.h"
#include "server/core/runner.h"

namespace paramd::core {
namespace {

struct LinearArgs {
  int64_t in_features = 0;   // required
  int64_t out_features = 0;  // required
  bool bias = true;
  DType dtype = DType::kFloat32;
};

absl::StatusOr<LinearArgs> ParseLinear(ArgReader& args) {
  LinearArgs parsed;
  PARAMD_ASSIGN_OR_RETURN(parsed.in_features, args.Int("in_features"));
  PARAMD_ASSIGN_OR_RETURN(parsed.out_features, args.Int("out_features"));
  PARAMD_ASSIGN_OR_RETURN(parsed.bias, args.Bool("bias", parsed.bias));
  PARAMD_ASSIGN_OR_RETURN(parsed.dtype, args.Dtype());
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  PARAMD_RETURN_IF_ERROR(CheckNoNegativeDimension({parsed.out_features, parsed.in_features}));
  PARAMD_RETURN_IF_ERROR(RequireFloatingDType(args, "Linear", parsed.dtype));
  return parsed;
}

absl::Status InitLinear(const LinearArgs& args, Module& module, InitRng& rng) {
  // reset_parameters draws the weight before the bias.
  PARAMD_RETURN_IF_ERROR(AddParameter(
      module, "weight",
      InitKaimingUniformSqrt5(rng, args.dtype, {args.out_features, args.in_features})));
  if (!args.bias) return module.RegisterParameter("bias", nullptr);
  return AddParameter(module, "bias",
                      InitFanInBias(rng, args.dtype, {args.out_features}, args.in_features));
}

std::string LinearExtraRepr(const Module& module) {
  // `bias=` reports the slot, not the argument: PyTorch prints `self.bias is not None`.
  const std::shared_ptr<Parameter>* bias = module.parameters().Find("bias");
  return absl::StrCat("in_features=", PyRepr(ArgOf(module, "in_features")),
                      ", out_features=", PyRepr(ArgOf(module, "out_features")),
                      ", bias=", PyBool(bias != nullptr && *bias != nullptr));
}

// The shapes come from the weight, not the arguments: a loaded or assigned weight decides.
absl::StatusOr<Tensor> LinearForward(const LinearArgs&, const LayerCall& call,
                                     const Tensor& input) {
  Runner& run = call.runner;
  const Tensor weight = ParameterOf(call.module, "weight");
  const Tensor bias = ParameterOf(call.module, "bias");
  if (!weight.defined() || weight.dim() != 2) {
    return absl::InvalidArgumentError("weight must be a 2-D tensor");
  }
  const int64_t out_features = weight.shape()[0], in_features = weight.shape()[1];
  if (input.dim() == 0) {
    return absl::InvalidArgumentError(
        "both arguments to linear need to be at least 1D, but they are 0D and 2D");
  }
  const int64_t last = input.shape().back();
  const int64_t rows = last == 0 ? 0 : input.numel() / last;
  if (last != in_features) {
    return absl::InvalidArgumentError(
        absl::StrCat("mat1 and mat2 shapes cannot be multiplied (", input.dim() == 1 ? 1 : rows,
                     "x", last, " and ", in_features, "x", out_features,
                     "); expected an input of shape [*, ", in_features, "]"));
  }
  if (input.dtype() != weight.dtype()) {
    return absl::InvalidArgumentError(
        absl::StrCat("mat1 and mat2 must have the same dtype, but got ",
                     ScalarTypeName(input.dtype()), " and ", ScalarTypeName(weight.dtype())));
  }
  if (bias.defined() && (bias.numel() != out_features || bias.dtype() != weight.dtype())) {
    return absl::InvalidArgumentError(
        absl::StrCat("bias must hold ", out_features, " values of the weight's dtype"));
  }
  PARAMD_ASSIGN_OR_RETURN(Tensor x, run.Contiguous(input));
  PARAMD_ASSIGN_OR_RETURN(Tensor w, run.Contiguous(weight));
  Shape shape = x.shape();
  shape.back() = out_features;
  PARAMD_ASSIGN_OR_RETURN(Tensor out, run.Empty(x.dtype(), shape));
  const int64_t m_rows =
      in_features == 0 ? out.numel() / std::max<int64_t>(out_features, 1) : x.numel() / in_features;
  PARAMD_RETURN_IF_ERROR(run.backend().Gemm({.dtype = x.dtype(),
                                             .m = m_rows,
                                             .n = out_features,
                                             .k = in_features,
                                             .a = x.data(),
                                             .lda = std::max<int64_t>(in_features, 1),
                                             .b = w.data(),
                                             .ldb = std::max<int64_t>(in_features, 1),
                                             .trans_b = true,
                                             .bias = bias.defined() ? bias.data() : nullptr,
                                             .c = out.mutable_data(),
                                             .ldc = std::max<int64_t>(out_features, 1),
                                             .epilogue = call.epilogue}));
  return out;
}

}  // namespace

const LayerDef& LinearLayer() {
  static const LayerDef* const def = MakeLayer<LinearArgs>({
      .type = "Linear",
      .parse = &ParseLinear,
      .init = &InitLinear,
      .extra_repr = &LinearExtraRepr,
      .forward = &LinearForward,
      .fuses_epilogue = true,
      .attributes = {"in_features", "out_features"},
  });
  return *def;
}

}  // namespace paramd::core
