// paramd.v1.Models: model lifecycle. Translates between proto and the core; no math here.
// Callback handlers: the calls that change a model or the registry (CreateModel and
// MoveModel initialise or copy every tensor, SetMode waits for the model's writer,
// DeleteModel for a snapshot being written) and GetRepr (a repr may be long) run on the
// Executor; ListModels, DescribeModel and GetSpec read a pinned version inline on gRPC's
// callback thread.
// Thread-safety: all methods may run concurrently (the registry and models lock themselves).
#pragma once

#include <functional>
#include <string>

#include "paramd/v1/models.grpc.pb.h"
#include "server/core/registry.h"
#include "server/io/snapshots.h"
#include "server/service/auth.h"
#include "server/service/executor.h"

namespace paramd::service {

// The most of repr(model) a ModelInfo carries; past it `repr` is cut at a character boundary
// and `repr_truncated` set (GetRepr streams it whole). With the name (at most 128 bytes) and
// a few numbers, a ModelInfo stays far below a client's 4 MiB message limit.
inline constexpr size_t kMaxReprBytes = size_t{1} << 20;

// ListModels' pages (AIP-158): page_size 0 means kDefaultListPageSize, more than
// kMaxListPageSize means that; a page also stops before its models pass kMaxListPageBytes
// (it always holds one), so a page is never near a client's 4 MiB limit.
inline constexpr size_t kDefaultListPageSize = 100;
inline constexpr size_t kMaxListPageSize = 1000;
inline constexpr size_t kMaxListPageBytes = size_t{3} << 20;

// ModelInfo for `model` at the version it reads (repr, counts and bytes of one version).
v1::ModelInfo DescribeModel(const core::Model& model);

// One page of ListModels: the models named after the page token's name, in name order.
// INVALID_ARGUMENT for a negative page_size or a token page_token.h did not make.
absl::Status ListModelsPage(const core::ModelRegistry& registry,
                            const v1::ListModelsRequest& request,
                            v1::ListModelsResponse* response);

class ModelsService final : public v1::Models::CallbackService {
 public:
  // Borrows all four. `snapshots` may be null; when set, a deleted model's snapshot is
  // removed with it. `auth` may be null (every call allowed; auth.h).
  ModelsService(core::ModelRegistry* registry, io::Snapshots* snapshots, Executor* executor,
                const Authenticator* auth = nullptr)
      : registry_(registry), snapshots_(snapshots), executor_(executor), auth_(auth) {}

  // Called with a model's name once DeleteModel has removed it (the training service ends
  // the rounds of its optimizers). Set before the server starts.
  void set_on_deleted(std::function<void(const std::string&)> on_deleted) {
    on_deleted_ = std::move(on_deleted);
  }

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
  grpc::ServerWriteReactor<v1::ReprChunk>* GetRepr(grpc::CallbackServerContext* context,
                                                   const v1::GetReprRequest* request) override;
  grpc::ServerUnaryReactor* SetMode(grpc::CallbackServerContext* context,
                                    const v1::SetModeRequest* request,
                                    v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* MoveModel(grpc::CallbackServerContext* context,
                                      const v1::MoveModelRequest* request,
                                      v1::ModelInfo* response) override;
  grpc::ServerUnaryReactor* GetSpec(grpc::CallbackServerContext* context,
                                    const v1::GetSpecRequest* request,
                                    v1::GetSpecResponse* response) override;

 private:
  core::ModelRegistry* registry_;  // not owned
  io::Snapshots* snapshots_;       // not owned; may be null
  Executor* executor_;             // not owned
  const Authenticator* auth_;      // not owned; may be null
  std::function<void(const std::string&)> on_deleted_;  // may be empty
};

}  // namespace paramd::service
