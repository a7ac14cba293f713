// nn.Sequential, nn.ModuleList and nn.ModuleDict: they take no arguments; their children
// come from the spec's "children" list, which the spec builder adds.
#include "base/status_macros.h"
#include "server/core/layers/builtin.h"

namespace paramd::core {
namespace {

absl::Status BuildContainer(ArgReader& args, Module& module, InitRng& rng) {
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  module.SetArgs(args.TakeNormalized());
  return absl::OkStatus();
}

}  // namespace

const LayerDef& SequentialLayer() {
  static const auto* const def = new LayerDef{
      .type = "Sequential",
      .build = &BuildContainer,
      .extra_repr = nullptr,
      .attributes = {},
      .is_container = true,
  };
  return *def;
}

// ModuleList's repr compresses repeated children (repr.cc).
const LayerDef& ModuleListLayer() {
  static const auto* const def = new LayerDef{
      .type = "ModuleList",
      .build = &BuildContainer,
      .extra_repr = nullptr,
      .attributes = {},
      .is_container = true,
  };
  return *def;
}

const LayerDef& ModuleDictLayer() {
  static const auto* const def = new LayerDef{
      .type = "ModuleDict",
      .build = &BuildContainer,
      .extra_repr = nullptr,
      .attributes = {},
      .is_container = true,
  };
  return *def;
}

}  // namespace paramd::core
