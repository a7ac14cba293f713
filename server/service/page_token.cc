#include "server/service/page_token.h"

#include <cstdint>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/types/span.h"
#include "base/text.h"
#include "server/io/sha256.h"

namespace paramd::service {
namespace {

constexpr absl::string_view kTokenVersion = "1";

// The first 16 hex digits of SHA-256 over the token's version and name.
std::string Digest(absl::string_view last_name) {
  const std::string text = absl::StrCat("paramd.v1.ListModels/", kTokenVersion, "/", last_name);
  return io::Sha256Hex(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(text.data()),
                                           text.size()))
      .substr(0, 16);
}

absl::Status BadToken(absl::string_view token) {
  return absl::InvalidArgumentError(
      absl::StrCat("page_token ", QuoteName(token),
                   " is not one this daemon handed out; pass a ListModels next_page_token "
                   "unchanged, or no token for the first page"));
}

}  // namespace

std::string EncodePageToken(absl::string_view last_name) {
  return absl::StrCat(kTokenVersion, ".", absl::WebSafeBase64Escape(last_name), ".",
                      Digest(last_name));
}

absl::StatusOr<std::string> DecodePageToken(absl::string_view token) {
  const std::vector<absl::string_view> parts = absl::StrSplit(token, '.');
  std::string name;
  if (parts.size() != 3 || parts[0] != kTokenVersion ||
      !absl::WebSafeBase64Unescape(parts[1], &name) || parts[2] != Digest(name)) {
    return BadToken(token);
  }
  return name;
}

}  // namespace paramd::service
