// The definition of one built-in module type (Linear, Conv2d, ...): how it reads its
// constructor arguments, which parameters and buffers it creates and how it initialises
// them, and how it prints. Definitions are plain data in a table (layers/registry.cc).
// Thread-safe: definitions are immutable.
#pragma once

#include "absl/strings/string_view.h"
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "base/dtype.h"

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

  nlohmann::ordered_json TakeNormalized() { return std::move(normalized_); }

 private:
  const nlohmann::json* Lookup(absl::string_view name);

  std::string type_;
  const nlohmann::json& args_;
  std::string path_;
  std::vector<std::string> consumed_;
  nlohmann::ordered_json normalized_ = nlohmann::ordered_json::object();
};

struct LayerDef {
  absl::string_view type;
  // Module._version (BatchNorm's is 2).
  int module_version = 1;
  // BatchNorm: a missing num_batches_tracked is filled when the checkpoint's version < 2.
  bool fills_num_batches_tracked = false;
  // Reads the arguments, then registers the parameters and buffers on `module`, drawing
  // initial values from `rng` in PyTorch's reset_parameters order.
  absl::Status (*build)(ArgReader& args, Module& module, InitRng& rng);
  // PyTorch's extra_repr for this type, from the normalised arguments.
  std::string (*extra_repr)(const Module& module);
  // Instance attributes the PyTorch constructor sets besides registered tensors
  // (`in_features`, `eps`, ...), which `hasattr` sees.
  std::vector<absl::string_view> attributes;
  // Containers whose children come from the spec's "children" list.
  bool is_container = false;
};

// The definition of `type`, or null when it is not a built-in.
const LayerDef* FindLayer(absl::string_view type);
// Every built-in, in the order DESIGN.md lists them.
const std::vector<const LayerDef*>& AllLayers();

}  // namespace paramd::core
