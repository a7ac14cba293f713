#include "server/service/parameters_service.h"

#include "base/text.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "server/common/log.h"
#include "base/status_macros.h"
#include "server/core/expanded_size.h"
#include "server/core/traversal.h"
#include "server/service/answer_stream.h"
#include "server/service/raw_methods.h"
#include "server/service/status_util.h"
#include "server/service/tensor_codec.h"
#include "server/service/tensor_stream.h"
#include "server/service/unary_call.h"

namespace paramd::service {
namespace {

// Compile-time proof that RawMethods lists exactly the raw methods of ParametersServiceBase.
template <template <class> class RawMethod>
using IsRaw = IsRawMethod<ParametersService, RawMethod>;
static_assert(IsRaw<v1::Parameters::WithRawCallbackMethod_StateDict>::value &&
                  IsRaw<v1::Parameters::WithRawCallbackMethod_NamedParameters>::value &&
                  IsRaw<v1::Parameters::WithRawCallbackMethod_NamedBuffers>::value &&
                  IsRaw<v1::Parameters::WithRawCallbackMethod_GetTensor>::value &&
                  IsRaw<v1::Parameters::WithRawCallbackMethod_SetTensor>::value &&
                  IsRaw<v1::Parameters::WithRawCallbackMethod_SetTensors>::value &&
                  IsRaw<v1::Parameters::WithRawCallbackMethod_RegisterParameter>::value &&
                  IsRaw<v1::Parameters::WithRawCallbackMethod_RegisterBuffer>::value &&
                  IsRaw<v1::Parameters::WithRawCallbackMethod_LoadStateDict>::value,
              "a method listed in kRawMethods is no longer raw: update kRawMethods");
static_assert(!IsRaw<v1::Parameters::WithRawCallbackMethod_NamedModules>::value &&
                  !IsRaw<v1::Parameters::WithRawCallbackMethod_TieParameters>::value,
              "a Parameters method became raw: add it to kRawMethods");

constexpr absl::string_view kRawMethods[] = {
    "/paramd.v1.Parameters/StateDict",        "/paramd.v1.Parameters/NamedParameters",
    "/paramd.v1.Parameters/NamedBuffers",     "/paramd.v1.Parameters/GetTensor",
    "/paramd.v1.Parameters/SetTensor",        "/paramd.v1.Parameters/SetTensors",
    "/paramd.v1.Parameters/RegisterParameter", "/paramd.v1.Parameters/RegisterBuffer",
    "/paramd.v1.Parameters/LoadStateDict",
};

// What a read stream sends: a start frame and the tensors of one pinned version.
struct PreparedRead {
  v1::StreamStart start;
  std::vector<OutgoingTensor> tensors;
  bool with_data = true;
  v1::DType wire_dtype = v1::DTYPE_UNSPECIFIED;
};

// Parses the request, pins the read with `prepare`, and streams it; any failure before
// the first byte finishes the stream with that status.
template <typename Request, typename Prepare>
grpc::ServerWriteReactor<grpc::ByteBuffer>* StreamRead(absl::string_view action,
                                                       const grpc::ByteBuffer* raw,
                                                       Prepare&& prepare) {
  absl::StatusOr<PreparedRead> read;
  Request request;
  const grpc::Status guarded = Guard([&]() -> absl::Status {
    PARAMD_RETURN_IF_ERROR(Parse(*raw, &request));
    read = prepare(request);
    return read.status();
  });
  LogCall(action, request.model(), FromGrpcStatus(guarded));
  if (!guarded.ok()) {
    return new TensorStreamReactor(
        absl::Status(static_cast<absl::StatusCode>(guarded.error_code()), guarded.error_message()));
  }
  return new TensorStreamReactor(std::move(read->start), std::move(read->tensors), read->with_data,
                                 read->wire_dtype);
}

// INVALID_ARGUMENT when changing `module` (at `module_path` of `root`) into `planned` would
// take the model past --max-state-dict-keys: a tensor added to a module shared along many
// paths adds a key per path (Note [Expanded size]). Otherwise charges `model` for its
// structure as planned (Note [Structure memory]): RESOURCE_EXHAUSTED when that does not fit.
// The last fallible step of a structure change's prepare.
absl::Status CheckPlanned(core::Model& model, const core::Module& root, const core::Module& module,
                          const core::Module& planned, absl::string_view action,
                          absl::string_view name, absl::string_view module_path,
                          uint64_t max_state_dict_keys) {
  const core::ExpandedSize size = core::CountExpandedSize(root, &module, &planned);
  PARAMD_RETURN_IF_ERROR(core::CheckExpandedSize(
      size, max_state_dict_keys,
      absl::StrCat(action, " ", QuoteName(name), " on ",
                   module_path.empty() ? "the root module" : QuoteName(module_path),
                   " would expand the model to")));
  return model.ChargeStructure(size.structure_bytes);
}

bool RequiresGrad(const core::TensorSlot& slot) {
  const auto* parameter = dynamic_cast<const core::Parameter*>(&slot);
  return parameter != nullptr && parameter->requires_grad();
}

}  // namespace

grpc::ServerWriteReactor<grpc::ByteBuffer>* ParametersService::StateDict(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerWriteReactor<grpc::ByteBuffer>>(
          auth_, context, "/paramd.v1.Parameters/StateDict")) {
    return refused;
  }
  return StreamRead<v1::StateDictRequest>(
      "state_dict", raw, [&](const v1::StateDictRequest& request) -> absl::StatusOr<PreparedRead> {
        PARAMD_ASSIGN_OR_RETURN(auto model, registry_->Get(request.model()));
        PreparedRead read;
        read.start.set_model(model->name());
        read.with_data = !request.metadata_only();
        read.wire_dtype = request.wire_dtype();
        model->Read([&](const std::shared_ptr<core::Module>& root, uint64_t version) {
          read.start.set_version(version);
          core::StateDict sd = core::GetStateDict(*root, request.prefix());
          for (const auto& [path, module_version] : sd.metadata) {
            (*read.start.mutable_metadata())[path] = module_version;
            v1::ModuleVersion* ordered = read.start.add_ordered_metadata();
            ordered->set_path(path);
            ordered->set_version(module_version);
          }
          // Names of one tensor object: the first lists all the others, each later one
          // names the first, so the lists grow with the entries (a tensor reached by n
          // paths would otherwise list n * (n - 1) names).
          absl::flat_hash_map<const core::TensorSlot*, size_t> first;
          read.tensors.reserve(sd.entries.size());
          for (auto& entry : sd.entries) {
            OutgoingTensor item{entry.name,
                                entry.tensor,
                                entry.is_parameter,
                                RequiresGrad(*entry.slot),
                                entry.slot->version(),
                                {}};
            auto [it, inserted] = first.try_emplace(entry.slot.get(), read.tensors.size());
            if (!inserted) {
              OutgoingTensor& head = read.tensors[it->second];
              head.tied_with.push_back(entry.name);
              item.tied_with.push_back(head.name);
              // The first name of the object carries its bytes; later ones point at it.
              if (request.aliases()) item.alias_of = head.name;
            }
            read.tensors.push_back(std::move(item));
          }
        });
        return read;
      });
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* ParametersService::NamedTensors(
    const grpc::ByteBuffer* raw, bool parameters) {
  return StreamRead<v1::NamedTensorsRequest>(
      parameters ? "named_parameters" : "named_buffers", raw,
      [&](const v1::NamedTensorsRequest& request) -> absl::StatusOr<PreparedRead> {
        PARAMD_ASSIGN_OR_RETURN(auto model, registry_->Get(request.model()));
        PreparedRead read;
        read.start.set_model(model->name());
        read.with_data = request.with_data();
        read.wire_dtype = request.wire_dtype();
        model->Read([&](const std::shared_ptr<core::Module>& root, uint64_t version) {
          read.start.set_version(version);
          const bool recurse = !request.no_recurse();
          const bool dedup = !request.keep_duplicates();
          auto add = [&](const std::string& name, const core::TensorSlot& slot, bool is_parameter) {
            read.tensors.push_back(
                {name, slot.data(), is_parameter, RequiresGrad(slot), slot.version(), {}});
          };
          if (parameters) {
            for (const auto& [name, p] :
                 core::NamedParameters(root, request.prefix(), recurse, dedup)) {
              add(name, *p, true);
            }
          } else {
            for (const auto& [name, b] :
                 core::NamedBuffers(root, request.prefix(), recurse, dedup)) {
              add(name, *b, false);
            }
          }
        });
        return read;
      });
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* ParametersService::NamedParameters(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerWriteReactor<grpc::ByteBuffer>>(
          auth_, context, "/paramd.v1.Parameters/NamedParameters")) {
    return refused;
  }
  return NamedTensors(raw, /*parameters=*/true);
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* ParametersService::NamedBuffers(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerWriteReactor<grpc::ByteBuffer>>(
          auth_, context, "/paramd.v1.Parameters/NamedBuffers")) {
    return refused;
  }
  return NamedTensors(raw, /*parameters=*/false);
}

namespace {

// The answer of NamedModules for one version of `root` (parameters.proto's
// NamedModulesResponse): split into messages of at most kMaxListBytesPerMessage of names, a
// module's lists continued in the next message under an entry of the same name.
absl::StatusOr<std::vector<v1::NamedModulesResponse>> NamedModulesAnswer(
    const std::shared_ptr<core::Module>& root, uint64_t version,
    const v1::NamedModulesRequest& request, uint64_t max_state_dict_keys) {
  // Every path of each module object, to report sharing even when de-duplicating (as many
  // as the model has module paths, which its limit bounds).
  absl::flat_hash_map<const core::Module*, std::vector<std::string>> paths;
  for (const auto& [name, module] : core::NamedModules(root, request.prefix(), false)) {
    paths[module.get()].push_back(name);
  }
  if (request.keep_duplicates()) {
    // Each of a module's n paths then names the n - 1 others.
    uint64_t listed = 0;
    for (const auto& [module, names] : paths) {
      const uint64_t n = names.size();
      listed = listed > UINT64_MAX - n * (n - 1) ? UINT64_MAX : listed + n * (n - 1);
    }
    if (listed > max_state_dict_keys) {
      return absl::InvalidArgumentError(absl::StrCat(
          "NamedModules with keep_duplicates would list ", listed,
          " shared_with names (each path of a shared module names all its other paths); the "
          "limit is ",
          max_state_dict_keys,
          " (--max-state-dict-keys); without keep_duplicates each module is listed once, with "
          "all its other paths"));
    }
  }
  v1::NamedModulesResponse head;
  head.set_version(version);
  MessageSplitter<v1::NamedModulesResponse> out(std::move(head));
  for (const auto& [name, module] :
       core::NamedModules(root, request.prefix(), !request.keep_duplicates())) {
    v1::NamedModulesResponse* message = nullptr;
    v1::ModuleEntry* entry = nullptr;
    // The entry an item of `bytes` goes into: this module's entry in the message with room.
    auto room = [&](size_t bytes) {
      v1::NamedModulesResponse* with_room = out.Room(bytes);
      if (with_room != message) {
        message = with_room;
        entry = message->add_modules();
        entry->set_name(name);
        entry->set_type(module->type());
      }
      return entry;
    };
    // A field's tag and length take at most 6 bytes more than its text.
    room(name.size() + module->type().size() + 18);
    for (const auto& [p, value] : module->parameters()) room(p.size() + 6)->add_parameters(p);
    for (const auto& [b, value] : module->buffers()) room(b.size() + 6)->add_buffers(b);
    for (const std::string& other : paths[module.get()]) {
      if (other != name) room(other.size() + 6)->add_shared_with(other);
    }
  }
  return std::move(out).Take();
}

}  // namespace

grpc::ServerWriteReactor<v1::NamedModulesResponse>* ParametersService::NamedModules(
    grpc::CallbackServerContext* context, const v1::NamedModulesRequest* request) {
  using Reactor = grpc::ServerWriteReactor<v1::NamedModulesResponse>;
  if (auto* refused =
          RefuseUnlessAllowed<Reactor>(auth_, context, "/paramd.v1.Parameters/NamedModules")) {
    return refused;
  }
  auto answer = [=, this] {
    StreamedAnswer<v1::NamedModulesResponse> answer;
    answer.status = Guard([&]() -> absl::Status {
      PARAMD_ASSIGN_OR_RETURN(auto model, registry_->Get(request->model()));
      return model->Read(
          [&](const std::shared_ptr<core::Module>& root, uint64_t version) -> absl::Status {
            PARAMD_ASSIGN_OR_RETURN(answer.messages,
                                    NamedModulesAnswer(root, version, *request,
                                                       registry_->max_state_dict_keys()));
            return absl::OkStatus();
          });
    });
    if (!answer.status.ok()) answer.messages.clear();
    return answer;
  };
  return new AnswerStreamReactor<v1::NamedModulesResponse>(
      context, *executor_, "named_modules", request->model(), std::move(answer));
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* ParametersService::GetTensor(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* raw) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerWriteReactor<grpc::ByteBuffer>>(
          auth_, context, "/paramd.v1.Parameters/GetTensor")) {
    return refused;
  }
  return StreamRead<v1::GetTensorRequest>(
      "get tensor", raw, [&](const v1::GetTensorRequest& request) -> absl::StatusOr<PreparedRead> {
        PARAMD_ASSIGN_OR_RETURN(auto model, registry_->Get(request.model()));
        PreparedRead read;
        read.start.set_model(model->name());
        read.with_data = !request.metadata_only();
        read.wire_dtype = request.wire_dtype();
        // Find the slot and copy its tensor out under one read, so both belong to the
        // version announced in `start`.
        absl::StatusOr<OutgoingTensor> item =
            model->Read([&](const std::shared_ptr<core::Module>& root,
                            uint64_t version) -> absl::StatusOr<OutgoingTensor> {
              read.start.set_version(version);
              PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::TensorSlot> slot,
                                      core::FindTensorSlot(root, request.name()));
              return OutgoingTensor{request.name(),
                                    slot->data(),
                                    dynamic_cast<const core::Parameter*>(slot.get()) != nullptr,
                                    RequiresGrad(*slot),
                                    slot->version(),
                                    {}};
            });
        PARAMD_RETURN_IF_ERROR(item.status());
        if (auto region = FromProtoRegion(request.region())) {
          PARAMD_ASSIGN_OR_RETURN(item->tensor, item->tensor.Slice(*region));
        }
        read.tensors.push_back(*std::move(item));
        return read;
      });
}

absl::StatusOr<grpc::ByteBuffer> ParametersService::ApplySetTensors(IncomingWrite& write,
                                                                    bool single) {
  absl::StatusOr<uint64_t> version = [&]() -> absl::StatusOr<uint64_t> {
    if (single && write.tensors.size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat("SetTensor takes exactly one tensor, got ",
                                                     write.tensors.size(), "; use SetTensors"));
    }
    PARAMD_ASSIGN_OR_RETURN(auto model, registry_->Get(write.options.model()));
    const std::optional<uint64_t> if_version = IfVersion(write.options.if_version());
    // An empty batch answers the current version without writing (Model::SetTensors).
    std::vector<core::Model::TensorWrite> writes;
    for (auto& [header, tensor] : write.tensors) {
      writes.push_back({header.name(), FromProtoRegion(header.region()), std::move(tensor)});
    }
    return model->SetTensors(writes, if_version);
  }();
  PARAMD_RETURN_IF_ERROR(version.status());
  v1::WriteResponse response;
  response.set_version(*version);
  return Serialize(response);
}

absl::Status ParametersService::CommitEachTensor(IncomingWrite& write,
                                                CommittedPrefix& committed) {
  PARAMD_ASSIGN_OR_RETURN(auto model, registry_->Get(write.options.model()));
  for (auto& [header, tensor] : write.tensors) {
    // The write's if_version guards its first tensor; each later one must find the version
    // the one before it made, so a concurrent writer stops the write (ABORTED) instead of
    // interleaving with it.
    std::optional<uint64_t> if_version = IfVersion(write.options.if_version());
    if (if_version && committed.count > 0) if_version = committed.version;
    PARAMD_ASSIGN_OR_RETURN(
        const uint64_t version,
        model->SetTensors({{header.name(), FromProtoRegion(header.region()), std::move(tensor)}},
                          if_version));
    ++committed.count;
    committed.last_name = header.name();
    committed.version = version;
  }
  return absl::OkStatus();
}

grpc::ServerReadReactor<grpc::ByteBuffer>* ParametersService::SetTensor(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerReadReactor<grpc::ByteBuffer>>(
          auth_, context, "/paramd.v1.Parameters/SetTensor")) {
    return refused;
  }
  return new WriteStreamReactor(
      context, executor_, watchdog_, response, "set tensor",
      [this](IncomingWrite& write) { return ApplySetTensors(write, /*single=*/true); }, {},
      /*single=*/true);
}

grpc::ServerReadReactor<grpc::ByteBuffer>* ParametersService::SetTensors(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerReadReactor<grpc::ByteBuffer>>(
          auth_, context, "/paramd.v1.Parameters/SetTensors")) {
    return refused;
  }
  return new WriteStreamReactor(
      context, executor_, watchdog_, response, "set tensors",
      [this](IncomingWrite& write) { return ApplySetTensors(write, /*single=*/false); },
      [this](IncomingWrite& write, CommittedPrefix& committed) {
        return CommitEachTensor(write, committed);
      });
}

absl::StatusOr<grpc::ByteBuffer> ParametersService::ApplyRegister(IncomingWrite& write,
                                                                  bool parameter) {
  absl::StatusOr<uint64_t> version = [&]() -> absl::StatusOr<uint64_t> {
    const v1::WriteOptions& options = write.options;
    const size_t expected = options.none() ? 0 : 1;
    if (write.tensors.size() != expected) {
      return absl::InvalidArgumentError(
          absl::StrCat(options.none() ? "a None registration carries no tensor"
                                      : "a registration carries exactly one tensor (or none=true)",
                       "; got ", write.tensors.size()));
    }
    if (!options.none() && write.tensors[0].first.region().ranges_size() > 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a registration takes a whole tensor, but the header of ", QuoteName(options.name()),
          " has a region; drop the region (SetTensor writes part of a registered tensor)"));
    }
    PARAMD_ASSIGN_OR_RETURN(auto model, registry_->Get(options.model()));
    core::Tensor tensor;
    bool requires_grad = false;
    if (!options.none()) {
      tensor = write.tensors[0].second;
      requires_grad = write.tensors[0].first.meta().requires_grad();
      if (parameter && requires_grad && !IsFloatingPoint(tensor.dtype())) {
        return absl::InvalidArgumentError(
            "Only Tensors of floating point and complex dtype can require gradients");
      }
    }
    return model->Write(
        IfVersion(options.if_version()),
        [&](const std::shared_ptr<core::Module>& root) -> absl::StatusOr<core::Model::Commit> {
          PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Module> module,
                                  core::GetSubmodule(root, options.module_path()));
          const std::string name = options.name();
          if (parameter) {
            PARAMD_RETURN_IF_ERROR(module->CheckRegisterParameter(name));
            std::shared_ptr<core::Parameter> value;
            if (tensor.defined()) {
              value = std::make_shared<core::Parameter>(tensor, requires_grad);
            }
            core::Module planned = *module;
            (void)planned.RegisterParameter(name, value);
            PARAMD_RETURN_IF_ERROR(
                CheckPlanned(*model, *root, *module, planned, "registering parameter", name,
                             options.module_path(), registry_->max_state_dict_keys()));
            return core::Model::Commit([module, name, value](uint64_t v) {
              if (value) value->set_data(value->data(), v);
              (void)module->RegisterParameter(name, value);
            });
          }
          PARAMD_RETURN_IF_ERROR(module->CheckRegisterBuffer(name));
          std::shared_ptr<core::Buffer> value;
          if (tensor.defined()) value = std::make_shared<core::Buffer>(tensor);
          const bool persistent = !options.non_persistent();
          core::Module planned = *module;
          (void)planned.RegisterBuffer(name, value, persistent);
          PARAMD_RETURN_IF_ERROR(CheckPlanned(*model, *root, *module, planned, "registering buffer",
                                              name, options.module_path(),
                                              registry_->max_state_dict_keys()));
          return core::Model::Commit([module, name, value, persistent](uint64_t v) {
            if (value) value->set_data(value->data(), v);
            (void)module->RegisterBuffer(name, value, persistent);
          });
        });
  }();
  if (version.ok()) {
    LogCall(parameter ? "register parameter" : "register buffer", write.options.model(),
            version.status(), /*log_success=*/true);
  }
  PARAMD_RETURN_IF_ERROR(version.status());
  v1::WriteResponse response;
  response.set_version(*version);
  return Serialize(response);
}

grpc::ServerReadReactor<grpc::ByteBuffer>* ParametersService::RegisterParameter(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerReadReactor<grpc::ByteBuffer>>(
          auth_, context, "/paramd.v1.Parameters/RegisterParameter")) {
    return refused;
  }
  return new WriteStreamReactor(
      context, executor_, watchdog_, response, "register parameter",
      [this](IncomingWrite& write) { return ApplyRegister(write, /*parameter=*/true); }, {},
      /*single=*/true);
}

grpc::ServerReadReactor<grpc::ByteBuffer>* ParametersService::RegisterBuffer(
    grpc::CallbackServerContext* context, grpc::ByteBuffer* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerReadReactor<grpc::ByteBuffer>>(
          auth_, context, "/paramd.v1.Parameters/RegisterBuffer")) {
    return refused;
  }
  return new WriteStreamReactor(
      context, executor_, watchdog_, response, "register buffer",
      [this](IncomingWrite& write) { return ApplyRegister(write, /*parameter=*/false); }, {},
      /*single=*/true);
}

grpc::ServerUnaryReactor* ParametersService::TieParameters(grpc::CallbackServerContext* context,
                                                           const v1::TieParametersRequest* request,
                                                           v1::WriteResponse* response) {
  if (auto* refused = RefuseUnlessAllowed<grpc::ServerUnaryReactor>(
          auth_, context, "/paramd.v1.Parameters/TieParameters")) {
    return refused;
  }
  // On a worker: a write waits for the model's writer in progress (Note [Snapshot publication]).
  return FinishOnExecutor(context, *executor_, "tie parameters", request->model(), [=, this] {
    return Logged(
        "tie parameters", request->model(), Guard([&]() -> absl::Status {
          PARAMD_ASSIGN_OR_RETURN(auto model, registry_->Get(request->model()));
          const std::string& name = request->name();
          const size_t dot = name.rfind('.');
          const std::string module_path = dot == std::string::npos ? "" : name.substr(0, dot);
          const std::string slot = dot == std::string::npos ? name : name.substr(dot + 1);
          PARAMD_ASSIGN_OR_RETURN(
              uint64_t version,
              model->Write(IfVersion(request->if_version()),
                           [&](const std::shared_ptr<core::Module>& root)
                               -> absl::StatusOr<core::Model::Commit> {
                             PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Parameter> target,
                                                     core::GetParameter(root, request->target()));
                             PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Module> module,
                                                     core::GetSubmodule(root, module_path));
                             PARAMD_RETURN_IF_ERROR(module->CheckAssignParameter(slot));
                             const auto* existing = module->parameters().Find(slot);
                             if (existing != nullptr && *existing != nullptr &&
                                 (*existing)->data().shape() != target->data().shape()) {
                               return absl::InvalidArgumentError(
                                   absl::StrCat("cannot tie ", QuoteName(name), " of shape ",
                                                core::ShapeString((*existing)->data().shape()),
                                                " to ", QuoteName(request->target()), " of shape ",
                                                core::ShapeString(target->data().shape())));
                             }
                             core::Module planned = *module;
                             (void)planned.AssignParameter(slot, target);
                             PARAMD_RETURN_IF_ERROR(CheckPlanned(*model, *root, *module, planned,
                                                                 "tying", slot, module_path,
                                                                 registry_->max_state_dict_keys()));
                             return core::Model::Commit([module, slot, target](uint64_t) {
                               (void)module->AssignParameter(slot, target);
                             });
                           }));
          response->set_version(version);
          return absl::OkStatus();
        }),
        /*log_success=*/true);
  });
}

WriteAnswerStreamReactor::Answer ParametersService::ApplyLoadStateDict(
    IncomingWrite& write, std::function<bool()> cancelled) {
  v1::LoadStateDictResponse head;
  core::IncompatibleKeys keys;
  const absl::Status status = [&]() -> absl::Status {
    PARAMD_ASSIGN_OR_RETURN(auto model, registry_->Get(write.options.model()));
    core::StateDictInput input;
    for (auto& [header, tensor] : write.tensors) {
      input.entries.emplace_back(header.name(), std::move(tensor));
    }
    if (write.options.has_metadata()) {
      input.metadata.emplace();
      for (const auto& [path, version] : write.options.metadata())
        (*input.metadata)[path] = version;
    }
    core::LoadOptions options{.strict = !write.options.non_strict(),
                              .assign = write.options.assign(),
                              .cancelled = std::move(cancelled),
                              .found = &keys};
    PARAMD_ASSIGN_OR_RETURN(
        auto loaded, model->LoadStateDict(input, options, IfVersion(write.options.if_version())));
    head.set_version(loaded.first);
    keys = std::move(loaded.second);
    return absl::OkStatus();
  }();
  StreamedAnswer<v1::LoadStateDictResponse> answer = LoadAnswer(head, keys, status);
  WriteAnswerStreamReactor::Answer serialized{{}, answer.status};
  serialized.messages.reserve(answer.messages.size());
  for (const auto& message : answer.messages) serialized.messages.push_back(Serialize(message));
  return serialized;
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* ParametersService::LoadStateDict(
    grpc::CallbackServerContext* context) {
  if (auto* refused =
          RefuseUnlessAllowed<grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>>(
              auth_, context, "/paramd.v1.Parameters/LoadStateDict")) {
    return refused;
  }
  return new WriteAnswerStreamReactor(
      context, executor_, watchdog_, "load state_dict", [this, context](IncomingWrite& write) {
        return ApplyLoadStateDict(write, [context] { return context->IsCancelled(); });
      });
}

absl::Span<const absl::string_view> ParametersService::RawMethods() { return kRawMethods; }

}  // namespace paramd::service
