// UTF-8 validation for names and strings read from files. Thread-safe.
#pragma once

#include "base/text.h"

namespace paramd::io {

// Strict UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF (what Rust's str,
// and so the safetensors reference, accepts; Python's decoder agrees).
using ::paramd::IsUtf8;

}  // namespace paramd::io
