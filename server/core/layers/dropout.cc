// nn.Dropout: no parameters; `p` and `inplace`.
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/core/layers/builtin.h"
#include "server/core/py_format.h"

namespace paramd::core {
namespace {

absl::Status BuildDropout(ArgReader& args, Module& module, InitRng& rng) {
  PARAMD_ASSIGN_OR_RETURN(const double p, args.Float("p", 0.5));
  PARAMD_RETURN_IF_ERROR(args.Bool("inplace", false).status());
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  nlohmann::ordered_json normalized = args.TakeNormalized();
  // _DropoutNd.__init__'s check; `{p}` prints the value as given (1.5, or 2 for an int).
  if (!(p >= 0.0 && p <= 1.0)) {
    return args.Error("p", absl::StrCat("dropout probability has to be between 0 and 1, but got ",
                                        PyRepr(normalized["p"])));
  }
  module.SetArgs(std::move(normalized));
  return absl::OkStatus();
}

std::string DropoutExtraRepr(const Module& module) {
  return absl::StrCat("p=", PyRepr(ArgOf(module, "p")),
                      ", inplace=", PyRepr(ArgOf(module, "inplace")));
}

}  // namespace

const LayerDef& DropoutLayer() {
  static const auto* const def = new LayerDef{
      .type = "Dropout",
      .build = &BuildDropout,
      .extra_repr = &DropoutExtraRepr,
      .attributes = {"p", "inplace"},
  };
  return *def;
}

}  // namespace paramd::core
