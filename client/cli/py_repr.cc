#include "client/cli/py_repr.h"

#include <cstdint>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "base/text.h"

namespace paramd::cli {

std::string PyRepr(absl::string_view text) {
  const bool has_single = absl::StrContains(text, '\'');
  const bool has_double = absl::StrContains(text, '"');
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    const size_t length = Utf8SequenceLength(text, i);
    if (length == 0) {
      absl::StrAppendFormat(&out, "\\x%02x", c);
      ++i;
      continue;
    }
    if (length == 2) {
      // U+0080..U+00FF: the C1 controls, no-break space and soft hyphen are not printable.
      const uint32_t code = ((c & 0x1Fu) << 6) | (static_cast<unsigned char>(text[i + 1]) & 0x3Fu);
      if (code < 0xA1 || code == 0xAD) {
        absl::StrAppendFormat(&out, "\\x%02x", code);
      } else {
        out.append(text.data() + i, 2);
      }
      i += 2;
      continue;
    }
    if (length > 1) {
      out.append(text.data() + i, length);
      i += length;
      continue;
    }
    switch (c) {
      case '\t':
        out += "\\t";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          absl::StrAppendFormat(&out, "\\x%02x", c);
        } else {
          if (c == '\\' || c == static_cast<unsigned char>(quote)) out.push_back('\\');
          out.push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
  out.push_back(quote);
  return out;
}

std::string PyList(const std::vector<std::string>& items) {
  return absl::StrCat(
      "[",
      absl::StrJoin(items, ", ",
                    [](std::string* out, const std::string& item) { out->append(PyRepr(item)); }),
      "]");
}

}  // namespace paramd::cli
