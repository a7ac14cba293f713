// ABORTED for a version mismatch, with the model's current version attached.
//
// A write with a stale `if_version`, a forward pinned to a version the model left, a delete
// of a model that moved on: each fails with ABORTED, and the caller's next step is to read
// the current version and redo its work. The status carries that version as a payload under
// kCurrentVersionKey (the decimal number), so the daemon's edge can hand it to the client as
// trailing metadata of the same name (docs/wire.md) and the C++ client can hand it back as
// the same payload, without anyone parsing a message.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"

namespace paramd {

// The payload type URL of the status and the trailing metadata key on the wire.
inline constexpr absl::string_view kCurrentVersionKey = "paramd-current-version";

// ABORTED with `message`, carrying `current_version`.
inline absl::Status VersionConflictError(absl::string_view message, uint64_t current_version) {
  absl::Status status = absl::AbortedError(message);
  status.SetPayload(kCurrentVersionKey, absl::Cord(std::to_string(current_version)));
  return status;
}

// The current version an ABORTED status carries; nullopt for any other status.
inline std::optional<uint64_t> CurrentVersionOf(const absl::Status& status) {
  if (!absl::IsAborted(status)) return std::nullopt;
  auto payload = status.GetPayload(kCurrentVersionKey);
  uint64_t version = 0;
  if (!payload || !absl::SimpleAtoi(std::string(*payload), &version)) return std::nullopt;
  return version;
}

}  // namespace paramd
