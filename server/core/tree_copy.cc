#include "server/core/tree_copy.h"

#include "absl/container/flat_hash_map.h"

namespace paramd::core {
namespace {

class TreeCopier {
 public:
  std::shared_ptr<Module> Copy(const Module& module) {
    auto [it, inserted] = modules_.try_emplace(&module, nullptr);
    if (!inserted) return it->second;
    // The copy constructor brings type, arguments, mode, program and registry order; the
    // slots it copied still point at the source's objects and are replaced below.
    auto copy = std::make_shared<Module>(module);
    it->second = copy;
    for (const auto& [name, parameter] : module.parameters()) {
      (void)copy->RegisterParameter(name, parameter ? CopySlot(parameter, parameters_) : nullptr);
    }
    for (const auto& [name, buffer] : module.buffers()) {
      copy->ReplaceBuffer(name, buffer ? CopySlot(buffer, buffers_) : nullptr);
    }
    for (const auto& [name, child] : module.children()) {
      (void)copy->AddModule(name, child ? Copy(*child) : nullptr);
    }
    return copy;
  }

 private:
  template <typename Slot>
  static std::shared_ptr<Slot> CopySlot(
      const std::shared_ptr<Slot>& slot,
      absl::flat_hash_map<const Slot*, std::shared_ptr<Slot>>& copies) {
    auto [it, inserted] = copies.try_emplace(slot.get(), nullptr);
    if (inserted) it->second = std::make_shared<Slot>(*slot);
    return it->second;
  }

  absl::flat_hash_map<const Module*, std::shared_ptr<Module>> modules_;
  absl::flat_hash_map<const Parameter*, std::shared_ptr<Parameter>> parameters_;
  absl::flat_hash_map<const Buffer*, std::shared_ptr<Buffer>> buffers_;
};

}  // namespace

std::shared_ptr<const Module> CopyTreeSharingTensors(const Module& root) {
  return TreeCopier().Copy(root);
}

}  // namespace paramd::core
