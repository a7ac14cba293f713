// paramd.v1.Training: optimizers (server/core/optim) over the wire. Translation only: the
// arithmetic, the gradient accumulators and the state layout live in the core.
// Handlers use the callback API. Calls that change an optimizer or its model (create, push,
// step, zero_grad, load) are admitted and run on the Executor; the listing, the state read
// (which copies Tensor values and streams them) and the hyperparameter writes run inline.
// Thread-safety: all methods may run concurrently (optimizers and registries lock
// themselves).
#pragma once

#include "paramd/v1/training.grpc.pb.h"
#include "server/core/optim/optimizer.h"
#include "server/core/registry.h"
#include "server/service/auth.h"
#include "server/service/executor.h"
#include "server/service/idle_watchdog.h"
#include "server/service/tensor_stream.h"

namespace paramd::service {

using TrainingServiceBase = v1::Training::WithRawCallbackMethod_PushGradients<
    v1::Training::WithRawCallbackMethod_GetOptimizerState<
        v1::Training::WithRawCallbackMethod_LoadOptimizerState<v1::Training::CallbackService>>>;

class TrainingService final : public TrainingServiceBase {
 public:
  // Borrows all; `auth` may be null (every call allowed).
  TrainingService(core::ModelRegistry* models, core::OptimizerRegistry* optimizers,
                  Executor* executor, IdleWatchdog* watchdog, const Authenticator* auth = nullptr)
      : models_(models),
        optimizers_(optimizers),
        executor_(executor),
        watchdog_(watchdog),
        auth_(auth) {}

  grpc::ServerUnaryReactor* CreateOptimizer(grpc::CallbackServerContext* context,
                                            const v1::CreateOptimizerRequest* request,
                                            v1::OptimizerInfo* response) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* PushGradients(grpc::CallbackServerContext* context,
                                                           grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* Step(grpc::CallbackServerContext* context,
                                 const v1::StepRequest* request,
                                 v1::StepResponse* response) override;
  grpc::ServerUnaryReactor* ZeroGrad(grpc::CallbackServerContext* context,
                                     const v1::ZeroGradRequest* request,
                                     v1::OptimizerInfo* response) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* GetOptimizerState(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* LoadOptimizerState(
      grpc::CallbackServerContext* context, grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* SetHyperparameters(grpc::CallbackServerContext* context,
                                               const v1::SetHyperparametersRequest* request,
                                               v1::OptimizerInfo* response) override;
  grpc::ServerUnaryReactor* DeleteOptimizer(grpc::CallbackServerContext* context,
                                            const v1::DeleteOptimizerRequest* request,
                                            v1::DeleteOptimizerResponse* response) override;
  grpc::ServerUnaryReactor* ListOptimizers(grpc::CallbackServerContext* context,
                                           const v1::ListOptimizersRequest* request,
                                           v1::ListOptimizersResponse* response) override;

 private:
  // The optimizer `name`, refused with FAILED_PRECONDITION when its model was deleted (or
  // replaced by another of the same name) since it was created.
  absl::StatusOr<std::shared_ptr<core::Optimizer>> Live(const std::string& name) const;
  absl::StatusOr<grpc::ByteBuffer> ApplyPush(IncomingGradients& push);
  absl::StatusOr<grpc::ByteBuffer> ApplyLoad(IncomingOptimizerState& load);

  core::ModelRegistry* models_;          // not owned
  core::OptimizerRegistry* optimizers_;  // not owned
  Executor* executor_;                   // not owned
  IdleWatchdog* watchdog_;               // not owned
  const Authenticator* auth_;            // not owned; may be null
};

}  // namespace paramd::service
