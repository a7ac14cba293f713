// The activation modules: ReLU, GELU, SiLU, Sigmoid, Tanh, Softmax, LogSoftmax. None holds
// a parameter or buffer. ReLU and GELU may run as the epilogue of a preceding Linear's GEMM
// (LayerDef::gemm_epilogue).
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/core/layers/builtin.h"
#include "server/core/py_format.h"
#include "server/core/runner.h"

namespace paramd::core {
namespace {

using kernels::UnaryOp;

// ---- ReLU and SiLU

struct InplaceArgs {
  // Accepted and printed; paramd's forward never writes its input, so it changes nothing.
  bool inplace = false;
};

absl::StatusOr<InplaceArgs> ParseInplace(ArgReader& args) {
  InplaceArgs parsed;
  PARAMD_ASSIGN_OR_RETURN(parsed.inplace, args.Bool("inplace", parsed.inplace));
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  return parsed;
}

// ReLU and SiLU: `inplace_str = 'inplace=True' if self.inplace else ''`.
std::string InplaceExtraRepr(const Module& module) {
  const nlohmann::ordered_json& inplace = ArgOf(module, "inplace");
  return inplace.is_boolean() && inplace.get<bool>() ? "inplace=True" : "";
}

std::optional<UnaryOp> ReLUEpilogue(const InplaceArgs&) { return UnaryOp::kReLU; }

absl::StatusOr<Tensor> ReLUForward(const InplaceArgs&, const LayerCall& call, const Tensor& x) {
  return call.runner.ApplyUnary(x, UnaryOp::kReLU);
}

absl::StatusOr<Tensor> SiLUForward(const InplaceArgs&, const LayerCall& call, const Tensor& x) {
  return call.runner.ApplyUnary(x, UnaryOp::kSiLU);
}

// ---- GELU

struct GELUArgs {
  std::string approximate = "none";  // or "tanh"
};

absl::StatusOr<GELUArgs> ParseGELU(ArgReader& args) {
  GELUArgs parsed;
  // PyTorch stores any string and fails in forward; only the two that can run are taken.
  PARAMD_ASSIGN_OR_RETURN(parsed.approximate,
                          args.String("approximate", parsed.approximate, {"none", "tanh"}));
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  return parsed;
}

std::string GELUExtraRepr(const Module& module) {
  return absl::StrCat("approximate=", PyRepr(ArgOf(module, "approximate")));
}

std::optional<UnaryOp> GELUEpilogue(const GELUArgs& args) {
  return args.approximate == "tanh" ? UnaryOp::kGELUTanh : UnaryOp::kGELU;
}

absl::StatusOr<Tensor> GELUForward(const GELUArgs& args, const LayerCall& call, const Tensor& x) {
  return call.runner.ApplyUnary(x, *GELUEpilogue(args));
}

// ---- Sigmoid and Tanh

struct NoArgs {};

absl::StatusOr<NoArgs> ParseNoArguments(ArgReader& args) {
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  return NoArgs();
}

absl::StatusOr<Tensor> SigmoidForward(const NoArgs&, const LayerCall& call, const Tensor& x) {
  return call.runner.ApplyUnary(x, UnaryOp::kSigmoid);
}

absl::StatusOr<Tensor> TanhForward(const NoArgs&, const LayerCall& call, const Tensor& x) {
  return call.runner.ApplyUnary(x, UnaryOp::kTanh);
}

// ---- Softmax and LogSoftmax

struct SoftmaxArgs {
  std::optional<int64_t> dim;  // None: F.softmax's legacy choice (_get_softmax_dim)
};

absl::StatusOr<SoftmaxArgs> ParseSoftmax(ArgReader& args) {
  SoftmaxArgs parsed;
  PARAMD_ASSIGN_OR_RETURN(parsed.dim, args.OptionalInt("dim", parsed.dim));
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  return parsed;
}

std::string SoftmaxExtraRepr(const Module& module) {
  return absl::StrCat("dim=", PyRepr(ArgOf(module, "dim")));
}

absl::StatusOr<Tensor> SoftmaxForward(const SoftmaxArgs& args, const LayerCall& call,
                                      const Tensor& x) {
  return call.runner.ApplySoftmax(x, args.dim, /*log=*/false);
}

absl::StatusOr<Tensor> LogSoftmaxForward(const SoftmaxArgs& args, const LayerCall& call,
                                         const Tensor& x) {
  return call.runner.ApplySoftmax(x, args.dim, /*log=*/true);
}

}  // namespace

const LayerDef& ReLULayer() {
  static const LayerDef* const def = MakeLayer<InplaceArgs>({
      .type = "ReLU",
      .parse = &ParseInplace,
      .extra_repr = &InplaceExtraRepr,
      .forward = &ReLUForward,
      .gemm_epilogue = &ReLUEpilogue,
      .attributes = {"inplace"},
  });
  return *def;
}

const LayerDef& GELULayer() {
  static const LayerDef* const def = MakeLayer<GELUArgs>({
      .type = "GELU",
      .parse = &ParseGELU,
      .extra_repr = &GELUExtraRepr,
      .forward = &GELUForward,
      .gemm_epilogue = &GELUEpilogue,
      .attributes = {"approximate"},
  });
  return *def;
}

const LayerDef& SiLULayer() {
  static const LayerDef* const def = MakeLayer<InplaceArgs>({
      .type = "SiLU",
      .parse = &ParseInplace,
      .extra_repr = &InplaceExtraRepr,
      .forward = &SiLUForward,
      .attributes = {"inplace"},
  });
  return *def;
}

const LayerDef& SigmoidLayer() {
  static const LayerDef* const def = MakeLayer<NoArgs>({
      .type = "Sigmoid",
      .parse = &ParseNoArguments,
      .forward = &SigmoidForward,
  });
  return *def;
}

const LayerDef& TanhLayer() {
  static const LayerDef* const def = MakeLayer<NoArgs>({
      .type = "Tanh",
      .parse = &ParseNoArguments,
      .forward = &TanhForward,
  });
  return *def;
}

const LayerDef& SoftmaxLayer() {
  static const LayerDef* const def = MakeLayer<SoftmaxArgs>({
      .type = "Softmax",
      .parse = &ParseSoftmax,
      .extra_repr = &SoftmaxExtraRepr,
      .forward = &SoftmaxForward,
      .attributes = {"dim"},
  });
  return *def;
}

const LayerDef& LogSoftmaxLayer() {
  static const LayerDef* const def = MakeLayer<SoftmaxArgs>({
      .type = "LogSoftmax",
      .parse = &ParseSoftmax,
      .extra_repr = &SoftmaxExtraRepr,
      .forward = &LogSoftmaxForward,
      .attributes = {"dim"},
  });
  return *def;
}

}  // namespace paramd::core
