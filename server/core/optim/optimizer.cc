#include "server/core/optim/optimizer.h"

#include <algorithm>
#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/text.h"
#include "base/version_conflict.h"
#include "kernels/backend.h"
#include "server/core/optim/flat_view.h"
#include "server/core/registry.h"
#include "server/core/traversal.h"

namespace paramd::core {
namespace {

absl::StatusOr<Tensor> Contiguous(const Tensor& tensor) {
  if (tensor.is_contiguous()) return tensor;
  return Clone(tensor);
}

// Waits for the calling thread's work on the devices of `tensors` (undefined ones skipped).
absl::Status SynchronizeDevicesOf(const std::vector<Tensor>& tensors) {
  std::vector<kernels::Backend*> done;
  for (const Tensor& tensor : tensors) {
    if (!tensor.defined() || tensor.device().is_cpu()) continue;
    PARAMD_ASSIGN_OR_RETURN(kernels::Backend * backend, kernels::GetBackend(tensor.device()));
    if (std::find(done.begin(), done.end(), backend) != done.end()) continue;
    PARAMD_RETURN_IF_ERROR(backend->Synchronize());
    done.push_back(backend);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<Optimizer>> Optimizer::Create(std::string name,
                                                             std::shared_ptr<Model> model,
                                                             OptimizerKind kind,
                                                             const Hyperparameters& defaults,
                                                             const std::vector<GroupSpec>& groups,
                                                             Mode mode) {
  PARAMD_RETURN_IF_ERROR(ValidateModelName(name, "optimizer"));
  PARAMD_ASSIGN_OR_RETURN(Hyperparameters base, ConstructorDefaults(kind, defaults));
  std::shared_ptr<Optimizer> optimizer(new Optimizer(std::move(name), model, kind, mode));
  absl::MutexLock lock(&optimizer->mu_);
  PARAMD_RETURN_IF_ERROR(model->Read([&](const std::shared_ptr<Module>& root,
                                         uint64_t) -> absl::Status {
    Optimizer& o = *optimizer;
    // Every parameter's first name, as named_parameters lists it.
    absl::flat_hash_map<const Parameter*, std::string> first_names;
    std::vector<std::shared_ptr<Parameter>> in_order;
    for (const auto& [param_name, parameter] : NamedParameters(root)) {
      first_names.emplace(parameter.get(), param_name);
      in_order.push_back(parameter);
    }
    std::vector<GroupSpec> specs = groups;
    if (specs.empty()) {
      GroupSpec all;
      for (const auto& parameter : in_order) all.params.push_back(first_names[parameter.get()]);
      specs.push_back(std::move(all));
    }
    for (const GroupSpec& spec : specs) {
      // A group with no parameters is taken, as torch's add_param_group takes it.
      Group group;
      PARAMD_ASSIGN_OR_RETURN(group.hyperparameters,
                              GroupHyperparameters(kind, base, spec.hyperparameters));
      for (const std::string& param_name : spec.params) {
        PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<TensorSlot> slot, FindTensorSlot(root, param_name));
        auto parameter = std::dynamic_pointer_cast<Parameter>(slot);
        if (parameter == nullptr) {
          return absl::InvalidArgumentError(
              absl::StrCat(QuoteName(param_name),
                           " is a buffer, not a parameter; an optimizer updates parameters "
                           "(NamedParameters lists them)"));
        }
        if (o.index_.contains(parameter.get())) {
          return absl::InvalidArgumentError(
              absl::StrCat("some parameters appear in more than one parameter group (",
                           QuoteName(param_name), " is ", QuoteName(first_names[parameter.get()]),
                           ", listed already)"));
        }
        o.index_.emplace(parameter.get(), o.params_.size());
        group.params.push_back(o.params_.size());
        Param param;
        param.parameter = parameter;
        param.name = first_names[parameter.get()];
        param.shape = parameter->data().shape();
        o.params_.push_back(std::move(param));
      }
      o.groups_.push_back(std::move(group));
    }
    return absl::OkStatus();
  }));
  PARAMD_RETURN_IF_ERROR(CheckFusedDefaults(base));
  return optimizer;
}

absl::StatusOr<size_t> Optimizer::Resolve(const std::shared_ptr<Module>& root,
                                          absl::string_view name) const {
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<TensorSlot> slot, FindTensorSlot(root, name));
  auto it = index_.find(dynamic_cast<const Parameter*>(slot.get()));
  if (it == index_.end()) {
    return absl::NotFoundError(absl::StrCat(QuoteName(name), " is not a parameter of optimizer ",
                                            QuoteName(name_),
                                            "; GetOptimizerState lists its param groups"));
  }
  return it->second;
}

absl::Status Optimizer::AccumulateGradients(const std::vector<Gradient>& gradients) {
  absl::MutexLock lock(&mu_);
  if (mode_.kind == Mode::kAsynchronous) {
    return absl::FailedPreconditionError(absl::StrCat(
        "optimizer ", QuoteName(name_), " is asynchronous: each push steps at once with its "
        "own gradients; push with the round the gradients were computed on"));
  }
  if (mode_.kind == Mode::kSynchronous) {
    return absl::FailedPreconditionError(absl::StrCat(
        "optimizer ", QuoteName(name_), " is synchronous: push with your worker id and the "
        "round the gradients were computed on"));
  }
  return AccumulateLocked(gradients, /*fresh=*/false);
}

absl::Status Optimizer::AccumulateLocked(const std::vector<Gradient>& gradients, bool fresh) {
  PARAMD_ASSIGN_OR_RETURN(auto sums, GatherLocked(gradients, fresh));
  for (auto& [index, sum] : sums) params_[index].grad = std::move(sum);
  return absl::OkStatus();
}

absl::StatusOr<absl::flat_hash_map<size_t, Tensor>> Optimizer::GatherLocked(
    const std::vector<Gradient>& gradients, bool fresh) {
  // Resolve and check every name first, so a bad one changes nothing. The parameters'
  // tensors are copied (a reference to the storage) under the model's lock: a writer's
  // commit replaces them, and a reference to the slot would then read freed memory.
  std::vector<size_t> targets;
  std::vector<Tensor> current;
  PARAMD_RETURN_IF_ERROR(model_->Read([&](const std::shared_ptr<Module>& root,
                                          uint64_t) -> absl::Status {
    for (const Gradient& gradient : gradients) {
      PARAMD_ASSIGN_OR_RETURN(size_t index, Resolve(root, gradient.name));
      const Tensor& data = current.emplace_back(params_[index].parameter->data());
      if (gradient.values.shape() != data.shape()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "the gradient of ", QuoteName(gradient.name), " has shape ",
            ShapeString(gradient.values.shape()), " but the parameter has shape ",
            ShapeString(data.shape()), "; push a gradient of the parameter's shape"));
      }
      targets.push_back(index);
    }
    return absl::OkStatus();
  }));
  // New gradient tensors, in the parameters' dtype and device; the sums go into private
  // copies so that an error on the way leaves every `.grad` as it was.
  absl::flat_hash_map<size_t, Tensor> sums;
  std::vector<Tensor> summed;  // the sums an add went into
  for (size_t i = 0; i < gradients.size(); ++i) {
    const Param& param = params_[targets[i]];
    const Tensor& data = current[i];
    PARAMD_ASSIGN_OR_RETURN(Tensor values,
                            ConvertTo(gradients[i].values, data.dtype(), data.device()));
    auto it = sums.find(targets[i]);
    if (it == sums.end()) {
      if (fresh || !param.grad.defined()) {
        sums.emplace(targets[i], std::move(values));
        continue;
      }
      PARAMD_ASSIGN_OR_RETURN(Tensor copy, Clone(param.grad));
      it = sums.emplace(targets[i], std::move(copy)).first;
    }
    PARAMD_ASSIGN_OR_RETURN(kernels::Backend * backend, kernels::GetBackend(data.device()));
    const kernels::TensorView sum = FlatView(it->second);
    PARAMD_RETURN_IF_ERROR(backend->Binary(
        {.op = kernels::BinaryOp::kAdd, .a = sum, .b = FlatView(values), .output = sum}));
    summed.push_back(it->second);
  }
  // The sums become `.grad` or a round's push, which other threads read: complete first
  // (Note [Work across threads] in kernels/backend.h).
  PARAMD_RETURN_IF_ERROR(SynchronizeDevicesOf(summed));
  return sums;
}

absl::Status Optimizer::ZeroGrad(bool set_to_none) {
  absl::MutexLock lock(&mu_);
  std::vector<Tensor> zeros(params_.size());
  if (!set_to_none) {
    for (size_t i = 0; i < params_.size(); ++i) {
      const Tensor& grad = params_[i].grad;
      if (!grad.defined()) continue;
      PARAMD_ASSIGN_OR_RETURN(zeros[i], Tensor::Full(grad.dtype(), grad.shape(), 0, grad.device()));
    }
    // A device fills in the background; the zeros are complete before a step or a push on
    // another thread reads them (Note [Work across threads] in kernels/backend.h).
    PARAMD_RETURN_IF_ERROR(SynchronizeDevicesOf(zeros));
  }
  for (size_t i = 0; i < params_.size(); ++i) params_[i].grad = zeros[i];
  return absl::OkStatus();
}

namespace {

// That `grad` and the `state` tensors a step reads (the first `state_count`) of parameter
// `name` fit its tensor `data` as the step kernel reads them: same dtype and shape, and the
// gradient on its device (Optimizer::CheckStepState checks the state's). FAILED_PRECONDITION
// saying how to mend it otherwise.
absl::Status CheckStepInputs(const std::string& name, const Tensor& data, const Tensor& grad,
                             const std::vector<Tensor>& state, size_t state_count) {
  if (data.shape() != grad.shape() || !(data.device() == grad.device()) ||
      data.dtype() != grad.dtype()) {
    return absl::FailedPreconditionError(absl::StrCat("parameter ", QuoteName(name),
                                                      " changed shape or device since its gradient "
                                                      "was pushed; ZeroGrad and push again"));
  }
  for (size_t k = 0; k < state_count && k < state.size(); ++k) {
    const Tensor& tensor = state[k];
    if (tensor.dtype() != data.dtype() || tensor.shape() != data.shape()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the optimizer state of parameter ", QuoteName(name), " is ", DTypeName(tensor.dtype()),
          " ", ShapeString(tensor.shape()), " but the parameter is ", DTypeName(data.dtype()), " ",
          ShapeString(data.shape()), "; LoadOptimizerState a state of the parameter's shape"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

// The new tensors of one step, built before anything changes.
struct Optimizer::StepPlan {
  struct Update {
    size_t param;
    Tensor new_data;
    std::vector<Tensor> new_state;
    float new_step = 0;
    bool has_state = false;  // torch's `self.state[p]` exists after the step
  };
  std::vector<Update> updates;
};

absl::Status Optimizer::PlanStep(const std::shared_ptr<Module>& root, StepPlan& plan) const {
  absl::flat_hash_set<const Parameter*> present;
  for (const auto& [name, parameter] : NamedParameters(root)) present.insert(parameter.get());
  for (const Group& group : groups_) {
    const GroupOptions options = ReadGroupOptions(kind_, group.hyperparameters);
    kernels::OptimizerStepArgs args;
    args.algorithm = kind_ == OptimizerKind::kSgd ? kernels::OptimizerAlgorithm::kSgd
                                                  : kernels::OptimizerAlgorithm::kAdam;
    args.lr = options.lr;
    args.weight_decay = options.weight_decay;
    args.maximize = options.maximize;
    args.momentum = options.momentum;
    args.dampening = options.dampening;
    args.nesterov = options.nesterov;
    args.beta1 = options.beta1;
    args.beta2 = options.beta2;
    args.eps = options.eps;
    args.amsgrad = options.amsgrad;
    args.decoupled_weight_decay = options.decoupled_weight_decay;
    const size_t state_count = kind_ == OptimizerKind::kSgd ? (options.momentum != 0 ? 1 : 0)
                                                            : (options.amsgrad ? 3 : 2);
    kernels::Backend* backend = nullptr;
    // Inputs kept alive until the kernels ran.
    std::vector<Tensor> inputs;
    for (size_t index : group.params) {
      const Param& param = params_[index];
      if (!param.grad.defined()) continue;
      if (!present.contains(param.parameter.get())) {
        return absl::FailedPreconditionError(absl::StrCat(
            "parameter ", QuoteName(param.name), " of optimizer ", QuoteName(name_),
            " is no longer in model ", QuoteName(model_->name()),
            "; delete the optimizer and create it again"));
      }
      PARAMD_ASSIGN_OR_RETURN(Tensor data, Contiguous(param.parameter->data()));
      if (backend == nullptr) {
        PARAMD_ASSIGN_OR_RETURN(backend, kernels::GetBackend(data.device()));
      }
      // One kernel call steps a group's tensors in one dtype (args.dtype): each must be one
      // the kernel runs, and the same as the others (the kernel reads every tensor as it).
      PARAMD_RETURN_IF_ERROR(
          backend->Supports({.kind = kernels::OpKind::kOptimizerStep, .dtype = data.dtype()}));
      if (!args.tensors.empty() && data.dtype() != args.dtype) {
        return absl::UnimplementedError(absl::StrCat(
            "parameter ", QuoteName(param.name), " is ", DTypeName(data.dtype()),
            " but others of its group are ", DTypeName(args.dtype),
            "; an optimizer step runs one dtype a group: put them in groups of their own"));
      }
      PARAMD_RETURN_IF_ERROR(
          CheckStepInputs(param.name, data, param.grad, param.state, state_count));
      PARAMD_RETURN_IF_ERROR(CheckStepState(param, data.device(), state_count));
      // State the step does not use (a momentum buffer while momentum is 0, max_exp_avg_sq
      // while amsgrad is off) stays as it is, as torch leaves it.
      StepPlan::Update update{index, {}, param.state, param.step};
      // SGD makes state only with momentum; Adam at every parameter's first step.
      update.has_state = param.has_state || kind_ != OptimizerKind::kSgd || state_count > 0;
      if (update.new_state.size() < state_count) update.new_state.resize(state_count);
      PARAMD_ASSIGN_OR_RETURN(update.new_data, Tensor::Empty(data.dtype(), data.shape(), data.device()));
      kernels::OptimizerTensor t;
      t.numel = data.numel();
      t.param = data.data();
      t.grad = param.grad.data();
      t.param_out = update.new_data.mutable_data();
      t.first_step = !param.has_state;
      for (size_t k = 0; k < state_count; ++k) {
        PARAMD_ASSIGN_OR_RETURN(Tensor out, Tensor::Empty(data.dtype(), data.shape(), data.device()));
        Tensor in;
        if (param.has_state && k < param.state.size()) {
          in = param.state[k];
        } else if (kind_ != OptimizerKind::kSgd) {
          // torch creates Adam's state as zeros at a parameter's first step.
          PARAMD_ASSIGN_OR_RETURN(in, Tensor::Full(data.dtype(), data.shape(), 0, data.device()));
        }
        t.state_in[k] = in.defined() ? in.data() : nullptr;
        t.state_out[k] = out.mutable_data();
        inputs.push_back(std::move(in));
        update.new_state[k] = std::move(out);
      }
      if (kind_ != OptimizerKind::kSgd) {
        update.new_step = param.step + 1.0f;  // step_t += 1, in float32
        const double step = update.new_step;
        const double bias_correction1 = 1 - std::pow(options.beta1, step);
        const double bias_correction2 = 1 - std::pow(options.beta2, step);
        // Where torch's Python arithmetic raises, the step is refused rather than run into
        // NaN weights, in torch's order: lr / bias_correction1 first (zero for a loaded
        // 'step' of -1, or a first beta of 1), then bias_correction2 ** 0.5.
        if (bias_correction1 == 0) {
          return absl::FailedPreconditionError(absl::StrCat(
              "parameter ", QuoteName(param.name), "'s Adam step would be ", update.new_step,
              " with betas (", options.beta1, ", ", options.beta2,
              "), where torch raises ZeroDivisionError: float division by zero; "
              "LoadOptimizerState a state whose 'step' is 0 or more"));
        }
        if (bias_correction2 < 0) {
          // Python's negative ** 0.5 is complex, and torch's step then fails casting the
          // complex denominator to the parameter's dtype (betas[1] > 1, which only the
          // constructor refuses, or a loaded 'step' of -2 or less).
          return absl::InvalidArgumentError(
              "result type ComplexFloat can't be cast to the desired output type Float");
        }
        t.step_size = options.lr / bias_correction1;
        t.bias_correction2_sqrt = std::pow(bias_correction2, 0.5);
      } else {
        // SGD's `buf is None`: no buffer yet (or momentum was off until now).
        t.first_step = param.state.empty();
      }
      inputs.push_back(data);
      args.dtype = data.dtype();
      args.tensors.push_back(t);
      plan.updates.push_back(std::move(update));
    }
    if (args.tensors.empty()) continue;
    PARAMD_RETURN_IF_ERROR(backend->OptimizerStep(args));
    PARAMD_RETURN_IF_ERROR(backend->Synchronize());
  }
  return absl::OkStatus();
}

absl::Status Optimizer::CheckStepState(const Param& param, const Device& device,
                                       size_t state_count) const {
  // torch refuses to step state left on another device (the model moved since); a kernel
  // handed pointers of two devices would fault. State the step leaves alone is not looked at.
  for (size_t k = 0; k < state_count && k < param.state.size(); ++k) {
    const Tensor& state = param.state[k];
    if (!(state.device() == device)) {
      return absl::FailedPreconditionError(
          absl::StrCat("the optimizer state of parameter ", QuoteName(param.name), " is on ",
                       state.device().ToString(), " but the parameter is on ", device.ToString(),
                       " (the model moved); GetOptimizerState then LoadOptimizerState moves it"));
    }
  }
  // Adam makes its state at a parameter's first step only, with max_exp_avg_sq when amsgrad
  // is on then; a later step with amsgrad on reads state["max_exp_avg_sq"], which torch
  // 2.15 raises KeyError for when it was never made (amsgrad switched on, or a loaded state
  // without it), before any tensor of the group changed.
  if (kind_ != OptimizerKind::kSgd && param.has_state && param.state.size() < state_count) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the optimizer state of parameter ", QuoteName(param.name),
        " has no 'max_exp_avg_sq' (amsgrad was off when the state was made, or the loaded "
        "state lacks it), and torch raises KeyError: 'max_exp_avg_sq' at this step; switch "
        "amsgrad off, or LoadOptimizerState a state that has it"));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> Optimizer::Step(std::optional<uint64_t> if_version) {
  absl::MutexLock lock(&mu_);
  if (mode_.kind != Mode::kManual) {
    const bool synchronous = mode_.kind == Mode::kSynchronous;
    return absl::FailedPreconditionError(absl::StrCat(
        "optimizer ", QuoteName(name_), " is ", synchronous ? "synchronous" : "asynchronous",
        synchronous ? ": the step runs when every worker of a round has pushed"
                    : ": each push steps",
        ", and Step is refused; Step is for manual mode"));
  }
  return StepLocked(if_version);
}

absl::StatusOr<Optimizer::AsyncResult> Optimizer::PushAndStep(const std::vector<Gradient>& gradients,
                                                              uint64_t round) {
  absl::MutexLock lock(&mu_);
  if (mode_.kind != Mode::kAsynchronous) {
    return absl::FailedPreconditionError(absl::StrCat(
        "optimizer ", QuoteName(name_), " is not asynchronous; push, then Step"));
  }
  if (round > steps_ || steps_ - round > mode_.bound) {
    const std::string why =
        round > steps_ ? absl::StrCat("round ", round, " has not begun")
                       : absl::StrCat("a push computed on round ", round, " is ", steps_ - round,
                                      " steps old, more than max_staleness ", mode_.bound);
    return VersionConflictError(absl::StrCat("optimizer ", QuoteName(name_), " is at round ",
                                             steps_, "; ", why,
                                             ": pull the weights again and recompute"),
                                steps_);
  }
  // The push's gradients alone, consumed by the step (or dropped if it fails).
  PARAMD_RETURN_IF_ERROR(AccumulateLocked(gradients, /*fresh=*/true));
  absl::StatusOr<uint64_t> version = StepLocked(std::nullopt);
  for (Param& param : params_) param.grad = Tensor();
  PARAMD_RETURN_IF_ERROR(version.status());
  return AsyncResult{*version, steps_};
}

absl::StatusOr<uint64_t> Optimizer::StepLocked(std::optional<uint64_t> if_version) {
  const bool any = std::any_of(params_.begin(), params_.end(),
                               [](const Param& param) { return param.grad.defined(); });
  if (!any) {
    // torch's step with no gradient changes nothing; the version check still applies.
    const uint64_t current = model_->version();
    if (if_version && *if_version != current) {
      return VersionConflictError(absl::StrCat("model ", QuoteName(model_->name()),
                                               " is at version ", current, ", not ", *if_version,
                                               "; read it again and redo the step"),
                                  current);
    }
    return current;
  }
  auto plan = std::make_shared<StepPlan>();
  PARAMD_ASSIGN_OR_RETURN(
      uint64_t version,
      model_->Write(if_version, [&](const std::shared_ptr<Module>& root)
                                    -> absl::StatusOr<Model::Commit> {
        PARAMD_RETURN_IF_ERROR(PlanStep(root, *plan));
        std::vector<std::pair<std::shared_ptr<Parameter>, Tensor>> writes;
        for (const StepPlan::Update& update : plan->updates) {
          writes.emplace_back(params_[update.param].parameter, update.new_data);
        }
        return Model::Commit([writes = std::move(writes)](uint64_t new_version) {
          for (const auto& [parameter, data] : writes) parameter->set_data(data, new_version);
        });
      }));
  // The model published the new parameters; the optimizer's state follows under the lock
  // held throughout, so no call on this optimizer sees the one without the other.
  for (StepPlan::Update& update : plan->updates) {
    Param& param = params_[update.param];
    param.state = std::move(update.new_state);
    param.step = update.new_step;
    if (update.has_state && !param.has_state) {
      // torch's self.state is a dict: a parameter's entry keeps the place of its first.
      param.has_state = true;
      param.state_order = ++states_made_;
    }
  }
  ++steps_;
  ++changes_;
  return version;
}

Optimizer::Summary Optimizer::Describe() const {
  absl::ReaderMutexLock lock(&mu_);
  Summary summary{name_, model_->name(), kind_};
  summary.mode = mode_;
  summary.groups = static_cast<int64_t>(groups_.size());
  summary.parameters = static_cast<int64_t>(params_.size());
  for (const Param& param : params_) {
    if (param.grad.defined()) ++summary.with_gradient;
    for (const Tensor& tensor : param.state) summary.state_bytes += tensor.nbytes();
  }
  summary.steps = steps_;
  summary.waiting = static_cast<int64_t>(round_.size());
  summary.changes = changes_;
  return summary;
}

absl::Status OptimizerRegistry::Add(std::shared_ptr<Optimizer> optimizer) {
  absl::MutexLock lock(&mu_);
  const std::string& name = optimizer->name();
  if (optimizers_.contains(name)) {
    return absl::AlreadyExistsError(absl::StrCat(
        "optimizer ", QuoteName(name), " already exists; DeleteOptimizer it or pick another name"));
  }
  optimizers_.emplace(name, std::move(optimizer));
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Optimizer>> OptimizerRegistry::Get(absl::string_view name) const {
  absl::MutexLock lock(&mu_);
  auto it = optimizers_.find(name);
  if (it == optimizers_.end()) {
    return absl::NotFoundError(absl::StrCat("optimizer ", QuoteName(name),
                                            " not found; ListOptimizers shows the optimizers"));
  }
  return it->second;
}

absl::Status OptimizerRegistry::Remove(absl::string_view name, const Optimizer* only) {
  absl::MutexLock lock(&mu_);
  auto it = optimizers_.find(name);
  if (it == optimizers_.end() || (only != nullptr && it->second.get() != only)) {
    return absl::NotFoundError(absl::StrCat("optimizer ", QuoteName(name),
                                            " not found; ListOptimizers shows the optimizers"));
  }
  optimizers_.erase(it);
  return absl::OkStatus();
}

std::vector<std::shared_ptr<Optimizer>> OptimizerRegistry::List(absl::string_view model) const {
  std::vector<std::shared_ptr<Optimizer>> list;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, optimizer] : optimizers_) {
      if (model.empty() || optimizer->model()->name() == model) list.push_back(optimizer);
    }
  }
  std::sort(list.begin(), list.end(),
            [](const auto& a, const auto& b) { return a->name() < b->name(); });
  return list;
}

}  // namespace paramd::core
