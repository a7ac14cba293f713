#include "server/core/module.h"

#include <algorithm>

#include "base/text.h"
#include "absl/strings/str_cat.h"
#include "server/core/layers/layer.h"

namespace paramd::core {
namespace {

// Names every nn.Module instance answers `hasattr` for through its class or its
// __init__ (methods and the bookkeeping attributes), so registering a parameter, buffer or
// child under one of them fails as it does in PyTorch.
constexpr absl::string_view kModuleAttributes[] = {
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init",
    "children", "compile", "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr",
    "float", "forward", "get_buffer", "get_extra_state", "get_parameter", "get_submodule",
    "half", "ipu", "load_state_dict", "modules", "mtia", "named_buffers", "named_children",
    "named_modules", "named_parameters", "parameters", "register_backward_hook",
    "register_buffer", "register_forward_hook", "register_forward_pre_hook",
    "register_full_backward_hook", "register_full_backward_pre_hook",
    "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook",
    "register_module", "register_parameter", "register_state_dict_post_hook",
    "register_state_dict_pre_hook", "requires_grad_", "set_extra_state", "set_submodule",
    "share_memory", "state_dict", "to", "to_empty", "train", "training", "type", "xpu",
    "zero_grad", "_apply", "_backward_hooks", "_backward_pre_hooks", "_buffers", "_call_impl",
    "_compiled_call_impl", "_forward_hooks", "_forward_hooks_always_called",
    "_forward_hooks_with_kwargs", "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs",
    "_get_name", "_is_full_backward_hook", "_load_from_state_dict",
    "_load_state_dict_post_hooks", "_load_state_dict_pre_hooks", "_modules",
    "_named_members", "_non_persistent_buffers_set", "_parameters", "_register_load_state_dict_pre_hook",
    "_register_state_dict_hook", "_replicate_for_data_parallel", "_save_to_state_dict",
    "_slow_forward", "_state_dict_hooks", "_state_dict_pre_hooks", "_version",
    "_wrapped_call_impl", "__call__", "__class__", "__dict__", "__init__", "__repr__",
};

bool IsModuleClassAttribute(absl::string_view name) {
  return std::find(std::begin(kModuleAttributes), std::end(kModuleAttributes), name) !=
         std::end(kModuleAttributes);
}

}  // namespace

Module::Module(std::string type_name) : type_(std::move(type_name)) {}

Module::Module(const LayerDef* layer, nlohmann::ordered_json args)
    : type_(layer->type), layer_(layer), args_(std::move(args)) {}

int Module::version() const { return layer_ ? layer_->module_version : 1; }

bool Module::HasAttribute(absl::string_view name) const {
  if (parameters_.contains(name) || buffers_.contains(name) || children_.contains(name) ||
      plain_attributes_.contains(name) || IsModuleClassAttribute(name)) {
    return true;
  }
  if (layer_ == nullptr) return false;
  return std::find(layer_->attributes.begin(), layer_->attributes.end(), name) !=
         layer_->attributes.end();
}

absl::Status Module::CheckNewName(absl::string_view kind, absl::string_view name,
                                  bool exists_ok) const {
  if (name.find('.') != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(kind, " name can't contain \".\""));
  }
  if (name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(kind, " name can't be empty string \"\""));
  }
  if (HasAttribute(name) && !exists_ok) {
    return absl::AlreadyExistsError(absl::StrCat("attribute ", QuoteName(name), " already exists"));
  }
  return absl::OkStatus();
}

absl::Status Module::RegisterParameter(absl::string_view name,
                                       std::shared_ptr<Parameter> parameter) {
  // register_parameter: dot, then empty, then "already exists" (pytorch-semantics.md §1).
  absl::Status status = CheckRegisterParameter(name);
  if (!status.ok()) return status;
  parameters_.Set(name, std::move(parameter));
  return absl::OkStatus();
}

absl::Status Module::RegisterBuffer(absl::string_view name, std::shared_ptr<Buffer> buffer,
                                    bool persistent) {
  absl::Status status = CheckRegisterBuffer(name);
  if (!status.ok()) return status;
  buffers_.Set(name, std::move(buffer));
  if (persistent) {
    non_persistent_.Erase(name);
  } else {
    non_persistent_.Set(name, true);
  }
  return absl::OkStatus();
}

absl::Status Module::AddModule(absl::string_view name, std::shared_ptr<Module> child) {
  // add_module checks "already exists" before the dot and the empty name (§1).
  if (HasAttribute(name) && !children_.contains(name)) {
    return absl::AlreadyExistsError(absl::StrCat("attribute ", QuoteName(name), " already exists"));
  }
  if (name.find('.') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("module name can't contain \".\", got: ", name));
  }
  if (name.empty()) {
    return absl::InvalidArgumentError("module name can't be empty string \"\"");
  }
  children_.Set(name, std::move(child));
  return absl::OkStatus();
}

absl::Status Module::CheckAssignParameter(absl::string_view name) const {
  // __setattr__ clears instance attributes and other registries first, so only the dot, the
  // empty name and nn.Module's own class members can still stop it.
  if (name.find('.') != absl::string_view::npos || name.empty() ||
      (IsModuleClassAttribute(name) && !parameters_.contains(name))) {
    return CheckRegisterParameter(name);
  }
  return absl::OkStatus();
}

absl::Status Module::AssignParameter(absl::string_view name, std::shared_ptr<Parameter> parameter) {
  absl::Status status = CheckAssignParameter(name);
  if (!status.ok()) return status;
  // __setattr__ drops the name from __dict__, _buffers, _modules and the non-persistent set
  // before registering, so a Parameter silently replaces whatever held the name.
  plain_attributes_.Erase(name);
  buffers_.Erase(name);
  children_.Erase(name);
  non_persistent_.Erase(name);
  parameters_.Set(name, std::move(parameter));
  return absl::OkStatus();
}

void Module::ReplaceBuffer(absl::string_view name, std::shared_ptr<Buffer> buffer) {
  buffers_.Set(name, std::move(buffer));
}

}  // namespace paramd::core
