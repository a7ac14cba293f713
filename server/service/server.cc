#include "server/service/server.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "grpc/grpc.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/impl/server_builder_plugin.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "server/service/call_observer.h"
#include "server/service/checkpoints_service.h"
#include "server/service/inference_service.h"
#include "server/service/models_service.h"
#include "server/service/parameters_service.h"
#include "server/service/reflection_service.h"
#include "server/service/status_trailer.h"
#include "server/service/tensor_codec.h"
#include "server/service/training_service.h"

namespace paramd::service {
namespace {

// HOST:PORT of `listen` with the port gRPC chose; a unix socket's address as given (gRPC
// reports port 1 for it, and its path may hold colons).
std::string BoundAddress(const std::string& listen, int port) {
  if (absl::StartsWith(listen, "unix:") || absl::StartsWith(listen, "unix-abstract:")) {
    return listen;
  }
  return absl::StrCat(listen.substr(0, listen.rfind(':')), ":", port);
}

// Drops every plugin a builder was made with. gRPC hands each new ServerBuilder one plugin
// per factory registered process-wide, and the v1alpha reflection plugin registers itself
// so (InitProtoReflectionServerBuilderPlugin, and its library's static initialiser).
class NoPlugins final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments* /*args*/) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->clear();
  }
};

// Answers every method of the health port but Health's own.
class NotOnHealthPort final : public grpc::CallbackGenericService {
 public:
  grpc::ServerGenericBidiReactor* CreateReactor(
      grpc::GenericCallbackServerContext* context) override {
    return new RefusedReactor<grpc::ServerGenericBidiReactor>(grpc::Status(
        grpc::StatusCode::UNIMPLEMENTED,
        absl::StrCat(context->method(),
                     " is not served on the health port (--health-listen), which serves "
                     "grpc.health.v1.Health alone; call it on the main port (--listen)")));
  }
};

// A server with no service of its own: gRPC adds its default health service to it
// (EnableDefaultHealthCheckService), and nothing else. It serves without TLS or tokens,
// possibly beyond loopback, so no plugin may add reflection, which would list every
// service's descriptors to anyone (docs/security.md). `others` (borrowed, outliving the
// server) answers the rest; gRPC also needs some service of the server's own, callback or
// sync, to poll for calls at all.
absl::StatusOr<std::unique_ptr<grpc::Server>> StartHealthServer(
    const std::string& listen, grpc::CallbackGenericService* others, std::string& address) {
  grpc::ServerBuilder builder;
  builder.SetOption(std::make_unique<NoPlugins>());
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);  // Note [A port of its own]
  builder.RegisterCallbackGenericService(others);
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on '", listen,
        "' for health checks; is the address valid and the port free? (--health-listen "
        "HOST:PORT)"));
  }
  address = BoundAddress(listen, port);
  return server;
}

}  // namespace

struct Server::Services {
  Services(core::ModelRegistry* registry, const ServerOptions& options, Executor* executor,
           IdleWatchdog* watchdog)
      : models(registry, options.snapshots, executor, options.auth),
        parameters(registry, executor, watchdog, options.auth),
        checkpoints(options.checkpoints, options.snapshots, executor, options.auth,
                    options.metrics),
        inference(registry, executor, watchdog, options.auth, options.metrics),
        training(registry, options.optimizers != nullptr ? options.optimizers : &own_optimizers,
                 executor, watchdog, options.auth, options.sync_round_timeout) {
    models.set_on_deleted([this](const std::string& name) { training.ModelDeleted(name); });
  }
  ModelsService models;
  ParametersService parameters;
  CheckpointsService checkpoints;
  InferenceService inference;
  // Used when the options bring no registry: optimizers then live as long as the server.
  core::OptimizerRegistry own_optimizers;
  TrainingService training;
  NotOnHealthPort not_on_health_port;
};

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options,
                                                      core::ModelRegistry* registry) {
  grpc::EnableDefaultHealthCheckService(true);
  // Note [Reflection sees every service]: both reflection versions resolve files in
  // protobuf's generated pool, which holds a .proto only when its generated code is linked.
  // gRPC's built-in health service encodes its messages without that code, so nothing else
  // would link health.pb.cc: naming its descriptor here does, and puts
  // grpc/health/v1/health.proto in the pool beside paramd's own files.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  // Process-wide: every ServerBuilder made from here on gets v1alpha reflection, so the
  // health server strips it (NoPlugins).
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  auto credentials = ServerCredentialsFor(options.tls);
  if (!credentials.ok()) return credentials.status();
  std::unique_ptr<Server> server(new Server());
  server->executor_ = std::make_unique<Executor>(options.workers, options.max_queued_calls);
  server->watchdog_ = std::make_unique<IdleWatchdog>(options.stream_idle_timeout);
  server->services_ = std::make_unique<Services>(registry, options, server->executor_.get(),
                                                 server->watchdog_.get());

  grpc::ServerBuilder builder;
  int port = 0;
  // Note [A port of its own]: gRPC sets SO_REUSEPORT on its listeners by default, so a
  // second daemon started on a port in use would start without a word and the kernel would
  // share the new connections between the two: each client would see one daemon's models
  // or the other's. Without it the second one's bind fails and it does not start.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(options.listen, *credentials, &port);
  builder.RegisterService(&server->services_->models);
  builder.RegisterService(&server->services_->parameters);
  if (options.checkpoints != nullptr) builder.RegisterService(&server->services_->checkpoints);
  builder.RegisterService(&server->services_->inference);
  builder.RegisterService(&server->services_->training);
  AddReflectionV1(builder);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<CurrentVersionTrailerFactory>());
  // gRPC's own health service reads and writes its messages as grpc::ByteBuffer, as the
  // raw tensor methods do.
  std::vector<absl::string_view> raw_methods = {"/grpc.health.v1.Health/Check",
                                                "/grpc.health.v1.Health/Watch"};
  for (absl::string_view method : ParametersService::RawMethods()) raw_methods.push_back(method);
  for (absl::string_view method : TrainingService::RawMethods()) raw_methods.push_back(method);
  interceptors.push_back(
      std::make_unique<CallObserverFactory>(options.metrics, options.auth, raw_methods));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  // Room for one chunk plus its framing; tensors never travel as one message.
  builder.SetMaxReceiveMessageSize(static_cast<int>(4 * kChunkBytes));
  builder.SetMaxSendMessageSize(static_cast<int>(4 * kChunkBytes));
  // Note [Keepalive]: clients ping while a call waits (the C++ and Python clients every
  // 30 s by default) to notice a frozen daemon. gRPC's server default counts a ping sooner
  // than 5 minutes after the last, with no data sent between, as abuse and closes the
  // connection after three: a client waiting on a long call would be cut off. Pings are
  // accepted every `keepalive_min_interval` instead, with or without calls in flight.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
      static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(options.keepalive_min_interval),
                                         std::numeric_limits<int>::max())));
  if (options.max_transport_memory > 0) {
    grpc::ResourceQuota quota("paramd transport");
    quota.Resize(options.max_transport_memory);
    builder.SetResourceQuota(quota);
  }
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "cannot listen on '", options.listen,
        "'; is the address valid and the port free? (--listen HOST:PORT, port 0 picks one)"));
  }
  server->address_ = BoundAddress(options.listen, port);
  if (!options.health_listen.empty()) {
    auto health = StartHealthServer(options.health_listen, &server->services_->not_on_health_port,
                                    server->health_address_);
    if (!health.ok()) return health.status();
    server->health_server_ = std::move(*health);
  }
  server->metrics_ = options.metrics;
  if (server->metrics_ != nullptr) server->metrics_->SetExecutor(server->executor_.get());
  return server;
}

Server::~Server() {
  if (metrics_ != nullptr) metrics_->SetExecutor(nullptr);
  if (server_) Shutdown(0);
}

void Server::Shutdown(double deadline_seconds) {
  if (auto* health = server_->GetHealthCheckService()) health->Shutdown();
  if (health_server_) {
    // NOT_SERVING for the probes while in-flight calls finish; its own calls are instant.
    if (auto* health = health_server_->GetHealthCheckService()) health->Shutdown();
  }
  // Pushes waiting for a synchronous round are answered now rather than at the deadline.
  services_->training.Shutdown();
  server_->Shutdown(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(deadline_seconds * 1000)));
  if (health_server_) health_server_->Shutdown(std::chrono::system_clock::now());
}

void Server::Wait() {
  server_->Wait();
  if (health_server_) health_server_->Wait();
}

}  // namespace paramd::service
