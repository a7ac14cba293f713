// The server interceptor that turns a status's current-version detail into the trailing
// metadata `paramd-current-version` (Note [Current version trailer] in status_util.h).
//
// Thread-safety: the factory is shared by every call and holds no state; each call gets its
// own interceptor, which gRPC drives from one thread at a time.
#pragma once

#include <memory>

#include "grpcpp/support/server_interceptor.h"

namespace paramd::service {

class CurrentVersionTrailerFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override;
};

}  // namespace paramd::service
