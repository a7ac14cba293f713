// nn.Dropout: no parameters; `p` and `inplace`.
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/core/layers/builtin.h"
#include "server/core/py_format.h"
#include "server/core/runner.h"

namespace paramd::core {
namespace {

struct DropoutArgs {
  double p = 0.5;
  bool inplace = false;
};

absl::StatusOr<DropoutArgs> ParseDropout(ArgReader& args) {
  DropoutArgs parsed;
  PARAMD_ASSIGN_OR_RETURN(parsed.p, args.Float("p", parsed.p));
  PARAMD_ASSIGN_OR_RETURN(parsed.inplace, args.Bool("inplace", parsed.inplace));
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  // _DropoutNd.__init__'s check; `{p}` prints the value as given (1.5, or 2 for an int).
  if (!(parsed.p >= 0.0 && parsed.p <= 1.0)) {
    return args.Error("p", absl::StrCat("dropout probability has to be between 0 and 1, but got ",
                                        PyRepr(args.Recorded("p"))));
  }
  return parsed;
}

// The identity in eval mode; in training mode a mask drawn from the pass's seed.
absl::StatusOr<Tensor> DropoutForward(const DropoutArgs& args, const LayerCall& call,
                                      const Tensor& input) {
  return call.runner.ApplyDropout(input, args.p);
}

std::string DropoutExtraRepr(const Module& module) {
  return absl::StrCat("p=", PyRepr(ArgOf(module, "p")),
                      ", inplace=", PyRepr(ArgOf(module, "inplace")));
}

}  // namespace

const LayerDef& DropoutLayer() {
  static const LayerDef* const def = MakeLayer<DropoutArgs>({
      .type = "Dropout",
      .parse = &ParseDropout,
      .extra_repr = &DropoutExtraRepr,
      .forward = &DropoutForward,
      .attributes = {"p", "inplace"},
  });
  return *def;
}

}  // namespace paramd::core
