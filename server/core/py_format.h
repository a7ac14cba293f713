// Python's text for the values PyTorch prints in extra_repr and error messages: float repr,
// True/False, tuples, None and quoted strings. Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"

namespace paramd::core {

// Exactly Python's `repr(float)`: the shortest digits that round-trip, fixed notation when
// the decimal exponent is in [-4, 16) and scientific otherwise ("1e-05", "1.5e+16"); an
// integral value keeps ".0" ("2.0"); "inf", "-inf", "nan"; "-0.0".
std::string PyFloatRepr(double value);

// "True" / "False".
absl::string_view PyBool(bool value);

// Python's tuple repr: "(5, 5)", "(4,)", "()".
std::string PyTupleRepr(const std::vector<int64_t>& values);

// Python's `repr(str)`: single quotes unless the text holds a single quote and no double
// quote, backslash escapes for the quote, backslash and control characters.
std::string PyStringRepr(absl::string_view text);

// `repr(x)` of the Python value a JSON argument stands for: integers as integers, floats
// by PyFloatRepr, booleans as True/False, null as None, strings quoted, arrays as tuples
// (a list argument is a tuple once PyTorch's _pair has seen it) and objects as dicts.
std::string PyRepr(const nlohmann::ordered_json& value);
// `str(x)`, what "{}".format(x) prints: as PyRepr except that a top-level string is
// unquoted (Conv2d prints `padding=same`, `padding_mode=reflect`).
std::string PyStr(const nlohmann::ordered_json& value);

}  // namespace paramd::core
