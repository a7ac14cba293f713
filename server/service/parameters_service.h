// paramd.v1.Parameters: reads pin one model version and stream it; writes are validated
// whole before the model changes (core::Model::Write). Translation only; no math here.
// Thread-safety: all methods may run concurrently.
#pragma once

#include "paramd/v1/parameters.grpc.pb.h"
#include "server/core/registry.h"

namespace paramd::service {

class ParametersService final : public v1::Parameters::Service {
 public:
  explicit ParametersService(core::ModelRegistry* registry) : registry_(registry) {}

  grpc::Status StateDict(grpc::ServerContext* context, const v1::StateDictRequest* request,
                         grpc::ServerWriter<v1::TensorFrame>* writer) override;
  grpc::Status NamedParameters(grpc::ServerContext* context, const v1::NamedTensorsRequest* request,
                               grpc::ServerWriter<v1::TensorFrame>* writer) override;
  grpc::Status NamedBuffers(grpc::ServerContext* context, const v1::NamedTensorsRequest* request,
                            grpc::ServerWriter<v1::TensorFrame>* writer) override;
  grpc::Status NamedModules(grpc::ServerContext* context, const v1::NamedModulesRequest* request,
                            v1::NamedModulesResponse* response) override;
  grpc::Status GetTensor(grpc::ServerContext* context, const v1::GetTensorRequest* request,
                         grpc::ServerWriter<v1::TensorFrame>* writer) override;
  grpc::Status SetTensor(grpc::ServerContext* context, grpc::ServerReader<v1::WriteFrame>* reader,
                         v1::WriteResponse* response) override;
  grpc::Status SetTensors(grpc::ServerContext* context, grpc::ServerReader<v1::WriteFrame>* reader,
                          v1::WriteResponse* response) override;
  grpc::Status RegisterParameter(grpc::ServerContext* context,
                                 grpc::ServerReader<v1::WriteFrame>* reader,
                                 v1::WriteResponse* response) override;
  grpc::Status RegisterBuffer(grpc::ServerContext* context,
                              grpc::ServerReader<v1::WriteFrame>* reader,
                              v1::WriteResponse* response) override;
  grpc::Status TieParameters(grpc::ServerContext* context,
                             const v1::TieParametersRequest* request,
                             v1::WriteResponse* response) override;
  grpc::Status LoadStateDict(grpc::ServerContext* context,
                             grpc::ServerReader<v1::WriteFrame>* reader,
                             v1::LoadStateDictResponse* response) override;

 private:
  grpc::Status SetTensorsImpl(grpc::ServerContext* context,
                              grpc::ServerReader<v1::WriteFrame>* reader,
                              v1::WriteResponse* response, bool single);
  grpc::Status Register(grpc::ServerContext* context, grpc::ServerReader<v1::WriteFrame>* reader,
                        v1::WriteResponse* response, bool parameter);
  grpc::Status NamedTensors(grpc::ServerContext* context, const v1::NamedTensorsRequest* request,
                            grpc::ServerWriter<v1::TensorFrame>* writer, bool parameters);

  core::ModelRegistry* registry_;  // not owned
};

}  // namespace paramd::service
