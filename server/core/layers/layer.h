// The definition of one built-in module type (Linear, Conv2d, ...): how it reads its
// constructor arguments, which parameters and buffers it creates and how it initialises
// them, how it prints and how it runs forward. Each layer family's file builds its
// definitions (layers/builtin.h: MakeLayer); the table in layers/registry.cc lists them.
// docs/adding-a-layer.md walks through adding one.
// Thread-safe: definitions are immutable.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/ops.h"
#include "nlohmann/json.hpp"
#include "base/dtype.h"
#include "server/core/tensor.h"

namespace paramd::core {

class Module;
class InitRng;

// Reads a spec's "args" object for one layer, recording each accepted argument (with its
// default filled in) into the normalised arguments in PyTorch's parameter order. Errors name
// the JSON path ("$.children[0].args.in_features: expected an integer, got \"a\"").
class ArgReader {
 public:
  ArgReader(std::string type, const nlohmann::json& args, std::string path);

  // Required arguments fail when absent; optional ones take `fallback`.
  absl::StatusOr<int64_t> Int(absl::string_view name);
  absl::StatusOr<int64_t> Int(absl::string_view name, int64_t fallback);
  // An int or a list of `count` ints (PyTorch's _pair); stored as given.
  absl::StatusOr<std::vector<int64_t>> IntOrTuple(absl::string_view name, size_t count);
  absl::StatusOr<std::vector<int64_t>> IntOrTuple(absl::string_view name, size_t count,
                                                  const nlohmann::json& fallback);
  absl::StatusOr<double> Float(absl::string_view name, double fallback);
  // A float or null (`momentum=None`).
  absl::StatusOr<std::optional<double>> OptionalFloat(absl::string_view name,
                                                      std::optional<double> fallback);
  absl::StatusOr<std::optional<int64_t>> OptionalInt(absl::string_view name,
                                                     std::optional<int64_t> fallback);
  absl::StatusOr<bool> Bool(absl::string_view name, bool fallback);
  absl::StatusOr<std::string> String(absl::string_view name, std::string fallback,
                                     std::vector<std::string> allowed);
  // The factory keyword `dtype` (float32 when absent).
  absl::StatusOr<DType> Dtype();
  // Stores a derived value in the normalised arguments without reading it.
  void Put(absl::string_view name, nlohmann::ordered_json value);

  // INVALID_ARGUMENT naming the first argument no reader asked for.
  absl::Status CheckAllConsumed() const;
  // An INVALID_ARGUMENT at this argument's path.
  absl::Status Error(absl::string_view name, absl::string_view message) const;
  // INVALID_ARGUMENT when a window argument (kernel_size, stride, padding, dilation) holds a
  // value past kMaxWindowSize: output sizes multiply and add them, which must not overflow.
  absl::Status CheckWindow(absl::string_view name, const std::vector<int64_t>& values) const;
  static constexpr int64_t kMaxWindowSize = (int64_t{1} << 31) - 1;

  // The normalised value recorded for `name` so far (null when none was).
  const nlohmann::ordered_json& Recorded(absl::string_view name) const;

  nlohmann::ordered_json TakeNormalized() { return std::move(normalized_); }

 private:
  const nlohmann::json* Lookup(absl::string_view name);

  std::string type_;
  const nlohmann::json& args_;
  std::string path_;
  std::vector<std::string> consumed_;
  nlohmann::ordered_json normalized_ = nlohmann::ordered_json::object();
};

class Runner;

// The parsed, checked constructor arguments of one built-in module. Each layer's Args
// struct is held through this base (see TypedLayerArgs in layers/builtin.h), immutable and
// shared by every copy of the module, so forward reads typed fields and never re-parses
// JSON. Note [Two forms of layer arguments] in layers/builtin.h says why the normalised
// JSON stays beside it.
class LayerArgs {
 public:
  virtual ~LayerArgs() = default;
};

// One call of a built-in layer's forward: the runner of the pass, the module and its
// dotted path (for buffer update names), and for a layer that fuses one (Linear) the
// activation to apply as its GEMM epilogue.
struct LayerCall {
  Runner& runner;
  const Module& module;
  const std::string& path;
  kernels::UnaryOp epilogue = kernels::UnaryOp::kIdentity;
};

struct LayerDef {
  absl::string_view type;
  // Module._version (BatchNorm's is 2).
  int module_version = 1;
  // BatchNorm: a missing num_batches_tracked is filled when the checkpoint's version < 2.
  bool fills_num_batches_tracked = false;
  // Reads and checks the arguments, records the typed and the normalised arguments on
  // `module`, then registers the parameters and buffers, drawing initial values from `rng`
  // in PyTorch's reset_parameters order.
  std::function<absl::Status(ArgReader& args, Module& module, InitRng& rng)> build;
  // PyTorch's extra_repr for this type, from the normalised arguments; null prints nothing.
  std::function<std::string(const Module& module)> extra_repr;
  // The module's forward on one input, with PyTorch's checks and messages (the runner adds
  // the module's path). Null for ModuleList and ModuleDict, which have none.
  std::function<absl::StatusOr<Tensor>(const LayerCall& call, const Tensor& input)> forward;
  // The activation this module computes when a preceding GEMM may fuse it in its place
  // (ReLU, GELU); null otherwise.
  std::function<std::optional<kernels::UnaryOp>(const Module& module)> gemm_epilogue;
  // forward honours LayerCall::epilogue (Linear).
  bool fuses_epilogue = false;
  // Instance attributes the PyTorch constructor sets besides registered tensors
  // (`in_features`, `eps`, ...), which `hasattr` sees.
  std::vector<absl::string_view> attributes;
  // Containers whose children come from the spec's "children" list. Their forward labels
  // its own errors: the runner does not prefix them.
  bool is_container = false;
};

// The definition of `type`, or null when it is not a built-in.
const LayerDef* FindLayer(absl::string_view type);
// Every built-in, in the order DESIGN.md lists them (Conv1d beside Conv2d).
const std::vector<const LayerDef*>& AllLayers();

}  // namespace paramd::core
