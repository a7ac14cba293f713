// nn.Flatten and nn.Identity: no parameters or buffers.
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/core/layers/builtin.h"
#include "server/core/py_format.h"

namespace paramd::core {
namespace {

absl::Status BuildFlatten(ArgReader& args, Module& module, InitRng& rng) {
  PARAMD_RETURN_IF_ERROR(args.Int("start_dim", 1).status());
  PARAMD_RETURN_IF_ERROR(args.Int("end_dim", -1).status());
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  module.SetArgs(args.TakeNormalized());
  return absl::OkStatus();
}

std::string FlattenExtraRepr(const Module& module) {
  return absl::StrCat("start_dim=", PyRepr(ArgOf(module, "start_dim")),
                      ", end_dim=", PyRepr(ArgOf(module, "end_dim")));
}

// Identity(*args, **kwargs) takes anything and keeps nothing, so a spec may pass the
// arguments of the layer it stands in for.
absl::Status BuildIdentity(ArgReader& args, Module& module, InitRng& rng) {
  return absl::OkStatus();
}

}  // namespace

const LayerDef& FlattenLayer() {
  static const auto* const def = new LayerDef{
      .type = "Flatten",
      .build = &BuildFlatten,
      .extra_repr = &FlattenExtraRepr,
      .attributes = {"start_dim", "end_dim"},
  };
  return *def;
}

const LayerDef& IdentityLayer() {
  static const auto* const def = new LayerDef{
      .type = "Identity",
      .build = &BuildIdentity,
      .extra_repr = nullptr,
      .attributes = {},
  };
  return *def;
}

}  // namespace paramd::core
