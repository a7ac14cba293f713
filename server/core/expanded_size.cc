#include "server/core/expanded_size.h"

#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"

namespace paramd::core {
namespace {

constexpr uint64_t kSaturated = std::numeric_limits<uint64_t>::max();

uint64_t SaturatingAdd(uint64_t a, uint64_t b) { return a > kSaturated - b ? kSaturated : a + b; }

// A module's own state_dict keys: non-None parameters, then non-None persistent buffers.
uint64_t OwnKeys(const Module& module) {
  uint64_t keys = 0;
  for (const auto& [name, parameter] : module.parameters()) {
    if (parameter != nullptr) ++keys;
  }
  for (const auto& [name, buffer] : module.buffers()) {
    if (buffer != nullptr && module.IsPersistentBuffer(name)) ++keys;
  }
  return keys;
}

std::string Count(uint64_t count) {
  return count == kSaturated ? absl::StrCat(count, " or more") : absl::StrCat(count);
}

}  // namespace

uint64_t ModuleStructureBytes(const Module& module) {
  uint64_t bytes = kModuleBytes;
  for (const auto& [name, parameter] : module.parameters()) bytes += kTensorSlotBytes + name.size();
  for (const auto& [name, buffer] : module.buffers()) bytes += kTensorSlotBytes + name.size();
  for (const auto& [name, child] : module.children()) bytes += kChildSlotBytes + name.size();
  return bytes;
}

ExpandedSize CountExpandedSize(const Module& root, const Module* edited, const Module* planned) {
  // The registries a module object has for this count (the planned ones for `edited`).
  auto view = [&](const Module* module) -> const Module& {
    return module == edited && planned != nullptr ? *planned : *module;
  };
  using ChildIterator = decltype(root.children().begin());
  struct Frame {
    const Module* module;
    ChildIterator next;
  };
  // An explicit stack, so that a tree as deep as a spec can make it costs no call stack.
  absl::flat_hash_map<const Module*, ExpandedSize> done;
  absl::flat_hash_set<const Module*> on_path = {&root};
  std::vector<Frame> stack = {{&root, view(&root).children().begin()}};
  uint64_t structure_bytes = 0;
  while (!stack.empty()) {
    const Module* module = stack.back().module;
    const Module& registries = view(module);
    if (stack.back().next == registries.children().end()) {
      // Post-order: every child is counted; this module's paths are its own plus one set
      // of its child's per child slot (a module used twice counts twice, as PyTorch lists it).
      ExpandedSize size{OwnKeys(registries), 1, 1};
      for (const auto& [name, child] : registries.children()) {
        if (child == nullptr) continue;
        const ExpandedSize& below = done.at(child.get());
        size.state_dict_keys = SaturatingAdd(size.state_dict_keys, below.state_dict_keys);
        size.module_paths = SaturatingAdd(size.module_paths, below.module_paths);
        size.depth = std::max(size.depth, below.depth + 1);
      }
      done.emplace(module, size);
      structure_bytes = SaturatingAdd(structure_bytes, ModuleStructureBytes(registries));
      on_path.erase(module);
      stack.pop_back();
      continue;
    }
    const Module* child = (stack.back().next++)->second.get();
    if (child == nullptr || done.contains(child)) continue;
    if (!on_path.insert(child).second) {
      return {kSaturated, kSaturated, kSaturated, kSaturated};  // a cycle
    }
    stack.push_back({child, view(child).children().begin()});
  }
  ExpandedSize size = done.at(&root);
  size.structure_bytes = structure_bytes;
  return size;
}

absl::Status CheckExpandedSize(const ExpandedSize& size, uint64_t max_keys,
                               absl::string_view what) {
  if (size.state_dict_keys > max_keys) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " ", Count(size.state_dict_keys),
        " state_dict keys (shared modules are listed once per path, as in PyTorch); the limit "
        "is ",
        max_keys, " (--max-state-dict-keys)"));
  }
  if (size.module_paths > max_keys) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " ", Count(size.module_paths),
        " module paths (shared modules are listed once per path by "
        "named_modules(remove_duplicate=False) and state_dict's _metadata, as in PyTorch); the "
        "limit is ",
        max_keys, " (--max-state-dict-keys)"));
  }
  return absl::OkStatus();
}

}  // namespace paramd::core
