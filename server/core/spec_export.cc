#include "server/core/spec_export.h"

#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "server/core/layers/layer.h"

namespace paramd::core {
namespace {

using Json = nlohmann::ordered_json;

// Whether a custom type needs "custom": true to build: one that matches a built-in's name,
// even only up to case ('linear'), is otherwise taken for that layer or refused as a typo.
bool SharesABuiltinName(const std::string& type) {
  const std::string lower = absl::AsciiStrToLower(type);
  for (const LayerDef* layer : AllLayers()) {
    if (absl::AsciiStrToLower(layer->type) == lower) return true;
  }
  return false;
}

class Exporter {
 public:
  Json Node(const Module& module, const std::string& path) {
    Json node = Json::object();
    node["type"] = module.type();
    if (module.layer() != nullptr) {
      if (!module.args().empty()) node["args"] = module.args();
    } else if (SharesABuiltinName(module.type())) {
      node["custom"] = true;  // a user class named like a built-in (Note in BuildNode, spec.cc)
    }

    Json parameters = Json::array();
    for (const auto& [name, parameter] : module.parameters()) {
      Json item = {{"name", name}};
      const std::string full = Join(path, name);
      if (parameter == nullptr) {
        item["none"] = true;
      } else if (auto it = parameter_paths_.find(parameter.get()); it != parameter_paths_.end()) {
        item["tie"] = it->second;
      } else {
        parameter_paths_.emplace(parameter.get(), full);
        Describe(parameter->data(), item);
        if (!parameter->requires_grad()) item["requires_grad"] = false;
      }
      parameters.push_back(std::move(item));
    }
    if (!parameters.empty()) node["parameters"] = std::move(parameters);

    Json buffers = Json::array();
    for (const auto& [name, buffer] : module.buffers()) {
      Json item = {{"name", name}};
      if (buffer == nullptr) {
        item["none"] = true;
      } else {
        Describe(buffer->data(), item);
      }
      if (!module.IsPersistentBuffer(name)) item["persistent"] = false;
      buffers.push_back(std::move(item));
    }
    if (!buffers.empty()) node["buffers"] = std::move(buffers);

    Json children = Json::array();
    for (const auto& [name, child] : module.children()) {
      const std::string full = Join(path, name);
      if (child == nullptr) {
        children.push_back({{"name", name}, {"none", true}});
      } else if (auto it = module_paths_.find(child.get()); it != module_paths_.end()) {
        children.push_back({{"name", name}, {"ref", it->second}});
      } else {
        module_paths_.emplace(child.get(), full);
        Json sub = Json::object();
        sub["name"] = name;
        Json described = Node(*child, full);
        for (auto& [key, value] : described.items()) sub[key] = std::move(value);
        children.push_back(std::move(sub));
      }
    }
    if (!children.empty()) node["children"] = std::move(children);
    if (!module.forward_program().is_null()) node["forward"] = module.forward_program();
    return node;
  }

 private:
  static std::string Join(const std::string& path, const std::string& name) {
    return path.empty() ? name : absl::StrCat(path, ".", name);
  }

  static void Describe(const Tensor& tensor, Json& item) {
    item["shape"] = tensor.shape();
    item["dtype"] = std::string(DTypeName(tensor.dtype()));
    item["init"] = "zeros";
  }

  absl::flat_hash_map<const Parameter*, std::string> parameter_paths_;
  absl::flat_hash_map<const Module*, std::string> module_paths_;
};

}  // namespace

nlohmann::ordered_json ExportSpec(const std::shared_ptr<Module>& root) {
  return Exporter().Node(*root, "");
}

}  // namespace paramd::core
