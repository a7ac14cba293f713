// ListModels' page tokens (AIP-158): opaque to clients, checked by the daemon. A token names
// the last model of the page it ended, so the next page starts after that name and paging
// stays stable while models are created and deleted: a model that exists through the whole
// walk appears exactly once. A token carries a digest of its content, so a token that was
// cut or edited is refused instead of silently starting elsewhere. Tokens hold no secret and
// stay valid across daemon restarts. Pure functions; thread-safe.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace paramd::service {

// The token of a page whose last model is `last_name`.
std::string EncodePageToken(absl::string_view last_name);

// The last name a token from EncodePageToken carries; INVALID_ARGUMENT for anything else.
absl::StatusOr<std::string> DecodePageToken(absl::string_view token);

}  // namespace paramd::service
