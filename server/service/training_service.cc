#include "server/service/training_service.h"

#include <algorithm>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/text.h"
#include "server/common/log.h"
#include "server/service/raw_methods.h"
#include "server/service/status_util.h"
#include "server/service/tensor_codec.h"
#include "server/service/unary_call.h"

namespace paramd::service {
namespace {

// Logged with the optimizer under its own key in the log line.
grpc::Status OptimizerLogged(absl::string_view action, absl::string_view optimizer,
                             grpc::Status status, bool log_success = false) {
  return Logged(action, optimizer, std::move(status), log_success, "optimizer");
}

// Compile-time proof that RawMethods lists exactly the raw methods of TrainingServiceBase.
template <template <class> class RawMethod>
using IsRaw = IsRawMethod<TrainingService, RawMethod>;
static_assert(IsRaw<v1::Training::WithRawCallbackMethod_PushGradients>::value &&
                  IsRaw<v1::Training::WithRawCallbackMethod_GetOptimizerState>::value &&
                  IsRaw<v1::Training::WithRawCallbackMethod_LoadOptimizerState>::value,
              "a method listed in kRawMethods is no longer raw: update kRawMethods");
static_assert(!IsRaw<v1::Training::WithRawCallbackMethod_CreateOptimizer>::value &&
                  !IsRaw<v1::Training::WithRawCallbackMethod_Step>::value &&
                  !IsRaw<v1::Training::WithRawCallbackMethod_ZeroGrad>::value &&
                  !IsRaw<v1::Training::WithRawCallbackMethod_SetHyperparameters>::value &&
                  !IsRaw<v1::Training::WithRawCallbackMethod_DeleteOptimizer>::value &&
                  !IsRaw<v1::Training::WithRawCallbackMethod_ListOptimizers>::value,
              "a Training method became raw: add it to kRawMethods");

constexpr absl::string_view kRawMethods[] = {
    "/paramd.v1.Training/PushGradients",
    "/paramd.v1.Training/GetOptimizerState",
    "/paramd.v1.Training/LoadOptimizerState",
};

using core::HyperValue;

absl::StatusOr<HyperValue> FromProto(const v1::HyperValue& value, const std::string& name) {
  switch (value.value_case()) {
    case v1::HyperValue::kNone:
      return HyperValue::None();
    case v1::HyperValue::kBoolValue:
      return HyperValue::Bool(value.bool_value());
    case v1::HyperValue::kIntValue:
      return HyperValue::Int(value.int_value());
    case v1::HyperValue::kFloatValue:
      return HyperValue::Float(value.float_value());
    case v1::HyperValue::kTupleValue:
      return HyperValue::Tuple(
          {value.tuple_value().values().begin(), value.tuple_value().values().end()});
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("hyperparameter '", name, "' has no value; set one of HyperValue's fields"));
  }
}

void ToProto(const HyperValue& value, v1::HyperValue* out) {
  switch (value.type) {
    case HyperValue::Type::kNone:
      out->set_none(true);
      return;
    case HyperValue::Type::kBool:
      out->set_bool_value(value.number != 0);
      return;
    case HyperValue::Type::kInt:
      out->set_int_value(value.integer);
      return;
    case HyperValue::Type::kFloat:
      out->set_float_value(value.number);
      return;
    case HyperValue::Type::kTuple:
      for (double v : value.tuple) out->mutable_tuple_value()->add_values(v);
      return;
  }
}

absl::StatusOr<core::Hyperparameters> FromProto(
    const google::protobuf::RepeatedPtrField<v1::Hyperparameter>& values) {
  core::Hyperparameters out;
  for (const v1::Hyperparameter& entry : values) {
    PARAMD_ASSIGN_OR_RETURN(HyperValue value, FromProto(entry.value(), entry.name()));
    out.emplace_back(entry.name(), std::move(value));
  }
  return out;
}

void ToProto(const core::Hyperparameters& values,
             google::protobuf::RepeatedPtrField<v1::Hyperparameter>* out) {
  for (const auto& [name, value] : values) {
    v1::Hyperparameter* entry = out->Add();
    entry->set_name(name);
    ToProto(value, entry->mutable_value());
  }
}

v1::OptimizerInfo Info(const core::Optimizer& optimizer) {
  const core::Optimizer::Summary summary = optimizer.Describe();
  v1::OptimizerInfo info;
  info.set_name(summary.name);
  info.set_model(summary.model);
  info.set_kind(std::string(core::OptimizerKindName(summary.kind)));
  info.set_param_groups(summary.groups);
  info.set_parameters(summary.parameters);
  info.set_with_gradient(summary.with_gradient);
  info.set_steps(summary.steps);
  info.set_state_bytes(summary.state_bytes);
  info.set_model_version(optimizer.model()->version());
  switch (summary.mode.kind) {
    case core::OptimizerMode::kManual:
      info.set_mode("manual");
      break;
    case core::OptimizerMode::kAsynchronous:
      info.set_mode("asynchronous");
      info.set_max_staleness(summary.mode.bound);
      break;
    case core::OptimizerMode::kSynchronous:
      info.set_mode("synchronous");
      info.set_workers(summary.mode.bound);
      info.set_waiting(summary.waiting);
      break;
  }
  return info;
}

// The mode CreateOptimizer asks for. INVALID_ARGUMENT for an unknown mode, a synchronous one
// without workers, and workers or max_staleness in a mode they mean nothing in.
absl::StatusOr<core::OptimizerMode> ModeOf(const v1::CreateOptimizerRequest& request,
                                           absl::Duration round_timeout) {
  core::OptimizerMode mode;
  if (request.mode() == "asynchronous") {
    mode = {core::OptimizerMode::kAsynchronous, request.max_staleness()};
  } else if (request.mode() == "synchronous") {
    if (request.workers() < 1) {
      return absl::InvalidArgumentError(
          "a synchronous optimizer needs workers (K, the pushes that make a round) of 1 or more");
    }
    mode = {core::OptimizerMode::kSynchronous, request.workers(), round_timeout};
  } else if (!request.mode().empty() && request.mode() != "manual") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown optimizer mode '", request.mode(),
                     "'; use 'manual', 'asynchronous' or 'synchronous'"));
  }
  if (mode.kind != core::OptimizerMode::kSynchronous && request.workers() != 0) {
    return absl::InvalidArgumentError(
        "workers is for mode 'synchronous' (K, the pushes that make a round)");
  }
  if (mode.kind != core::OptimizerMode::kAsynchronous && request.max_staleness() != 0) {
    return absl::InvalidArgumentError(
        "max_staleness is for mode 'asynchronous' (S, the most steps a push may be behind)");
  }
  return mode;
}

// "<index>.<key>" of a state tensor on the wire.
absl::StatusOr<std::pair<int64_t, std::string>> SplitStateName(const std::string& name) {
  const size_t dot = name.find('.');
  int64_t index = 0;
  if (dot == std::string::npos || !absl::SimpleAtoi(name.substr(0, dot), &index) || index < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "optimizer state tensor ", QuoteName(name),
        " is not named '<parameter index>.<key>' (for example '0.exp_avg')"));
  }
  return std::make_pair(index, name.substr(dot + 1));
}

}  // namespace

TrainingService::TrainingService(core::ModelRegistry* models, core::OptimizerRegistry* optimizers,
                                 Executor* executor, IdleWatchdog* watchdog,
                                 const Authenticator* auth, absl::Duration round_timeout)
    : models_(models),
      optimizers_(optimizers),
      executor_(executor),
      watchdog_(watchdog),
      auth_(auth),
      round_timeout_(round_timeout),
      clock_([this] { RunRoundClock(); }) {}

TrainingService::~TrainingService() {
  {
    absl::MutexLock lock(&clock_mu_);
    clock_stopping_ = true;
    clock_wake_.Signal();
  }
  clock_.join();
}

void TrainingService::Shutdown() {
  for (const auto& optimizer : optimizers_->List()) {
    if (optimizer->mode().kind != core::OptimizerMode::kSynchronous) continue;
    optimizer->Close(absl::UnavailableError(
        "paramd is shutting down; the round was not stepped and its gradients were dropped: "
        "push again to the daemon once it is back"));
  }
}

void TrainingService::ModelDeleted(const std::string& name) {
  for (const auto& optimizer : optimizers_->List(name)) {
    // A model of that name created since keeps its own optimizers.
    absl::StatusOr<std::shared_ptr<core::Model>> current = models_->Get(name);
    if (current.ok() && *current == optimizer->model()) continue;
    // Out of the registry first, so no push joins a round after Close; skipped when it was
    // deleted meanwhile (DeleteOptimizer answered its pushes).
    if (!optimizers_->Remove(optimizer->name(), optimizer.get()).ok()) continue;
    optimizer->Close(absl::FailedPreconditionError(
        absl::StrCat("model ", QuoteName(name), " was deleted while the push waited for its ",
                     "round, and its optimizer ", QuoteName(optimizer->name()),
                     " with it; nothing was stepped")));
    common::Log("info", "optimizer deleted with its model",
                {{"optimizer", optimizer->name()}, {"model", name}});
  }
}

void TrainingService::WakeRoundClockAt(absl::Time deadline) {
  absl::MutexLock lock(&clock_mu_);
  if (deadline < next_expiry_) {
    next_expiry_ = deadline;
    clock_wake_.Signal();
  }
}

void TrainingService::RunRoundClock() {
  clock_mu_.Lock();
  while (!clock_stopping_) {
    if (absl::Now() < next_expiry_) {
      clock_wake_.WaitWithDeadline(&clock_mu_, next_expiry_);
      continue;
    }
    next_expiry_ = absl::InfiniteFuture();
    clock_mu_.Unlock();
    // Each optimizer ends its round if it timed out and says when the one waiting will.
    absl::Time next = absl::InfiniteFuture();
    const absl::Time now = absl::Now();
    for (const auto& optimizer : optimizers_->List()) {
      if (optimizer->mode().kind != core::OptimizerMode::kSynchronous) continue;
      next = std::min(next, optimizer->ExpireRound(now));
    }
    clock_mu_.Lock();
    next_expiry_ = std::min(next_expiry_, next);
  }
  clock_mu_.Unlock();
}

absl::StatusOr<std::shared_ptr<core::Optimizer>> TrainingService::Live(
    const std::string& name) const {
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Optimizer> optimizer, optimizers_->Get(name));
  absl::StatusOr<std::shared_ptr<core::Model>> model = models_->Get(optimizer->model()->name());
  if (!model.ok() || *model != optimizer->model()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "optimizer ", QuoteName(name), " belongs to model ", QuoteName(optimizer->model()->name()),
        ", which was deleted since; DeleteOptimizer it and create one on the model you have now"));
  }
  return optimizer;
}

grpc::ServerUnaryReactor* TrainingService::CreateOptimizer(grpc::CallbackServerContext* context,
                                                           const v1::CreateOptimizerRequest* request,
                                                           v1::OptimizerInfo* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerUnaryReactor>(
          auth_, context, "/paramd.v1.Training/CreateOptimizer")) {
    return refused;
  }
  return FinishOnExecutor(context, *executor_, "create optimizer", request->name(), [=, this] {
    return Guard([&]() -> absl::Status {
      absl::Status status = [&]() -> absl::Status {
        PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Model> model, models_->Get(request->model()));
        PARAMD_ASSIGN_OR_RETURN(core::OptimizerKind kind, core::ParseOptimizerKind(request->kind()));
        PARAMD_ASSIGN_OR_RETURN(core::Hyperparameters defaults, FromProto(request->defaults()));
        std::vector<core::Optimizer::GroupSpec> groups;
        for (const v1::ParamGroup& group : request->param_groups()) {
          core::Optimizer::GroupSpec spec;
          spec.params.assign(group.param_names().begin(), group.param_names().end());
          PARAMD_ASSIGN_OR_RETURN(spec.hyperparameters, FromProto(group.hyperparameters()));
          groups.push_back(std::move(spec));
        }
        PARAMD_ASSIGN_OR_RETURN(core::OptimizerMode mode, ModeOf(*request, round_timeout_));
        PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Optimizer> optimizer,
                                core::Optimizer::Create(request->name(), std::move(model), kind,
                                                        defaults, groups, mode));
        PARAMD_RETURN_IF_ERROR(optimizers_->Add(optimizer));
        // A DeleteModel that ran meanwhile may not have seen it: it goes with its model.
        absl::StatusOr<std::shared_ptr<core::Model>> still = models_->Get(request->model());
        if (!still.ok() || *still != optimizer->model()) {
          optimizers_->Remove(request->name(), optimizer.get()).IgnoreError();
          return absl::NotFoundError(
              absl::StrCat("model ", QuoteName(request->model()), " was deleted while optimizer ",
                           QuoteName(request->name()), " was created on it; nothing was created"));
        }
        *response = Info(*optimizer);
        return absl::OkStatus();
      }();
      LogCall("create optimizer", request->name(), status, /*log_success=*/true, "optimizer");
      return status;
    });
  });
}

absl::StatusOr<grpc::ByteBuffer> TrainingService::ApplyPush(
    core::Optimizer& optimizer, const std::vector<core::Optimizer::Gradient>& gradients,
    const v1::GradientOptions& options) {
  v1::PushGradientsResponse response;
  if (optimizer.mode().kind == core::OptimizerMode::kAsynchronous) {
    PARAMD_ASSIGN_OR_RETURN(core::Optimizer::AsyncResult result,
                            optimizer.PushAndStep(gradients, options.round()));
    response.set_model_version(result.version);
    response.set_round(result.round);
    return Serialize(response);
  }
  PARAMD_RETURN_IF_ERROR(optimizer.AccumulateGradients(gradients));
  const core::Optimizer::Summary summary = optimizer.Describe();
  response.set_with_gradient(summary.with_gradient);
  response.set_model_version(optimizer.model()->version());
  response.set_round(summary.steps);
  return Serialize(response);
}

void TrainingService::Push(IncomingGradients& push,
                           const std::shared_ptr<DeferredAnswer>& answer) {
  // The refusal goes to the answer as it is, with the current round an ABORTED one carries;
  // Guard only turns an exception into a status.
  absl::Status refused;
  const grpc::Status thrown = Guard([&]() -> absl::Status {
    refused = JoinOrApply(push, answer);
    return absl::OkStatus();
  });
  if (!thrown.ok()) refused = FromGrpcStatus(thrown);
  if (!refused.ok()) answer->Finish(refused);
}

absl::Status TrainingService::JoinOrApply(IncomingGradients& push,
                                        const std::shared_ptr<DeferredAnswer>& answer) {
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Optimizer> optimizer,
                          Live(push.options.optimizer()));
  std::vector<core::Optimizer::Gradient> gradients;
  // Headers with a region were refused as they arrived (FrameCollector).
  for (auto& [header, tensor] : push.tensors)
    gradients.push_back({header.name(), std::move(tensor)});
  if (optimizer->mode().kind != core::OptimizerMode::kSynchronous) {
    answer->Finish(ApplyPush(*optimizer, gradients, push.options));
    return absl::OkStatus();
  }
  PARAMD_ASSIGN_OR_RETURN(
      core::Optimizer::Joined joined,
      optimizer->JoinRound(gradients, push.options.worker(), push.options.round(),
                           [answer](absl::StatusOr<core::Optimizer::AsyncResult> result) {
                             if (!result.ok()) return answer->Finish(result.status());
                             v1::PushGradientsResponse response;
                             response.set_model_version(result->version);
                             response.set_round(result->round);
                             answer->Finish(Serialize(response));
                           }));
  WakeRoundClockAt(joined.deadline);
  // A client that cancels while its push waits takes its gradients back out of the round.
  answer->OnCancel([optimizer, id = joined.id] { return optimizer->WithdrawFromRound(id); });
  return absl::OkStatus();
}

grpc::ServerReadReactor<grpc::ByteBuffer>* TrainingService::PushGradients(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerReadReactor<grpc::ByteBuffer>>(
          auth_, context, "/paramd.v1.Training/PushGradients")) {
    return refused;
  }
  return new DeferredWriteStreamReactor<v1::GradientFrame>(
      context, executor_, watchdog_, response, "push gradients",
      [this](IncomingGradients& push, const std::shared_ptr<DeferredAnswer>& answer) {
        Push(push, answer);
      });
}

grpc::ServerUnaryReactor* TrainingService::Step(grpc::CallbackServerContext* context,
                                                const v1::StepRequest* request,
                                                v1::StepResponse* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerUnaryReactor>(
          auth_, context, "/paramd.v1.Training/Step")) {
    return refused;
  }
  return FinishOnExecutor(context, *executor_, "step", request->optimizer(), [=, this] {
    return OptimizerLogged("step", request->optimizer(), Guard([&]() -> absl::Status {
                             PARAMD_ASSIGN_OR_RETURN(auto optimizer, Live(request->optimizer()));
                             PARAMD_ASSIGN_OR_RETURN(
                                 uint64_t version,
                                 optimizer->Step(IfVersion(request->if_version())));
                             response->set_version(version);
                             response->set_steps(optimizer->Describe().steps);
                             return absl::OkStatus();
                           }));
  });
}

grpc::ServerUnaryReactor* TrainingService::ZeroGrad(grpc::CallbackServerContext* context,
                                                    const v1::ZeroGradRequest* request,
                                                    v1::OptimizerInfo* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerUnaryReactor>(
          auth_, context, "/paramd.v1.Training/ZeroGrad")) {
    return refused;
  }
  return FinishOnExecutor(context, *executor_, "zero grad", request->optimizer(), [=, this] {
    return OptimizerLogged("zero grad", request->optimizer(), Guard([&]() -> absl::Status {
                             PARAMD_ASSIGN_OR_RETURN(auto optimizer, Live(request->optimizer()));
                             PARAMD_RETURN_IF_ERROR(optimizer->ZeroGrad(!request->keep_as_zeros()));
                             *response = Info(*optimizer);
                             return absl::OkStatus();
                           }));
  });
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* TrainingService::GetOptimizerState(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerWriteReactor<grpc::ByteBuffer>>(
          auth_, context, "/paramd.v1.Training/GetOptimizerState")) {
    return refused;
  }
  v1::GetOptimizerStateRequest request;
  absl::Status parsed = Parse(*raw, &request);
  if (!parsed.ok()) return new TensorStreamReactor(parsed);
  absl::StatusOr<std::shared_ptr<core::Optimizer>> optimizer = optimizers_->Get(request.optimizer());
  if (!optimizer.ok()) {
    LogCall("get optimizer state", request.optimizer(), optimizer.status(), false, "optimizer");
    return new TensorStreamReactor(optimizer.status());
  }
  const core::OptimizerStateDict dict = (*optimizer)->StateDict();
  v1::OptimizerStateFrame head;
  v1::OptimizerStateHead* options = head.mutable_options();
  options->set_optimizer((*optimizer)->name());
  options->set_kind(std::string(core::OptimizerKindName((*optimizer)->kind())));
  options->set_model((*optimizer)->model()->name());
  for (const core::OptimizerStateDict::Group& group : dict.param_groups) {
    v1::ParamGroup* out = options->add_param_groups();
    for (const std::string& name : group.param_names) out->add_param_names(name);
    for (int64_t index : group.params) out->add_params(index);
    ToProto(group.hyperparameters, out->mutable_hyperparameters());
  }
  std::vector<OutgoingTensor> tensors;
  for (const core::OptimizerStateDict::ParamState& state : dict.state) {
    for (const auto& [key, tensor] : state.tensors) {
      OutgoingTensor item;
      item.name = absl::StrCat(state.index, ".", key);
      item.tensor = tensor;
      tensors.push_back(std::move(item));
    }
  }
  return new TensorStreamReactor(Serialize(head), std::move(tensors));
}

absl::StatusOr<grpc::ByteBuffer> TrainingService::ApplyLoad(IncomingOptimizerState& load) {
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Optimizer> optimizer,
                          Live(load.options.optimizer()));
  core::OptimizerStateDict dict;
  for (const v1::ParamGroup& group : load.options.param_groups()) {
    core::OptimizerStateDict::Group out;
    out.params.assign(group.params().begin(), group.params().end());
    PARAMD_ASSIGN_OR_RETURN(out.hyperparameters, FromProto(group.hyperparameters()));
    dict.param_groups.push_back(std::move(out));
  }
  for (auto& [header, tensor] : load.tensors) {
    PARAMD_ASSIGN_OR_RETURN(auto name, SplitStateName(header.name()));
    if (dict.state.empty() || dict.state.back().index != name.first) {
      for (const auto& state : dict.state) {
        if (state.index == name.first) {
          return absl::InvalidArgumentError(absl::StrCat(
              "the state tensors of parameter ", name.first,
              " are not sent together; send each parameter's tensors one after the other"));
        }
      }
      dict.state.push_back({name.first, {}});
    }
    dict.state.back().tensors.emplace_back(name.second, std::move(tensor));
  }
  PARAMD_RETURN_IF_ERROR(optimizer->LoadStateDict(dict));
  return Serialize(Info(*optimizer));
}

grpc::ServerReadReactor<grpc::ByteBuffer>* TrainingService::LoadOptimizerState(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerReadReactor<grpc::ByteBuffer>>(
          auth_, context, "/paramd.v1.Training/LoadOptimizerState")) {
    return refused;
  }
  return new BasicWriteStreamReactor<v1::OptimizerStateFrame>(
      context, executor_, watchdog_, response, "load optimizer state",
      [this](IncomingOptimizerState& load) { return ApplyLoad(load); });
}

grpc::ServerUnaryReactor* TrainingService::SetHyperparameters(
    grpc::CallbackServerContext* context, const v1::SetHyperparametersRequest* request,
    v1::OptimizerInfo* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerUnaryReactor>(
          auth_, context, "/paramd.v1.Training/SetHyperparameters")) {
    return refused;
  }
  return FinishInline(context, [&] {
    return OptimizerLogged("set hyperparameters", request->optimizer(),
                           Guard([&]() -> absl::Status {
                             PARAMD_ASSIGN_OR_RETURN(auto optimizer, Live(request->optimizer()));
                             PARAMD_ASSIGN_OR_RETURN(core::Hyperparameters values,
                                                     FromProto(request->hyperparameters()));
                             // Only -1 means every group; any other negative is no group (not
                             // Python's index from the end).
                             std::optional<int64_t> group;
                             if (request->group() != -1) group = request->group();
                             PARAMD_RETURN_IF_ERROR(optimizer->SetHyperparameters(group, values));
                             *response = Info(*optimizer);
                             return absl::OkStatus();
                           }));
  });
}

grpc::ServerUnaryReactor* TrainingService::DeleteOptimizer(grpc::CallbackServerContext* context,
                                                           const v1::DeleteOptimizerRequest* request,
                                                           v1::DeleteOptimizerResponse*) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerUnaryReactor>(
          auth_, context, "/paramd.v1.Training/DeleteOptimizer")) {
    return refused;
  }
  return FinishInline(context, [&] {
    return OptimizerLogged(
        "delete optimizer", request->optimizer(), Guard([&]() -> absl::Status {
          PARAMD_ASSIGN_OR_RETURN(auto optimizer, optimizers_->Get(request->optimizer()));
          PARAMD_RETURN_IF_ERROR(optimizers_->Remove(request->optimizer(), optimizer.get()));
          // Pushes waiting in a synchronous round would otherwise wait for a round
          // that can no longer come.
          optimizer->Close(absl::CancelledError(
              absl::StrCat("optimizer ", QuoteName(request->optimizer()),
                           " was deleted while the push waited for its round; nothing was "
                           "stepped")));
          return absl::OkStatus();
        }),
        /*log_success=*/true);
  });
}

grpc::ServerUnaryReactor* TrainingService::ListOptimizers(grpc::CallbackServerContext* context,
                                                          const v1::ListOptimizersRequest* request,
                                                          v1::ListOptimizersResponse* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerUnaryReactor>(
          auth_, context, "/paramd.v1.Training/ListOptimizers")) {
    return refused;
  }
  return FinishInline(context, [&] {
    return Logged("list optimizers", request->model(), Guard([&]() -> absl::Status {
                    for (const auto& optimizer : optimizers_->List(request->model())) {
                      *response->add_optimizers() = Info(*optimizer);
                    }
                    return absl::OkStatus();
                  }));
  });
}

absl::Span<const absl::string_view> TrainingService::RawMethods() { return kRawMethods; }

}  // namespace paramd::service
