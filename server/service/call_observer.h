// The server interceptor every call passes through once, whatever its service: it counts the
// call in the metrics (status code, latency, bytes received and sent; metrics.h) and writes
// its `call` log line (method, peer, token name, model, version, duration, status) for every
// call that failed and every successful call of an admin method: create, delete, move,
// save, load, upload, snapshot (docs/daemon.md "Logs"). Handlers do nothing for either: the
// model and the version come from the call's own first messages.
//
// Thread-safety: the factory is shared by every call and read-only after construction; each
// call gets its own interceptor, which gRPC drives from one thread at a time.
#pragma once

#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "google/protobuf/message.h"
#include "grpcpp/support/server_interceptor.h"
#include "server/service/auth.h"
#include "server/service/metrics.h"

namespace paramd::service {

// What the observer knows of one method, found once when the factory is made.
struct ObservedMethod {
  Role role = Role::kAdmin;  // logged on success when kAdmin
  bool raw = false;          // messages are grpc::ByteBuffer, not generated messages
  const google::protobuf::Message* request = nullptr;   // prototypes; null when unknown
  const google::protobuf::Message* response = nullptr;
  std::optional<Metrics::Call> metrics;  // with metrics on
};

class CallObserverFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  // `metrics` (null: none recorded) and `auth` (null: no token names) are borrowed and must
  // outlive the server. `raw_methods`: the full names of the methods served raw.
  CallObserverFactory(Metrics* metrics, const Authenticator* auth,
                      absl::Span<const absl::string_view> raw_methods);

  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;

 private:
  const Authenticator* const auth_;
  absl::flat_hash_map<std::string, ObservedMethod> methods_;
  std::optional<Metrics::Call> unknown_;  // every method not served, with metrics on
};

// The model a request names and the version an answer carries, read from a message's fields
// by name: `model` (or, at the top, `name`) and `version`, at its top or one message down.
// Empty / 0 when it has none.
std::string ModelOf(const google::protobuf::Message& request);
uint64_t VersionOf(const google::protobuf::Message& response);

}  // namespace paramd::service
