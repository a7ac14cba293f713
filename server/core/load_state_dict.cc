#include "server/core/load_state_dict.h"

#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "server/core/layers/layer.h"

namespace paramd::core {
namespace {

using Entry = std::pair<std::string, Tensor>;

struct LocalTensor {
  std::string name;
  std::shared_ptr<TensorSlot> slot;
  bool is_parameter;
};

struct Walk {
  const StateDictInput& input;
  const LoadOptions& options;
  std::vector<LoadPlan::Write>* writes;
  IncompatibleKeys* keys;
  std::vector<std::string> error_msgs;
  // The copies of wrapped storages made for assign, so that tensors sharing one in the
  // input share its copy.
  absl::flat_hash_map<const Storage*, std::shared_ptr<Storage>> owned;
};

absl::Status CheckCancelled(const LoadOptions& options) {
  if (options.cancelled && options.cancelled()) {
    return absl::CancelledError("the load was cancelled; the model is unchanged");
  }
  return absl::OkStatus();
}

// Note [Loaded tensors own their memory]
// A checkpoint reader's tensors view the file's mapping where they can (Storage::Wrap: no
// copy). A model must not keep them so: the checkpoint directory is the operators' and
// clients', and a file rewritten in place there (`cp new.pt net.pt`, a torch.save to the same
// name, `> net.pt`) is cut short under the mapping, so the daemon's next touch of the model's
// pages (a forward, a save, a region read) was killed by SIGBUS, taking every model with it;
// and mapped pages escape --max-memory. So the plan never installs a wrapped storage (unless
// the caller owns the file: LoadOptions::keep_mapped): a tensor whose dtype or device changes
// is converted straight from the mapping, one that does not is copied, and a key that is not
// loaded costs nothing. The copies are backend memory, counted against --max-memory
// (RESOURCE_EXHAUSTED, nothing changed, when they do not fit).
bool MayInstallAsIs(const Walk& walk, const Tensor& value) {
  return walk.options.keep_mapped || !value.storage()->wrapped();
}

// `value` for assign: as it is, or over a copy of its wrapped storage (one copy per storage,
// so that tied and viewing tensors stay so, as assign=True keeps them in PyTorch).
absl::StatusOr<Tensor> AssignedValue(Walk& walk, const Tensor& value) {
  if (MayInstallAsIs(walk, value)) return value;
  const Storage& from = *value.storage();
  auto it = walk.owned.find(&from);
  if (it == walk.owned.end()) {
    PARAMD_RETURN_IF_ERROR(CheckCancelled(walk.options));
    PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<Storage> copy,
                            Storage::Allocate(from.device(), from.nbytes()));
    if (from.nbytes() > 0) std::memcpy(copy->data(), from.data(), from.nbytes());
    it = walk.owned.emplace(&from, std::move(copy)).first;
  }
  return Tensor(it->second, value.offset(), value.shape(), value.strides(), value.dtype());
}

std::string QuotedList(const std::vector<std::string>& keys) {
  return absl::StrJoin(keys, ", ", [](std::string* out, const std::string& key) {
    absl::StrAppend(out, "\"", key, "\"");
  });
}

std::optional<int> MetadataVersion(const StateDictInput& input, const std::string& prefix) {
  if (!input.metadata) return std::nullopt;
  const std::string key = prefix.empty() ? prefix : prefix.substr(0, prefix.size() - 1);
  auto it = input.metadata->find(key);
  if (it == input.metadata->end()) return std::nullopt;
  return it->second;
}

// Module._load_from_state_dict for one module: `local` holds only the keys under `prefix`.
absl::Status LoadModule(Walk& walk, Module& module, const std::vector<const Entry*>& local,
                        const std::string& prefix) {
  std::vector<LocalTensor> local_state;
  for (const auto& [name, parameter] : module.parameters()) {
    if (parameter != nullptr) local_state.push_back({name, parameter, true});
  }
  for (const auto& [name, buffer] : module.buffers()) {
    if (buffer != nullptr && module.IsPersistentBuffer(name)) {
      local_state.push_back({name, buffer, false});
    }
  }
  absl::flat_hash_map<absl::string_view, const Entry*> by_key;
  for (const Entry* entry : local) by_key.emplace(entry->first, entry);

  // BatchNorm's _load_from_state_dict fills a missing num_batches_tracked when the
  // checkpoint's version for this module is absent or below 2.
  std::string filled_key;
  if (module.layer() != nullptr && module.layer()->fills_num_batches_tracked) {
    const std::optional<int> version = MetadataVersion(walk.input, prefix);
    const std::shared_ptr<Buffer>* tracked = module.buffers().Find("num_batches_tracked");
    if ((!version || *version < 2) && tracked != nullptr && *tracked != nullptr) {
      filled_key = prefix + "num_batches_tracked";
    }
  }

  for (const LocalTensor& target : local_state) {
    const std::string key = prefix + target.name;
    auto found = by_key.find(key);
    if (found == by_key.end()) {
      if (key != filled_key) walk.keys->missing_keys.push_back(key);
      continue;
    }
    Tensor value = found->second->second;
    if (!value.defined()) {
      walk.error_msgs.push_back(absl::StrCat(
          "While copying the parameter named \"", key,
          "\", expected torch.Tensor or Tensor-like object from checkpoint but received None"));
      continue;
    }
    const Tensor& current = target.slot->data();
    // Backward-compatibility quirk kept by PyTorch: a 1-dim checkpoint value loads into a
    // 0-dim parameter as its first element.
    if (current.dim() == 0 && value.dim() == 1) {
      absl::StatusOr<Tensor> first = value.Select(0);
      if (!first.ok()) {
        walk.error_msgs.push_back(absl::StrCat("While copying the parameter named \"", key,
                                               "\": ", first.status().message()));
        continue;
      }
      value = *std::move(first);
    }
    if (value.shape() != current.shape()) {
      walk.error_msgs.push_back(absl::StrCat(
          "size mismatch for ", key, ": copying a param with shape ", TorchSizeString(value.shape()),
          " from checkpoint, the shape in current model is ", TorchSizeString(current.shape()),
          "."));
      continue;
    }
    LoadPlan::Write write{&module, target.name, target.is_parameter, nullptr, {}, true};
    if (walk.options.assign) {
      PARAMD_ASSIGN_OR_RETURN(write.value, AssignedValue(walk, value));
      if (target.is_parameter) {
        write.requires_grad = static_cast<const Parameter&>(*target.slot).requires_grad();
      }
    } else {
      // copy_ keeps the destination's dtype and device. The bytes go to a new storage so
      // that readers holding the old version keep seeing it; an input already in the right
      // dtype and layout is that new storage (StateDictInput hands its tensors over), unless
      // it views a file (Note [Loaded tensors own their memory]).
      if (value.dtype() == current.dtype() && value.device() == current.device() &&
          value.is_contiguous() && MayInstallAsIs(walk, value)) {
        write.value = value;
      } else {
        PARAMD_RETURN_IF_ERROR(CheckCancelled(walk.options));
        PARAMD_ASSIGN_OR_RETURN(write.value, ConvertTo(value, current.dtype(), current.device()));
      }
      write.slot = target.slot;
    }
    walk.writes->push_back(std::move(write));
  }

  // One pass splits the keys among the children (in input order), so a module's cost is its
  // own keys, not its keys times its children.
  absl::flat_hash_set<absl::string_view> local_names;
  for (const LocalTensor& target : local_state) local_names.insert(target.name);
  absl::flat_hash_map<absl::string_view, std::vector<const Entry*>> by_child;
  const std::string extra_state_key = prefix + "_extra_state";
  for (const Entry* entry : local) {
    const std::string& key = entry->first;
    if (key == extra_state_key) continue;
    const absl::string_view rest = absl::string_view(key).substr(prefix.size());
    const size_t dot = rest.find('.');
    if (dot != absl::string_view::npos) {
      // A dotted key must name a child slot; a None child silently takes its keys.
      const absl::string_view child = rest.substr(0, dot);
      if (!module.children().contains(child)) {
        walk.keys->unexpected_keys.push_back(key);
      } else {
        by_child[child].push_back(entry);
      }
    } else if (!local_names.contains(rest)) {
      walk.keys->unexpected_keys.push_back(key);
    }
  }

  static const std::vector<const Entry*> kNoEntries;
  for (const auto& [name, child] : module.children()) {
    if (child == nullptr) continue;
    auto keys = by_child.find(name);
    PARAMD_RETURN_IF_ERROR(LoadModule(walk, *child, keys == by_child.end() ? kNoEntries : keys->second,
                                      absl::StrCat(prefix, name, ".")));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<LoadPlan> PlanLoadStateDict(const std::shared_ptr<Module>& root,
                                           const StateDictInput& input,
                                           const LoadOptions& options) {
  absl::flat_hash_set<absl::string_view> seen;
  std::vector<const Entry*> all;
  all.reserve(input.entries.size());
  for (const Entry& entry : input.entries) {
    if (!seen.insert(entry.first).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "key \"", entry.first, "\" appears twice in the state_dict; each key may appear once"));
    }
    all.push_back(&entry);
  }
  LoadPlan plan;
  Walk walk{input, options, &plan.writes_, &plan.keys_, {}, {}};
  PARAMD_RETURN_IF_ERROR(LoadModule(walk, *root, all, ""));
  if (options.found != nullptr) *options.found = plan.keys_;

  std::vector<std::string> messages;
  if (options.strict) {
    if (!plan.keys_.missing_keys.empty()) {
      messages.push_back(absl::StrCat("Missing key(s) in state_dict: ",
                                      QuotedList(plan.keys_.missing_keys), ". "));
    }
    if (!plan.keys_.unexpected_keys.empty()) {
      messages.push_back(absl::StrCat("Unexpected key(s) in state_dict: ",
                                      QuotedList(plan.keys_.unexpected_keys), ". "));
    }
  }
  messages.insert(messages.end(), walk.error_msgs.begin(), walk.error_msgs.end());
  if (!messages.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("Error(s) in loading state_dict for ",
                                                   root->type(), ":\n\t",
                                                   absl::StrJoin(messages, "\n\t")));
  }
  return plan;
}

void LoadPlan::Commit(uint64_t version) {
  for (Write& write : writes_) {
    if (write.slot != nullptr) {
      write.slot->set_data(std::move(write.value), version);
    } else if (write.is_parameter) {
      auto parameter = std::make_shared<Parameter>(std::move(write.value), write.requires_grad);
      parameter->set_data(parameter->data(), version);
      // Replacing the slot breaks a tie, as `module.weight = Parameter(...)` does.
      (void)write.module->AssignParameter(write.name, std::move(parameter));
    } else {
      auto buffer = std::make_shared<Buffer>(std::move(write.value));
      buffer->set_data(buffer->data(), version);
      write.module->ReplaceBuffer(write.name, std::move(buffer));
    }
  }
  writes_.clear();
}

absl::StatusOr<IncompatibleKeys> LoadStateDict(const std::shared_ptr<Module>& root,
                                               const StateDictInput& input,
                                               const LoadOptions& options, uint64_t version) {
  PARAMD_ASSIGN_OR_RETURN(LoadPlan plan, PlanLoadStateDict(root, input, options));
  IncompatibleKeys keys = plan.keys();
  plan.Commit(version);
  return keys;
}

std::string IncompatibleKeysRepr(const IncompatibleKeys& keys) {
  if (keys.missing_keys.empty() && keys.unexpected_keys.empty()) {
    return "<All keys matched successfully>";
  }
  auto list = [](const std::vector<std::string>& names) {
    return absl::StrCat("[", absl::StrJoin(names, ", ", [](std::string* out, const std::string& n) {
                          absl::StrAppend(out, "'", n, "'");
                        }), "]");
  };
  return absl::StrCat("_IncompatibleKeys(missing_keys=", list(keys.missing_keys),
                      ", unexpected_keys=", list(keys.unexpected_keys), ")");
}

}  // namespace paramd::core
