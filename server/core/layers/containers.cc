// nn.Sequential, nn.ModuleList and nn.ModuleDict: they take no arguments; their children
// come from the spec's "children" list, which the spec builder adds. Sequential's forward
// calls its children in order; ModuleList and ModuleDict have no forward (the runner says
// so), as in PyTorch.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/text.h"
#include "server/core/layers/builtin.h"
#include "server/core/runner.h"

namespace paramd::core {
namespace {

struct ContainerArgs {};

absl::StatusOr<ContainerArgs> ParseContainer(ArgReader& args) {
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  return ContainerArgs();
}

// Errors come labelled from each child's call, so they name the child, not the Sequential.
absl::StatusOr<Tensor> SequentialForward(const ContainerArgs&, const LayerCall& call,
                                         const Tensor& input) {
  Runner& run = call.runner;
  std::vector<std::pair<std::string, const Module*>> children;
  for (const auto& [name, child] : call.module.children()) {
    // Sequential.forward calls every child it iterates, a None one too.
    if (child == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("'NoneType' object is not callable (child ",
                                                     QuoteName(ChildPath(call.path, name)),
                                                     " of the Sequential is None)"));
    }
    children.emplace_back(name, child.get());
  }
  Tensor value = input;
  for (size_t i = 0; i < children.size(); ++i) {
    const auto& [name, child] = children[i];
    const std::string child_path = ChildPath(call.path, name);
    // Linear then ReLU/GELU: one GEMM with the activation fused where the backend can.
    if (child->layer() != nullptr && child->layer()->fuses_epilogue && i + 1 < children.size()) {
      if (std::optional<kernels::UnaryOp> op = run.FusableActivation(children[i + 1].second)) {
        PARAMD_ASSIGN_OR_RETURN(value, run.CallFused(*child, child_path, value, *op));
        ++i;
        continue;
      }
    }
    PARAMD_ASSIGN_OR_RETURN(value, run.Call(*child, child_path, value));
  }
  return value;
}

}  // namespace

const LayerDef& SequentialLayer() {
  static const LayerDef* const def = MakeLayer<ContainerArgs>({
      .type = "Sequential",
      .parse = &ParseContainer,
      .forward = &SequentialForward,
      .is_container = true,
  });
  return *def;
}

// ModuleList's repr compresses repeated children (repr.cc).
const LayerDef& ModuleListLayer() {
  static const LayerDef* const def = MakeLayer<ContainerArgs>({
      .type = "ModuleList",
      .parse = &ParseContainer,
      .is_container = true,
  });
  return *def;
}

const LayerDef& ModuleDictLayer() {
  static const LayerDef* const def = MakeLayer<ContainerArgs>({
      .type = "ModuleDict",
      .parse = &ParseContainer,
      .is_container = true,
  });
  return *def;
}

}  // namespace paramd::core
