// paramd.v1.Models: model lifecycle. Translates between proto and the core; no math here.
// Callback handlers: the calls that change a model or the registry (CreateModel and
// MoveModel initialise or copy every tensor, SetMode waits for the model's writer,
// DeleteModel for a snapshot being written) run on the Executor; ListModels and
// DescribeModel read a pinned version inline on gRPC's callback thread.
// Thread-safety: all methods may run concurrently (the registry and models lock themselves).
#pragma once

#include "paramd/v1/models.grpc.pb.h"
#include "server/core/registry.h"
#include "server/io/snapshots.h"
#include "server/service/auth.h"
#include "server/service/executor.h"

namespace paramd::service {

// ModelInfo for `model` at the version it reads (repr, counts and bytes of one version).
v1::ModelInfo DescribeModel(const core::Model& model);

class ModelsService final : public v1::Models::CallbackService {
 public:
  // Borrows all four. `snapshots` may be null; when set, a deleted model's snapshot is
  // removed with it. `auth` may be null (every call allowed; auth.h).
  ModelsService(core::ModelRegistry* registry, io::Snapshots* snapshots, Executor* executor,
                const Authenticator* auth = nullptr)
      : registry_(registry), snapshots_(snapshots), executor_(executor), auth_(auth) {}

  grpc::ServerUnaryReactor* CreateModel(grpc::CallbackServerContext* context,
                                        const v1::CreateModelRequest* request,
                                        v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* DeleteModel(grpc::CallbackServerContext* context,
                                        const v1::DeleteModelRequest* request,
                                        v1::DeleteModelResponse* response) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* context,
                                       const v1::ListModelsRequest* request,
                                       v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* DescribeModel(grpc::CallbackServerContext* context,
                                          const v1::DescribeModelRequest* request,
                                          v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* SetMode(grpc::CallbackServerContext* context,
                                    const v1::SetModeRequest* request,
                                    v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* MoveModel(grpc::CallbackServerContext* context,
                                      const v1::MoveModelRequest* request,
                                      v1::ModelInfo* response) override;

 private:
  core::ModelRegistry* registry_;  // not owned
  io::Snapshots* snapshots_;       // not owned; may be null
  Executor* executor_;             // not owned
  const Authenticator* auth_;      // not owned; may be null
};

}  // namespace paramd::service
