// UTF-8 validation for names and strings read from files. Thread-safe.
#pragma once

#include "absl/strings/string_view.h"

namespace paramd::io {

// Strict UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF (what Rust's str,
// and so the safetensors reference, accepts; Python's decoder agrees).
bool IsUtf8(absl::string_view text);

}  // namespace paramd::io
