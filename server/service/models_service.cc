#include "server/service/models_service.h"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "base/status_macros.h"
#include "server/core/expanded_size.h"
#include "server/core/repr.h"
#include "server/core/spec.h"
#include "server/core/spec_export.h"
#include "server/core/traversal.h"
#include "server/service/answer_stream.h"
#include "server/service/page_token.h"
#include "server/service/status_util.h"
#include "server/service/unary_call.h"

namespace paramd::service {
namespace {

// Resolves a requested device and checks this daemon can hold tensors there.
absl::StatusOr<Device> UsableDevice(const std::string& text) {
  PARAMD_ASSIGN_OR_RETURN(Device device, ParseDevice(text.empty() ? "cpu" : text));
  PARAMD_RETURN_IF_ERROR(kernels::GetBackend(device).status());
  // "cuda" is the current device, which paramd never changes from 0; tensors then say
  // cuda:0, as PyTorch's do after .to("cuda").
  if (device.is_cuda() && device.index < 0) device.index = 0;
  return device;
}

}  // namespace

absl::Status ListModelsPage(const core::ModelRegistry& registry,
                            const v1::ListModelsRequest& request,
                            v1::ListModelsResponse* response) {
  if (request.page_size() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "page_size ", request.page_size(), " is negative; pass 0 for the default (",
        kDefaultListPageSize, ") or up to ", kMaxListPageSize));
  }
  const size_t limit = request.page_size() == 0
                           ? kDefaultListPageSize
                           : std::min(static_cast<size_t>(request.page_size()), kMaxListPageSize);
  std::optional<std::string> after;
  if (!request.page_token().empty()) {
    PARAMD_ASSIGN_OR_RETURN(after, DecodePageToken(request.page_token()));
  }
  const std::vector<std::shared_ptr<core::Model>> models = registry.List();  // by name
  auto it = models.begin();
  if (after) {
    it = std::upper_bound(models.begin(), models.end(), *after,
                          [](const std::string& name, const auto& model) {
                            return name < model->name();
                          });
  }
  size_t bytes = 0;
  for (; it != models.end() && static_cast<size_t>(response->models_size()) < limit; ++it) {
    v1::ModelInfo info = DescribeModel(**it);
    // The field's tag and length take at most 6 bytes more.
    const size_t size = info.ByteSizeLong() + 6;
    if (response->models_size() > 0 && bytes + size > kMaxListPageBytes) break;
    bytes += size;
    *response->add_models() = std::move(info);
  }
  if (it != models.end()) {
    response->set_next_page_token(EncodePageToken(response->models().rbegin()->name()));
  }
  return absl::OkStatus();
}

v1::ModelInfo DescribeModel(const core::Model& model) {
  v1::ModelInfo info;
  info.set_name(model.name());
  info.set_device(model.device().ToString());
  model.Read([&](const std::shared_ptr<core::Module>& root, uint64_t version) {
    info.set_version(version);
    info.set_training(root->training());
    info.set_type(root->type());
    std::string repr = core::Repr(*root);
    if (repr.size() > kMaxReprBytes) {
      repr.resize(Utf8Prefix(repr, kMaxReprBytes));
      info.set_repr_truncated(true);
    }
    info.set_repr(std::move(repr));
    // Counted, not listed: a model's keys can be many more than its modules and tensors.
    info.set_state_dict_entries(core::CountExpandedSize(*root).state_dict_keys);
    uint64_t numel = 0;
    const auto parameters = core::NamedParameters(root);
    for (const auto& [name, parameter] : parameters) numel += parameter->data().numel();
    info.set_parameter_count(parameters.size());
    info.set_parameter_numel(numel);
    info.set_nbytes(core::StorageBytes(root));
  });
  return info;
}

grpc::ServerUnaryReactor* ModelsService::CreateModel(grpc::CallbackServerContext* context,
                                                     const v1::CreateModelRequest* request,
                                                     v1::ModelInfo* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerUnaryReactor>(
          auth_, context, "/paramd.v1.Models/CreateModel")) {
    return refused;
  }
  return FinishOnExecutor(context, *executor_, "create model", request->name(), [=, this] {
    return Guard([&]() -> absl::Status {
      absl::Status status = [&]() -> absl::Status {
        PARAMD_RETURN_IF_ERROR(core::ValidateModelName(request->name()));
        PARAMD_ASSIGN_OR_RETURN(Device device, UsableDevice(request->device()));
        PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Module> root,
                                core::BuildModuleFromText(request->spec_json(), request->seed(),
                                                          registry_->max_state_dict_keys()));
        // Built and initialised on the host (the same draws as on the CPU), then moved.
        if (!device.is_cpu()) PARAMD_RETURN_IF_ERROR(core::MoveUnpublishedTree(root, device));
        auto model = std::make_shared<core::Model>(request->name(), std::move(root), device);
        // The answer is made (and bounded) before the model is visible, so a call that
        // fails leaves no model behind and one that succeeds can always say so.
        v1::ModelInfo info = service::DescribeModel(*model);
        PARAMD_RETURN_IF_ERROR(registry_->Add(model));
        *response = std::move(info);
        return absl::OkStatus();
      }();
      LogCall("create model", request->name(), status, /*log_success=*/true);
      return status;
    });
  });
}

grpc::ServerUnaryReactor* ModelsService::DeleteModel(grpc::CallbackServerContext* context,
                                                     const v1::DeleteModelRequest* request,
                                                     v1::DeleteModelResponse*) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerUnaryReactor>(
          auth_, context, "/paramd.v1.Models/DeleteModel")) {
    return refused;
  }
  // On a worker: removing the snapshot waits for a snapshot being written.
  return FinishOnExecutor(context, *executor_, "delete model", request->name(), [=, this] {
    return Guard([&]() -> absl::Status {
      absl::Status status = registry_->Remove(request->name(), IfVersion(request->if_version()));
      if (status.ok() && snapshots_ != nullptr) snapshots_->Forget(request->name());
      if (status.ok() && on_deleted_) on_deleted_(request->name());
      LogCall("delete model", request->name(), status, /*log_success=*/true);
      return status;
    });
  });
}

grpc::ServerUnaryReactor* ModelsService::ListModels(grpc::CallbackServerContext* context,
                                                    const v1::ListModelsRequest* request,
                                                    v1::ListModelsResponse* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerUnaryReactor>(
          auth_, context, "/paramd.v1.Models/ListModels")) {
    return refused;
  }
  return FinishInline(context, [&] {
    return Logged("list models", "", Guard([&]() -> absl::Status {
                    return ListModelsPage(*registry_, *request, response);
                  }));
  });
}

grpc::ServerWriteReactor<v1::ReprChunk>* ModelsService::GetRepr(
    grpc::CallbackServerContext* context, const v1::GetReprRequest* request) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerWriteReactor<v1::ReprChunk>>(
          auth_, context, "/paramd.v1.Models/GetRepr")) {
    return refused;
  }
  auto answer = [=, this] {
    StreamedAnswer<v1::ReprChunk> answer;
    answer.status = Guard([&]() -> absl::Status {
      PARAMD_ASSIGN_OR_RETURN(auto model, registry_->Get(request->name()));
      uint64_t version = 0;
      std::string repr;
      model->Read([&](const std::shared_ptr<core::Module>& root, uint64_t read_version) {
        version = read_version;
        repr = core::Repr(*root);
      });
      for (absl::string_view piece : TextPieces(repr)) {
        v1::ReprChunk& chunk = answer.messages.emplace_back();
        chunk.set_version(version);
        chunk.set_text(std::string(piece));
      }
      if (answer.messages.empty()) answer.messages.emplace_back().set_version(version);
      return absl::OkStatus();
    });
    if (!answer.status.ok()) answer.messages.clear();
    return answer;
  };
  return new AnswerStreamReactor<v1::ReprChunk>(context, *executor_, "get repr", request->name(),
                                                std::move(answer));
}

grpc::ServerUnaryReactor* ModelsService::DescribeModel(grpc::CallbackServerContext* context,
                                                       const v1::DescribeModelRequest* request,
                                                       v1::ModelInfo* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerUnaryReactor>(
          auth_, context, "/paramd.v1.Models/DescribeModel")) {
    return refused;
  }
  return FinishInline(context, [&] {
    return Logged("describe model", request->name(), Guard([&]() -> absl::Status {
                    PARAMD_ASSIGN_OR_RETURN(auto model, registry_->Get(request->name()));
                    *response = service::DescribeModel(*model);
                    return absl::OkStatus();
                  }));
  });
}

grpc::ServerUnaryReactor* ModelsService::SetMode(grpc::CallbackServerContext* context,
                                                 const v1::SetModeRequest* request,
                                                 v1::ModelInfo* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerUnaryReactor>(auth_, context,
                                                                    "/paramd.v1.Models/SetMode")) {
    return refused;
  }
  // On a worker: a write waits for the model's writer in progress (Note [Snapshot publication]).
  return FinishOnExecutor(context, *executor_, "set mode", request->name(), [=, this] {
    return Logged(
        "set mode", request->name(), Guard([&]() -> absl::Status {
          PARAMD_ASSIGN_OR_RETURN(auto model, registry_->Get(request->name()));
          PARAMD_RETURN_IF_ERROR(
              model->SetTraining(request->training(), IfVersion(request->if_version())).status());
          *response = service::DescribeModel(*model);
          return absl::OkStatus();
        }),
        /*log_success=*/true);
  });
}

grpc::ServerUnaryReactor* ModelsService::MoveModel(grpc::CallbackServerContext* context,
                                                   const v1::MoveModelRequest* request,
                                                   v1::ModelInfo* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerUnaryReactor>(
          auth_, context, "/paramd.v1.Models/MoveModel")) {
    return refused;
  }
  return FinishOnExecutor(context, *executor_, "move model", request->name(), [=, this] {
    return Logged(
        "move model", request->name(), Guard([&]() -> absl::Status {
          PARAMD_ASSIGN_OR_RETURN(auto model, registry_->Get(request->name()));
          PARAMD_ASSIGN_OR_RETURN(Device device, UsableDevice(request->device()));
          PARAMD_RETURN_IF_ERROR(model->MoveTo(device, IfVersion(request->if_version())).status());
          *response = service::DescribeModel(*model);
          return absl::OkStatus();
        }),
        /*log_success=*/true);
  });
}

grpc::ServerUnaryReactor* ModelsService::GetSpec(grpc::CallbackServerContext* context,
                                                 const v1::GetSpecRequest* request,
                                                 v1::GetSpecResponse* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerUnaryReactor>(
          auth_, context, "/paramd.v1.Models/GetSpec")) {
    return refused;
  }
  return FinishInline(context, [&] {
    return Logged("get spec", request->name(), Guard([&]() -> absl::Status {
                    PARAMD_ASSIGN_OR_RETURN(auto model, registry_->Get(request->name()));
                    model->Read([&](const std::shared_ptr<core::Module>& root, uint64_t version) {
                      response->set_spec_json(core::ExportSpec(root).dump());
                      response->set_version(version);
                    });
                    return absl::OkStatus();
                  }));
  });
}

}  // namespace paramd::service
