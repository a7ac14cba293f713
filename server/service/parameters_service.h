// paramd.v1.Parameters: reads pin one model version and stream it; writes are validated
// whole before the model changes (core::Model::Write). Translation only; no math here.
// All handlers use the callback API: reads run on gRPC's callback threads; writes are
// admitted when they start (Note [Call admission] in executor.h) and run on the Executor,
// since a write may copy tensors and waits for the model's writer in progress.
// Thread-safety: all methods may run concurrently.
//
// Note [Tensor-by-tensor writes]
// A SetTensors batch is atomic: its new tensors are assembled next to the old ones and
// published together, so it needs memory for the model plus the whole batch. With
// WriteOptions.commit_each_tensor each tensor is instead committed as its own version as soon
// as its last byte arrives (the stream pauses meanwhile), and its old storage is freed then
// (unless a reader still holds it), so the write needs the model plus its largest tensor:
// what `param.copy_()` tensor after tensor does in PyTorch. The write's if_version guards
// its first tensor and each later one must find the version the one before it made (ABORTED
// otherwise). A failure stops the write; the tensors before it stay committed and the
// status says how many, the last one's name and its version (WithCommittedPrefix).
#pragma once

#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "paramd/v1/parameters.grpc.pb.h"
#include "server/core/registry.h"
#include "server/service/auth.h"
#include "server/service/executor.h"
#include "server/service/idle_watchdog.h"
#include "server/service/tensor_stream.h"

namespace paramd::service {

// The tensor-streaming reads and writes are raw callback methods so that tensor bytes move
// between gRPC's buffers and tensor storage with no protobuf string in between
// (tensor_stream.h); the rest are generated callback methods.
using ParametersServiceBase = v1::Parameters::WithRawCallbackMethod_StateDict<
    v1::Parameters::WithRawCallbackMethod_NamedParameters<
        v1::Parameters::WithRawCallbackMethod_NamedBuffers<
            v1::Parameters::WithRawCallbackMethod_GetTensor<
                v1::Parameters::WithRawCallbackMethod_SetTensor<
                    v1::Parameters::WithRawCallbackMethod_SetTensors<
                        v1::Parameters::WithRawCallbackMethod_RegisterParameter<
                            v1::Parameters::WithRawCallbackMethod_RegisterBuffer<
                                v1::Parameters::WithRawCallbackMethod_LoadStateDict<
                                    v1::Parameters::WithCallbackMethod_NamedModules<
                                        v1::Parameters::WithCallbackMethod_TieParameters<
                                            v1::Parameters::Service>>>>>>>>>>>;

class ParametersService final : public ParametersServiceBase {
 public:
  // The full names of the raw methods above, whose messages gRPC hands over as
  // grpc::ByteBuffer instead of a generated message (the call observer reads them so);
  // parameters_service.cc checks the list against ParametersServiceBase at compile time.
  static absl::Span<const absl::string_view> RawMethods();

  // Borrows all four; `auth` may be null (every call allowed; auth.h).
  ParametersService(core::ModelRegistry* registry, Executor* executor, IdleWatchdog* watchdog,
                    const Authenticator* auth = nullptr)
      : registry_(registry), executor_(executor), watchdog_(watchdog), auth_(auth) {}

  grpc::ServerWriteReactor<grpc::ByteBuffer>* StateDict(grpc::CallbackServerContext* context,
                                                        const grpc::ByteBuffer* request) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* NamedParameters(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* NamedBuffers(
      grpc::CallbackServerContext* context, const grpc::ByteBuffer* request) override;
  grpc::ServerWriteReactor<grpc::ByteBuffer>* GetTensor(grpc::CallbackServerContext* context,
                                                        const grpc::ByteBuffer* request) override;
  // Answers with a stream (answer_stream.h): a large model's modules pass one message.
  grpc::ServerWriteReactor<v1::NamedModulesResponse>* NamedModules(
      grpc::CallbackServerContext* context, const v1::NamedModulesRequest* request) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* SetTensor(grpc::CallbackServerContext* context,
                                                       grpc::ByteBuffer* response) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* SetTensors(grpc::CallbackServerContext* context,
                                                        grpc::ByteBuffer* response) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* RegisterParameter(grpc::CallbackServerContext* context,
                                                               grpc::ByteBuffer* response) override;
  grpc::ServerReadReactor<grpc::ByteBuffer>* RegisterBuffer(grpc::CallbackServerContext* context,
                                                            grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* TieParameters(grpc::CallbackServerContext* context,
                                          const v1::TieParametersRequest* request,
                                          v1::WriteResponse* response) override;
  // Answers with a stream (answer_stream.h): the key lists may pass one message's limit.
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* LoadStateDict(
      grpc::CallbackServerContext* context) override;

 private:
  absl::StatusOr<grpc::ByteBuffer> ApplySetTensors(IncomingWrite& write, bool single);
  // commit_each_tensor: commits each complete tensor as its own version (Note
  // [Tensor-by-tensor writes]).
  absl::Status CommitEachTensor(IncomingWrite& write, CommittedPrefix& committed);
  absl::StatusOr<grpc::ByteBuffer> ApplyRegister(IncomingWrite& write, bool parameter);
  // The load and its answer (answer_stream.h's LoadAnswer); the reactor's Guard turns an
  // escaped std::bad_alloc into RESOURCE_EXHAUSTED.
  WriteAnswerStreamReactor::Answer ApplyLoadStateDict(IncomingWrite& write,
                                                      std::function<bool()> cancelled);
  grpc::ServerWriteReactor<grpc::ByteBuffer>* NamedTensors(const grpc::ByteBuffer* request,
                                                           bool parameters);

  core::ModelRegistry* registry_;  // not owned
  Executor* executor_;             // not owned
  IdleWatchdog* watchdog_;         // not owned
  const Authenticator* auth_;      // not owned; may be null
};

}  // namespace paramd::service
