// SHA-256 of a byte span, as lowercase hex (what `sha256sum` prints), through OpenSSL.
// Thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "absl/types/span.h"

namespace paramd::io {

std::string Sha256Hex(absl::Span<const uint8_t> bytes);

}  // namespace paramd::io
