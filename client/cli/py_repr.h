// Python string literals as repr() writes them, for what paramctl prints in PyTorch's words
// (_IncompatibleKeys(missing_keys=[...], ...)). Reentrant, no shared state.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"

namespace paramd::cli {

// `text` (UTF-8) as Python 3's repr(str) writes it: single quotes unless it holds a single
// quote and no double quote; backslash, the quote, \t, \n and \r escaped; other C0 controls,
// DEL, C1 controls, U+00A0 and U+00AD as \xNN; other characters kept. Bytes that are not
// UTF-8 are written as \xNN too (Python would never hold them in a str). Unlike Python,
// non-printable characters past U+00FF (U+2028, say) are kept as they are.
std::string PyRepr(absl::string_view text);
// A Python list of string literals: ['a', 'b'].
std::string PyList(const std::vector<std::string>& items);

}  // namespace paramd::cli
