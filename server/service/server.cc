#include "server/service/server.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "grpc/grpc.h"
#include "grpc/health/v1/health.pb.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/resource_quota.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server_builder.h"
#include "server/service/checkpoints_service.h"
#include "server/service/inference_service.h"
#include "server/service/models_service.h"
#include "server/service/parameters_service.h"
#include "server/service/reflection_service.h"
#include "server/service/status_trailer.h"
#include "server/service/tensor_codec.h"

namespace paramd::service {

struct Server::Services {
  Services(core::ModelRegistry* registry, const ServerOptions& options, Executor* executor,
           IdleWatchdog* watchdog)
      : models(registry, options.snapshots, executor, options.auth),
        parameters(registry, executor, watchdog, options.auth),
        checkpoints(options.checkpoints, options.snapshots, executor, options.auth),
        inference(registry, executor, options.auth) {}
  ModelsService models;
  ParametersService parameters;
  CheckpointsService checkpoints;
  InferenceService inference;
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
  builder.AddListeningPort(options.listen, *credentials, &port);
  builder.RegisterService(&server->services_->models);
  builder.RegisterService(&server->services_->parameters);
  if (options.checkpoints != nullptr) builder.RegisterService(&server->services_->checkpoints);
  builder.RegisterService(&server->services_->inference);
  AddReflectionV1(builder);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<CurrentVersionTrailerFactory>());
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
  const size_t colon = options.listen.rfind(':');
  server->address_ = absl::StrCat(options.listen.substr(0, colon), ":", port);
  return server;
}

Server::~Server() {
  if (server_) Shutdown(0);
}

void Server::Shutdown(double deadline_seconds) {
  if (auto* health = server_->GetHealthCheckService()) health->Shutdown();
  server_->Shutdown(std::chrono::system_clock::now() +
                    std::chrono::milliseconds(static_cast<int64_t>(deadline_seconds * 1000)));
}

void Server::Wait() { server_->Wait(); }

}  // namespace paramd::service
