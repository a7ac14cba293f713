#include "server/io/optimizer_snapshot.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/casts.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"
#include "base/text.h"
#include "nlohmann/json.hpp"
#include "server/io/safetensors.h"

namespace paramd::io {
namespace {

using Json = nlohmann::json;
using core::HyperValue;

// A switch without a default: a new mode does not compile until snapshots keep it.
const char* ModeName(core::OptimizerMode::Kind kind) {
  switch (kind) {
    case core::OptimizerMode::kManual:
      return "manual";
    case core::OptimizerMode::kAsynchronous:
      return "asynchronous";
    case core::OptimizerMode::kSynchronous:
      return "synchronous";
  }
  return "";
}

absl::StatusOr<core::OptimizerMode::Kind> ParseMode(const std::string& name) {
  for (auto kind : {core::OptimizerMode::kManual, core::OptimizerMode::kAsynchronous,
                    core::OptimizerMode::kSynchronous}) {
    if (name == ModeName(kind)) return kind;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown mode ", QuoteName(name)));
}

// Note [Exact floats in snapshots]
// JSON has no NaN or infinity (nlohmann writes them as null), and no decimal text keeps a
// NaN's payload, so a float hyperparameter is written with its IEEE-754 binary64 bits, 16
// hex digits under "bits" (a tuple: one string per item), which the reader takes over
// "value". "value", the number, is still written where it is finite, for whoever reads the
// file; it is all that files written before "bits" hold, and they stay readable. Every value
// the daemon accepts (NaN, +-inf, -0.0, any payload) thus comes back bit for bit.
std::string FloatBits(double value) {
  return absl::StrCat(absl::Hex(absl::bit_cast<uint64_t>(value), absl::kZeroPad16));
}

std::optional<double> ParseFloatBits(const Json& j) {
  if (!j.is_string()) return std::nullopt;
  const std::string& text = j.get_ref<const std::string&>();
  uint64_t bits = 0;
  if (text.size() != 16 || !std::all_of(text.begin(), text.end(), absl::ascii_isxdigit) ||
      !absl::SimpleHexAtoi(text, &bits)) {
    return std::nullopt;
  }
  return absl::bit_cast<double>(bits);
}

Json HyperValueJson(const HyperValue& value) {
  switch (value.type) {
    case HyperValue::Type::kNone:
      return {{"type", "none"}};
    case HyperValue::Type::kBool:
      return {{"type", "bool"}, {"value", value.number != 0}};
    case HyperValue::Type::kInt:
      return {{"type", "int"}, {"value", value.integer}};
    case HyperValue::Type::kFloat: {
      Json j = {{"type", "float"}, {"bits", FloatBits(value.number)}};
      if (std::isfinite(value.number)) j["value"] = value.number;
      return j;
    }
    case HyperValue::Type::kTuple: {
      Json bits = Json::array();
      bool finite = true;
      for (double item : value.tuple) {
        bits.push_back(FloatBits(item));
        finite = finite && std::isfinite(item);
      }
      Json j = {{"type", "tuple"}, {"bits", std::move(bits)}};
      if (finite) j["value"] = value.tuple;
      return j;
    }
  }
  return {};
}

absl::Status Damaged(absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("not a readable optimizer snapshot: ", what));
}

// The member `key` of `object` when it has type `is`, else null.
template <typename Is>
const Json* Member(const Json& object, const char* key, Is is) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  if (it == object.end() || !is(*it)) return nullptr;
  return &*it;
}

bool IsNumber(const Json& j) { return j.is_number(); }
bool IsUnsigned(const Json& j) { return j.is_number_unsigned(); }
bool IsString(const Json& j) { return j.is_string(); }
bool IsArray(const Json& j) { return j.is_array(); }

// A float's "bits" when it has them (Note [Exact floats in snapshots]), else its "value".
std::optional<double> ParseFloat(const Json& j) {
  if (j.contains("bits")) return ParseFloatBits(j.at("bits"));
  if (const Json* value = Member(j, "value", IsNumber)) return value->get<double>();
  return std::nullopt;
}

std::optional<std::vector<double>> ParseTuple(const Json& j) {
  std::vector<double> items;
  if (j.contains("bits")) {
    if (!j.at("bits").is_array()) return std::nullopt;
    for (const Json& item : j.at("bits")) {
      std::optional<double> parsed = ParseFloatBits(item);
      if (!parsed) return std::nullopt;
      items.push_back(*parsed);
    }
    return items;
  }
  const Json* value = Member(j, "value", IsArray);
  if (value == nullptr) return std::nullopt;
  for (const Json& item : *value) {
    if (!item.is_number()) return std::nullopt;
    items.push_back(item.get<double>());
  }
  return items;
}

absl::StatusOr<HyperValue> ParseHyperValue(const Json& j) {
  const Json* type = Member(j, "type", IsString);
  if (type == nullptr) return Damaged("a hyperparameter has no type");
  const std::string name = type->get<std::string>();
  if (name == "none") return HyperValue::None();
  if (name == "bool") {
    const Json* value = Member(j, "value", [](const Json& v) { return v.is_boolean(); });
    if (value != nullptr) return HyperValue::Bool(value->get<bool>());
  } else if (name == "int") {
    // Signed: an unsigned JSON number past int64 is no value the daemon accepts.
    const Json* value = Member(j, "value", [](const Json& v) {
      return v.is_number_integer() &&
             (!v.is_number_unsigned() ||
              v.get<uint64_t>() <= uint64_t{std::numeric_limits<int64_t>::max()});
    });
    if (value != nullptr) return HyperValue::Int(value->get<int64_t>());
  } else if (name == "float") {
    if (std::optional<double> value = ParseFloat(j)) return HyperValue::Float(*value);
  } else if (name == "tuple") {
    if (auto items = ParseTuple(j)) return HyperValue::Tuple(*std::move(items));
  }
  return Damaged(absl::StrCat("a hyperparameter of type ", QuoteName(name), " is malformed"));
}

absl::StatusOr<core::OptimizerStateDict::Group> ParseGroup(const Json& j) {
  core::OptimizerStateDict::Group group;
  const Json* params = Member(j, "params", IsArray);
  const Json* names = Member(j, "param_names", IsArray);
  const Json* hyperparameters = Member(j, "hyperparameters", IsArray);
  if (params == nullptr || names == nullptr || hyperparameters == nullptr ||
      params->size() != names->size()) {
    return Damaged("a param group lacks params, param_names or hyperparameters");
  }
  for (const Json& index : *params) {
    if (!index.is_number_unsigned()) return Damaged("a param index is not a number");
    group.params.push_back(index.get<int64_t>());
  }
  for (const Json& name : *names) {
    if (!name.is_string()) return Damaged("a param name is not a string");
    group.param_names.push_back(name.get<std::string>());
  }
  for (const Json& entry : *hyperparameters) {
    if (!entry.is_array() || entry.size() != 2 || !entry[0].is_string()) {
      return Damaged("a hyperparameter is not a [name, value] pair");
    }
    PARAMD_ASSIGN_OR_RETURN(HyperValue value, ParseHyperValue(entry[1]));
    group.hyperparameters.emplace_back(entry[0].get<std::string>(), std::move(value));
  }
  return group;
}

absl::Status ParseDescription(const std::string& text, OptimizerSnapshot& out,
                              std::vector<int64_t>& state_order) {
  const Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Damaged("its description is not JSON");
  const Json* name = Member(j, "name", IsString);
  const Json* model = Member(j, "model", IsString);
  const Json* kind = Member(j, "kind", IsString);
  const Json* mode = Member(j, "mode", IsString);
  // The mode's bound: asynchronous, S (max_staleness); synchronous, K (workers).
  const Json* bound = Member(j, "bound", IsUnsigned);
  const Json* steps = Member(j, "steps", IsUnsigned);
  const Json* version = Member(j, "model_version", IsUnsigned);
  const Json* groups = Member(j, "param_groups", IsArray);
  if (name == nullptr || model == nullptr || kind == nullptr || mode == nullptr ||
      bound == nullptr || steps == nullptr || version == nullptr || groups == nullptr) {
    return Damaged("its description lacks a field");
  }
  out.name = name->get<std::string>();
  out.model = model->get<std::string>();
  PARAMD_ASSIGN_OR_RETURN(out.kind, core::ParseOptimizerKind(kind->get<std::string>()));
  PARAMD_ASSIGN_OR_RETURN(out.mode.kind, ParseMode(mode->get<std::string>()));
  out.mode.bound = bound->get<uint64_t>();
  out.steps = steps->get<uint64_t>();
  out.model_version = version->get<uint64_t>();
  for (const Json& group : *groups) {
    PARAMD_ASSIGN_OR_RETURN(core::OptimizerStateDict::Group parsed, ParseGroup(group));
    out.state.param_groups.push_back(std::move(parsed));
  }
  // The order of the state entries; a file written before it was kept has none.
  if (const Json* order = Member(j, "state_order", IsArray)) {
    for (const Json& index : *order) {
      if (!index.is_number_unsigned()) return Damaged("a state_order index is not a number");
      state_order.push_back(index.get<int64_t>());
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SaveOptimizerSnapshot(const std::string& path, const OptimizerSnapshot& snapshot,
                                   FileSystem& fs) {
  Json groups = Json::array();
  for (const core::OptimizerStateDict::Group& group : snapshot.state.param_groups) {
    Json hyperparameters = Json::array();
    for (const auto& [key, value] : group.hyperparameters) {
      hyperparameters.push_back(Json::array({key, HyperValueJson(value)}));
    }
    groups.push_back({{"params", group.params},
                      {"param_names", group.param_names},
                      {"hyperparameters", std::move(hyperparameters)}});
  }
  // safetensors sorts the tensors by name: the state's order goes in the description.
  Json state_order = Json::array();
  for (const core::OptimizerStateDict::ParamState& state : snapshot.state.state) {
    state_order.push_back(state.index);
  }
  const Json description = {{"name", snapshot.name},
                            {"model", snapshot.model},
                            {"kind", core::OptimizerKindName(snapshot.kind)},
                            {"mode", ModeName(snapshot.mode.kind)},
                            {"bound", snapshot.mode.bound},
                            {"steps", snapshot.steps},
                            {"model_version", snapshot.model_version},
                            {"param_groups", std::move(groups)},
                            {"state_order", std::move(state_order)}};
  NamedTensors tensors;
  for (const core::OptimizerStateDict::ParamState& state : snapshot.state.state) {
    for (const auto& [key, tensor] : state.tensors) {
      tensors.emplace_back(absl::StrCat(state.index, ".", key), tensor);
    }
  }
  return SaveSafetensors(path, tensors, {{kOptimizerKey, description.dump()}}, fs);
}

absl::StatusOr<OptimizerSnapshot> ReadOptimizerSnapshot(const std::string& path) {
  PARAMD_ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors(path));
  OptimizerSnapshot snapshot;
  bool described = false;
  std::vector<int64_t> state_order;
  for (const auto& [key, value] : file.metadata) {
    if (key != kOptimizerKey) continue;
    PARAMD_RETURN_IF_ERROR(ParseDescription(value, snapshot, state_order));
    described = true;
  }
  if (!described) return Damaged(absl::StrCat("it has no ", kOptimizerKey, " metadata"));
  absl::flat_hash_map<int64_t, size_t> listed;  // index -> position in snapshot.state.state
  for (const auto& group : snapshot.state.param_groups) {
    for (int64_t index : group.params) listed.emplace(index, listed.size());
  }
  // The state entries by param-group position, listed in the file's state_order, then
  // (a file without one) in param-group order.
  std::vector<core::OptimizerStateDict::ParamState> by_position(listed.size());
  for (SafetensorsEntry& entry : file.entries) {
    std::vector<std::string> parts = absl::StrSplit(entry.name, absl::MaxSplits('.', 1));
    int64_t index = 0;
    auto it = listed.end();
    if (parts.size() == 2 && absl::SimpleAtoi(parts[0], &index)) it = listed.find(index);
    if (it == listed.end()) {
      return Damaged(absl::StrCat("tensor ", QuoteName(entry.name),
                                  " is not <index>.<key> of a listed parameter"));
    }
    by_position[it->second].index = index;
    by_position[it->second].tensors.emplace_back(parts[1], std::move(entry.tensor));
  }
  std::vector<size_t> positions;
  std::vector<bool> placed(by_position.size());
  for (int64_t index : state_order) {
    auto it = listed.find(index);
    if (it == listed.end() || by_position[it->second].tensors.empty() || placed[it->second]) {
      return Damaged(absl::StrCat("state_order names parameter ", index,
                                  ", which has no state or is named twice"));
    }
    positions.push_back(it->second);
    placed[it->second] = true;
  }
  for (size_t p = 0; p < by_position.size(); ++p) {
    if (!placed[p]) positions.push_back(p);
  }
  for (size_t p : positions) {
    core::OptimizerStateDict::ParamState& state = by_position[p];
    if (state.tensors.empty()) continue;
    // torch's key order (step first for Adam); safetensors gives them sorted by name.
    std::stable_sort(state.tensors.begin(), state.tensors.end(), [](const auto& a, const auto& b) {
      auto rank = [](const std::string& key) {
        static const char* const kOrder[] = {"step", "momentum_buffer", "exp_avg", "exp_avg_sq",
                                             "max_exp_avg_sq"};
        for (int i = 0; i < 5; ++i) {
          if (key == kOrder[i]) return i;
        }
        return 5;
      };
      return rank(a.first) < rank(b.first);
    });
    snapshot.state.state.push_back(std::move(state));
  }
  return snapshot;
}

absl::StatusOr<std::shared_ptr<core::Optimizer>> RestoreOptimizer(
    const OptimizerSnapshot& snapshot, std::shared_ptr<core::Model> model,
    absl::Duration sync_round_timeout) {
  std::vector<core::Optimizer::GroupSpec> groups;
  for (const auto& group : snapshot.state.param_groups) {
    groups.push_back({group.param_names, group.hyperparameters});
  }
  core::OptimizerMode mode = snapshot.mode;
  mode.round_timeout =
      mode.kind == core::OptimizerMode::kSynchronous ? sync_round_timeout : absl::ZeroDuration();
  PARAMD_ASSIGN_OR_RETURN(
      std::shared_ptr<core::Optimizer> optimizer,
      core::Optimizer::Create(snapshot.name, std::move(model), snapshot.kind, {}, groups, mode));
  PARAMD_RETURN_IF_ERROR(optimizer->LoadStateDict(snapshot.state));
  // A load sets AdamW's decoupled_weight_decay True, as torch's does; a restart keeps the
  // value the optimizer had (a SetHyperparameters write of False).
  if (snapshot.kind == core::OptimizerKind::kAdamW) {
    for (size_t g = 0; g < snapshot.state.param_groups.size(); ++g) {
      const core::Hyperparameters& saved = snapshot.state.param_groups[g].hyperparameters;
      const HyperValue* decoupled = core::FindHyperparameter(saved, "decoupled_weight_decay");
      if (decoupled == nullptr) continue;
      PARAMD_RETURN_IF_ERROR(optimizer->SetHyperparameters(
          static_cast<int64_t>(g), {{"decoupled_weight_decay", *decoupled}}));
    }
  }
  optimizer->RestoreSteps(snapshot.steps);
  return optimizer;
}

}  // namespace paramd::io
