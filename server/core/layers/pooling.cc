// nn.MaxPool2d, nn.AvgPool2d and nn.AdaptiveAvgPool2d: no parameters or buffers, only
// arguments.
//
// PyTorch accepts any sizes at construction and checks them when the pool first runs. A
// spec whose pool can never run is refused here instead, with the text of those checks
// (ATen's pooling_output_shape and pool2d_shape_check).
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/core/layers/builtin.h"
#include "server/core/py_format.h"
#include "server/core/runner.h"

namespace paramd::core {
namespace {

// `stride` is Optional, so its elements may come back as kNoneSize; a pool needs numbers.
absl::Status RejectNoneElements(const ArgReader& args, absl::string_view type,
                                absl::string_view name, const std::vector<int64_t>& values) {
  for (int64_t value : values) {
    if (value == kNoneSize) {
      return args.Error(name, absl::StrCat(type,
                                           " expected an integer or a list of 2 integers "
                                           "for '",
                                           name, "', got a list holding null"));
    }
  }
  return absl::OkStatus();
}

// ATen's pooling_output_shape.
int64_t PoolingOutputShape(int64_t size, int64_t kernel, int64_t pad, int64_t stride,
                           int64_t dilation, bool ceil_mode) {
  const int64_t numerator =
      size + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  // Rounds toward negative infinity, as ATen's div_rtn.
  int64_t out = numerator / stride;
  if ((numerator % stride != 0) && ((numerator < 0) != (stride < 0))) --out;
  out += 1;
  if (ceil_mode && (out - 1) * stride >= size + pad) --out;
  return out;
}

// `values` are (height, width) pairs.
absl::Status CheckPoolSizes(const ArgReader& args, const std::vector<int64_t>& kernel,
                            const std::vector<int64_t>& stride, const std::vector<int64_t>& padding,
                            const std::vector<int64_t>& dilation) {
  PARAMD_RETURN_IF_ERROR(args.CheckWindow("kernel_size", kernel));
  PARAMD_RETURN_IF_ERROR(args.CheckWindow("stride", stride));
  PARAMD_RETURN_IF_ERROR(args.CheckWindow("padding", padding));
  PARAMD_RETURN_IF_ERROR(args.CheckWindow("dilation", dilation));
  if (kernel[0] <= 0 || kernel[1] <= 0) {
    return args.Error("kernel_size",
                      absl::StrCat("kernel size should be greater than zero, but got kH: ",
                                   kernel[0], " kW: ", kernel[1]));
  }
  if (stride[0] <= 0 || stride[1] <= 0) {
    return args.Error("stride", absl::StrCat("stride should be greater than zero, but got dH: ",
                                             stride[0], " dW: ", stride[1]));
  }
  if (dilation[0] <= 0 || dilation[1] <= 0) {
    return args.Error("dilation",
                      absl::StrCat("dilation should be greater than zero, but got dilationH: ",
                                   dilation[0], " dilationW: ", dilation[1]));
  }
  for (size_t d = 0; d < 2; ++d) {
    if (padding[d] < 0) {
      return args.Error("padding",
                        absl::StrCat("pad must be non-negative, but got pad: ", padding[d]));
    }
    if (padding[d] > ((kernel[d] - 1) * dilation[d] + 1) / 2) {
      return args.Error(
          "padding",
          absl::StrCat("pad should be at most half of effective kernel size, but got "
                       "pad=",
                       padding[d], ", kernel_size=", kernel[d], " and dilation=", dilation[d]));
    }
  }
  return absl::OkStatus();
}

// `stride=None` means the kernel size; PyTorch stores the kernel_size value as given
// (`self.stride = stride if (stride is not None) else kernel_size`), which extra_repr
// then prints.
void RecordDefaultStride(ArgReader& args) {
  if (args.Recorded("stride").is_null()) args.Put("stride", args.Recorded("kernel_size"));
}

struct MaxPool2dArgs {
  std::vector<int64_t> kernel_size;  // required; (height, width)
  std::vector<int64_t> stride;       // None: kernel_size
  std::vector<int64_t> padding = {0, 0};
  std::vector<int64_t> dilation = {1, 1};
  bool return_indices = false;
  bool ceil_mode = false;
};

absl::StatusOr<MaxPool2dArgs> ParseMaxPool2d(ArgReader& args) {
  MaxPool2dArgs parsed;
  PARAMD_ASSIGN_OR_RETURN(parsed.kernel_size, args.IntOrTuple("kernel_size", 2));
  PARAMD_ASSIGN_OR_RETURN(parsed.stride, args.IntOrTuple("stride", 2, nullptr));
  PARAMD_ASSIGN_OR_RETURN(parsed.padding, args.IntOrTuple("padding", 2, 0));
  PARAMD_ASSIGN_OR_RETURN(parsed.dilation, args.IntOrTuple("dilation", 2, 1));
  PARAMD_ASSIGN_OR_RETURN(parsed.return_indices,
                          args.Bool("return_indices", parsed.return_indices));
  PARAMD_ASSIGN_OR_RETURN(parsed.ceil_mode, args.Bool("ceil_mode", parsed.ceil_mode));
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  PARAMD_RETURN_IF_ERROR(RejectNoneElements(args, "MaxPool2d", "stride", parsed.stride));
  if (parsed.stride.empty()) parsed.stride = parsed.kernel_size;
  PARAMD_RETURN_IF_ERROR(
      CheckPoolSizes(args, parsed.kernel_size, parsed.stride, parsed.padding, parsed.dilation));
  RecordDefaultStride(args);
  return parsed;
}

struct AvgPool2dArgs {
  std::vector<int64_t> kernel_size;  // required; (height, width)
  std::vector<int64_t> stride;       // None: kernel_size
  std::vector<int64_t> padding = {0, 0};
  bool ceil_mode = false;
  bool count_include_pad = true;
  std::optional<int64_t> divisor_override;
};

absl::StatusOr<AvgPool2dArgs> ParseAvgPool2d(ArgReader& args) {
  AvgPool2dArgs parsed;
  PARAMD_ASSIGN_OR_RETURN(parsed.kernel_size, args.IntOrTuple("kernel_size", 2));
  PARAMD_ASSIGN_OR_RETURN(parsed.stride, args.IntOrTuple("stride", 2, nullptr));
  PARAMD_ASSIGN_OR_RETURN(parsed.padding, args.IntOrTuple("padding", 2, 0));
  PARAMD_ASSIGN_OR_RETURN(parsed.ceil_mode, args.Bool("ceil_mode", parsed.ceil_mode));
  PARAMD_ASSIGN_OR_RETURN(parsed.count_include_pad,
                          args.Bool("count_include_pad", parsed.count_include_pad));
  PARAMD_ASSIGN_OR_RETURN(parsed.divisor_override,
                          args.OptionalInt("divisor_override", parsed.divisor_override));
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  PARAMD_RETURN_IF_ERROR(RejectNoneElements(args, "AvgPool2d", "stride", parsed.stride));
  if (parsed.stride.empty()) parsed.stride = parsed.kernel_size;
  PARAMD_RETURN_IF_ERROR(
      CheckPoolSizes(args, parsed.kernel_size, parsed.stride, parsed.padding, {1, 1}));
  if (parsed.divisor_override.has_value() && *parsed.divisor_override == 0) {
    return args.Error("divisor_override", "divisor must be not zero");
  }
  RecordDefaultStride(args);
  return parsed;
}

struct AdaptiveAvgPool2dArgs {
  // (height, width), each a size or kNoneSize (keep the input's size).
  std::vector<int64_t> output_size;  // required
};

absl::StatusOr<AdaptiveAvgPool2dArgs> ParseAdaptiveAvgPool2d(ArgReader& args) {
  AdaptiveAvgPool2dArgs parsed;
  // Optional-style read: a pair may hold None ("keep this input dimension").
  PARAMD_ASSIGN_OR_RETURN(parsed.output_size, args.IntOrTuple("output_size", 2, nullptr));
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  const std::vector<int64_t>& output_size = parsed.output_size;
  if (output_size.empty()) {
    return args.Error("output_size",
                      "missing required argument 'output_size' for AdaptiveAvgPool2d (an integer "
                      "or a list of 2 integers, each of which may be null)");
  }
  for (int64_t size : output_size) {
    if (size != kNoneSize && size < 0) {
      auto shown = [](int64_t v) { return v == kNoneSize ? std::string("None") : absl::StrCat(v); };
      return args.Error(
          "output_size",
          absl::StrCat("adaptive_avg_pool2d: elements of output_size must be greater than or "
                       "equal to 0 but received {",
                       shown(output_size[0]), ", ", shown(output_size[1]), "}"));
    }
  }
  return parsed;
}

std::string MaxPool2dExtraRepr(const Module& module) {
  return absl::StrCat("kernel_size=", PyRepr(ArgOf(module, "kernel_size")),
                      ", stride=", PyRepr(ArgOf(module, "stride")),
                      ", padding=", PyRepr(ArgOf(module, "padding")),
                      ", dilation=", PyRepr(ArgOf(module, "dilation")),
                      ", ceil_mode=", PyRepr(ArgOf(module, "ceil_mode")));
}

std::string AvgPool2dExtraRepr(const Module& module) {
  return absl::StrCat("kernel_size=", PyRepr(ArgOf(module, "kernel_size")),
                      ", stride=", PyRepr(ArgOf(module, "stride")),
                      ", padding=", PyRepr(ArgOf(module, "padding")));
}

std::string AdaptiveAvgPool2dExtraRepr(const Module& module) {
  return absl::StrCat("output_size=", PyRepr(ArgOf(module, "output_size")));
}

// The [N*C, H, W] check and output shape every 2-D pool shares.
absl::Status CheckPoolInput(const Tensor& x) {
  bool ok = x.dim() == 3 || x.dim() == 4;
  for (int64_t d = x.dim() == 4 ? 1 : 0; ok && d < x.dim(); ++d) ok = x.shape()[d] != 0;
  if (!ok) {
    return absl::InvalidArgumentError("non-empty 3D or 4D (batch mode) tensor expected for input");
  }
  return absl::OkStatus();
}

absl::StatusOr<Shape> PoolOutputShape(const Tensor& x, const std::vector<int64_t>& kernel,
                                      const std::vector<int64_t>& stride,
                                      const std::vector<int64_t>& padding,
                                      const std::vector<int64_t>& dilation, bool ceil_mode) {
  const int64_t h = x.shape()[x.dim() - 2], w = x.shape()[x.dim() - 1];
  const int64_t out_h =
      PoolingOutputShape(h, kernel[0], padding[0], stride[0], dilation[0], ceil_mode);
  const int64_t out_w =
      PoolingOutputShape(w, kernel[1], padding[1], stride[1], dilation[1], ceil_mode);
  const int64_t planes = x.shape()[x.dim() - 3];
  if (out_h < 1 || out_w < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("Given input size: (", planes, "x", h, "x", w, "). Calculated output size: (",
                     planes, "x", out_h, "x", out_w, "). Output size is too small"));
  }
  Shape shape = x.shape();
  shape[x.dim() - 2] = out_h;
  shape[x.dim() - 1] = out_w;
  return shape;
}

absl::StatusOr<Tensor> MaxPool2dForward(const MaxPool2dArgs& args, const LayerCall& call,
                                        const Tensor& input) {
  Runner& run = call.runner;
  if (args.return_indices) {
    return absl::UnimplementedError(
        "return_indices=True is not supported by paramd's forward (it returns a tuple)");
  }
  PARAMD_RETURN_IF_ERROR(CheckPoolInput(input));
  const std::vector<int64_t>& kernel = args.kernel_size;
  const std::vector<int64_t>& s = args.stride;
  const std::vector<int64_t>& padding = args.padding;
  const std::vector<int64_t>& dilation = args.dilation;
  PARAMD_ASSIGN_OR_RETURN(const Shape shape,
                          PoolOutputShape(input, kernel, s, padding, dilation, args.ceil_mode));
  PARAMD_ASSIGN_OR_RETURN(Tensor x, run.Contiguous(input));
  PARAMD_ASSIGN_OR_RETURN(Tensor out, run.Empty(x.dtype(), shape));
  if (out.numel() == 0) return out;
  kernels::MaxPool2dArgs pool{.input = ConstView(x), .output = MutableView(out)};
  for (int d = 0; d < 2; ++d) {
    pool.kernel[d] = kernel[d];
    pool.stride[d] = s[d];
    pool.padding[d] = padding[d];
    pool.dilation[d] = dilation[d];
  }
  PARAMD_RETURN_IF_ERROR(run.backend().MaxPool2d(pool));
  return out;
}

absl::StatusOr<Tensor> AvgPool2dForward(const AvgPool2dArgs& args, const LayerCall& call,
                                        const Tensor& input) {
  Runner& run = call.runner;
  PARAMD_RETURN_IF_ERROR(CheckPoolInput(input));
  const std::vector<int64_t>& kernel = args.kernel_size;
  const std::vector<int64_t>& s = args.stride;
  const std::vector<int64_t>& padding = args.padding;
  PARAMD_ASSIGN_OR_RETURN(const Shape shape,
                          PoolOutputShape(input, kernel, s, padding, {1, 1}, args.ceil_mode));
  PARAMD_ASSIGN_OR_RETURN(Tensor x, run.Contiguous(input));
  PARAMD_ASSIGN_OR_RETURN(Tensor out, run.Empty(x.dtype(), shape));
  if (out.numel() == 0) return out;
  kernels::AvgPool2dArgs pool{.input = ConstView(x),
                              .output = MutableView(out),
                              .count_include_pad = args.count_include_pad,
                              .divisor_override = args.divisor_override.value_or(0)};
  for (int d = 0; d < 2; ++d) {
    pool.kernel[d] = kernel[d];
    pool.stride[d] = s[d];
    pool.padding[d] = padding[d];
  }
  PARAMD_RETURN_IF_ERROR(run.backend().AvgPool2d(pool));
  return out;
}

absl::StatusOr<Tensor> AdaptiveAvgPool2dForward(const AdaptiveAvgPool2dArgs& args,
                                                const LayerCall& call, const Tensor& input) {
  Runner& run = call.runner;
  if (input.dim() != 3 && input.dim() != 4) {
    return absl::InvalidArgumentError(absl::StrCat(
        "adaptive_avg_pool2d(): Expected 3D or 4D tensor, but got ", ShapeString(input.shape())));
  }
  for (int64_t d = 1; d < input.dim(); ++d) {
    if (input.shape()[d] == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("adaptive_avg_pool2d(): Expected input to have non-zero size for non-batch "
                       "dimensions, but input has sizes ",
                       ShapeString(input.shape()), " with dimension ", d, " being empty"));
    }
  }
  // Each element is a size or None (keep the input's size).
  Shape shape = input.shape();
  for (int d = 0; d < 2; ++d) {
    if (args.output_size[d] != kNoneSize) shape[input.dim() - 2 + d] = args.output_size[d];
  }
  PARAMD_ASSIGN_OR_RETURN(Tensor x, run.Contiguous(input));
  PARAMD_ASSIGN_OR_RETURN(Tensor out, run.Empty(x.dtype(), shape));
  if (out.numel() == 0) return out;
  PARAMD_RETURN_IF_ERROR(
      run.backend().AdaptiveAvgPool2d({.input = ConstView(x), .output = MutableView(out)}));
  return out;
}

}  // namespace

const LayerDef& MaxPool2dLayer() {
  static const LayerDef* const def = MakeLayer<MaxPool2dArgs>({
      .type = "MaxPool2d",
      .parse = &ParseMaxPool2d,
      .extra_repr = &MaxPool2dExtraRepr,
      .forward = &MaxPool2dForward,
      .attributes = {"kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode"},
  });
  return *def;
}

const LayerDef& AvgPool2dLayer() {
  static const LayerDef* const def = MakeLayer<AvgPool2dArgs>({
      .type = "AvgPool2d",
      .parse = &ParseAvgPool2d,
      .extra_repr = &AvgPool2dExtraRepr,
      .forward = &AvgPool2dForward,
      .attributes = {"kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                     "divisor_override"},
  });
  return *def;
}

const LayerDef& AdaptiveAvgPool2dLayer() {
  static const LayerDef* const def = MakeLayer<AdaptiveAvgPool2dArgs>({
      .type = "AdaptiveAvgPool2d",
      .parse = &ParseAdaptiveAvgPool2d,
      .extra_repr = &AdaptiveAvgPool2dExtraRepr,
      .forward = &AdaptiveAvgPool2dForward,
      .attributes = {"output_size"},
  });
  return *def;
}

}  // namespace paramd::core
