// Checks paramctl makes on local input before any of it is sent: that a file is a regular
// file where paramctl maps it or reads it twice (not a directory, a pipe or a device), and
// that text bound for a protobuf string field is UTF-8. A string field that is not UTF-8
// makes the protobuf library log an error as it serializes the request and the daemon
// refuse the request as unparseable, neither of which names the file it came from.
// Pure functions; thread-safe.
#pragma once

#include <sys/stat.h>

#include <cstddef>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace paramd::cli {

// The offset of the first byte of `text` that does not start a strict UTF-8 sequence
// (base/text.h's rules); nullopt when all of `text` is UTF-8.
std::optional<size_t> FirstNonUtf8(absl::string_view text);

// `bytes` as two-digit hex separated by spaces ("62 5f ff fe"), the first `max_bytes` of
// them and then "...".
std::string HexBytes(absl::string_view bytes, size_t max_bytes = 64);

// What `info` describes when it is not a regular file ("a directory", "a pipe", "a socket",
// "a character device", "a block device", "not a regular file"); nullopt for a regular file.
std::optional<std::string> NonRegularKind(const struct stat& info);

}  // namespace paramd::cli
