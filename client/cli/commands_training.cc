// paramctl commands on optimizers (docs/training.md): optimizers, optimizer-state.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "client/cli/command.h"
#include "paramd/client.h"

namespace paramd::cli {
namespace {

// repr() of a Python float: the shortest digits that read back as `value`, in fixed
// notation for exponents from -4 to 15 and scientific otherwise ("0.001", "1e-08", "10.0").
std::string PyFloat(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buffer[64];
  int precision = 0;
  for (; precision < 17; ++precision) {
    std::snprintf(buffer, sizeof(buffer), "%.*e", precision, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  std::snprintf(buffer, sizeof(buffer), "%.*e", precision, value);
  const std::string text = buffer;
  const size_t e = text.find('e');
  const bool negative = text[0] == '-';
  std::string digits;
  for (size_t i = negative ? 1 : 0; i < e; ++i) {
    if (text[i] != '.') digits.push_back(text[i]);
  }
  const int exponent = std::atoi(text.c_str() + e + 1);
  std::string out = negative ? "-" : "";
  if (exponent < -4 || exponent >= 16) {
    out += digits.substr(0, 1);
    if (digits.size() > 1) absl::StrAppend(&out, ".", digits.substr(1));
    char exp[16];
    std::snprintf(exp, sizeof(exp), "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    return out + exp;
  }
  if (exponent < 0) return absl::StrCat(out, "0.", std::string(-exponent - 1, '0'), digits);
  if (static_cast<int>(digits.size()) <= exponent + 1) {
    const size_t zeros = static_cast<size_t>(exponent + 1) - digits.size();
    return absl::StrCat(out, digits, std::string(zeros, '0'), ".0");
  }
  const size_t point = static_cast<size_t>(exponent + 1);
  return absl::StrCat(out, digits.substr(0, point), ".", digits.substr(point));
}

std::string HyperRepr(const client::HyperValue& value) {
  switch (value.type) {
    case client::HyperValue::Type::kNone:
      return "None";
    case client::HyperValue::Type::kBool:
      return value.bool_value ? "True" : "False";
    case client::HyperValue::Type::kInt:
      return absl::StrCat(value.int_value);
    case client::HyperValue::Type::kFloat:
      return PyFloat(value.float_value);
    case client::HyperValue::Type::kTuple: {
      std::vector<std::string> items;
      for (double v : value.tuple) items.push_back(PyFloat(v));
      return absl::StrCat("(", absl::StrJoin(items, ", "), items.size() == 1 ? ",)" : ")");
    }
  }
  return "";
}

json HyperJson(const client::HyperValue& value) {
  switch (value.type) {
    case client::HyperValue::Type::kNone:
      return nullptr;
    case client::HyperValue::Type::kBool:
      return value.bool_value;
    case client::HyperValue::Type::kInt:
      return value.int_value;
    case client::HyperValue::Type::kFloat:
      return value.float_value;
    case client::HyperValue::Type::kTuple:
      return value.tuple;
  }
  return nullptr;
}

std::string ModeText(const client::OptimizerInfo& info) {
  if (info.mode == "asynchronous") return absl::StrCat("asynchronous(", info.max_staleness, ")");
  return info.mode;
}

// How torch prints a 0-dim float tensor: tensor(3.) for a whole number, else 4 decimals.
std::string ScalarTensorRepr(double value) {
  if (value == std::floor(value) && std::abs(value) < 1e15) {
    return absl::StrCat("tensor(", static_cast<int64_t>(value), ".)");
  }
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "tensor(%.4f)", value);
  return buffer;
}

// The state entries by parameter index, in the order the server sent them.
std::map<int64_t, std::vector<const std::pair<std::string, client::HostTensor>*>> ByIndex(
    const client::OptimizerState& state) {
  std::map<int64_t, std::vector<const std::pair<std::string, client::HostTensor>*>> out;
  for (const auto& entry : state.state) {
    out[std::atoll(entry.first.c_str())].push_back(&entry);
  }
  return out;
}

std::string KeyOf(const std::string& name) { return name.substr(name.find('.') + 1); }

}  // namespace

absl::Status RunOptimizers(Context& ctx, const Args& args) {
  PARAMD_ASSIGN_OR_RETURN(std::vector<client::OptimizerInfo> optimizers,
                          ctx.client->ListOptimizers(args.Get("model").value_or("")));
  if (ctx.json) {
    json out = json::array();
    for (const client::OptimizerInfo& info : optimizers) {
      out.push_back({{"name", info.name},
                     {"model", info.model},
                     {"kind", info.kind},
                     {"mode", info.mode},
                     {"max_staleness", info.max_staleness},
                     {"param_groups", info.param_groups},
                     {"parameters", info.parameters},
                     {"with_gradient", info.with_gradient},
                     {"steps", info.steps},
                     {"state_bytes", info.state_bytes},
                     {"model_version", info.model_version}});
    }
    PrintJson(out);
    return absl::OkStatus();
  }
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "MODEL", "KIND", "MODE", "GROUPS", "PARAMS", "WITH_GRAD", "STEPS", "STATE_BYTES"}};
  for (const client::OptimizerInfo& info : optimizers) {
    rows.push_back({info.name, info.model, info.kind, ModeText(info),
                    absl::StrCat(info.param_groups), absl::StrCat(info.parameters),
                    absl::StrCat(info.with_gradient), absl::StrCat(info.steps),
                    absl::StrCat(info.state_bytes)});
  }
  PrintTable(rows);
  return absl::OkStatus();
}

absl::Status RunOptimizerState(Context& ctx, const Args& args) {
  const std::string& name = args.positional[0];
  PARAMD_ASSIGN_OR_RETURN(client::OptimizerState state, ctx.client->GetOptimizerState(name));
  // The names of the parameters by index, from the groups.
  std::map<int64_t, std::string> names;
  for (const auto& group : state.param_groups) {
    for (size_t i = 0; i < group.params.size() && i < group.param_names.size(); ++i) {
      names[group.params[i]] = group.param_names[i];
    }
  }
  const auto by_index = ByIndex(state);
  if (ctx.json) {
    json groups = json::array();
    for (const auto& group : state.param_groups) {
      json g = json::object();
      for (const auto& [key, value] : group.hyperparameters) g[key] = HyperJson(value);
      g["params"] = group.params;
      g["param_names"] = group.param_names;
      groups.push_back(std::move(g));
    }
    json entries = json::object();
    for (const auto& [index, items] : by_index) {
      json entry = json::object();
      for (const auto* item : items) {
        const client::HostTensor& t = item->second;
        json tensor = {{"dtype", std::string(DTypeName(t.dtype))}, {"shape", t.shape}};
        if (t.numel() == 1) tensor["value"] = t.ToDoubles()[0];
        entry[KeyOf(item->first)] = std::move(tensor);
      }
      entries[absl::StrCat(index)] = std::move(entry);
    }
    PrintJson({{"optimizer", state.optimizer},
               {"kind", state.kind},
               {"model", state.model},
               {"state", std::move(entries)},
               {"param_groups", std::move(groups)}});
    return absl::OkStatus();
  }
  // As PyTorch users read optimizer.state_dict(): the param group dicts in full, the state
  // per parameter index with tensors summarised (0-dim ones, Adam's step, printed).
  std::cout << state.kind << " optimizer '" << state.optimizer << "' on model '" << state.model
            << "'\n";
  std::cout << "param_groups:\n";
  for (size_t g = 0; g < state.param_groups.size(); ++g) {
    const auto& group = state.param_groups[g];
    std::vector<std::string> items;
    for (const auto& [key, value] : group.hyperparameters) {
      items.push_back(absl::StrCat(PyRepr(key), ": ", HyperRepr(value)));
    }
    std::vector<std::string> params;
    for (int64_t p : group.params) params.push_back(absl::StrCat(p));
    items.push_back(absl::StrCat("'params': [", absl::StrJoin(params, ", "), "]"));
    items.push_back(absl::StrCat("'param_names': ", PyList(group.param_names)));
    std::cout << "  " << g << ": {" << absl::StrJoin(items, ", ") << "}\n";
  }
  if (by_index.empty()) {
    std::cout << "state: {}\n";
    return absl::OkStatus();
  }
  std::cout << "state:\n";
  for (const auto& [index, items] : by_index) {
    std::vector<std::string> parts;
    for (const auto* item : items) {
      const client::HostTensor& t = item->second;
      const std::string key = KeyOf(item->first);
      if (t.shape.empty()) {
        parts.push_back(absl::StrCat(PyRepr(key), ": ", ScalarTensorRepr(t.ToDoubles()[0])));
      } else {
        parts.push_back(
            absl::StrCat(PyRepr(key), ": ", DTypeName(t.dtype), ShapeString(t.shape)));
      }
    }
    auto name_it = names.find(index);
    std::cout << "  " << index << " (" << (name_it == names.end() ? "?" : name_it->second)
              << "): {" << absl::StrJoin(parts, ", ") << "}\n";
  }
  return absl::OkStatus();
}

}  // namespace paramd::cli
