// paramd.v1.Inference: forward passes. Translation only: the stream to named tensors and
// back, the proto's options to core::RunForward's (server/core/run_forward.h), which pins
// the version, runs the forward and commits BatchNorm's running statistics. Forward needs
// role `read`, and `write` in training mode, checked on the pinned version before the
// forward runs (Note [Forward role] in auth.cc).
//
// Threading: Forward is a callback handler. It is admitted when it starts (Note [Call
// admission] in executor.h), its inputs are assembled on gRPC's callback threads as they
// arrive, the forward itself runs on the Executor holding no model lock (a cheap repeat of
// an earlier forward inline: Note [Cheap repeats]), and the outputs go out one frame per
// write. A request stream that sends nothing for the idle timeout is ended as a write
// stream is (Note [Idle write streams] in idle_watchdog.h): its inputs hold memory and its
// admission a worker's place.
// Thread-safety: all methods may run concurrently.
#pragma once

#include "paramd/v1/inference.grpc.pb.h"
#include "server/core/registry.h"
#include "server/service/auth.h"
#include "server/service/cheap_repeats.h"
#include "server/service/executor.h"
#include "server/service/idle_watchdog.h"
#include "server/service/metrics.h"

namespace paramd::service {

class InferenceService final : public v1::Inference::CallbackService {
 public:
  // Borrows all five, which must outlive the service; `auth` may be null (every call
  // allowed; auth.h), `metrics` too (no forward latencies recorded).
  InferenceService(core::ModelRegistry* registry, Executor* executor, IdleWatchdog* watchdog,
                   const Authenticator* auth = nullptr, Metrics* metrics = nullptr)
      : registry_(registry),
        executor_(executor),
        watchdog_(watchdog),
        auth_(auth),
        metrics_(metrics) {}

  grpc::ServerBidiReactor<v1::ForwardRequest, v1::ForwardResponse>* Forward(
      grpc::CallbackServerContext* context) override;

 private:
  core::ModelRegistry* const registry_;
  Executor* const executor_;
  IdleWatchdog* const watchdog_;
  const Authenticator* const auth_;  // may be null
  Metrics* const metrics_;           // may be null
  CheapRepeats repeats_;
};

}  // namespace paramd::service
