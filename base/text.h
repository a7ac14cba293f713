// Untrusted text made safe to print: escaped for one-line logs, and quoted (and cut short)
// for error messages. Anything a client sends (model names, tensor names, checkpoint paths)
// goes through one of these before it reaches stderr or a status message, so it can neither
// forge log lines nor overflow what a client accepts. Reentrant, no shared state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace paramd {

// The length in bytes of the strict UTF-8 sequence at `text[pos]` (no overlong forms, no
// surrogates, nothing past U+10FFFF); 0 when the bytes there are not one.
size_t Utf8SequenceLength(absl::string_view text, size_t pos);
bool IsUtf8(absl::string_view text);

// Past this many bytes a quoted name is cut (QuoteName); docs/wire.md says so.
inline constexpr size_t kMaxQuotedNameBytes = 256;

// A client-supplied name as an error message shows it: control bytes and bytes that are not
// UTF-8 escaped as in EscapeText (quotes and backslashes kept as they are), and a name over
// kMaxQuotedNameBytes cut at a character boundary and marked: `abc...(1048576 bytes)`.
std::string ShortName(absl::string_view name);
// `'` + ShortName(name) + `'`: how messages quote a model, tensor, module or file name.
std::string QuoteName(absl::string_view name);

// `text` with `"` and `\` backslash-escaped, `\n`, `\r`, `\t` as those escapes, other
// control bytes and bytes that are not UTF-8 as `\xNN` (logfmt's and JSON strings' style),
// so the result is one line of valid UTF-8. Over `max_bytes` of input, the rest is dropped
// at a character boundary and `...(N bytes)` appended, N the input's length.
std::string EscapeText(absl::string_view text, size_t max_bytes = SIZE_MAX);

// `text` itself when it is at most `max_bytes`; else its first bytes up to a character
// boundary and `... (N bytes in all)`.
std::string TruncateText(absl::string_view text, size_t max_bytes);

}  // namespace paramd
