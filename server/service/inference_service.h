// paramd.v1.Inference: forward passes. Translation only: the stream to named tensors and
// back, the proto's options to core::RunForward's (server/core/run_forward.h), which pins
// the version, runs the forward and commits BatchNorm's running statistics.
//
// Threading: Forward is a synchronous handler, so each call runs on gRPC's sync-server
// thread pool and never on the callback threads that keep the other services' streams
// moving; a long forward holds one of those pool threads and no model lock.
// Thread-safety: all methods may run concurrently.
#pragma once

#include "paramd/v1/inference.grpc.pb.h"
#include "server/core/registry.h"

namespace paramd::service {

class InferenceService final : public v1::Inference::Service {
 public:
  // Borrows `registry`, which must outlive the service.
  explicit InferenceService(core::ModelRegistry* registry) : registry_(registry) {}

  grpc::Status Forward(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::ForwardResponse, v1::ForwardRequest>* stream) override;

 private:
  core::ModelRegistry* const registry_;
};

}  // namespace paramd::service
