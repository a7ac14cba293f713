#include "base/text.h"

#include "absl/strings/str_cat.h"

namespace paramd {
namespace {

// Escapes the input's bytes before `end` into `out`; with `quote`, `"` and `\` too.
void AppendEscaped(absl::string_view text, size_t end, bool quote, std::string* out) {
  static constexpr char kHex[] = "0123456789abcdef";
  size_t i = 0;
  while (i < end) {
    const unsigned char byte = static_cast<unsigned char>(text[i]);
    if (byte >= 0x80) {
      const size_t length = Utf8SequenceLength(text, i);
      if (length > 0) {
        out->append(text.data() + i, length);
        i += length;
        continue;
      }
    }
    ++i;
    if (byte == '\n') {
      out->append("\\n");
    } else if (byte == '\r') {
      out->append("\\r");
    } else if (byte == '\t') {
      out->append("\\t");
    } else if (quote && (byte == '"' || byte == '\\')) {
      out->push_back('\\');
      out->push_back(static_cast<char>(byte));
    } else if (byte < 0x20 || byte == 0x7f || byte >= 0x80) {
      out->append("\\x");
      out->push_back(kHex[byte >> 4]);
      out->push_back(kHex[byte & 0xf]);
    } else {
      out->push_back(static_cast<char>(byte));
    }
  }
}

// The largest cut <= `max_bytes` that does not split a UTF-8 sequence.
size_t CutAt(absl::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text.size();
  size_t cut = max_bytes;
  // Back off over continuation bytes (at most three) to the start of a character.
  for (int k = 0; k < 3 && cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80;
       ++k) {
    --cut;
  }
  return cut;
}

}  // namespace

size_t Utf8SequenceLength(absl::string_view text, size_t pos) {
  if (pos >= text.size()) return 0;
  const unsigned char lead = static_cast<unsigned char>(text[pos]);
  if (lead < 0x80) return 1;
  size_t length;
  uint32_t code_point;
  if ((lead & 0xE0) == 0xC0) {
    length = 2;
    code_point = lead & 0x1F;
  } else if ((lead & 0xF0) == 0xE0) {
    length = 3;
    code_point = lead & 0x0F;
  } else if ((lead & 0xF8) == 0xF0) {
    length = 4;
    code_point = lead & 0x07;
  } else {
    return 0;
  }
  if (text.size() - pos < length) return 0;
  for (size_t k = 1; k < length; ++k) {
    const unsigned char next = static_cast<unsigned char>(text[pos + k]);
    if ((next & 0xC0) != 0x80) return 0;
    code_point = (code_point << 6) | (next & 0x3F);
  }
  constexpr uint32_t kSmallest[] = {0, 0, 0x80, 0x800, 0x10000};
  if (code_point < kSmallest[length]) return 0;  // overlong
  if (code_point > 0x10FFFF || (code_point >= 0xD800 && code_point <= 0xDFFF)) return 0;
  return length;
}

bool IsUtf8(absl::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const size_t length = Utf8SequenceLength(text, i);
    if (length == 0) return false;
    i += length;
  }
  return true;
}

std::string ShortName(absl::string_view name) {
  std::string out;
  const size_t cut = CutAt(name, kMaxQuotedNameBytes);
  AppendEscaped(name, cut, /*quote=*/false, &out);
  if (cut < name.size()) absl::StrAppend(&out, "...(", name.size(), " bytes)");
  return out;
}

std::string QuoteName(absl::string_view name) { return absl::StrCat("'", ShortName(name), "'"); }

std::string EscapeText(absl::string_view text, size_t max_bytes) {
  std::string out;
  const size_t cut = CutAt(text, max_bytes);
  AppendEscaped(text, cut, /*quote=*/true, &out);
  if (cut < text.size()) absl::StrAppend(&out, "...(", text.size(), " bytes)");
  return out;
}

std::string TruncateText(absl::string_view text, size_t max_bytes) {
  if (text.size() <= max_bytes) return std::string(text);
  return absl::StrCat(text.substr(0, CutAt(text, max_bytes)), "... (", text.size(),
                      " bytes in all)");
}

}  // namespace paramd
