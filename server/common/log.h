// One-line structured logs on stderr: `2026-11-28T17:00:00.123Z level=info msg="..." k=v`.
// Thread-safe: each line is written with one fwrite.
#pragma once

#include <cstdio>
#include <initializer_list>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace paramd::common {

using LogField = std::pair<absl::string_view, std::string>;

inline void Log(absl::string_view level, absl::string_view message,
                std::initializer_list<LogField> fields = {}) {
  std::string line = absl::StrCat(
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()), " level=", level,
      " msg=\"", message, "\"");
  for (const auto& [key, value] : fields) {
    const bool quote = value.empty() || value.find_first_of(" \"=") != std::string::npos;
    absl::StrAppend(&line, " ", key, "=", quote ? "\"" : "", value, quote ? "\"" : "");
  }
  line += "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
}

}  // namespace paramd::common
