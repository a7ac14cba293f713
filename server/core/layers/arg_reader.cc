// ArgReader (layer.h): type checks for a spec's "args" object. nlohmann::json is never asked
// for a value of a type it does not hold, so nothing here throws.
#include <algorithm>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "server/core/layers/builtin.h"
#include "server/core/layers/layer.h"

namespace paramd::core {
namespace {

using Json = nlohmann::json;

// The value as JSON text for messages; invalid UTF-8 is replaced rather than thrown on.
std::string Shown(const Json& value) {
  return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// Integers that fit in int64 (a JSON number without a fraction or exponent; nlohmann
// stores a non-negative one as unsigned).
std::optional<int64_t> AsInt64(const Json& value) {
  if (value.is_number_unsigned()) {
    const uint64_t unsigned_value = value.get<uint64_t>();
    if (unsigned_value > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return std::nullopt;
    }
    return static_cast<int64_t>(unsigned_value);
  }
  if (value.is_number_integer()) return value.get<int64_t>();
  return std::nullopt;
}

// PyTorch's _pair / _ntuple reading of `value`, or nullopt when it has the wrong type. A
// null (for an Optional argument) gives an empty vector; Note [ArgReader sequences].
std::optional<std::vector<int64_t>> ParseIntOrTuple(const Json& value, size_t count,
                                                    bool optional) {
  if (value.is_null()) {
    if (!optional) return std::nullopt;
    return std::vector<int64_t>();
  }
  if (std::optional<int64_t> single = AsInt64(value); single.has_value()) {
    return std::vector<int64_t>(count == 0 ? 1 : count, *single);
  }
  if (!value.is_array() || (count != 0 && value.size() != count)) return std::nullopt;
  std::vector<int64_t> result;
  for (const Json& element : value) {
    if (optional && element.is_null()) {
      result.push_back(kNoneSize);
      continue;
    }
    std::optional<int64_t> item = AsInt64(element);
    if (!item.has_value()) return std::nullopt;
    result.push_back(*item);
  }
  return result;
}

std::string IntOrTupleWords(size_t count, bool optional) {
  std::string words = count == 0 ? "an integer or a list of integers"
                                 : absl::StrCat("an integer or a list of ", count, " integers");
  if (optional) words += " or null";
  return words;
}

// A spec may leave "args" out (null); anything else that is not an object is an error,
// which every accessor reports so that the first read of a build fails.
absl::Status CheckArgsObject(const ArgReader& reader, const std::string& type, const Json& args) {
  if (args.is_null() || args.is_object()) return absl::OkStatus();
  return reader.Error("",
                      absl::StrCat(type, " expected an object of arguments, got ", Shown(args)));
}

}  // namespace

ArgReader::ArgReader(std::string type, const nlohmann::json& args, std::string path)
    : type_(std::move(type)), args_(args), path_(std::move(path)) {}

const nlohmann::json* ArgReader::Lookup(absl::string_view name) {
  if (std::find(consumed_.begin(), consumed_.end(), name) == consumed_.end()) {
    consumed_.emplace_back(name);
  }
  if (!args_.is_object()) return nullptr;
  auto it = args_.find(std::string(name));
  return it == args_.end() ? nullptr : &*it;
}

absl::Status ArgReader::CheckWindow(absl::string_view name,
                                    const std::vector<int64_t>& values) const {
  for (int64_t value : values) {
    if (value > kMaxWindowSize) {
      return Error(name, absl::StrCat(value, " is too large; window sizes go up to ",
                                      kMaxWindowSize));
    }
  }
  return absl::OkStatus();
}

absl::Status ArgReader::Error(absl::string_view name, absl::string_view message) const {
  if (name.empty()) return absl::InvalidArgumentError(absl::StrCat(path_, ": ", message));
  return absl::InvalidArgumentError(absl::StrCat(path_, ".", name, ": ", message));
}

absl::StatusOr<int64_t> ArgReader::Int(absl::string_view name) {
  PARAMD_RETURN_IF_ERROR(CheckArgsObject(*this, type_, args_));
  const Json* value = Lookup(name);
  if (value == nullptr) {
    return Error(name, absl::StrCat("missing required argument '", name, "' for ", type_));
  }
  std::optional<int64_t> result = AsInt64(*value);
  if (!result.has_value()) {
    return Error(name,
                 absl::StrCat(type_, " expected an integer for '", name, "', got ", Shown(*value)));
  }
  normalized_[std::string(name)] = *result;
  return *result;
}

absl::StatusOr<int64_t> ArgReader::Int(absl::string_view name, int64_t fallback) {
  PARAMD_RETURN_IF_ERROR(CheckArgsObject(*this, type_, args_));
  const Json* value = Lookup(name);
  if (value == nullptr) {
    normalized_[std::string(name)] = fallback;
    return fallback;
  }
  std::optional<int64_t> result = AsInt64(*value);
  if (!result.has_value()) {
    return Error(name,
                 absl::StrCat(type_, " expected an integer for '", name, "', got ", Shown(*value)));
  }
  normalized_[std::string(name)] = *result;
  return *result;
}

absl::StatusOr<std::vector<int64_t>> ArgReader::IntOrTuple(absl::string_view name, size_t count) {
  PARAMD_RETURN_IF_ERROR(CheckArgsObject(*this, type_, args_));
  const Json* value = Lookup(name);
  if (value == nullptr) {
    return Error(name, absl::StrCat("missing required argument '", name, "' for ", type_));
  }
  std::optional<std::vector<int64_t>> result = ParseIntOrTuple(*value, count, false);
  if (!result.has_value()) {
    return Error(name, absl::StrCat(type_, " expected ", IntOrTupleWords(count, false), " for '",
                                    name, "', got ", Shown(*value)));
  }
  normalized_[std::string(name)] = nlohmann::ordered_json(*value);
  return *std::move(result);
}

// See Note [ArgReader sequences] in builtin.h for `count == 0` and a null fallback.
absl::StatusOr<std::vector<int64_t>> ArgReader::IntOrTuple(absl::string_view name, size_t count,
                                                           const nlohmann::json& fallback) {
  PARAMD_RETURN_IF_ERROR(CheckArgsObject(*this, type_, args_));
  const bool optional = fallback.is_null();
  const Json* value = Lookup(name);
  if (value == nullptr) value = &fallback;
  std::optional<std::vector<int64_t>> result = ParseIntOrTuple(*value, count, optional);
  if (!result.has_value()) {
    return Error(name, absl::StrCat(type_, " expected ", IntOrTupleWords(count, optional), " for '",
                                    name, "', got ", Shown(*value)));
  }
  normalized_[std::string(name)] = nlohmann::ordered_json(*value);
  return *std::move(result);
}

absl::StatusOr<double> ArgReader::Float(absl::string_view name, double fallback) {
  PARAMD_RETURN_IF_ERROR(CheckArgsObject(*this, type_, args_));
  const Json* value = Lookup(name);
  if (value == nullptr) {
    normalized_[std::string(name)] = fallback;
    return fallback;
  }
  if (!value->is_number()) {
    return Error(name,
                 absl::StrCat(type_, " expected a number for '", name, "', got ", Shown(*value)));
  }
  // Kept as given: Python prints `eps=0` for an int and `eps=0.0` for a float.
  normalized_[std::string(name)] = nlohmann::ordered_json(*value);
  return value->get<double>();
}

absl::StatusOr<std::optional<double>> ArgReader::OptionalFloat(absl::string_view name,
                                                               std::optional<double> fallback) {
  PARAMD_RETURN_IF_ERROR(CheckArgsObject(*this, type_, args_));
  const Json* value = Lookup(name);
  if (value == nullptr) {
    normalized_[std::string(name)] =
        fallback.has_value() ? nlohmann::ordered_json(*fallback) : nlohmann::ordered_json();
    return fallback;
  }
  if (value->is_null()) {
    normalized_[std::string(name)] = nullptr;
    return std::optional<double>();
  }
  if (!value->is_number()) {
    return Error(name, absl::StrCat(type_, " expected a number or null for '", name, "', got ",
                                    Shown(*value)));
  }
  normalized_[std::string(name)] = nlohmann::ordered_json(*value);
  return std::optional<double>(value->get<double>());
}

absl::StatusOr<std::optional<int64_t>> ArgReader::OptionalInt(absl::string_view name,
                                                              std::optional<int64_t> fallback) {
  PARAMD_RETURN_IF_ERROR(CheckArgsObject(*this, type_, args_));
  const Json* value = Lookup(name);
  if (value == nullptr) {
    normalized_[std::string(name)] =
        fallback.has_value() ? nlohmann::ordered_json(*fallback) : nlohmann::ordered_json();
    return fallback;
  }
  if (value->is_null()) {
    normalized_[std::string(name)] = nullptr;
    return std::optional<int64_t>();
  }
  std::optional<int64_t> result = AsInt64(*value);
  if (!result.has_value()) {
    return Error(name, absl::StrCat(type_, " expected an integer or null for '", name, "', got ",
                                    Shown(*value)));
  }
  normalized_[std::string(name)] = *result;
  return result;
}

absl::StatusOr<bool> ArgReader::Bool(absl::string_view name, bool fallback) {
  PARAMD_RETURN_IF_ERROR(CheckArgsObject(*this, type_, args_));
  const Json* value = Lookup(name);
  if (value == nullptr) {
    normalized_[std::string(name)] = fallback;
    return fallback;
  }
  if (!value->is_boolean()) {
    return Error(name,
                 absl::StrCat(type_, " expected a boolean for '", name, "', got ", Shown(*value)));
  }
  normalized_[std::string(name)] = value->get<bool>();
  return value->get<bool>();
}

// An empty `allowed` accepts any string (the caller checks it, as Conv2d's padding does).
absl::StatusOr<std::string> ArgReader::String(absl::string_view name, std::string fallback,
                                              std::vector<std::string> allowed) {
  PARAMD_RETURN_IF_ERROR(CheckArgsObject(*this, type_, args_));
  const Json* value = Lookup(name);
  std::string result;
  if (value == nullptr) {
    result = std::move(fallback);
  } else if (value->is_string()) {
    result = value->get<std::string>();
  } else {
    return Error(name,
                 absl::StrCat(type_, " expected a string for '", name, "', got ", Shown(*value)));
  }
  if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), result) == allowed.end()) {
    std::vector<std::string> quoted;
    for (const std::string& option : allowed) quoted.push_back(absl::StrCat("'", option, "'"));
    return Error(name, absl::StrCat(type_, " expected one of ", absl::StrJoin(quoted, ", "),
                                    " for '", name, "', got ", Shown(*value)));
  }
  normalized_[std::string(name)] = result;
  return result;
}

absl::StatusOr<DType> ArgReader::Dtype() {
  PARAMD_RETURN_IF_ERROR(CheckArgsObject(*this, type_, args_));
  const Json* value = Lookup("dtype");
  if (value == nullptr || value->is_null()) return DType::kFloat32;
  if (!value->is_string()) {
    return Error("dtype", absl::StrCat(type_,
                                       " expected a dtype name such as \"float32\" for "
                                       "'dtype', got ",
                                       Shown(*value)));
  }
  absl::StatusOr<DType> dtype = ParseDType(value->get_ref<const std::string&>());
  if (!dtype.ok()) return Error("dtype", dtype.status().message());
  normalized_["dtype"] = std::string(DTypeName(*dtype));
  return *dtype;
}

const nlohmann::ordered_json& ArgReader::Recorded(absl::string_view name) const {
  static const auto* const kNull = new nlohmann::ordered_json();
  auto it = normalized_.find(std::string(name));
  return it == normalized_.end() ? *kNull : *it;
}

void ArgReader::Put(absl::string_view name, nlohmann::ordered_json value) {
  normalized_[std::string(name)] = std::move(value);
}

absl::Status ArgReader::CheckAllConsumed() const {
  PARAMD_RETURN_IF_ERROR(CheckArgsObject(*this, type_, args_));
  if (args_.is_null()) return absl::OkStatus();
  for (const auto& [key, value] : args_.items()) {
    if (std::find(consumed_.begin(), consumed_.end(), key) != consumed_.end()) continue;
    const std::string takes = consumed_.empty()
                                  ? "it takes no arguments"
                                  : absl::StrCat("it takes ", absl::StrJoin(consumed_, ", "));
    return Error(key, absl::StrCat("unknown argument '", key, "' for ", type_, "; ", takes));
  }
  return absl::OkStatus();
}

}  // namespace paramd::core
