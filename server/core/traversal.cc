#include "server/core/traversal.h"

#include "base/text.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"

namespace paramd::core {
namespace {

void CollectStateDict(const Module& module, const std::string& prefix, StateDict& out) {
  out.metadata.emplace_back(prefix.empty() ? prefix : prefix.substr(0, prefix.size() - 1),
                            module.version());
  for (const auto& [name, parameter] : module.parameters()) {
    if (parameter == nullptr) continue;
    out.entries.push_back({prefix + name, parameter->data(), parameter, true});
  }
  for (const auto& [name, buffer] : module.buffers()) {
    if (buffer == nullptr || !module.IsPersistentBuffer(name)) continue;
    out.entries.push_back({prefix + name, buffer->data(), buffer, false});
  }
  for (const auto& [name, child] : module.children()) {
    if (child == nullptr) continue;
    CollectStateDict(*child, absl::StrCat(prefix, name, "."), out);
  }
}

void CollectModules(const std::shared_ptr<Module>& module, const std::string& prefix,
                    bool remove_duplicate, absl::flat_hash_set<const Module*>& memo,
                    Named<Module>& out) {
  if (remove_duplicate && !memo.insert(module.get()).second) return;
  out.emplace_back(prefix, module);
  for (const auto& [name, child] : module->children()) {
    if (child == nullptr) continue;
    CollectModules(child, prefix.empty() ? name : absl::StrCat(prefix, ".", name),
                   remove_duplicate, memo, out);
  }
}

// nn.Module._named_members: walks the modules, lists each one's own members, skips None
// and (with remove_duplicate) any object already yielded.
template <typename T, typename Members>
Named<T> NamedMembers(const std::shared_ptr<Module>& root, absl::string_view prefix, bool recurse,
                      bool remove_duplicate, Members&& members) {
  Named<Module> modules;
  if (recurse) {
    modules = NamedModules(root, prefix, remove_duplicate);
  } else {
    modules.emplace_back(std::string(prefix), root);
  }
  absl::flat_hash_set<const T*> memo;
  Named<T> out;
  for (const auto& [module_prefix, module] : modules) {
    for (const auto& [name, value] : members(*module)) {
      if (value == nullptr) continue;
      if (remove_duplicate && !memo.insert(value.get()).second) continue;
      out.emplace_back(module_prefix.empty() ? name : absl::StrCat(module_prefix, ".", name),
                       value);
    }
  }
  return out;
}

absl::Status NoAttribute(const Module& module, absl::string_view item) {
  return absl::NotFoundError(absl::StrCat(module.type(), " has no attribute `", ShortName(item), "`"));
}

}  // namespace

StateDict GetStateDict(const Module& root, absl::string_view prefix) {
  StateDict out;
  CollectStateDict(root, std::string(prefix), out);
  return out;
}

Named<Module> NamedModules(const std::shared_ptr<Module>& root, absl::string_view prefix,
                           bool remove_duplicate) {
  absl::flat_hash_set<const Module*> memo;
  Named<Module> out;
  CollectModules(root, std::string(prefix), remove_duplicate, memo, out);
  return out;
}

Named<Module> NamedChildren(const Module& module) {
  absl::flat_hash_set<const Module*> memo;
  Named<Module> out;
  for (const auto& [name, child] : module.children()) {
    if (child == nullptr || !memo.insert(child.get()).second) continue;
    out.emplace_back(name, child);
  }
  return out;
}

Named<Parameter> NamedParameters(const std::shared_ptr<Module>& root, absl::string_view prefix,
                                 bool recurse, bool remove_duplicate) {
  return NamedMembers<Parameter>(root, prefix, recurse, remove_duplicate,
                                 [](const Module& m) -> const auto& { return m.parameters(); });
}

Named<Buffer> NamedBuffers(const std::shared_ptr<Module>& root, absl::string_view prefix,
                           bool recurse, bool remove_duplicate) {
  return NamedMembers<Buffer>(root, prefix, recurse, remove_duplicate,
                              [](const Module& m) -> const auto& { return m.buffers(); });
}

uint64_t StorageBytes(const std::shared_ptr<Module>& root) {
  absl::flat_hash_set<const Storage*> storages;
  uint64_t bytes = 0;
  auto count = [&](const Tensor& tensor) {
    if (storages.insert(tensor.storage().get()).second) bytes += tensor.storage()->nbytes();
  };
  for (const auto& [name, parameter] : NamedParameters(root)) count(parameter->data());
  for (const auto& [name, buffer] : NamedBuffers(root)) count(buffer->data());
  return bytes;
}

absl::StatusOr<std::shared_ptr<Module>> GetSubmodule(const std::shared_ptr<Module>& root,
                                                     absl::string_view target) {
  std::shared_ptr<Module> module = root;
  if (target.empty()) return module;
  for (absl::string_view item : absl::StrSplit(target, '.')) {
    if (!module->HasAttribute(item)) return NoAttribute(*module, item);
    const std::shared_ptr<Module>* child = module->children().Find(item);
    if (child == nullptr || *child == nullptr) {
      return absl::NotFoundError(absl::StrCat("`", item, "` is not an nn.Module"));
    }
    module = *child;
  }
  return module;
}

namespace {

std::pair<absl::string_view, absl::string_view> RPartition(absl::string_view target) {
  const size_t dot = target.rfind('.');
  if (dot == absl::string_view::npos) return {absl::string_view(), target};
  return {target.substr(0, dot), target.substr(dot + 1)};
}

}  // namespace

absl::StatusOr<std::shared_ptr<Parameter>> GetParameter(const std::shared_ptr<Module>& root,
                                                        absl::string_view target) {
  const auto [module_path, name] = RPartition(target);
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<Module> module, GetSubmodule(root, module_path));
  if (!module->HasAttribute(name)) return NoAttribute(*module, name);
  const std::shared_ptr<Parameter>* parameter = module->parameters().Find(name);
  if (parameter == nullptr || *parameter == nullptr) {
    return absl::NotFoundError(absl::StrCat("`", name, "` is not an nn.Parameter"));
  }
  return *parameter;
}

absl::StatusOr<std::shared_ptr<Buffer>> GetBuffer(const std::shared_ptr<Module>& root,
                                                  absl::string_view target) {
  const auto [module_path, name] = RPartition(target);
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<Module> module, GetSubmodule(root, module_path));
  if (!module->HasAttribute(name)) return NoAttribute(*module, name);
  const std::shared_ptr<Buffer>* buffer = module->buffers().Find(name);
  if (buffer == nullptr) {
    return absl::NotFoundError(absl::StrCat("`", name, "` is not a buffer"));
  }
  return *buffer;
}

}  // namespace paramd::core
