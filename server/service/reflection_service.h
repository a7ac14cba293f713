// grpc.reflection.v1.ServerReflection: server reflection under the package current tools
// (grpcurl, grpc_cli) ask for first. gRPC 1.51 (Debian 12) ships only v1alpha, whose plugin
// server.cc keeps; this is the same protocol (the messages are identical) answered from the
// same place, protobuf's generated descriptor pool, so both versions see every service that
// the server registers and resolve the same files.
//
// Ownership: AddReflectionV1 hands the builder a plugin that owns the service; the service
// reads the server's own list of registered services (owned by the grpc::Server), which is
// complete before the server starts.
// Thread-safety: each stream is one reactor, driven by gRPC one event at a time; the pool
// and the service list are only read once the server has started.
#pragma once

#include "grpcpp/server_builder.h"

namespace paramd::service {

// Serves grpc.reflection.v1.ServerReflection on the server `builder` builds.
void AddReflectionV1(grpc::ServerBuilder& builder);

}  // namespace paramd::service
