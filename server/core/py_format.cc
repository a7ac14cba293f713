#include "server/core/py_format.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace paramd::core {

std::string PyFloatRepr(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";

  // std::to_chars without a precision gives the shortest round-trip digits, which is also
  // what Python's repr picks (David Gay's mode 0); only the layout differs.
  char buffer[64];
  const auto [end, error] =
      std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::scientific);
  if (error != std::errc()) return "nan";  // unreachable: 64 bytes hold any double
  const absl::string_view text(buffer, static_cast<size_t>(end - buffer));

  // text is "[-]d[.ddd]e[+-]XX".
  const size_t e_pos = text.find('e');
  const bool negative = text.front() == '-';
  std::string digits;
  for (char c : text.substr(negative ? 1 : 0, e_pos - (negative ? 1 : 0))) {
    if (c != '.') digits.push_back(c);
  }
  const int exponent = std::atoi(std::string(text.substr(e_pos + 1)).c_str());

  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent < 0) {
      absl::StrAppend(&out, "0.", std::string(static_cast<size_t>(-exponent - 1), '0'), digits);
    } else {
      const size_t whole = static_cast<size_t>(exponent) + 1;
      if (digits.size() <= whole) {
        absl::StrAppend(&out, digits, std::string(whole - digits.size(), '0'), ".0");
      } else {
        absl::StrAppend(&out, digits.substr(0, whole), ".", digits.substr(whole));
      }
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) absl::StrAppend(&out, ".", digits.substr(1));
  char exponent_text[16];
  std::snprintf(exponent_text, sizeof(exponent_text), "e%c%02d", exponent < 0 ? '-' : '+',
                std::abs(exponent));
  out += exponent_text;
  return out;
}

absl::string_view PyBool(bool value) { return value ? "True" : "False"; }

std::string PyTupleRepr(const std::vector<int64_t>& values) {
  if (values.size() == 1) return absl::StrCat("(", values[0], ",)");
  return absl::StrCat("(", absl::StrJoin(values, ", "), ")");
}

std::string PyStringRepr(absl::string_view text) {
  const bool has_single = text.find('\'') != absl::string_view::npos;
  const bool has_double = text.find('"') != absl::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (c == quote || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (byte < 0x20 || byte == 0x7f) {
      char escaped[8];
      std::snprintf(escaped, sizeof(escaped), "\\x%02x", byte);
      out += escaped;
    } else {
      // Bytes of multi-byte UTF-8 pass through: Python 3 prints printable non-ASCII as is.
      out.push_back(c);
    }
  }
  out.push_back(quote);
  return out;
}

std::string PyRepr(const nlohmann::ordered_json& value) {
  switch (value.type()) {
    case nlohmann::ordered_json::value_t::null:
      return "None";
    case nlohmann::ordered_json::value_t::boolean:
      return std::string(PyBool(value.get<bool>()));
    case nlohmann::ordered_json::value_t::number_integer:
      return absl::StrCat(value.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned:
      return absl::StrCat(value.get<uint64_t>());
    case nlohmann::ordered_json::value_t::number_float:
      return PyFloatRepr(value.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return PyStringRepr(value.get_ref<const std::string&>());
    case nlohmann::ordered_json::value_t::array: {
      std::vector<std::string> items;
      for (const auto& item : value) items.push_back(PyRepr(item));
      if (items.size() == 1) return absl::StrCat("(", items[0], ",)");
      return absl::StrCat("(", absl::StrJoin(items, ", "), ")");
    }
    case nlohmann::ordered_json::value_t::object: {
      std::vector<std::string> items;
      for (const auto& [key, item] : value.items()) {
        items.push_back(absl::StrCat(PyStringRepr(key), ": ", PyRepr(item)));
      }
      return absl::StrCat("{", absl::StrJoin(items, ", "), "}");
    }
    default:
      return "None";  // binary and discarded values never come from a parsed spec
  }
}

std::string PyStr(const nlohmann::ordered_json& value) {
  if (value.is_string()) return value.get<std::string>();
  return PyRepr(value);
}

}  // namespace paramd::core
