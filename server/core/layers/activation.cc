// The activation modules: ReLU, GELU, SiLU, Sigmoid, Tanh, Softmax, LogSoftmax. None holds
// a parameter or buffer.
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/core/layers/builtin.h"
#include "server/core/py_format.h"

namespace paramd::core {
namespace {

absl::Status BuildInplaceActivation(ArgReader& args, Module& module, InitRng& rng) {
  PARAMD_RETURN_IF_ERROR(args.Bool("inplace", false).status());
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  module.SetArgs(args.TakeNormalized());
  return absl::OkStatus();
}

// ReLU and SiLU: `inplace_str = 'inplace=True' if self.inplace else ''`.
std::string InplaceExtraRepr(const Module& module) {
  const nlohmann::ordered_json& inplace = ArgOf(module, "inplace");
  return inplace.is_boolean() && inplace.get<bool>() ? "inplace=True" : "";
}

absl::Status BuildGELU(ArgReader& args, Module& module, InitRng& rng) {
  // PyTorch stores any string and fails in forward; only the two that can run are taken.
  PARAMD_RETURN_IF_ERROR(args.String("approximate", "none", {"none", "tanh"}).status());
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  module.SetArgs(args.TakeNormalized());
  return absl::OkStatus();
}

std::string GELUExtraRepr(const Module& module) {
  return absl::StrCat("approximate=", PyRepr(ArgOf(module, "approximate")));
}

absl::Status BuildNoArguments(ArgReader& args, Module& module, InitRng& rng) {
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  module.SetArgs(args.TakeNormalized());
  return absl::OkStatus();
}

absl::Status BuildSoftmax(ArgReader& args, Module& module, InitRng& rng) {
  PARAMD_RETURN_IF_ERROR(args.OptionalInt("dim", std::nullopt).status());
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  module.SetArgs(args.TakeNormalized());
  return absl::OkStatus();
}

std::string SoftmaxExtraRepr(const Module& module) {
  return absl::StrCat("dim=", PyRepr(ArgOf(module, "dim")));
}

}  // namespace

const LayerDef& ReLULayer() {
  static const auto* const def = new LayerDef{
      .type = "ReLU",
      .build = &BuildInplaceActivation,
      .extra_repr = &InplaceExtraRepr,
      .attributes = {"inplace"},
  };
  return *def;
}

const LayerDef& GELULayer() {
  static const auto* const def = new LayerDef{
      .type = "GELU",
      .build = &BuildGELU,
      .extra_repr = &GELUExtraRepr,
      .attributes = {"approximate"},
  };
  return *def;
}

const LayerDef& SiLULayer() {
  static const auto* const def = new LayerDef{
      .type = "SiLU",
      .build = &BuildInplaceActivation,
      .extra_repr = &InplaceExtraRepr,
      .attributes = {"inplace"},
  };
  return *def;
}

const LayerDef& SigmoidLayer() {
  static const auto* const def = new LayerDef{
      .type = "Sigmoid",
      .build = &BuildNoArguments,
      .extra_repr = nullptr,
      .attributes = {},
  };
  return *def;
}

const LayerDef& TanhLayer() {
  static const auto* const def = new LayerDef{
      .type = "Tanh",
      .build = &BuildNoArguments,
      .extra_repr = nullptr,
      .attributes = {},
  };
  return *def;
}

const LayerDef& SoftmaxLayer() {
  static const auto* const def = new LayerDef{
      .type = "Softmax",
      .build = &BuildSoftmax,
      .extra_repr = &SoftmaxExtraRepr,
      .attributes = {"dim"},
  };
  return *def;
}

const LayerDef& LogSoftmaxLayer() {
  static const auto* const def = new LayerDef{
      .type = "LogSoftmax",
      .build = &BuildSoftmax,
      .extra_repr = &SoftmaxExtraRepr,
      .attributes = {"dim"},
  };
  return *def;
}

}  // namespace paramd::core
