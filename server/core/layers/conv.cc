// The convolutions: nn.Conv1d and nn.Conv2d, weight [out_channels, in_channels / groups,
// *kernel_size]
// and an optional bias [out_channels]; forward with zero padding (numbers, 'same' or
// 'valid'). The arguments, checks, init, repr and forward are written once over the number
// of spatial dimensions.
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "server/core/init.h"
#include "server/core/layers/builtin.h"
#include "server/core/py_format.h"
#include "server/core/runner.h"

namespace paramd::core {
namespace {

// _ConvNd's arguments; every tuple holds one value per spatial dimension.
struct ConvArgs {
  int64_t in_channels = 0;           // required
  int64_t out_channels = 0;          // required
  std::vector<int64_t> kernel_size;  // required
  std::vector<int64_t> stride;       // default 1
  std::vector<int64_t> padding;      // default 0; empty with a padding string
  // padding="same" or "valid" instead of numbers.
  std::optional<std::string> padding_string;
  std::vector<int64_t> dilation;  // default 1
  int64_t groups = 1;
  bool bias = true;
  std::string padding_mode = "zeros";
  DType dtype = DType::kFloat32;
};

constexpr int64_t kDefaultStride = 1;
constexpr int64_t kDefaultPadding = 0;
constexpr int64_t kDefaultDilation = 1;

// "Conv1d", "Conv2d".
std::string ConvType(size_t dims) { return absl::StrCat("Conv", dims, "d"); }

// [out_channels, in_channels / groups, *kernel_size].
Shape WeightShape(const ConvArgs& args) {
  Shape shape = {args.out_channels, args.in_channels / args.groups};
  shape.insert(shape.end(), args.kernel_size.begin(), args.kernel_size.end());
  return shape;
}

bool AnyBelow(const std::vector<int64_t>& values, int64_t limit) {
  return std::any_of(values.begin(), values.end(), [&](int64_t v) { return v < limit; });
}

// _ConvNd.__init__'s checks, in its order and with its text.
absl::Status CheckConv(const ArgReader& args, const ConvArgs& parsed) {
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
    const bool strided =
        std::any_of(parsed.stride.begin(), parsed.stride.end(), [](int64_t s) { return s != 1; });
    if (padding == "same" && strided) {
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
  PARAMD_RETURN_IF_ERROR(args.CheckWindow("kernel_size", parsed.kernel_size));
  PARAMD_RETURN_IF_ERROR(args.CheckWindow("stride", parsed.stride));
  PARAMD_RETURN_IF_ERROR(args.CheckWindow("padding", parsed.padding));
  PARAMD_RETURN_IF_ERROR(args.CheckWindow("dilation", parsed.dilation));
  if (AnyBelow(parsed.stride, 1)) {
    return args.Error("stride", "non-positive stride is not supported");
  }
  if (AnyBelow(parsed.padding, 0)) {
    return args.Error("padding", "negative padding is not supported");
  }
  if (AnyBelow(parsed.dilation, 1)) {
    return args.Error("dilation", "dilation should be greater than zero");
  }
  return RequireFloatingDType(args, ConvType(parsed.kernel_size.size()), parsed.dtype);
}

// Conv1d / Conv2d's arguments, `kDims` values in each tuple.
template <size_t kDims>
absl::StatusOr<ConvArgs> ParseConv(ArgReader& args) {
  ConvArgs parsed;
  PARAMD_ASSIGN_OR_RETURN(parsed.in_channels, args.Int("in_channels"));
  PARAMD_ASSIGN_OR_RETURN(parsed.out_channels, args.Int("out_channels"));
  PARAMD_ASSIGN_OR_RETURN(parsed.kernel_size, args.IntOrTuple("kernel_size", kDims));
  PARAMD_ASSIGN_OR_RETURN(parsed.stride, args.IntOrTuple("stride", kDims, kDefaultStride));

  // padding is an int, a tuple, or a string ("same" / "valid", checked below).
  if (absl::StatusOr<std::vector<int64_t>> numeric =
          args.IntOrTuple("padding", kDims, kDefaultPadding);
      numeric.ok()) {
    parsed.padding = *std::move(numeric);
  } else {
    absl::StatusOr<std::string> text = args.String("padding", "", {});
    if (!text.ok()) return numeric.status();
    parsed.padding_string = *std::move(text);
  }

  PARAMD_ASSIGN_OR_RETURN(parsed.dilation, args.IntOrTuple("dilation", kDims, kDefaultDilation));
  PARAMD_ASSIGN_OR_RETURN(parsed.groups, args.Int("groups", parsed.groups));
  PARAMD_ASSIGN_OR_RETURN(parsed.bias, args.Bool("bias", parsed.bias));
  PARAMD_ASSIGN_OR_RETURN(parsed.padding_mode,
                          args.String("padding_mode", parsed.padding_mode, {}));
  PARAMD_ASSIGN_OR_RETURN(parsed.dtype, args.Dtype());
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  PARAMD_RETURN_IF_ERROR(CheckConv(args, parsed));
  return parsed;
}

absl::Status InitConv(const ConvArgs& args, Module& module, InitRng& rng) {
  const Shape weight_shape = WeightShape(args);
  PARAMD_RETURN_IF_ERROR(
      AddParameter(module, "weight", InitKaimingUniformSqrt5(rng, args.dtype, weight_shape)));
  if (!args.bias) return module.RegisterParameter("bias", nullptr);
  int64_t fan_in = 1;
  for (size_t d = 1; d < weight_shape.size(); ++d) fan_in *= weight_shape[d];
  return AddParameter(module, "bias", InitFanInBias(rng, args.dtype, {args.out_channels}, fan_in));
}

// _ConvNd keeps every int-or-tuple argument as a tuple (_single, _pair), so Conv2d's
// `kernel_size=5` prints as `(5, 5)` and Conv1d's as `(5,)`.
std::string TupleStr(const nlohmann::ordered_json& value, size_t dims) {
  if (value.is_number_integer()) {
    return PyTupleRepr(std::vector<int64_t>(dims, value.get<int64_t>()));
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

template <size_t kDims>
std::string ConvExtraRepr(const Module& module) {
  std::string out = absl::StrCat(PyRepr(ArgOf(module, "in_channels")), ", ",
                                 PyRepr(ArgOf(module, "out_channels")),
                                 ", kernel_size=", TupleStr(ArgOf(module, "kernel_size"), kDims),
                                 ", stride=", TupleStr(ArgOf(module, "stride"), kDims));
  const nlohmann::ordered_json& padding = ArgOf(module, "padding");
  // A padding string is never equal to the all-zero tuple, so it always prints.
  if (padding.is_string() || !IsAll(padding, 0)) {
    absl::StrAppend(&out, ", padding=", TupleStr(padding, kDims));
  }
  const nlohmann::ordered_json& dilation = ArgOf(module, "dilation");
  if (!IsAll(dilation, 1)) absl::StrAppend(&out, ", dilation=", TupleStr(dilation, kDims));
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

// The padding before and after each spatial dimension of `weight`'s kernel. 'same' puts
// the odd leftover pixel after, as F.conv2d does.
void ConvPadding(const ConvArgs& args, const Tensor& weight, std::vector<int64_t>& begin,
                 std::vector<int64_t>& end) {
  const size_t dims = args.kernel_size.size();
  begin.assign(dims, 0);
  end.assign(dims, 0);
  for (size_t d = 0; d < dims; ++d) {
    if (!args.padding_string.has_value()) {
      begin[d] = end[d] = args.padding[d];
      continue;
    }
    const int64_t kernel = weight.shape()[2 + d];
    const int64_t total = *args.padding_string == "same" ? args.dilation[d] * (kernel - 1) : 0;
    begin[d] = total / 2;
    end[d] = total - total / 2;
  }
}

// `tensor` with a dimension of size 1 inserted before `dim` (a view).
Tensor Unsqueezed(const Tensor& tensor, size_t dim) {
  Shape shape = tensor.shape();
  Shape strides = tensor.strides();
  const int64_t stride = dim < shape.size() ? shape[dim] * strides[dim] : 1;
  shape.insert(shape.begin() + dim, 1);
  strides.insert(strides.begin() + dim, stride);
  return Tensor(tensor.storage(), tensor.offset(), std::move(shape), std::move(strides),
                tensor.dtype());
}

// F.conv1d / F.conv2d with zero padding, on the backend's 2-D convolution (a 1-D one is a
// 2-D one of height 1).
absl::StatusOr<Tensor> ConvForward(const ConvArgs& args, const LayerCall& call,
                                   const Tensor& input) {
  Runner& run = call.runner;
  const size_t dims = args.kernel_size.size();
  const int64_t rank = static_cast<int64_t>(dims) + 2;
  const Tensor weight = ParameterOf(call.module, "weight");
  const Tensor bias = ParameterOf(call.module, "bias");
  if (!weight.defined() || weight.dim() != rank) {
    return absl::InvalidArgumentError(absl::StrCat("weight must be a ", rank, "-D tensor"));
  }
  if (input.dim() != rank - 1 && input.dim() != rank) {
    return absl::InvalidArgumentError(
        absl::StrCat("Expected ", rank - 1, "D (unbatched) or ", rank, "D (batched) input to conv",
                     dims, "d, but got input of size: ", ShapeString(input.shape())));
  }
  const bool batched = input.dim() == rank;
  const Tensor batch = batched ? input : Unsqueezed(input, 0);
  const int64_t groups = args.groups;
  const int64_t channels = batch.shape()[1];
  if (channels != weight.shape()[1] * groups) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Given groups=", groups, ", weight of size ", ShapeString(weight.shape()),
        ", expected input", ShapeString(batch.shape()), " to have ", weight.shape()[1] * groups,
        " channels, but got ", channels, " channels instead"));
  }
  if (input.dtype() != weight.dtype()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Input type (", ScalarTypeName(input.dtype()), ") and weight type (",
                     ScalarTypeName(weight.dtype()), ") should be the same"));
  }
  if (args.padding_mode != "zeros") {
    return absl::UnimplementedError(absl::StrCat("padding_mode='", args.padding_mode,
                                                 "' is not supported by paramd's forward; "
                                                 "use padding_mode='zeros'"));
  }
  std::vector<int64_t> pad_begin, pad_end;
  ConvPadding(args, weight, pad_begin, pad_end);
  std::vector<int64_t> padded(dims), span(dims);
  bool fits = true;
  for (size_t d = 0; d < dims; ++d) {
    padded[d] = batch.shape()[2 + d] + pad_begin[d] + pad_end[d];
    span[d] = args.dilation[d] * (weight.shape()[2 + d] - 1) + 1;
    fits = fits && padded[d] >= span[d];
  }
  if (!fits) {
    return absl::InvalidArgumentError(
        absl::StrCat("Calculated padded input size per channel: (", absl::StrJoin(padded, " x "),
                     "). Kernel size: (", absl::StrJoin(span, " x "),
                     "). Kernel size can't be greater than actual input size"));
  }
  Shape out_shape = {batch.shape()[0], weight.shape()[0]};
  for (size_t d = 0; d < dims; ++d) {
    out_shape.push_back((padded[d] - span[d]) / args.stride[d] + 1);
  }
  PARAMD_ASSIGN_OR_RETURN(Tensor x, run.Contiguous(batch));
  PARAMD_ASSIGN_OR_RETURN(Tensor w, run.Contiguous(weight));
  PARAMD_ASSIGN_OR_RETURN(Tensor out, run.Empty(x.dtype(), out_shape));
  if (out.numel() > 0) {
    // A 1-D convolution runs as a 2-D one over a height of 1.
    const size_t lead = 2 - dims;
    const Tensor x4 = dims == 1 ? Unsqueezed(x, 2) : x;
    const Tensor w4 = dims == 1 ? Unsqueezed(w, 2) : w;
    const Tensor out4 = dims == 1 ? Unsqueezed(out, 2) : out;
    kernels::Conv2dArgs conv{.input = ConstView(x4),
                             .weight = ConstView(w4),
                             .bias = bias.defined() ? bias.data() : nullptr,
                             .output = MutableView(out4),
                             .groups = groups};
    for (size_t d = 0; d < 2; ++d) {
      conv.stride[d] = d < lead ? 1 : args.stride[d - lead];
      conv.padding[d] = d < lead ? 0 : pad_begin[d - lead];
      conv.dilation[d] = d < lead ? 1 : args.dilation[d - lead];
    }
    PARAMD_RETURN_IF_ERROR(run.backend().Conv2d(conv));
  }
  if (!batched) return Reshaped(out, Shape(out_shape.begin() + 1, out_shape.end()));
  return out;
}

}  // namespace

const LayerDef& Conv1dLayer() {
  static const LayerDef* const def = MakeLayer<ConvArgs>({
      .type = "Conv1d",
      .parse = &ParseConv<1>,
      .init = &InitConv,
      .extra_repr = &ConvExtraRepr<1>,
      .forward = &ConvForward,
      .attributes = {"in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                     "transposed", "output_padding", "groups", "padding_mode",
                     "_reversed_padding_repeat_twice"},
  });
  return *def;
}

const LayerDef& Conv2dLayer() {
  static const LayerDef* const def = MakeLayer<ConvArgs>({
      .type = "Conv2d",
      .parse = &ParseConv<2>,
      .init = &InitConv,
      .extra_repr = &ConvExtraRepr<2>,
      .forward = &ConvForward,
      .attributes = {"in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                     "transposed", "output_padding", "groups", "padding_mode",
                     "_reversed_padding_repeat_twice"},
  });
  return *def;
}

}  // namespace paramd::core
