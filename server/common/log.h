// One-line structured logs on stderr: `2026-11-28T17:00:00.123Z level=info msg="..." k=v`,
// or with --log-format json one JSON object a line:
// `{"time":"2026-11-28T17:00:00.123Z","level":"info","msg":"...","k":"v"}`.
// Every value is escaped (EscapeText: `"`, `\`, newlines, control bytes and bytes that are not
// UTF-8; in JSON the same as JSON string escapes) and cut to kMaxLogValueBytes, so a
// client-supplied name can neither forge a line nor flood the log. Thread-safe: each line is
// written with one fwrite; the format is set once, at start, before other threads log.
#pragma once

#include <atomic>
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

enum class LogFormat { kText, kJson };

inline std::atomic<LogFormat>& CurrentLogFormat() {
  static std::atomic<LogFormat> format{LogFormat::kText};
  return format;
}
// --log-format: every line logged afterwards is in `format`.
inline void SetLogFormat(LogFormat format) { CurrentLogFormat().store(format); }

// `value` as a JSON string, quotes included: `"` and `\` escaped, control bytes as \n, \r,
// \t or \u00NN, bytes that are not UTF-8 as the four characters `\xNN` (as the text format
// shows them), and past kMaxLogValueBytes cut at a character and marked `...(N bytes)`.
inline void AppendJsonString(std::string* out, absl::string_view value) {
  constexpr char kHex[] = "0123456789abcdef";
  *out += '"';
  size_t pos = 0;
  while (pos < value.size()) {
    const size_t length = Utf8SequenceLength(value, pos);
    if (pos + (length == 0 ? 1 : length) > kMaxLogValueBytes) {
      absl::StrAppend(out, "...(", value.size(), " bytes)");
      break;
    }
    const unsigned char c = static_cast<unsigned char>(value[pos]);
    if (length == 0) {
      absl::StrAppend(out, "\\\\x", absl::string_view(&kHex[c >> 4], 1),
                      absl::string_view(&kHex[c & 15], 1));
    } else if (c == '"' || c == '\\') {
      *out += '\\';
      *out += static_cast<char>(c);
    } else if (c == '\n') {
      *out += "\\n";
    } else if (c == '\r') {
      *out += "\\r";
    } else if (c == '\t') {
      *out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      absl::StrAppend(out, "\\u00", absl::string_view(&kHex[c >> 4], 1),
                      absl::string_view(&kHex[c & 15], 1));
    } else {
      out->append(value.data() + pos, length);
    }
    pos += length == 0 ? 1 : length;
  }
  *out += '"';
}

// Fields whose values are numbers in JSON (when they read as one; null when empty).
inline bool IsNumericLogField(absl::string_view key) {
  return key == "version" || key == "duration_ms";
}

inline bool LooksNumeric(absl::string_view value) {
  if (value.empty() || value.size() > 32) return false;
  bool dot = false;
  for (size_t i = 0; i < value.size(); ++i) {
    if (value[i] == '.' && !dot && i > 0 && i + 1 < value.size()) {
      dot = true;
    } else if (value[i] < '0' || value[i] > '9') {
      return false;
    }
  }
  return true;
}

// The whole JSON line, `time` first: `{"time":"...","level":"...","msg":"...",...}\n`.
inline std::string FormatJsonLogLine(absl::string_view time, absl::string_view level,
                                     absl::string_view message,
                                     std::initializer_list<LogField> fields = {}) {
  std::string line = "{\"time\":";
  AppendJsonString(&line, time);
  line += ",\"level\":";
  AppendJsonString(&line, level);
  line += ",\"msg\":";
  AppendJsonString(&line, message);
  for (const auto& [key, value] : fields) {
    line += ',';
    AppendJsonString(&line, key);
    line += ':';
    if (IsNumericLogField(key) && LooksNumeric(value)) {
      line += value;
    } else if (IsNumericLogField(key) && value.empty()) {
      line += "null";
    } else {
      AppendJsonString(&line, value);
    }
  }
  line += "}\n";
  return line;
}

inline void Log(absl::string_view level, absl::string_view message,
                std::initializer_list<LogField> fields = {}) {
  const std::string time =
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  const std::string line = CurrentLogFormat().load() == LogFormat::kJson
                               ? FormatJsonLogLine(time, level, message, fields)
                               : absl::StrCat(time, FormatLogLine(level, message, fields));
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace paramd::common
