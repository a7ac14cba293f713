// nn.MaxPool2d, nn.AvgPool2d and nn.AdaptiveAvgPool2d: no parameters or buffers, only
// arguments.
//
// PyTorch accepts any sizes at construction and checks them when the pool first runs. A
// spec whose pool can never run is refused here instead, with the text of those checks
// (ATen's pooling_output_shape and pool2d_shape_check).
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/core/layers/builtin.h"
#include "server/core/py_format.h"

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

// `values` are (height, width) pairs.
absl::Status CheckPoolSizes(const ArgReader& args, const std::vector<int64_t>& kernel,
                            const std::vector<int64_t>& stride, const std::vector<int64_t>& padding,
                            const std::vector<int64_t>& dilation) {
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
nlohmann::ordered_json WithDefaultStride(nlohmann::ordered_json normalized) {
  if (normalized.is_object() && normalized["stride"].is_null()) {
    normalized["stride"] = normalized["kernel_size"];
  }
  return normalized;
}

absl::Status BuildMaxPool2d(ArgReader& args, Module& module, InitRng& rng) {
  PARAMD_ASSIGN_OR_RETURN(const std::vector<int64_t> kernel, args.IntOrTuple("kernel_size", 2));
  PARAMD_ASSIGN_OR_RETURN(std::vector<int64_t> stride, args.IntOrTuple("stride", 2, nullptr));
  PARAMD_ASSIGN_OR_RETURN(const std::vector<int64_t> padding, args.IntOrTuple("padding", 2, 0));
  PARAMD_ASSIGN_OR_RETURN(const std::vector<int64_t> dilation, args.IntOrTuple("dilation", 2, 1));
  PARAMD_RETURN_IF_ERROR(args.Bool("return_indices", false).status());
  PARAMD_RETURN_IF_ERROR(args.Bool("ceil_mode", false).status());
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  PARAMD_RETURN_IF_ERROR(RejectNoneElements(args, "MaxPool2d", "stride", stride));
  if (stride.empty()) stride = kernel;
  PARAMD_RETURN_IF_ERROR(CheckPoolSizes(args, kernel, stride, padding, dilation));
  module.SetArgs(WithDefaultStride(args.TakeNormalized()));
  return absl::OkStatus();
}

absl::Status BuildAvgPool2d(ArgReader& args, Module& module, InitRng& rng) {
  PARAMD_ASSIGN_OR_RETURN(const std::vector<int64_t> kernel, args.IntOrTuple("kernel_size", 2));
  PARAMD_ASSIGN_OR_RETURN(std::vector<int64_t> stride, args.IntOrTuple("stride", 2, nullptr));
  PARAMD_ASSIGN_OR_RETURN(const std::vector<int64_t> padding, args.IntOrTuple("padding", 2, 0));
  PARAMD_RETURN_IF_ERROR(args.Bool("ceil_mode", false).status());
  PARAMD_RETURN_IF_ERROR(args.Bool("count_include_pad", true).status());
  PARAMD_ASSIGN_OR_RETURN(const std::optional<int64_t> divisor_override,
                          args.OptionalInt("divisor_override", std::nullopt));
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  PARAMD_RETURN_IF_ERROR(RejectNoneElements(args, "AvgPool2d", "stride", stride));
  if (stride.empty()) stride = kernel;
  PARAMD_RETURN_IF_ERROR(CheckPoolSizes(args, kernel, stride, padding, {1, 1}));
  if (divisor_override.has_value() && *divisor_override == 0) {
    return args.Error("divisor_override", "divisor must be not zero");
  }
  module.SetArgs(WithDefaultStride(args.TakeNormalized()));
  return absl::OkStatus();
}

absl::Status BuildAdaptiveAvgPool2d(ArgReader& args, Module& module, InitRng& rng) {
  // Optional-style read: a pair may hold None ("keep this input dimension").
  PARAMD_ASSIGN_OR_RETURN(const std::vector<int64_t> output_size,
                          args.IntOrTuple("output_size", 2, nullptr));
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
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
  module.SetArgs(args.TakeNormalized());
  return absl::OkStatus();
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

}  // namespace

const LayerDef& MaxPool2dLayer() {
  static const auto* const def = new LayerDef{
      .type = "MaxPool2d",
      .build = &BuildMaxPool2d,
      .extra_repr = &MaxPool2dExtraRepr,
      .attributes = {"kernel_size", "stride", "padding", "dilation", "return_indices", "ceil_mode"},
  };
  return *def;
}

const LayerDef& AvgPool2dLayer() {
  static const auto* const def = new LayerDef{
      .type = "AvgPool2d",
      .build = &BuildAvgPool2d,
      .extra_repr = &AvgPool2dExtraRepr,
      .attributes = {"kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
                     "divisor_override"},
  };
  return *def;
}

const LayerDef& AdaptiveAvgPool2dLayer() {
  static const auto* const def = new LayerDef{
      .type = "AdaptiveAvgPool2d",
      .build = &BuildAdaptiveAvgPool2d,
      .extra_repr = &AdaptiveAvgPool2dExtraRepr,
      .attributes = {"output_size"},
  };
  return *def;
}

}  // namespace paramd::core
