// nn.Flatten and nn.Identity: no parameters or buffers.
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/core/layers/builtin.h"
#include "server/core/py_format.h"
#include "server/core/runner.h"

namespace paramd::core {
namespace {

struct FlattenArgs {
  int64_t start_dim = 1;
  int64_t end_dim = -1;
};

absl::StatusOr<FlattenArgs> ParseFlatten(ArgReader& args) {
  FlattenArgs parsed;
  PARAMD_ASSIGN_OR_RETURN(parsed.start_dim, args.Int("start_dim", parsed.start_dim));
  PARAMD_ASSIGN_OR_RETURN(parsed.end_dim, args.Int("end_dim", parsed.end_dim));
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  return parsed;
}

std::string FlattenExtraRepr(const Module& module) {
  return absl::StrCat("start_dim=", PyRepr(ArgOf(module, "start_dim")),
                      ", end_dim=", PyRepr(ArgOf(module, "end_dim")));
}

absl::StatusOr<Tensor> FlattenForward(const FlattenArgs& args, const LayerCall& call,
                                      const Tensor& x) {
  return call.runner.ApplyFlatten(x, args.start_dim, args.end_dim);
}

struct IdentityArgs {};

// Identity(*args, **kwargs) takes anything and keeps nothing, so a spec may pass the
// arguments of the layer it stands in for.
absl::StatusOr<IdentityArgs> ParseIdentity(ArgReader& args) { return IdentityArgs(); }

absl::StatusOr<Tensor> IdentityForward(const IdentityArgs&, const LayerCall&, const Tensor& x) {
  return x;
}

}  // namespace

const LayerDef& FlattenLayer() {
  static const LayerDef* const def = MakeLayer<FlattenArgs>({
      .type = "Flatten",
      .parse = &ParseFlatten,
      .extra_repr = &FlattenExtraRepr,
      .forward = &FlattenForward,
      .attributes = {"start_dim", "end_dim"},
  });
  return *def;
}

const LayerDef& IdentityLayer() {
  static const LayerDef* const def = MakeLayer<IdentityArgs>({
      .type = "Identity",
      .parse = &ParseIdentity,
      .forward = &IdentityForward,
  });
  return *def;
}

}  // namespace paramd::core
