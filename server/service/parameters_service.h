// paramd.v1.Parameters: reads pin one model version and stream it; writes are validated
// whole before the model changes (core::Model::Write). Translation only; no math here.
// Thread-safety: all methods may run concurrently.
#pragma once

#include "paramd/v1/parameters.grpc.pb.h"
#include "server/core/registry.h"
#include "server/service/tensor_stream.h"

namespace paramd::service {

// The tensor-streaming reads are raw callback methods so that tensor bytes go onto the wire
// from the storage itself (tensor_stream.h); the rest use the generated sync handlers.
// The tensor-streaming reads and writes are raw callback methods so that tensor bytes move
// between gRPC's buffers and tensor storage with no protobuf string in between
// (tensor_stream.h); the rest use the generated sync handlers.
using ParametersServiceBase = v1::Parameters::WithRawCallbackMethod_StateDict<
    v1::Parameters::WithRawCallbackMethod_NamedParameters<
        v1::Parameters::WithRawCallbackMethod_NamedBuffers<
            v1::Parameters::WithRawCallbackMethod_GetTensor<
                v1::Parameters::WithRawCallbackMethod_SetTensor<
                    v1::Parameters::WithRawCallbackMethod_SetTensors<
                        v1::Parameters::WithRawCallbackMethod_RegisterParameter<
                            v1::Parameters::WithRawCallbackMethod_RegisterBuffer<
                                v1::Parameters::WithRawCallbackMethod_LoadStateDict<
                                    v1::Parameters::Service>>>>>>>>>;

class ParametersService final : public ParametersServiceBase {
 public:
  explicit ParametersService(core::ModelRegistry* registry) : registry_(registry) {}

  grpc::ServerWriteReactor<grpc::ByteBuffer>* StateDict(grpc::CallbackServerContext* context,
                                                        const grpc::ByteBuffer* request) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* NamedParameters(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* NamedBuffers(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* GetTensor(grpc::CallbackServerContext* context,
                                                        const grpc::ByteBuffer* request) override;
  grpc::Status NamedModules(grpc::ServerContext* context, const v1::NamedModulesRequest* request,
                            v1::NamedModulesResponse* response) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* SetTensor(grpc::CallbackServerContext* context,
                                                       grpc::ByteBuffer* response) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* SetTensors(grpc::CallbackServerContext* context,
                                                        grpc::ByteBuffer* response) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* RegisterParameter(grpc::CallbackServerContext* context,
                                                               grpc::ByteBuffer* response) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* RegisterBuffer(grpc::CallbackServerContext* context,
                                                            grpc::ByteBuffer* response) override;
  grpc::Status TieParameters(grpc::ServerContext* context, const v1::TieParametersRequest* request,
                             v1::WriteResponse* response) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* LoadStateDict(grpc::CallbackServerContext* context,
                                                           grpc::ByteBuffer* response) override;

 private:
  absl::StatusOr<grpc::ByteBuffer> ApplySetTensors(IncomingWrite& write, bool single);
  absl::StatusOr<grpc::ByteBuffer> ApplyRegister(IncomingWrite& write, bool parameter);
  absl::StatusOr<grpc::ByteBuffer> ApplyLoadStateDict(IncomingWrite& write);
  grpc::ServerWriteReactor<grpc::ByteBuffer>* NamedTensors(const grpc::ByteBuffer* request,
                                                           bool parameters);

  core::ModelRegistry* registry_;  // not owned
};

}  // namespace paramd::service
