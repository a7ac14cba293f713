// Optimizer: torch.optim's SGD, Adam or AdamW bound to one Model, run inside paramd. It keeps
// what a torch optimizer keeps next to its parameters: the param groups (parameters and
// hyperparameters), the per-parameter state (momentum buffers, Adam's moments and step
// count) and, since the gradients come from remote workers rather than autograd, each
// parameter's `.grad`.
//
// PyTorch's semantics (docs/training.md):
//  - parameters are named by any of their state_dict names; a tied parameter is one
//    parameter, with one gradient and one state, whichever name a push uses;
//  - a push adds into the gradient as autograd does (`p.grad += g`); a parameter nobody
//    pushed for has no gradient (`p.grad is None`) and the step skips it, which a zero
//    gradient would not;
//  - Step runs torch's single-tensor arithmetic (Note [Optimizer arithmetic] in
//    kernels/ops.h) over every parameter that has a gradient and publishes all of them in
//    one new model version (Model::Write), so a reader sees the whole step or none of it;
//    Step does not clear gradients, ZeroGrad does (set_to_none=True by default, as torch);
//  - state is created at a parameter's first step, on the model's device, allocated through
//    its backend (so it counts against --max-memory).
//
// Errors change nothing: every method validates and allocates before it changes anything.
//
// Thread-safety: every method is safe from any thread; one mutex serialises them. A step
// holds it and then the model's writer lock (Model::Write), under which its kernels run;
// the order is always optimizer, then model. Readers of the model are never blocked.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/core/model.h"
#include "server/core/optim/hyperparameters.h"

namespace paramd::core {

// optimizer.state_dict() in torch's layout: `state` keyed by the parameter's index in
// param-group order (only parameters that have state), listed in the order the parameters'
// state was made (their first step) or loaded, as torch's `self.state` dict keeps them;
// `param_groups` with the hyperparameters and the indices of their parameters.
struct OptimizerStateDict {
  struct ParamState {
    int64_t index = 0;
    // torch's keys in torch's order: SGD {momentum_buffer}; Adam {step (a 0-dim float32
    // tensor), exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad)}.
    std::vector<std::pair<std::string, Tensor>> tensors;
  };
  struct Group {
    Hyperparameters hyperparameters;
    std::vector<int64_t> params;
    // The state_dict name of each parameter (its first name in named_parameters order);
    // paramd's addition, torch's `param_names` when given.
    std::vector<std::string> param_names;
  };
  std::vector<ParamState> state;
  std::vector<Group> param_groups;
};

// Note [Synchronous rounds]
// In synchronous mode with K workers a round is the optimizer's step count. Each worker
// pushes the gradients it computed on that round's weights, naming the round and itself;
// the push waits. When K distinct workers have pushed, their gradients are averaged as
// DistributedDataParallel's allreduce averages them: per parameter, the sum of the pushes
// (in the order of worker ids, so the result does not depend on the order of arrival)
// divided by K. A parameter only some workers pushed counts the others as zeros (DDP would
// have every worker's); one that no worker pushed has no gradient and is skipped. The step
// runs on the averages, consumes them, and every push of the round is answered with the new
// model version and round. A round that does not fill within its timeout is ended: its
// pushes are ABORTED, their gradients dropped, the round unchanged, so a worker that died
// cannot stall the others. A withdrawn push (its client cancelled) leaves the round as if
// it never came.

// How pushes and steps relate (docs/training.md).
struct OptimizerMode {
  enum Kind { kManual, kAsynchronous, kSynchronous };
  Kind kind = kManual;
  // asynchronous: S, the most steps a push may be behind; synchronous: K, the workers whose
  // pushes make a round.
  uint64_t bound = 0;
  // synchronous: how long a round may wait for its K pushes after its first (zero: forever).
  absl::Duration round_timeout = absl::ZeroDuration();
};

class Optimizer {
 public:
  // One param group to create: parameter names (any state_dict name of each) and the
  // hyperparameters that differ from the optimizer's defaults.
  struct GroupSpec {
    std::vector<std::string> params;
    Hyperparameters hyperparameters;
  };

  // torch.optim.<kind>(groups, **defaults) on `model`. No groups: one group of
  // model.parameters() in named_parameters order (torch's empty parameter list is the
  // client's to refuse: the wire cannot tell it from no list). A group with no parameters
  // is taken, as torch's add_param_group takes it. INVALID_ARGUMENT for a bad hyperparameter
  // (ConstructorDefaults' checks on `defaults`, GroupHyperparameters' on a group's own), a
  // name that is not a parameter, a parameter listed twice under any of its names ("some parameters
  // appear in more than one parameter group"), then CheckFusedDefaults' refusals; NOT_FOUND for an
  // unknown name.
  //
  // `mode` (docs/training.md): manual (pushes accumulate until Step), asynchronous with a
  // bound S (each push steps at once with its gradients alone, when the optimizer has taken
  // at most S steps since the round the push names) or synchronous with K workers (JoinRound).
  using Mode = OptimizerMode;
  static absl::StatusOr<std::shared_ptr<Optimizer>> Create(std::string name,
                                                           std::shared_ptr<Model> model,
                                                           OptimizerKind kind,
                                                           const Hyperparameters& defaults,
                                                           const std::vector<GroupSpec>& groups,
                                                           Mode mode = {});

  const std::string& name() const { return name_; }
  OptimizerKind kind() const { return kind_; }
  const std::shared_ptr<Model>& model() const { return model_; }
  const Mode& mode() const { return mode_; }

  // A gradient for the parameter named `name` (any of its state_dict names).
  struct Gradient {
    std::string name;
    Tensor values;
  };
  // `p.grad += g` for each, all or nothing, after converting to the parameter's dtype and
  // device. NOT_FOUND for a name that is not a parameter of this optimizer, INVALID_ARGUMENT
  // for a shape that differs from the parameter's; FAILED_PRECONDITION in asynchronous mode.
  absl::Status AccumulateGradients(const std::vector<Gradient>& gradients);

  // Asynchronous mode: one step with `gradients` alone, computed on the weights of optimizer
  // step `round`. ABORTED (carrying the current round as the version-conflict payload)
  // when more than S steps were taken since `round`, or `round` is still to come; the
  // errors of AccumulateGradients and Step otherwise. Staleness counts optimizer steps, not
  // model versions: other writes do not age a push. Returns the new model version and round.
  struct AsyncResult {
    uint64_t version = 0;
    uint64_t round = 0;
  };
  absl::StatusOr<AsyncResult> PushAndStep(const std::vector<Gradient>& gradients, uint64_t round);

  // Synchronous mode (Note [Synchronous rounds]): worker `worker`'s push for round `round`.
  // Refused at once, changing nothing: ABORTED (carrying the current round) for a round
  // other than the current one; ALREADY_EXISTS when `worker` pushed in this round already;
  // INVALID_ARGUMENT without a worker id; the errors of AccumulateGradients; the status the
  // optimizer was closed with. Otherwise the push waits in the round and `done` is called
  // exactly once, on whichever thread ends the round, with no lock of the optimizer held:
  // with the new model version and round once the round's step ran, or with the error that
  // ended it (the step's, ABORTED at the timeout, Close's). The K-th push runs the step
  // itself, so its own `done` (and every other of its round) has run when JoinRound returns.
  using RoundDone = std::function<void(absl::StatusOr<AsyncResult>)>;
  struct Joined {
    uint64_t id = 0;  // for WithdrawFromRound
    absl::Time deadline = absl::InfiniteFuture();  // when the round times out
  };
  absl::StatusOr<Joined> JoinRound(const std::vector<Gradient>& gradients,
                                   const std::string& worker, uint64_t round, RoundDone done);
  // Takes push `id` back out of its round, unless the round already ended: true when it
  // was withdrawn (its `done` will never be called), false when `done` was or is being called.
  bool WithdrawFromRound(uint64_t id);
  // Ends the current round if its timeout passed at `now`: its pushes get ABORTED with the
  // current round, their gradients are dropped and the round stays. Returns when the round
  // still waiting times out (InfiniteFuture when none waits or it never does).
  absl::Time ExpireRound(absl::Time now);
  // Ends the waiting pushes with `status` (their gradients dropped) and refuses later ones
  // with it: the optimizer was deleted, or the daemon is stopping.
  void Close(const absl::Status& status);

  // optimizer.step(): updates every parameter that has a gradient in one new model version
  // and returns it; with no gradient at all nothing is written and the current version is
  // returned. ABORTED when `if_version` is set and the model moved on; FAILED_PRECONDITION
  // in asynchronous mode, or when a parameter left the model or changed shape; UNIMPLEMENTED for a dtype or device
  // whose backend has no optimizer kernel; RESOURCE_EXHAUSTED when the new tensors do not
  // fit.
  absl::StatusOr<uint64_t> Step(std::optional<uint64_t> if_version);

  // optimizer.zero_grad(set_to_none): drops every gradient, or zeroes them in place.
  absl::Status ZeroGrad(bool set_to_none = true);

  // optimizer.state_dict(): tensors are the current state (never written again).
  OptimizerStateDict StateDict() const;
  // optimizer.load_state_dict(): torch's checks and messages for the group layout; each
  // state tensor is converted to its parameter's dtype and device (Adam's step to a float)
  // and must have the parameter's shape. The loaded groups' hyperparameters replace the
  // current ones (LoadedHyperparameters: missing keys take torch's defaults; values unchecked).
  absl::Status LoadStateDict(const OptimizerStateDict& state);
  // LoadStateDict in two halves, for a load that must check something else (a model's
  // load_state_dict) before changing either: PrepareLoad checks and converts everything and
  // changes nothing; CommitLoad cannot fail.
  struct PreparedLoad {
    struct State {
      bool has_state = false;
      uint64_t state_order = 0;  // the entry's place in the loaded state
      float step = 0;
      std::vector<Tensor> tensors;
    };
    std::vector<Hyperparameters> hyperparameters;  // per group
    std::vector<State> states;                     // per parameter
    uint64_t states_made = 0;                      // the entries loaded
  };
  absl::StatusOr<PreparedLoad> PrepareLoad(const OptimizerStateDict& state) const;
  void CommitLoad(PreparedLoad prepared);

  // Sets hyperparameters of group `group` (nullopt: every group), as a scheduler writes
  // `optimizer.param_groups[i]["lr"]`: any value of the right type, unchecked as torch leaves
  // such a write (ApplyHyperparameters). INVALID_ARGUMENT for an unknown name or a wrong
  // type, or for a group index out of range.
  absl::Status SetHyperparameters(std::optional<int64_t> group, const Hyperparameters& values);

  // Sets the step count (the round) of an optimizer restored from a snapshot, whose state
  // LoadStateDict brought back; nothing else changes.
  void RestoreSteps(uint64_t steps);

  struct Summary {
    std::string name;
    std::string model;
    OptimizerKind kind;
    Mode mode;
    int64_t groups = 0;
    int64_t parameters = 0;
    int64_t with_gradient = 0;
    uint64_t steps = 0;  // Step calls that updated something
    uint64_t state_bytes = 0;
    int64_t waiting = 0;  // synchronous: pushes waiting in the current round
    // Grows with every change of what a snapshot holds (a step, a load, a hyperparameter
    // write); gradients are not counted, snapshots do not hold them.
    uint64_t changes = 0;
  };
  Summary Describe() const;

 private:
  struct Param {
    std::shared_ptr<Parameter> parameter;
    std::string name;  // first name in named_parameters order
    Shape shape;
    Tensor grad;  // undefined: None
    bool has_state = false;
    // With state: its place in torch's `self.state`, the order state_dict()["state"] lists
    // parameters in (the order their state was made or loaded).
    uint64_t state_order = 0;
    float step = 0;  // Adam's step count (torch keeps it as a float32 tensor)
    // SGD: momentum_buffer (made at the first step with momentum != 0, left alone by steps
    // without momentum). Adam: exp_avg, exp_avg_sq, max_exp_avg_sq (kept while amsgrad is off).
    std::vector<Tensor> state;
  };
  struct Group {
    Hyperparameters hyperparameters;
    std::vector<size_t> params;  // indices into params_
  };
  struct StepPlan;
  // A push waiting in the current synchronous round: its gradients, summed by parameter.
  struct RoundPush {
    uint64_t id = 0;
    std::string worker;
    absl::flat_hash_map<size_t, Tensor> gradients;
    RoundDone done;
  };

  Optimizer(std::string name, std::shared_ptr<Model> model, OptimizerKind kind, Mode mode)
      : name_(std::move(name)), model_(std::move(model)), kind_(kind), mode_(mode) {}

  // The bodies of AccumulateGradients (`fresh`: the pushed values replace the gradients
  // instead of adding to them) and Step.
  absl::Status AccumulateLocked(const std::vector<Gradient>& gradients, bool fresh)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The checked and converted gradients of one push, summed by parameter index, onto the
  // current ones unless `fresh`; changes nothing.
  absl::StatusOr<absl::flat_hash_map<size_t, Tensor>> GatherLocked(
      const std::vector<Gradient>& gradients, bool fresh) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The step of a complete synchronous round: the average of its pushes, stepped and
  // consumed.
  absl::StatusOr<AsyncResult> StepRoundLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<uint64_t> StepLocked(std::optional<uint64_t> if_version)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<PreparedLoad> PrepareLoadLocked(const OptimizerStateDict& state) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  void CommitLoadLocked(PreparedLoad prepared) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The params_ index of the parameter `name` in `root`; NOT_FOUND otherwise.
  absl::StatusOr<size_t> Resolve(const std::shared_ptr<Module>& root, absl::string_view name) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // FAILED_PRECONDITION when `param`'s state cannot feed a step that uses its first
  // `state_count` tensors on `device`: a tensor on another device, or Adam's amsgrad asking
  // for a max_exp_avg_sq the state never had (torch's KeyError).
  absl::Status CheckStepState(const Param& param, const Device& device, size_t state_count) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Builds the new parameter and state tensors of one step; changes nothing.
  absl::Status PlanStep(const std::shared_ptr<Module>& root, StepPlan& plan) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  const std::string name_;
  const std::shared_ptr<Model> model_;
  const OptimizerKind kind_;
  const Mode mode_;
  mutable absl::Mutex mu_;
  std::vector<Param> params_ ABSL_GUARDED_BY(mu_);
  std::vector<Group> groups_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<const Parameter*, size_t> index_ ABSL_GUARDED_BY(mu_);
  uint64_t steps_ ABSL_GUARDED_BY(mu_) = 0;
  // Synchronous mode: the current round's pushes, when it times out, the last push id, and
  // the status Close set (OK while open).
  std::vector<RoundPush> round_ ABSL_GUARDED_BY(mu_);
  absl::Time round_deadline_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  uint64_t last_push_id_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status closed_ ABSL_GUARDED_BY(mu_);
  uint64_t changes_ ABSL_GUARDED_BY(mu_) = 0;
  // The latest Param::state_order given.
  uint64_t states_made_ ABSL_GUARDED_BY(mu_) = 0;
};

// The daemon's optimizers by name (the names follow model names' rules).
// Thread-safety: every method is safe from any thread.
class OptimizerRegistry {
 public:
  // ALREADY_EXISTS when the name is taken.
  absl::Status Add(std::shared_ptr<Optimizer> optimizer);
  // NOT_FOUND naming the optimizer and how to list them.
  absl::StatusOr<std::shared_ptr<Optimizer>> Get(absl::string_view name) const;
  // Only when the name holds `only`, if given (NOT_FOUND otherwise).
  absl::Status Remove(absl::string_view name, const Optimizer* only = nullptr);
  // Every optimizer (of `model` when not empty), sorted by name.
  std::vector<std::shared_ptr<Optimizer>> List(absl::string_view model = "") const;

 private:
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Optimizer>> optimizers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace paramd::core
