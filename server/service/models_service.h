// paramd.v1.Models: model lifecycle. Translates between proto and the core; no math here.
// Thread-safety: all methods may run concurrently (the registry and models lock themselves).
#pragma once

#include "paramd/v1/models.grpc.pb.h"
#include "server/core/registry.h"
#include "server/io/snapshots.h"

namespace paramd::service {

// ModelInfo for `model` at the version it reads (repr, counts and bytes of one version).
v1::ModelInfo DescribeModel(const core::Model& model);

class ModelsService final : public v1::Models::Service {
 public:
  // `snapshots` may be null; when set, a deleted model's snapshot is removed with it.
  ModelsService(core::ModelRegistry* registry, io::Snapshots* snapshots)
      : registry_(registry), snapshots_(snapshots) {}

  grpc::Status CreateModel(grpc::ServerContext* context, const v1::CreateModelRequest* request,
                           v1::ModelInfo* response) override;
  grpc::Status DeleteModel(grpc::ServerContext* context, const v1::DeleteModelRequest* request,
                           v1::DeleteModelResponse* response) override;
  grpc::Status ListModels(grpc::ServerContext* context, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response) override;
  grpc::Status DescribeModel(grpc::ServerContext* context, const v1::DescribeModelRequest* request,
                             v1::ModelInfo* response) override;
  grpc::Status SetMode(grpc::ServerContext* context, const v1::SetModeRequest* request,
                       v1::ModelInfo* response) override;
  grpc::Status MoveModel(grpc::ServerContext* context, const v1::MoveModelRequest* request,
                         v1::ModelInfo* response) override;

 private:
  core::ModelRegistry* registry_;  // not owned
  io::Snapshots* snapshots_;       // not owned; may be null
};

}  // namespace paramd::service
