// Optimizer's state_dict, load_state_dict and hyperparameter writes (optimizer.h).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/text.h"
#include "server/core/optim/optimizer.h"

namespace paramd::core {
namespace {

// The tensors of one parameter's state under torch's keys, in torch's order.
std::vector<std::string> TensorKeys(OptimizerKind kind, size_t count) {
  if (kind == OptimizerKind::kSgd) return {"momentum_buffer"};
  std::vector<std::string> keys = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  keys.resize(count);
  return keys;
}

}  // namespace

OptimizerStateDict Optimizer::StateDict() const {
  absl::ReaderMutexLock lock(&mu_);
  OptimizerStateDict dict;
  std::vector<uint64_t> orders;  // of dict.state's entries
  int64_t index = 0;
  for (const Group& group : groups_) {
    OptimizerStateDict::Group out{group.hyperparameters, {}, {}};
    for (size_t i : group.params) {
      const Param& param = params_[i];
      out.params.push_back(index);
      out.param_names.push_back(param.name);
      if (param.has_state && (kind_ != OptimizerKind::kSgd || !param.state.empty())) {
        OptimizerStateDict::ParamState state{index, {}};
        if (kind_ != OptimizerKind::kSgd) {
          // A 0-dim float32 CPU tensor, as torch keeps `step`.
          absl::StatusOr<Tensor> step = Tensor::Full(DType::kFloat32, {}, param.step);
          if (step.ok()) state.tensors.emplace_back("step", *std::move(step));
        }
        const std::vector<std::string> keys = TensorKeys(kind_, param.state.size());
        for (size_t k = 0; k < param.state.size(); ++k) {
          state.tensors.emplace_back(keys[k], param.state[k]);
        }
        dict.state.push_back(std::move(state));
        orders.push_back(param.state_order);
      }
      ++index;
    }
    dict.param_groups.push_back(std::move(out));
  }
  // torch lists the state in its dict's order.
  std::vector<size_t> by_order(dict.state.size());
  for (size_t i = 0; i < by_order.size(); ++i) by_order[i] = i;
  std::stable_sort(by_order.begin(), by_order.end(),
                   [&](size_t a, size_t b) { return orders[a] < orders[b]; });
  std::vector<OptimizerStateDict::ParamState> ordered;
  for (size_t i : by_order) ordered.push_back(std::move(dict.state[i]));
  dict.state = std::move(ordered);
  return dict;
}

absl::Status Optimizer::LoadStateDict(const OptimizerStateDict& dict) {
  absl::MutexLock lock(&mu_);
  PARAMD_ASSIGN_OR_RETURN(PreparedLoad prepared, PrepareLoadLocked(dict));
  CommitLoadLocked(std::move(prepared));
  return absl::OkStatus();
}

absl::StatusOr<Optimizer::PreparedLoad> Optimizer::PrepareLoad(
    const OptimizerStateDict& dict) const {
  absl::ReaderMutexLock lock(&mu_);
  return PrepareLoadLocked(dict);
}

void Optimizer::CommitLoad(PreparedLoad prepared) {
  absl::MutexLock lock(&mu_);
  CommitLoadLocked(std::move(prepared));
}

void Optimizer::CommitLoadLocked(PreparedLoad prepared) {
  for (size_t g = 0; g < groups_.size(); ++g) {
    groups_[g].hyperparameters = std::move(prepared.hyperparameters[g]);
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    params_[i].has_state = prepared.states[i].has_state;
    params_[i].state_order = prepared.states[i].state_order;
    params_[i].step = prepared.states[i].step;
    params_[i].state = std::move(prepared.states[i].tensors);
  }
  states_made_ = prepared.states_made;
  ++changes_;
}

absl::StatusOr<Optimizer::PreparedLoad> Optimizer::PrepareLoadLocked(
    const OptimizerStateDict& dict) const {
  // torch's checks of the group layout, with its messages.
  if (dict.param_groups.size() != groups_.size()) {
    return absl::InvalidArgumentError("loaded state dict has a different number of parameter groups");
  }
  std::vector<size_t> by_index;  // state_dict index -> params_ index
  std::vector<Hyperparameters> hyperparameters;
  for (size_t g = 0; g < groups_.size(); ++g) {
    const OptimizerStateDict::Group& loaded = dict.param_groups[g];
    if (loaded.params.size() != groups_[g].params.size()) {
      return absl::InvalidArgumentError(
          "loaded state dict contains a parameter group that doesn't match the size of "
          "optimizer's group");
    }
    for (size_t i : groups_[g].params) by_index.push_back(i);
    PARAMD_ASSIGN_OR_RETURN(Hyperparameters values,
                            LoadedHyperparameters(kind_, loaded.hyperparameters));
    hyperparameters.push_back(std::move(values));
  }
  // torch maps the loaded groups' `params` ids onto its own parameters in order.
  absl::flat_hash_map<int64_t, size_t> loaded_to_param;
  size_t position = 0;
  for (const OptimizerStateDict::Group& loaded : dict.param_groups) {
    for (int64_t id : loaded.params) loaded_to_param[id] = by_index[position++];
  }
  // The parameters' tensors as they stand, copied under the model's lock: a writer's commit
  // replaces them, and a reference to the slot would then read freed memory.
  std::vector<Tensor> current;
  current.reserve(params_.size());
  PARAMD_RETURN_IF_ERROR(model_->Read([&](const std::shared_ptr<Module>&, uint64_t) {
    for (const Param& param : params_) current.push_back(param.parameter->data());
    return absl::OkStatus();
  }));
  std::vector<PreparedLoad::State> states(params_.size());
  uint64_t states_made = 0;
  for (const OptimizerStateDict::ParamState& entry : dict.state) {
    auto it = loaded_to_param.find(entry.index);
    if (it == loaded_to_param.end()) {
      // torch keeps state of an id no group names; it can never be used, so paramd drops it.
      continue;
    }
    const Param& param = params_[it->second];
    const Tensor& data = current[it->second];
    PreparedLoad::State& state = states[it->second];
    state.has_state = true;
    state.state_order = ++states_made;
    const std::vector<std::string> keys = TensorKeys(kind_, 3);
    state.tensors.resize(keys.size());
    size_t found = 0;
    for (const auto& [key, tensor] : entry.tensors) {
      if (kind_ != OptimizerKind::kSgd && key == "step") {
        if (tensor.numel() != 1) {
          return absl::InvalidArgumentError(absl::StrCat(
              "the state 'step' of parameter ", entry.index, " must hold one number"));
        }
        PARAMD_ASSIGN_OR_RETURN(std::vector<double> step, ToDoubles(tensor));
        state.step = static_cast<float>(step[0]);
        continue;
      }
      size_t k = 0;
      while (k < keys.size() && keys[k] != key) ++k;
      if (k == keys.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            OptimizerKindName(kind_), " has no state '", key, "' (parameter ", entry.index, ")"));
      }
      if (tensor.shape() != data.shape()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the state '", key, "' of parameter ", entry.index, " (", QuoteName(param.name),
            ") has shape ", ShapeString(tensor.shape()), " but the parameter has shape ",
            ShapeString(data.shape())));
      }
      PARAMD_ASSIGN_OR_RETURN(state.tensors[k], ConvertTo(tensor, data.dtype(), data.device()));
      ++found;
    }
    // Only a prefix of the keys may be present (max_exp_avg_sq only with amsgrad).
    size_t present = 0;
    while (present < state.tensors.size() && state.tensors[present].defined()) ++present;
    if (present != found || (kind_ != OptimizerKind::kSgd && present < 2)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the state of parameter ", entry.index, " (", QuoteName(param.name),
          ") is incomplete for ", OptimizerKindName(kind_), "; send every key torch writes"));
    }
    state.tensors.resize(present);
  }
  return PreparedLoad{std::move(hyperparameters), std::move(states), states_made};
}

absl::Status Optimizer::SetHyperparameters(std::optional<int64_t> group,
                                           const Hyperparameters& values) {
  absl::MutexLock lock(&mu_);
  const int64_t count = static_cast<int64_t>(groups_.size());
  if (group && (*group < 0 || *group >= count)) {
    return absl::InvalidArgumentError(absl::StrCat("optimizer ", QuoteName(name_), " has ", count,
                                                   " param group(s); group ", *group,
                                                   " does not exist"));
  }
  std::vector<Hyperparameters> updated;
  for (int64_t g = 0; g < count; ++g) {
    if (group && g != *group) {
      updated.push_back(groups_[g].hyperparameters);
      continue;
    }
    PARAMD_ASSIGN_OR_RETURN(Hyperparameters next,
                            ApplyHyperparameters(kind_, groups_[g].hyperparameters, values));
    updated.push_back(std::move(next));
  }
  for (int64_t g = 0; g < count; ++g) groups_[g].hyperparameters = std::move(updated[g]);
  ++changes_;
  return absl::OkStatus();
}

void Optimizer::RestoreSteps(uint64_t steps) {
  absl::MutexLock lock(&mu_);
  steps_ = steps;
  ++changes_;
}

}  // namespace paramd::core
