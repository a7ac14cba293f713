// The typed-layer glue the family files build their definitions with (LayerSpec,
// MakeLayer), and the helpers they share. Internal to server/core: the rest of the server
// finds layers through FindLayer.
// Thread-safe: every definition is created once on first use and never changes.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "base/status_macros.h"
#include "server/core/layers/layer.h"
#include "server/core/module.h"
#include "server/core/tensor.h"

namespace paramd::core {

// Note [Two forms of layer arguments]
// A built-in module keeps its arguments twice, both fixed when the spec is built:
//  - typed (the layer's Args struct, behind Module::layer_args), which forward reads;
//  - normalised JSON (Module::args), in PyTorch's parameter order with defaults filled
//    in, which repr, spec export and DescribeModel read. It keeps each value as given,
//    because Python prints it as given: `eps=0` for an int, `kernel_size=(5, 5)` for
//    Conv2d's 5, `stride=2` for MaxPool2d's 2.
// A layer's parse function reads each argument once through ArgReader, which records the
// JSON form as it returns the typed value, so the two cannot disagree.

// The parsed arguments of a layer whose Args struct is `Args`.
template <typename Args>
class TypedLayerArgs final : public LayerArgs {
 public:
  explicit TypedLayerArgs(Args value) : value(std::move(value)) {}
  const Args value;
};

// What a layer's file writes: its name, its Args struct's parser, and the functions of one
// layer over those arguments. PyTorch's defaults live in the Args struct's member
// initialisers, which the parser passes to ArgReader as fallbacks.
template <typename Args>
struct LayerSpec {
  absl::string_view type;
  int module_version = 1;
  bool fills_num_batches_tracked = false;
  // Reads every argument (ArgReader records the normalised JSON), ends with
  // CheckAllConsumed, then runs the constructor's checks. May Put derived JSON values.
  absl::StatusOr<Args> (*parse)(ArgReader& reader) = nullptr;
  // Registers the parameters and buffers, drawing from `rng` in reset_parameters order.
  // Null: the module holds no tensors.
  absl::Status (*init)(const Args& args, Module& module, InitRng& rng) = nullptr;
  // LayerDef::extra_repr.
  std::string (*extra_repr)(const Module& module) = nullptr;
  // LayerDef::forward, with the parsed arguments.
  absl::StatusOr<Tensor> (*forward)(const Args& args, const LayerCall& call,
                                    const Tensor& input) = nullptr;
  // LayerDef::gemm_epilogue, from the parsed arguments.
  std::optional<kernels::UnaryOp> (*gemm_epilogue)(const Args& args) = nullptr;
  bool fuses_epilogue = false;
  std::vector<absl::string_view> attributes;
  bool is_container = false;
};

// The parsed arguments of `module`, whose layer parses into `Args`; INTERNAL when the
// module was not built through that layer.
template <typename Args>
absl::StatusOr<const Args*> ParsedArgs(const Module& module) {
  const auto* typed = dynamic_cast<const TypedLayerArgs<Args>*>(module.layer_args());
  if (typed == nullptr) {
    return absl::InternalError(
        absl::StrCat(module.type(), " module holds no parsed arguments of its layer"));
  }
  return &typed->value;
}

// The type-erased definition of `spec`; call once per layer (its accessor keeps it).
template <typename Args>
const LayerDef* MakeLayer(LayerSpec<Args> spec) {
  auto* def = new LayerDef{
      .type = spec.type,
      .module_version = spec.module_version,
      .fills_num_batches_tracked = spec.fills_num_batches_tracked,
      .extra_repr = spec.extra_repr,
      .fuses_epilogue = spec.fuses_epilogue,
      .attributes = std::move(spec.attributes),
      .is_container = spec.is_container,
  };
  def->build = [parse = spec.parse, init = spec.init](ArgReader& reader, Module& module,
                                                      InitRng& rng) -> absl::Status {
    PARAMD_ASSIGN_OR_RETURN(Args parsed, parse(reader));
    auto typed = std::make_shared<const TypedLayerArgs<Args>>(std::move(parsed));
    module.SetArgs(reader.TakeNormalized());
    module.SetLayerArgs(typed);
    return init == nullptr ? absl::OkStatus() : init(typed->value, module, rng);
  };
  if (spec.forward != nullptr) {
    def->forward = [forward = spec.forward](const LayerCall& call,
                                            const Tensor& input) -> absl::StatusOr<Tensor> {
      PARAMD_ASSIGN_OR_RETURN(const Args* args, ParsedArgs<Args>(call.module));
      return forward(*args, call, input);
    };
  }
  if (spec.gemm_epilogue != nullptr) {
    def->gemm_epilogue =
        [epilogue = spec.gemm_epilogue](const Module& module) -> std::optional<kernels::UnaryOp> {
      absl::StatusOr<const Args*> args = ParsedArgs<Args>(module);
      return args.ok() ? epilogue(**args) : std::nullopt;
    };
  }
  return def;
}

// Note [ArgReader sequences]
// ArgReader::IntOrTuple reads PyTorch's `int or tuple` arguments. Two readings go beyond
// a fixed-size pair:
//  - `count == 0` accepts a list of any length (LayerNorm's normalized_shape); a bare int
//    comes back as one element.
//  - With a null fallback the argument is Optional: an absent or null value comes back as
//    an empty vector, and a null list element (AdaptiveAvgPool2d's `(None, 7)`) comes back
//    as kNoneSize. Each caller decides whether None is legal where it appears.
inline constexpr int64_t kNoneSize = std::numeric_limits<int64_t>::min();

// The normalised argument `name` of a built-in module (for extra_repr), or null when it is
// absent (a module built some other way than through its LayerDef).
const nlohmann::ordered_json& ArgOf(const Module& module, absl::string_view name);

// torch.empty's check, with its text: "Trying to create tensor with negative dimension -1:
// [2, -1]".
absl::Status CheckNoNegativeDimension(const Shape& shape);

// Layers whose default init draws random values need a floating-point dtype, as
// torch.nn.init's uniform_/normal_ do.
absl::Status RequireFloatingDType(const ArgReader& args, absl::string_view type, DType dtype);

// Registers a new Parameter holding `tensor` (or its error).
absl::Status AddParameter(Module& module, absl::string_view name, absl::StatusOr<Tensor> tensor);
// Registers a new persistent Buffer holding `tensor` (or its error).
absl::Status AddBuffer(Module& module, absl::string_view name, absl::StatusOr<Tensor> tensor);

}  // namespace paramd::core
