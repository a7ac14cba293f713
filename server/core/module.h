// Module: one node of a PyTorch-style module tree. It has a type name (the class name
// PyTorch prints), normalised constructor arguments, and three insertion-ordered registries
// exactly as nn.Module keeps them: parameters (a slot may hold None), buffers (persistent or
// not; a slot may hold None) and children (a slot may hold None).
//
// Ownership: children and tensor slots are shared_ptr. One Module at two paths is module
// sharing; one Parameter in two slots is tying (pytorch-semantics.md section 9).
// Thread-safety: none of its own; a Model guards its tree (model.h).
#pragma once

#include "absl/strings/string_view.h"
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "nlohmann/json.hpp"
#include "server/core/ordered_map.h"
#include "server/core/parameter.h"

namespace paramd::core {

struct LayerDef;
class LayerArgs;

class Module {
 public:
  // A module of a custom (container) type: no layer definition, no arguments.
  explicit Module(std::string type_name);
  // A built-in layer; `args` are its normalised constructor arguments.
  Module(const LayerDef* layer, nlohmann::ordered_json args);

  // The class name, as `module._get_name()`.
  const std::string& type() const { return type_; }
  // The built-in definition, or null for a custom container.
  const LayerDef* layer() const { return layer_; }
  const nlohmann::ordered_json& args() const { return args_; }
  void SetArgs(nlohmann::ordered_json args) { args_ = std::move(args); }
  // The typed arguments its layer parsed (layers/layer.h), or null before it built.
  const LayerArgs* layer_args() const { return layer_args_.get(); }
  void SetLayerArgs(std::shared_ptr<const LayerArgs> args) { layer_args_ = std::move(args); }
  // `Module._version`: 1, or 2 for BatchNorm (recorded in state_dict's _metadata).
  int version() const;

  bool training() const { return training_; }
  void set_training(bool training) { training_ = training; }

  const OrderedMap<std::shared_ptr<Parameter>>& parameters() const { return parameters_; }
  const OrderedMap<std::shared_ptr<Buffer>>& buffers() const { return buffers_; }
  const OrderedMap<std::shared_ptr<Module>>& children() const { return children_; }
  bool IsPersistentBuffer(absl::string_view name) const {
    return buffers_.contains(name) && !non_persistent_.contains(name);
  }

  // nn.Module.register_parameter: PyTorch's checks in PyTorch's order and its messages
  // (INVALID_ARGUMENT for a bad name, ALREADY_EXISTS for a name taken by anything that is
  // not a parameter). `parameter` may be null (a None slot).
  absl::Status RegisterParameter(absl::string_view name, std::shared_ptr<Parameter> parameter);
  // nn.Module.register_buffer; `buffer` may be null.
  absl::Status RegisterBuffer(absl::string_view name, std::shared_ptr<Buffer> buffer,
                              bool persistent = true);
  // nn.Module.add_module; `child` may be null.
  absl::Status AddModule(absl::string_view name, std::shared_ptr<Module> child);

  // The checks of RegisterParameter / RegisterBuffer / AssignParameter alone, so a writer
  // can validate before it changes anything.
  absl::Status CheckRegisterParameter(absl::string_view name) const {
    return CheckNewName("parameter", name, parameters_.contains(name));
  }
  absl::Status CheckRegisterBuffer(absl::string_view name) const {
    return CheckNewName("buffer", name, buffers_.contains(name));
  }
  absl::Status CheckAssignParameter(absl::string_view name) const;

  // `module.name = parameter` (nn.Module.__setattr__ with a Parameter): removes `name` from
  // the plain attributes, buffers and children, then registers it. Used for tying.
  absl::Status AssignParameter(absl::string_view name, std::shared_ptr<Parameter> parameter);
  // `module.name = tensor` where `name` is a buffer: keeps its persistence.
  void ReplaceBuffer(absl::string_view name, std::shared_ptr<Buffer> buffer);

  // A plain Python attribute: `hasattr` sees it, no registry or traversal does.
  void AddPlainAttribute(std::string name) { plain_attributes_.Set(name, true); }
  // `hasattr(module, name)`: registries, plain attributes, constructor attributes of a
  // built-in layer, and nn.Module's own methods and attributes (`forward`, `training`, ...).
  bool HasAttribute(absl::string_view name) const;

  // The forward program of a custom container (DESIGN section 6), as given in its spec.
  const nlohmann::json& forward_program() const { return forward_; }
  void set_forward_program(nlohmann::json program) { forward_ = std::move(program); }

 private:
  absl::Status CheckNewName(absl::string_view kind, absl::string_view name, bool exists_ok) const;

  std::string type_;
  const LayerDef* layer_ = nullptr;
  nlohmann::ordered_json args_ = nlohmann::ordered_json::object();
  std::shared_ptr<const LayerArgs> layer_args_;
  nlohmann::json forward_;
  bool training_ = true;
  OrderedMap<std::shared_ptr<Parameter>> parameters_;
  OrderedMap<std::shared_ptr<Buffer>> buffers_;
  OrderedMap<std::shared_ptr<Module>> children_;
  OrderedMap<bool> non_persistent_;
  OrderedMap<bool> plain_attributes_;
};

}  // namespace paramd::core
