// paramd.v1.Training: optimizers (server/core/optim) over the wire. Translation only: the
// arithmetic, the gradient accumulators and the state layout live in the core.
// Handlers use the callback API. Calls that change an optimizer or its model (create, push,
// step, zero_grad, load) are admitted and run on the Executor; the listing, the state read
// (which copies Tensor values and streams them) and the hyperparameter writes run inline.
// A synchronous optimizer's push waits for its round without holding a thread: its reactor
// stays pending and the round's step (or its timeout, its optimizer's deletion, the
// daemon's shutdown) answers it (Note [Synchronous rounds] in server/core/optim/optimizer.h).
// The service's round clock, a thread of its own, ends rounds whose timeout passed.
// Thread-safety: all methods may run concurrently (optimizers and registries lock
// themselves).
#pragma once

#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
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
  // Borrows all; `auth` may be null (every call allowed). A synchronous round waits at most
  // `round_timeout` for its workers (zero: forever; --sync-round-timeout).
  TrainingService(core::ModelRegistry* models, core::OptimizerRegistry* optimizers,
                  Executor* executor, IdleWatchdog* watchdog, const Authenticator* auth = nullptr,
                  absl::Duration round_timeout = absl::ZeroDuration());
  // Stops the round clock.
  ~TrainingService() override;
  TrainingService(const TrainingService&) = delete;
  TrainingService& operator=(const TrainingService&) = delete;

  // The daemon is stopping: every waiting push is answered UNAVAILABLE, and so is every
  // later push to a synchronous optimizer that exists now.
  void Shutdown();
  // The model `name` was deleted: its optimizers are deleted with it (each logged), so that
  // the model's tensors, their gradients and state are freed at once; the pushes waiting in
  // their rounds are answered at once with FAILED_PRECONDITION saying so. Optimizers of a
  // model created under that name since stay.
  void ModelDeleted(const std::string& name);

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

  // The methods whose messages travel as grpc::ByteBuffer (the call observer must not read
  // them as their generated types).
  static absl::Span<const absl::string_view> RawMethods();

 private:
  // The optimizer `name`, refused with FAILED_PRECONDITION when its model was deleted (or
  // replaced by another of the same name) since it was created and ModelDeleted has not
  // deleted it yet.
  absl::StatusOr<std::shared_ptr<core::Optimizer>> Live(const std::string& name) const;
  // Answers a push: at once in manual and asynchronous mode, when its round ends in
  // synchronous mode.
  void Push(IncomingGradients& push, const std::shared_ptr<DeferredAnswer>& answer);
  // Push's body: a refusal, or OK once the answer was given or the push waits in its round.
  absl::Status JoinOrApply(IncomingGradients& push, const std::shared_ptr<DeferredAnswer>& answer);
  absl::StatusOr<grpc::ByteBuffer> ApplyPush(core::Optimizer& optimizer,
                                             const std::vector<core::Optimizer::Gradient>& gradients,
                                             const v1::GradientOptions& options);
  // The round clock: wakes when the earliest waiting round times out and ends it.
  void RunRoundClock();
  // Wakes the round clock at `deadline` if that is sooner than it would wake.
  void WakeRoundClockAt(absl::Time deadline);
  absl::StatusOr<grpc::ByteBuffer> ApplyLoad(IncomingOptimizerState& load);

  core::ModelRegistry* models_;          // not owned
  core::OptimizerRegistry* optimizers_;  // not owned
  Executor* executor_;                   // not owned
  IdleWatchdog* watchdog_;               // not owned
  const Authenticator* auth_;            // not owned; may be null
  const absl::Duration round_timeout_;
  absl::Mutex clock_mu_;
  absl::CondVar clock_wake_;
  absl::Time next_expiry_ ABSL_GUARDED_BY(clock_mu_) = absl::InfiniteFuture();
  bool clock_stopping_ ABSL_GUARDED_BY(clock_mu_) = false;
  std::thread clock_;  // last: starts once the members above are ready
};

}  // namespace paramd::service
