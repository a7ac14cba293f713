// One-line structured logs on stderr: `2026-11-28T17:00:00.123Z level=info msg="..." k=v`.
// Every value is escaped (EscapeText: `"`, `\`, newlines, control bytes and bytes that are not
// UTF-8) and cut to kMaxLogValueBytes, so a client-supplied name can neither forge a line nor
// flood the log. Thread-safe: each line is written with one fwrite.
#pragma once

#include <cstdio>
#include <initializer_list>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "base/text.h"

namespace paramd::common {

// Past this many bytes a logged value is cut and marked `...(N bytes)` (docs/daemon.md).
inline constexpr size_t kMaxLogValueBytes = 1024;

using LogField = std::pair<absl::string_view, std::string>;

// ` key=value`, the value escaped, cut, and quoted when it is empty or holds a space, `=` or
// an escape.
inline void AppendLogField(std::string* line, absl::string_view key, absl::string_view value) {
  const std::string escaped = EscapeText(value, kMaxLogValueBytes);
  const bool quote = escaped.empty() || escaped != value ||
                     escaped.find_first_of(" =") != std::string::npos;
  absl::StrAppend(line, " ", key, "=", quote ? "\"" : "", escaped, quote ? "\"" : "");
}

// The whole line, without its timestamp: ` level=... msg="..." k=v ...\n`.
inline std::string FormatLogLine(absl::string_view level, absl::string_view message,
                                 std::initializer_list<LogField> fields = {}) {
  std::string line = absl::StrCat(" level=", EscapeText(level, kMaxLogValueBytes), " msg=\"",
                                  EscapeText(message, kMaxLogValueBytes), "\"");
  for (const auto& [key, value] : fields) AppendLogField(&line, key, value);
  line += "\n";
  return line;
}

inline void Log(absl::string_view level, absl::string_view message,
                std::initializer_list<LogField> fields = {}) {
  const std::string line = absl::StrCat(
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
      FormatLogLine(level, message, fields));
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace paramd::common
