// nn.Conv2d: weight [out_channels, in_channels / groups, kh, kw] and an optional bias
// [out_channels].
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/core/init.h"
#include "server/core/layers/builtin.h"
#include "server/core/py_format.h"

namespace paramd::core {
namespace {

bool AnyBelow(const std::vector<int64_t>& values, int64_t limit) {
  return std::any_of(values.begin(), values.end(), [&](int64_t v) { return v < limit; });
}

absl::Status BuildConv2d(ArgReader& args, Module& module, InitRng& rng) {
  PARAMD_ASSIGN_OR_RETURN(const int64_t in_channels, args.Int("in_channels"));
  PARAMD_ASSIGN_OR_RETURN(const int64_t out_channels, args.Int("out_channels"));
  PARAMD_ASSIGN_OR_RETURN(const std::vector<int64_t> kernel_size,
                          args.IntOrTuple("kernel_size", 2));
  PARAMD_ASSIGN_OR_RETURN(const std::vector<int64_t> stride, args.IntOrTuple("stride", 2, 1));

  // padding is an int, a pair, or a string ("same" / "valid", checked below).
  std::vector<int64_t> padding;
  std::optional<std::string> padding_string;
  if (absl::StatusOr<std::vector<int64_t>> numeric = args.IntOrTuple("padding", 2, 0);
      numeric.ok()) {
    padding = *std::move(numeric);
  } else {
    absl::StatusOr<std::string> text = args.String("padding", "", {});
    if (!text.ok()) return numeric.status();
    padding_string = *std::move(text);
  }

  PARAMD_ASSIGN_OR_RETURN(const std::vector<int64_t> dilation, args.IntOrTuple("dilation", 2, 1));
  PARAMD_ASSIGN_OR_RETURN(const int64_t groups, args.Int("groups", 1));
  PARAMD_ASSIGN_OR_RETURN(const bool bias, args.Bool("bias", true));
  PARAMD_ASSIGN_OR_RETURN(const std::string padding_mode, args.String("padding_mode", "zeros", {}));
  PARAMD_ASSIGN_OR_RETURN(const DType dtype, args.Dtype());
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());

  // _ConvNd.__init__'s checks, in its order and with its text.
  if (groups <= 0) return args.Error("groups", "groups must be a positive integer");
  if (in_channels % groups != 0) {
    return args.Error("in_channels", "in_channels must be divisible by groups");
  }
  if (out_channels % groups != 0) {
    return args.Error("out_channels", "out_channels must be divisible by groups");
  }
  if (padding_string.has_value()) {
    if (*padding_string != "same" && *padding_string != "valid") {
      return args.Error("padding",
                        absl::StrCat("Invalid padding string ", PyStringRepr(*padding_string),
                                     ", should be one of {'same', 'valid'}"));
    }
    if (*padding_string == "same" && (stride[0] != 1 || stride[1] != 1)) {
      return args.Error("padding", "padding='same' is not supported for strided convolutions");
    }
  }
  if (padding_mode != "zeros" && padding_mode != "reflect" && padding_mode != "replicate" &&
      padding_mode != "circular") {
    return args.Error("padding_mode",
                      absl::StrCat("padding_mode must be one of {'zeros', 'reflect', 'replicate', "
                                   "'circular'}, but got padding_mode='",
                                   padding_mode, "'"));
  }
  const Shape weight_shape = {out_channels, in_channels / groups, kernel_size[0], kernel_size[1]};
  PARAMD_RETURN_IF_ERROR(CheckNoNegativeDimension(weight_shape));
  // PyTorch checks these when the convolution first runs; a spec that can never run is
  // refused here, with the same text.
  if (AnyBelow(stride, 1)) return args.Error("stride", "non-positive stride is not supported");
  if (AnyBelow(padding, 0)) return args.Error("padding", "negative padding is not supported");
  if (AnyBelow(dilation, 1)) {
    return args.Error("dilation", "dilation should be greater than zero");
  }
  PARAMD_RETURN_IF_ERROR(RequireFloatingDType(args, "Conv2d", dtype));
  module.SetArgs(args.TakeNormalized());

  PARAMD_RETURN_IF_ERROR(
      AddParameter(module, "weight", InitKaimingUniformSqrt5(rng, dtype, weight_shape)));
  if (!bias) return module.RegisterParameter("bias", nullptr);
  const int64_t fan_in = weight_shape[1] * weight_shape[2] * weight_shape[3];
  return AddParameter(module, "bias", InitFanInBias(rng, dtype, {out_channels}, fan_in));
}

// Conv2d keeps every int-or-pair argument as a tuple (_pair), so `kernel_size=5` prints as
// `(5, 5)`.
std::string PairStr(const nlohmann::ordered_json& value) {
  if (value.is_number_integer()) {
    const std::string one = PyRepr(value);
    return absl::StrCat("(", one, ", ", one, ")");
  }
  return PyStr(value);
}

bool IsAll(const nlohmann::ordered_json& value, int64_t expected) {
  if (value.is_null()) return true;  // absent: the default
  if (value.is_number_integer()) return value.get<int64_t>() == expected;
  if (!value.is_array()) return false;
  for (const auto& item : value) {
    if (!item.is_number_integer() || item.get<int64_t>() != expected) return false;
  }
  return true;
}

std::string Conv2dExtraRepr(const Module& module) {
  std::string out = absl::StrCat(PyRepr(ArgOf(module, "in_channels")), ", ",
                                 PyRepr(ArgOf(module, "out_channels")),
                                 ", kernel_size=", PairStr(ArgOf(module, "kernel_size")),
                                 ", stride=", PairStr(ArgOf(module, "stride")));
  const nlohmann::ordered_json& padding = ArgOf(module, "padding");
  // A padding string is never equal to the all-zero tuple, so it always prints.
  if (padding.is_string() || !IsAll(padding, 0)) {
    absl::StrAppend(&out, ", padding=", PairStr(padding));
  }
  const nlohmann::ordered_json& dilation = ArgOf(module, "dilation");
  if (!IsAll(dilation, 1)) absl::StrAppend(&out, ", dilation=", PairStr(dilation));
  const nlohmann::ordered_json& groups = ArgOf(module, "groups");
  if (!IsAll(groups, 1)) absl::StrAppend(&out, ", groups=", PyRepr(groups));
  const std::shared_ptr<Parameter>* bias = module.parameters().Find("bias");
  if (bias == nullptr || *bias == nullptr) out += ", bias=False";
  const nlohmann::ordered_json& padding_mode = ArgOf(module, "padding_mode");
  if (padding_mode.is_string() && padding_mode.get<std::string>() != "zeros") {
    absl::StrAppend(&out, ", padding_mode=", PyStr(padding_mode));
  }
  return out;
}

}  // namespace

const LayerDef& Conv2dLayer() {
  static const auto* const def = new LayerDef{
      .type = "Conv2d",
      .build = &BuildConv2d,
      .extra_repr = &Conv2dExtraRepr,
      .attributes = {"in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                     "transposed", "output_padding", "groups", "padding_mode",
                     "_reversed_padding_repeat_twice"},
  };
  return *def;
}

}  // namespace paramd::core
