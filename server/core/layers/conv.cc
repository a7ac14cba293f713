// nn.Conv2d: weight [out_channels, in_channels / groups, kh, kw] and an optional bias
// [out_channels]; forward with zero padding (numbers, 'same' or 'valid').
#include <algorithm>
#include <array>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/common/status_macros.h"
#include "server/core/init.h"
#include "server/core/layers/builtin.h"
#include "server/core/py_format.h"
#include "server/core/runner.h"

namespace paramd::core {
namespace {

struct Conv2dArgs {
  int64_t in_channels = 0;           // required
  int64_t out_channels = 0;          // required
  std::vector<int64_t> kernel_size;  // required; (height, width)
  std::vector<int64_t> stride = {1, 1};
  std::vector<int64_t> padding = {0, 0};
  // padding="same" or "valid" instead of numbers.
  std::optional<std::string> padding_string;
  std::vector<int64_t> dilation = {1, 1};
  int64_t groups = 1;
  bool bias = true;
  std::string padding_mode = "zeros";
  DType dtype = DType::kFloat32;
};

Shape WeightShape(const Conv2dArgs& args) {
  return {args.out_channels, args.in_channels / args.groups, args.kernel_size[0],
          args.kernel_size[1]};
}

bool AnyBelow(const std::vector<int64_t>& values, int64_t limit) {
  return std::any_of(values.begin(), values.end(), [&](int64_t v) { return v < limit; });
}

// _ConvNd.__init__'s checks, in its order and with its text.
absl::Status CheckConv2d(const ArgReader& args, const Conv2dArgs& parsed) {
  const int64_t groups = parsed.groups;
  if (groups <= 0) return args.Error("groups", "groups must be a positive integer");
  if (parsed.in_channels % groups != 0) {
    return args.Error("in_channels", "in_channels must be divisible by groups");
  }
  if (parsed.out_channels % groups != 0) {
    return args.Error("out_channels", "out_channels must be divisible by groups");
  }
  if (parsed.padding_string.has_value()) {
    const std::string& padding = *parsed.padding_string;
    if (padding != "same" && padding != "valid") {
      return args.Error("padding", absl::StrCat("Invalid padding string ", PyStringRepr(padding),
                                                ", should be one of {'same', 'valid'}"));
    }
    if (padding == "same" && (parsed.stride[0] != 1 || parsed.stride[1] != 1)) {
      return args.Error("padding", "padding='same' is not supported for strided convolutions");
    }
  }
  const std::string& padding_mode = parsed.padding_mode;
  if (padding_mode != "zeros" && padding_mode != "reflect" && padding_mode != "replicate" &&
      padding_mode != "circular") {
    return args.Error("padding_mode",
                      absl::StrCat("padding_mode must be one of {'zeros', 'reflect', 'replicate', "
                                   "'circular'}, but got padding_mode='",
                                   padding_mode, "'"));
  }
  PARAMD_RETURN_IF_ERROR(CheckNoNegativeDimension(WeightShape(parsed)));
  // PyTorch checks these when the convolution first runs; a spec that can never run is
  // refused here, with the same text.
  if (AnyBelow(parsed.stride, 1)) {
    return args.Error("stride", "non-positive stride is not supported");
  }
  if (AnyBelow(parsed.padding, 0)) {
    return args.Error("padding", "negative padding is not supported");
  }
  if (AnyBelow(parsed.dilation, 1)) {
    return args.Error("dilation", "dilation should be greater than zero");
  }
  return RequireFloatingDType(args, "Conv2d", parsed.dtype);
}

absl::StatusOr<Conv2dArgs> ParseConv2d(ArgReader& args) {
  Conv2dArgs parsed;
  PARAMD_ASSIGN_OR_RETURN(parsed.in_channels, args.Int("in_channels"));
  PARAMD_ASSIGN_OR_RETURN(parsed.out_channels, args.Int("out_channels"));
  PARAMD_ASSIGN_OR_RETURN(parsed.kernel_size, args.IntOrTuple("kernel_size", 2));
  PARAMD_ASSIGN_OR_RETURN(parsed.stride, args.IntOrTuple("stride", 2, 1));

  // padding is an int, a pair, or a string ("same" / "valid", checked below).
  if (absl::StatusOr<std::vector<int64_t>> numeric = args.IntOrTuple("padding", 2, 0);
      numeric.ok()) {
    parsed.padding = *std::move(numeric);
  } else {
    absl::StatusOr<std::string> text = args.String("padding", "", {});
    if (!text.ok()) return numeric.status();
    parsed.padding.clear();
    parsed.padding_string = *std::move(text);
  }

  PARAMD_ASSIGN_OR_RETURN(parsed.dilation, args.IntOrTuple("dilation", 2, 1));
  PARAMD_ASSIGN_OR_RETURN(parsed.groups, args.Int("groups", parsed.groups));
  PARAMD_ASSIGN_OR_RETURN(parsed.bias, args.Bool("bias", parsed.bias));
  PARAMD_ASSIGN_OR_RETURN(parsed.padding_mode,
                          args.String("padding_mode", parsed.padding_mode, {}));
  PARAMD_ASSIGN_OR_RETURN(parsed.dtype, args.Dtype());
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  PARAMD_RETURN_IF_ERROR(CheckConv2d(args, parsed));
  return parsed;
}

absl::Status InitConv2d(const Conv2dArgs& args, Module& module, InitRng& rng) {
  const Shape weight_shape = WeightShape(args);
  PARAMD_RETURN_IF_ERROR(
      AddParameter(module, "weight", InitKaimingUniformSqrt5(rng, args.dtype, weight_shape)));
  if (!args.bias) return module.RegisterParameter("bias", nullptr);
  const int64_t fan_in = weight_shape[1] * weight_shape[2] * weight_shape[3];
  return AddParameter(module, "bias", InitFanInBias(rng, args.dtype, {args.out_channels}, fan_in));
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

absl::StatusOr<Tensor> Conv2dForward(const Conv2dArgs& args, const LayerCall& call,
                                     const Tensor& input) {
  Runner& run = call.runner;
  const Module& m = call.module;
  const Tensor weight = ParameterOf(m, "weight");
  const Tensor bias = ParameterOf(m, "bias");
  if (!weight.defined() || weight.dim() != 4) {
    return absl::InvalidArgumentError("weight must be a 4-D tensor");
  }
  if (input.dim() != 3 && input.dim() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: ",
        ShapeString(input.shape())));
  }
  const bool batched = input.dim() == 4;
  Tensor x4 = input;
  if (!batched) {
    Shape shape = input.shape();
    shape.insert(shape.begin(), 1);
    Shape strides = input.strides();
    strides.insert(strides.begin(), input.numel());
    x4 = Tensor(input.storage(), input.offset(), shape, strides, input.dtype());
  }
  const int64_t groups = args.groups;
  const int64_t channels = x4.shape()[1];
  if (channels != weight.shape()[1] * groups) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Given groups=", groups, ", weight of size ", ShapeString(weight.shape()),
        ", expected input", ShapeString(x4.shape()), " to have ", weight.shape()[1] * groups,
        " channels, but got ", channels, " channels instead"));
  }
  if (input.dtype() != weight.dtype()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Input type (", ScalarTypeName(input.dtype()), ") and weight type (",
                     ScalarTypeName(weight.dtype()), ") should be the same"));
  }
  const std::string& padding_mode = args.padding_mode;
  if (padding_mode != "zeros") {
    return absl::UnimplementedError(absl::StrCat("padding_mode='", padding_mode,
                                                 "' is not supported by paramd's forward; "
                                                 "use padding_mode='zeros'"));
  }
  const std::vector<int64_t>& stride = args.stride;
  const std::vector<int64_t>& dilation = args.dilation;
  const std::array<int64_t, 2> kernel = {weight.shape()[2], weight.shape()[3]};
  std::array<int64_t, 2> pad_begin = {0, 0}, pad_end = pad_begin;
  if (args.padding_string.has_value()) {
    for (int d = 0; d < 2; ++d) {
      // 'same' puts the odd leftover pixel after, as F.conv2d does.
      const int64_t total = *args.padding_string == "same" ? dilation[d] * (kernel[d] - 1) : 0;
      pad_begin[d] = total / 2;
      pad_end[d] = total - total / 2;
    }
  } else {
    pad_begin = pad_end = {args.padding[0], args.padding[1]};
  }
  const int64_t height = x4.shape()[2], width = x4.shape()[3];
  const int64_t padded_h = height + pad_begin[0] + pad_end[0];
  const int64_t padded_w = width + pad_begin[1] + pad_end[1];
  const int64_t span_h = dilation[0] * (kernel[0] - 1) + 1;
  const int64_t span_w = dilation[1] * (kernel[1] - 1) + 1;
  if (padded_h < span_h || padded_w < span_w) {
    return absl::InvalidArgumentError(
        absl::StrCat("Calculated padded input size per channel: (", padded_h, " x ", padded_w,
                     "). Kernel size: (", span_h, " x ", span_w,
                     "). Kernel size can't be greater than actual input size"));
  }
  const int64_t out_h = (padded_h - span_h) / stride[0] + 1;
  const int64_t out_w = (padded_w - span_w) / stride[1] + 1;
  const int64_t out_channels = weight.shape()[0];
  PARAMD_ASSIGN_OR_RETURN(Tensor x, run.Contiguous(x4));
  PARAMD_ASSIGN_OR_RETURN(Tensor w, run.Contiguous(weight));
  PARAMD_ASSIGN_OR_RETURN(Tensor out,
                          run.Empty(x.dtype(), {x.shape()[0], out_channels, out_h, out_w}));
  if (out.numel() > 0) {
    kernels::Conv2dArgs conv{.input = ConstView(x),
                             .weight = ConstView(w),
                             .bias = bias.defined() ? bias.data() : nullptr,
                             .output = MutableView(out),
                             .groups = groups};
    for (int d = 0; d < 2; ++d) {
      conv.stride[d] = stride[d];
      conv.padding[d] = pad_begin[d];
      conv.dilation[d] = dilation[d];
    }
    PARAMD_RETURN_IF_ERROR(run.backend().Conv2d(conv));
  }
  if (!batched) return Reshaped(out, {out_channels, out_h, out_w});
  return out;
}

}  // namespace

const LayerDef& Conv2dLayer() {
  static const LayerDef* const def = MakeLayer<Conv2dArgs>({
      .type = "Conv2d",
      .parse = &ParseConv2d,
      .init = &InitConv2d,
      .extra_repr = &Conv2dExtraRepr,
      .forward = &Conv2dForward,
      .attributes = {"in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                     "transposed", "output_padding", "groups", "padding_mode",
                     "_reversed_padding_repeat_twice"},
  });
  return *def;
}

}  // namespace paramd::core
