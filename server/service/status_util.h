// The edge between absl::Status and grpc::Status. The code numbers are the same, so the
// mapping is direct; every RPC body runs inside Guard so that an escaped std::bad_alloc
// becomes RESOURCE_EXHAUSTED instead of killing the daemon.
#pragma once

#include <exception>
#include <new>
#include <string>

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace paramd::service {

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

template <typename Fn>
grpc::Status Guard(Fn&& fn) {
  try {
    return ToGrpcStatus(fn());
  } catch (const std::bad_alloc&) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "out of memory while serving the call; free models or raise --max-memory");
  } catch (const std::exception& e) {
    return grpc::Status(grpc::StatusCode::INTERNAL, std::string("internal error: ") + e.what());
  }
}

}  // namespace paramd::service
