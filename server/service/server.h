// Assembles the gRPC server: paramd's services, the standard health service and server
// reflection, on one listening address, and the Executor their heavy work runs on. Every
// service uses gRPC's callback API (Note [Call admission] in executor.h).
// Thread-safety: Start is called once; the returned server is gRPC's (thread-safe).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/server.h"
#include "server/core/optim/optimizer.h"
#include "server/core/registry.h"
#include "server/io/checkpoint_store.h"
#include "server/io/snapshots.h"
#include "server/service/auth.h"
#include "server/service/executor.h"
#include "server/service/idle_watchdog.h"
#include "server/service/metrics.h"
#include "server/service/tls.h"

namespace paramd::service {

// Note [Transport memory]
// gRPC (1.51) checks a message's length against the receive limit (4 chunks) only once the
// whole message has arrived, and HTTP/2 flow control grants the window a message announces,
// so one client could make the daemon buffer a message of any size before refusing it. The
// server's grpc::ResourceQuota bounds what gRPC holds for all connections: near the bound
// it shrinks flow-control windows, and past it gRPC cancels a stream of a connection holding
// memory (RST_STREAM ENHANCE_YOUR_CALM, which clients see as RESOURCE_EXHAUSTED). Measured
// on loopback: unbounded, bulk writers buffer up to about 25 MiB each; with a 256 MiB bound
// 48 concurrent writers on their own connections all succeed (the windows shrink), while
// with 64 MiB 8 of them are cancelled. So the default is 256 MiB and an oversized message
// peaks near it. Freed buffers go back to the system through the daemon's HeapTrimmer
// (server/main/heap_trimmer.h).
struct ServerOptions {
  std::string listen = "127.0.0.1:50051";
  // When set, a second address serving grpc.health.v1.Health alone, in plaintext and without
  // tokens (--health-listen): the kubelet's gRPC probes speak neither TLS nor tokens. It
  // reports what the main address reports, NOT_SERVING from the start of Shutdown.
  std::string health_listen;
  // Both borrowed and must outlive the server. Without a checkpoint store the
  // Checkpoints service is not served; without snapshots its Snapshot call is refused.
  io::CheckpointStore* checkpoints = nullptr;
  io::Snapshots* snapshots = nullptr;
  // The Executor's worker threads (--workers) and the calls that may wait beyond them
  // (--max-queued-calls).
  int workers = 4;
  int max_queued_calls = 64;
  // A write stream that sends no frame for this long is ended (--stream-idle-timeout; zero:
  // never). Note [Idle write streams] in idle_watchdog.h.
  absl::Duration stream_idle_timeout = absl::Seconds(60);
  // How long a synchronous optimizer's round waits for its workers after its first push
  // (--sync-round-timeout; zero: forever). docs/training.md.
  absl::Duration sync_round_timeout = absl::Seconds(60);
  // The shortest interval between a client's keepalive pings accepted while the daemon
  // sends it nothing (--keepalive-min-interval). Note [Keepalive] in server.cc.
  absl::Duration keepalive_min_interval = absl::Seconds(10);
  // Bytes gRPC may hold in receive buffers for all connections (--max-transport-memory; 0:
  // no bound). Note [Transport memory].
  size_t max_transport_memory = 0;
  // Plaintext unless `tls.cert` is set (tls.h). `auth`: borrowed, must outlive the server;
  // null lets every call through (auth.h).
  TlsFiles tls;
  const Authenticator* auth = nullptr;
  // Borrowed, must outlive the server; null records no metrics (metrics.h).
  Metrics* metrics = nullptr;
  // The daemon's optimizers (Snapshots keeps them across restarts). Borrowed, must outlive
  // the server; null: the server keeps its own, in memory only.
  core::OptimizerRegistry* optimizers = nullptr;
};

class Server {
 public:
  // Binds `options.listen` (port 0 picks a free port) and starts serving `registry`.
  // UNAVAILABLE when the address cannot be bound; INVALID_ARGUMENT for unusable TLS files.
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options,
                                                       core::ModelRegistry* registry);
  ~Server();

  // The addresses actually bound, with the chosen ports; health_address() is "" without
  // `health_listen`.
  const std::string& address() const { return address_; }
  const std::string& health_address() const { return health_address_; }
  // Stops taking calls, gives in-flight ones until `deadline_seconds`, then cancels them.
  void Shutdown(double deadline_seconds);
  void Wait();

 private:
  Server() = default;
  struct Services;
  // Declared first, destroyed last: the executor joins its workers only after the server
  // (and with it every reactor that could queue a task) is gone.
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<IdleWatchdog> watchdog_;  // outlives every reactor it watches
  std::unique_ptr<Services> services_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<grpc::Server> health_server_;  // only with `health_listen`
  std::string address_;
  std::string health_address_;
  Metrics* metrics_ = nullptr;
};

}  // namespace paramd::service
