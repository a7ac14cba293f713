// The edge between absl::Status and grpc::Status. The code numbers are the same, so the
// mapping is direct; every RPC body runs inside Guard so that an escaped std::bad_alloc
// becomes RESOURCE_EXHAUSTED instead of killing the daemon.
#pragma once

#include <exception>
#include <new>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/status.h"
#include "base/text.h"
#include "base/version_conflict.h"
#include "server/common/log.h"

namespace paramd::service {

// The longest status message a client gets, in bytes; longer ones are cut with a marker.
// A message travels in the grpc-message trailer, percent-encoded (up to three bytes per
// byte), and a client refuses trailers past its metadata limit (8 KiB by default), turning
// the call's answer into a bare "Stream removed"; names inside a message are already cut
// by QuoteName, and this keeps long lists (load_state_dict's keys) within reach too.
inline constexpr size_t kMaxStatusMessageBytes = 2048;

// Note [Current version trailer]: an ABORTED status from a version mismatch carries the
// model's current version (base/version_conflict.h), and the client gets it as the trailing
// metadata `paramd-current-version`. Trailing metadata belongs to the call's context, which
// the places that translate statuses (Guard, the stream reactors) do not hold, so the
// version rides in the grpc::Status's error details as `kCurrentVersionDetail` + decimal,
// and CurrentVersionTrailer (status_trailer.h), a server interceptor every call passes
// through, moves it into the trailer before the status is sent: the details never reach
// the wire.
inline constexpr absl::string_view kCurrentVersionDetail = "paramd-current-version=";

inline grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  std::string details;
  if (std::optional<uint64_t> current = CurrentVersionOf(status)) {
    details = absl::StrCat(kCurrentVersionDetail, *current);
  }
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      TruncateText(status.message(), kMaxStatusMessageBytes), details);
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

// `if_version` of a request: proto3's 0 (unset) means "any version".
inline std::optional<uint64_t> IfVersion(uint64_t value) {
  return value == 0 ? std::nullopt : std::optional<uint64_t>(value);
}

// The daemon's one log line per call outcome: every failure, with the model (or, with `key`
// "optimizer", the optimizer) and the status, and successes too where `log_success` (calls
// that create, delete or change a model).
inline void LogCall(absl::string_view action, absl::string_view model, const absl::Status& status,
                    bool log_success = false, absl::string_view key = "model") {
  if (status.ok()) {
    if (log_success) {
      common::Log("info", action, {{std::string(key), std::string(model)}, {"status", "OK"}});
    }
    return;
  }
  common::Log("warning", action,
              {{std::string(key), std::string(model)},
               {"status", absl::StatusCodeToString(status.code())},
               {"error", std::string(status.message())}});
}

inline absl::Status FromGrpcStatus(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

// LogCall for a finished handler's status, which it passes through.
inline grpc::Status Logged(absl::string_view action, absl::string_view model, grpc::Status status,
                           bool log_success = false, absl::string_view key = "model") {
  LogCall(action, model, FromGrpcStatus(status), log_success, key);
  return status;
}

}  // namespace paramd::service
