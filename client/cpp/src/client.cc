#include "paramd/client.h"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/cpp/src/client_impl.h"
#include "grpc/grpc.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "base/status_macros.h"

namespace paramd::client {



namespace {

ModelInfo FromProto(const v1::ModelInfo& info) {
  ModelInfo out;
  out.name = info.name();
  out.version = info.version();
  out.device = info.device();
  out.training = info.training();
  out.type = info.type();
  out.repr = info.repr();
  out.repr_truncated = info.repr_truncated();
  out.state_dict_entries = info.state_dict_entries();
  out.parameter_count = info.parameter_count();
  out.parameter_numel = info.parameter_numel();
  out.nbytes = info.nbytes();
  return out;
}

v1::DType WireDType(const std::optional<DType>& dtype) {
  return dtype ? internal::ToProtoDType(*dtype) : v1::DTYPE_UNSPECIFIED;
}

}  // namespace

// --- Client ---

// The paths are those of the generated stub (service paramd.v1.Parameters); gRPC keeps the
// pointers, hence literals.
WriteMethods::WriteMethods(const std::shared_ptr<grpc::ChannelInterface>& channel)
    : set_tensor("/paramd.v1.Parameters/SetTensor", grpc::internal::RpcMethod::CLIENT_STREAMING,
                 channel),
      set_tensors("/paramd.v1.Parameters/SetTensors", grpc::internal::RpcMethod::CLIENT_STREAMING,
                  channel),
      register_parameter("/paramd.v1.Parameters/RegisterParameter",
                         grpc::internal::RpcMethod::CLIENT_STREAMING, channel),
      register_buffer("/paramd.v1.Parameters/RegisterBuffer",
                      grpc::internal::RpcMethod::CLIENT_STREAMING, channel),
      load_state_dict("/paramd.v1.Parameters/LoadStateDict",
                      grpc::internal::RpcMethod::BIDI_STREAMING, channel) {}

ReadMethods::ReadMethods(const std::shared_ptr<grpc::ChannelInterface>& channel)
    : state_dict("/paramd.v1.Parameters/StateDict", grpc::internal::RpcMethod::SERVER_STREAMING,
                 channel),
      named_parameters("/paramd.v1.Parameters/NamedParameters",
                       grpc::internal::RpcMethod::SERVER_STREAMING, channel),
      named_buffers("/paramd.v1.Parameters/NamedBuffers",
                    grpc::internal::RpcMethod::SERVER_STREAMING, channel),
      get_tensor("/paramd.v1.Parameters/GetTensor", grpc::internal::RpcMethod::SERVER_STREAMING,
                 channel) {}

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const std::string& address,
                                                        const ConnectOptions& options) {
  if (address.empty()) {
    return absl::InvalidArgumentError(
        "no server address given; pass host:port, e.g. 127.0.0.1:50051");
  }
  auto impl = std::make_unique<Impl>();
  impl->address = address;
  impl->options = options;
  grpc::ChannelArguments args;
  // Tensors arrive in chunks; only a large repr or listing needs room beyond 4 MiB.
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  if (options.keepalive_time.count() > 0) {
    // Pings only while calls are in flight, each answered ping resetting the clock; without
    // the last two, gRPC would stop pinging after two pings with no data in between (or
    // space them five minutes apart), so a long call on a frozen server would hang again.
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(options.keepalive_time.count()));
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                static_cast<int>(std::max<int64_t>(options.keepalive_timeout.count(), 1)));
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    args.SetInt(GRPC_ARG_HTTP2_MIN_SENT_PING_INTERVAL_WITHOUT_DATA_MS,
                static_cast<int>(options.keepalive_time.count()));
  }
  if (options.receive_window_bytes > 0) {
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES,
                static_cast<int>(std::min<size_t>(options.receive_window_bytes, INT32_MAX)));
  }
  const bool tls = options.tls || !options.tls_root_ca_pem.empty() ||
                   !options.tls_cert_pem.empty() || !options.tls_key_pem.empty();
  if (options.tls_cert_pem.empty() != options.tls_key_pem.empty()) {
    return absl::InvalidArgumentError(
        "a client certificate needs its key and a key its certificate (tls_cert_pem and "
        "tls_key_pem go together)");
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials =
      tls ? grpc::SslCredentials({.pem_root_certs = options.tls_root_ca_pem,
                                  .pem_private_key = options.tls_key_pem,
                                  .pem_cert_chain = options.tls_cert_pem})
          : grpc::InsecureChannelCredentials();
  impl->channel = grpc::CreateCustomChannel(address, credentials, args);
  if (impl->channel == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("cannot make a channel to '", address, "'"));
  }
  impl->models = v1::Models::NewStub(impl->channel);
  impl->parameters = v1::Parameters::NewStub(impl->channel);
  impl->health = grpc::health::v1::Health::NewStub(impl->channel);
  impl->checkpoints = v1::Checkpoints::NewStub(impl->channel);
  impl->inference = v1::Inference::NewStub(impl->channel);
  impl->training = v1::Training::NewStub(impl->channel);
  impl->writes = std::make_unique<WriteMethods>(impl->channel);
  impl->reads = std::make_unique<ReadMethods>(impl->channel);
  return std::unique_ptr<Client>(new Client(std::move(impl)));
}

const std::string& Client::address() const { return impl_->address; }

absl::Status Client::Health() const {
  grpc::health::v1::HealthCheckRequest request;  // service "": the whole server
  grpc::health::v1::HealthCheckResponse response;
  PARAMD_RETURN_IF_ERROR(impl_->Unary([&](grpc::ClientContext* context) {
    return impl_->health->Check(context, request, &response);
  }));
  if (response.status() == grpc::health::v1::HealthCheckResponse::SERVING) {
    return absl::OkStatus();
  }
  return absl::UnavailableError(
      absl::StrCat("paramd at ", impl_->address, " reports ",
                   grpc::health::v1::HealthCheckResponse::ServingStatus_Name(response.status())));
}

absl::StatusOr<ModelInfo> Client::CreateModel(const std::string& name, const std::string& spec_json,
                                              const std::string& device, uint64_t seed) const {
  v1::CreateModelRequest request;
  request.set_name(name);
  request.set_spec_json(spec_json);
  request.set_device(device);
  request.set_seed(seed);
  v1::ModelInfo response;
  PARAMD_RETURN_IF_ERROR(impl_->Unary([&](grpc::ClientContext* context) {
    return impl_->models->CreateModel(context, request, &response);
  }));
  return FromProto(response);
}

absl::Status Client::DeleteModel(const std::string& name, uint64_t if_version) const {
  v1::DeleteModelRequest request;
  request.set_name(name);
  request.set_if_version(if_version);
  v1::DeleteModelResponse response;
  return impl_->Unary([&](grpc::ClientContext* context) {
    return impl_->models->DeleteModel(context, request, &response);
  });
}

absl::StatusOr<std::vector<ModelInfo>> Client::ListModels() const {
  std::vector<ModelInfo> models;
  v1::ListModelsRequest request;
  do {
    v1::ListModelsResponse response;
    PARAMD_RETURN_IF_ERROR(impl_->Unary([&](grpc::ClientContext* context) {
      return impl_->models->ListModels(context, request, &response);
    }));
    for (const v1::ModelInfo& info : response.models()) models.push_back(FromProto(info));
    request.set_page_token(response.next_page_token());
  } while (!request.page_token().empty());
  return models;
}

absl::StatusOr<std::string> Client::GetRepr(const std::string& name) const {
  v1::GetReprRequest request;
  request.set_name(name);
  grpc::ClientContext context;
  impl_->PrepareStream(&context);
  std::unique_ptr<grpc::ClientReader<v1::ReprChunk>> reader =
      impl_->models->GetRepr(&context, request);
  std::string repr;
  v1::ReprChunk chunk;
  while (reader->Read(&chunk)) repr += chunk.text();
  PARAMD_RETURN_IF_ERROR(FromGrpcStatus(reader->Finish(), context));
  return repr;
}

absl::Status Client::CompleteRepr(ModelInfo& info) const {
  if (!info.repr_truncated) return absl::OkStatus();
  PARAMD_ASSIGN_OR_RETURN(info.repr, GetRepr(info.name));
  info.repr_truncated = false;
  return absl::OkStatus();
}

absl::StatusOr<ModelInfo> Client::DescribeModel(const std::string& name) const {
  v1::DescribeModelRequest request;
  request.set_name(name);
  v1::ModelInfo response;
  PARAMD_RETURN_IF_ERROR(impl_->Unary([&](grpc::ClientContext* context) {
    return impl_->models->DescribeModel(context, request, &response);
  }));
  ModelInfo info = FromProto(response);
  PARAMD_RETURN_IF_ERROR(CompleteRepr(info));
  return info;
}

absl::StatusOr<ModelSpec> Client::GetSpec(const std::string& name) const {
  v1::GetSpecRequest request;
  request.set_name(name);
  v1::GetSpecResponse response;
  PARAMD_RETURN_IF_ERROR(impl_->Unary([&](grpc::ClientContext* context) {
    return impl_->models->GetSpec(context, request, &response);
  }));
  return ModelSpec{response.spec_json(), response.version()};
}

// --- RemoteModel: reads ---

absl::StatusOr<StateDictResult> RemoteModel::StateDict(const StateDictOptions& options) const {
  StateDictResult result;
  PARAMD_RETURN_IF_ERROR(StateDictInto(result, options));
  return result;
}

absl::Status RemoteModel::StateDictInto(StateDictResult& result,
                                        const StateDictOptions& options) const {
  const Client::Impl& impl = *client_->impl_;
  v1::StateDictRequest request;
  request.set_model(name_);
  request.set_prefix(options.prefix);
  request.set_wire_dtype(WireDType(options.wire_dtype));
  request.set_metadata_only(options.metadata_only);
  TensorStreamReceiver receiver(!options.metadata_only, options.progress);
  receiver.Recycle(std::move(result.entries));
  result = StateDictResult();
  PARAMD_RETURN_IF_ERROR(impl.Read(impl.reads->state_dict, request, &receiver));
  result.version = receiver.start().version();
  result.entries = std::move(receiver.entries());
  for (const auto& [path, module_version] : receiver.start().metadata()) {
    result.metadata.emplace(path, module_version);
  }
  for (const v1::ModuleVersion& entry : receiver.start().ordered_metadata()) {
    result.ordered_metadata.emplace_back(entry.path(), entry.version());
  }
  return absl::OkStatus();
}

namespace {

v1::NamedTensorsRequest NamedRequest(const std::string& model, const NamedOptions& options) {
  v1::NamedTensorsRequest request;
  request.set_model(model);
  request.set_prefix(options.prefix);
  request.set_no_recurse(!options.recurse);
  request.set_keep_duplicates(!options.remove_duplicate);
  request.set_with_data(options.with_data);
  request.set_wire_dtype(WireDType(options.wire_dtype));
  return request;
}

}  // namespace

absl::StatusOr<NamedTensors> RemoteModel::NamedParameters(const NamedOptions& options) const {
  const Client::Impl& impl = *client_->impl_;
  const v1::NamedTensorsRequest request = NamedRequest(name_, options);
  TensorStreamReceiver receiver(options.with_data, options.progress);
  PARAMD_RETURN_IF_ERROR(impl.Read(impl.reads->named_parameters, request, &receiver));
  return NamedTensors{receiver.start().version(), std::move(receiver.entries())};
}

absl::StatusOr<NamedTensors> RemoteModel::NamedBuffers(const NamedOptions& options) const {
  const Client::Impl& impl = *client_->impl_;
  const v1::NamedTensorsRequest request = NamedRequest(name_, options);
  TensorStreamReceiver receiver(options.with_data, options.progress);
  PARAMD_RETURN_IF_ERROR(impl.Read(impl.reads->named_buffers, request, &receiver));
  return NamedTensors{receiver.start().version(), std::move(receiver.entries())};
}

absl::StatusOr<NamedModulesResult> RemoteModel::NamedModules(const std::string& prefix,
                                                             bool remove_duplicate) const {
  const Client::Impl& impl = *client_->impl_;
  v1::NamedModulesRequest request;
  request.set_model(name_);
  request.set_prefix(prefix);
  request.set_keep_duplicates(!remove_duplicate);
  NamedModulesResult result;
  PARAMD_RETURN_IF_ERROR(impl.ReadMessages<v1::NamedModulesResponse>(
      /*unary_deadline=*/true,
      [&](grpc::ClientContext* context) { return impl.parameters->NamedModules(context, request); },
      [&](const v1::NamedModulesResponse& response) {
        result.version = response.version();
        for (const v1::ModuleEntry& entry : response.modules()) {
          // A module whose lists passed one message continues under the same name.
          const bool continued = !result.modules.empty() && result.modules.back().name == entry.name();
          ModuleEntry& out = continued ? result.modules.back() : result.modules.emplace_back();
          out.name = entry.name();
          out.type = entry.type();
          out.parameters.insert(out.parameters.end(), entry.parameters().begin(),
                                entry.parameters().end());
          out.buffers.insert(out.buffers.end(), entry.buffers().begin(), entry.buffers().end());
          out.shared_with.insert(out.shared_with.end(), entry.shared_with().begin(),
                                 entry.shared_with().end());
        }
      }));
  return result;
}

namespace {

v1::GetTensorRequest GetTensorRequestFor(const std::string& model, const std::string& name,
                                         const std::optional<Region>& region,
                                         const GetTensorOptions& options) {
  v1::GetTensorRequest request;
  request.set_model(model);
  request.set_name(name);
  if (region) internal::ToProtoRegion(*region, request.mutable_region());
  request.set_wire_dtype(WireDType(options.wire_dtype));
  return request;
}

// Passes one tensor on to `consumer`; a second is the server breaking GetTensor's contract.
class OneTensor final : public TensorConsumer {
 public:
  OneTensor(const std::string& name, TensorConsumer& consumer) : name_(name), consumer_(consumer) {}

  absl::Status BeginTensor(const std::string& name, const HostTensor& meta) override {
    if (++tensors_ > 1) return Unexpected();
    return consumer_.BeginTensor(name, meta);
  }
  absl::Status TensorData(absl::string_view bytes) override { return consumer_.TensorData(bytes); }
  absl::Status EndTensor() override { return consumer_.EndTensor(); }

  absl::Status Check() const { return tensors_ == 1 ? absl::OkStatus() : Unexpected(); }

 private:
  absl::Status Unexpected() const {
    return absl::DataLossError(absl::StrCat("GetTensor for '", name_, "' returned ",
                                            tensors_ > 1 ? "more than one tensor" : "no tensor",
                                            " instead of one"));
  }

  const std::string& name_;
  TensorConsumer& consumer_;
  int tensors_ = 0;
};

}  // namespace

absl::StatusOr<HostTensor> RemoteModel::GetTensor(const std::string& name,
                                                  const std::optional<Region>& region,
                                                  const GetTensorOptions& options) const {
  const Client::Impl& impl = *client_->impl_;
  const v1::GetTensorRequest request = GetTensorRequestFor(name_, name, region, options);
  TensorStreamReceiver receiver(/*expect_data=*/true, options.progress);
  PARAMD_RETURN_IF_ERROR(impl.Read(impl.reads->get_tensor, request, &receiver));
  std::vector<NamedTensor>& entries = receiver.entries();
  if (entries.size() != 1) {
    return absl::DataLossError(absl::StrCat("GetTensor for '", name, "' returned ", entries.size(),
                                            " tensors instead of one"));
  }
  return std::move(entries.front().tensor);
}

absl::StatusOr<uint64_t> RemoteModel::GetTensorTo(const std::string& name,
                                                  TensorConsumer& consumer,
                                                  const std::optional<Region>& region,
                                                  const GetTensorOptions& options) const {
  const Client::Impl& impl = *client_->impl_;
  const v1::GetTensorRequest request = GetTensorRequestFor(name_, name, region, options);
  OneTensor one(name, consumer);
  TensorStreamReceiver receiver(/*expect_data=*/true, options.progress);
  receiver.StreamTo(&one);
  PARAMD_RETURN_IF_ERROR(impl.Read(impl.reads->get_tensor, request, &receiver));
  PARAMD_RETURN_IF_ERROR(one.Check());
  return receiver.start().version();
}

// --- RemoteModel: writes ---

absl::StatusOr<uint64_t> RemoteModel::SetTensor(const std::string& name, const HostTensor& tensor,
                                                const std::optional<Region>& region,
                                                uint64_t if_version,
                                                const ProgressCallback& progress) const {
  const Client::Impl& impl = *client_->impl_;
  const std::vector<OutgoingTensor> tensors = {
      {&name, &tensor, region ? &*region : nullptr, false, false}};
  v1::WriteResponse response;
  PARAMD_RETURN_IF_ERROR(impl.Write(impl.writes->set_tensor, BaseWriteOptions(name_, if_version),
                                    tensors, progress, &response));
  return response.version();
}

absl::StatusOr<uint64_t> RemoteModel::SetTensors(const std::vector<TensorWrite>& writes,
                                                 uint64_t if_version,
                                                 const ProgressCallback& progress) const {
  return SetTensors(writes, SetTensorsOptions{.if_version = if_version, .progress = progress});
}

absl::StatusOr<uint64_t> RemoteModel::SetTensors(const std::vector<TensorWrite>& writes,
                                                 const SetTensorsOptions& options) const {
  const Client::Impl& impl = *client_->impl_;
  v1::WriteOptions write_options = BaseWriteOptions(name_, options.if_version);
  write_options.set_commit_each_tensor(options.commit_each_tensor);
  std::vector<OutgoingTensor> tensors;
  tensors.reserve(writes.size());
  for (const TensorWrite& write : writes) {
    tensors.push_back(
        {&write.name, &write.tensor, write.region ? &*write.region : nullptr, false, false});
  }
  v1::WriteResponse response;
  PARAMD_RETURN_IF_ERROR(impl.Write(impl.writes->set_tensors, write_options, tensors,
                                    options.progress, &response));
  return response.version();
}

absl::StatusOr<uint64_t> RemoteModel::RegisterParameter(const std::string& module_path,
                                                        const std::string& name,
                                                        const std::optional<HostTensor>& tensor,
                                                        uint64_t if_version, bool requires_grad,
                                                        const ProgressCallback& progress) const {
  const Client::Impl& impl = *client_->impl_;
  v1::WriteOptions options = BaseWriteOptions(name_, if_version);
  options.set_module_path(module_path);
  options.set_name(name);
  options.set_none(!tensor.has_value());
  std::vector<OutgoingTensor> tensors;
  if (tensor) tensors.push_back({&name, &*tensor, nullptr, true, requires_grad});
  v1::WriteResponse response;
  PARAMD_RETURN_IF_ERROR(
      impl.Write(impl.writes->register_parameter, options, tensors, progress, &response));
  return response.version();
}

absl::StatusOr<uint64_t> RemoteModel::RegisterBuffer(const std::string& module_path,
                                                     const std::string& name,
                                                     const std::optional<HostTensor>& tensor,
                                                     bool persistent, uint64_t if_version,
                                                     const ProgressCallback& progress) const {
  const Client::Impl& impl = *client_->impl_;
  v1::WriteOptions options = BaseWriteOptions(name_, if_version);
  options.set_module_path(module_path);
  options.set_name(name);
  options.set_none(!tensor.has_value());
  options.set_non_persistent(!persistent);
  std::vector<OutgoingTensor> tensors;
  if (tensor) tensors.push_back({&name, &*tensor, nullptr, false, false});
  v1::WriteResponse response;
  PARAMD_RETURN_IF_ERROR(
      impl.Write(impl.writes->register_buffer, options, tensors, progress, &response));
  return response.version();
}

absl::StatusOr<uint64_t> RemoteModel::TieParameters(const std::string& name,
                                                    const std::string& target,
                                                    uint64_t if_version) const {
  const Client::Impl& impl = *client_->impl_;
  v1::TieParametersRequest request;
  request.set_model(name_);
  request.set_name(name);
  request.set_target(target);
  request.set_if_version(if_version);
  v1::WriteResponse response;
  PARAMD_RETURN_IF_ERROR(impl.Unary([&](grpc::ClientContext* context) {
    return impl.parameters->TieParameters(context, request, &response);
  }));
  return response.version();
}

absl::StatusOr<LoadResult> RemoteModel::LoadStateDict(const std::vector<NamedTensor>& state_dict,
                                                      const LoadOptions& options,
                                                      uint64_t if_version) const {
  const Client::Impl& impl = *client_->impl_;
  const v1::WriteOptions write_options = LoadWriteOptions(name_, options, if_version);
  std::vector<OutgoingTensor> tensors;
  tensors.reserve(state_dict.size());
  for (const NamedTensor& entry : state_dict) {
    tensors.push_back({&entry.name, &entry.tensor, nullptr, false, false});
  }
  StreamedLoad answer;
  const absl::Status status = impl.WriteThenRead<v1::LoadStateDictResponse>(
      impl.writes->load_state_dict, write_options, tensors, options.progress,
      [&](const v1::LoadStateDictResponse& message) { answer.Add(message); });
  PARAMD_RETURN_IF_ERROR(answer.Complete(status));
  LoadResult result;
  result.version = answer.version;
  result.missing_keys = std::move(answer.missing_keys);
  result.unexpected_keys = std::move(answer.unexpected_keys);
  return result;
}

// --- RemoteModel: model state ---

absl::StatusOr<ModelInfo> RemoteModel::SetMode(bool training, uint64_t if_version) const {
  const Client::Impl& impl = *client_->impl_;
  v1::SetModeRequest request;
  request.set_name(name_);
  request.set_training(training);
  request.set_if_version(if_version);
  v1::ModelInfo response;
  PARAMD_RETURN_IF_ERROR(impl.Unary([&](grpc::ClientContext* context) {
    return impl.models->SetMode(context, request, &response);
  }));
  return FromProto(response);
}

absl::StatusOr<ModelInfo> RemoteModel::MoveModel(const std::string& device,
                                                 uint64_t if_version) const {
  const Client::Impl& impl = *client_->impl_;
  v1::MoveModelRequest request;
  request.set_name(name_);
  request.set_device(device);
  request.set_if_version(if_version);
  v1::ModelInfo response;
  PARAMD_RETURN_IF_ERROR(impl.Unary([&](grpc::ClientContext* context) {
    return impl.models->MoveModel(context, request, &response);
  }));
  return FromProto(response);
}

absl::StatusOr<ModelInfo> RemoteModel::Describe() const { return client_->DescribeModel(name_); }

}  // namespace paramd::client
