// The `optimizer` of a training checkpoint's data.pkl: optimizer.state_dict() as torch
// pickles it, {"state": {index: {key: tensor}}, "param_groups": [{hyperparameter: value,
// ..., "params": [index, ...]}]}. Only plain values are accepted (None, bool, int, float,
// str keys, tuples and lists of numbers), the types torch's weights_only reader accepts;
// anything else is INVALID_ARGUMENT naming where it is.
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/text.h"
#include "server/io/torch_checkpoint_internal.h"

namespace paramd::io::torch_internal {
namespace {

constexpr absl::string_view kOptimizerAdvice =
    "save optimizer.state_dict() under 'optimizer' (torch.save({'model': "
    "model.state_dict(), 'optimizer': optimizer.state_dict()}, f))";

const PickleValue* Member(const PickleValue* dict, absl::string_view key) {
  for (const auto& [k, v] : dict->entries) {
    if (k->kind == PickleKind::kString && k->text == key) return v;
  }
  return nullptr;
}

bool IsSequence(const PickleValue* value) {
  return value->kind == PickleKind::kList || value->kind == PickleKind::kTuple;
}

absl::StatusOr<core::HyperValue> HyperValueOf(const PickleValue* value, size_t group,
                                              absl::string_view key) {
  switch (value->kind) {
    case PickleKind::kNone:
      return core::HyperValue::None();
    case PickleKind::kBool:
      return core::HyperValue::Bool(value->bool_value);
    case PickleKind::kInt:
      return core::HyperValue::Int(value->int_value);
    case PickleKind::kFloat:
      return core::HyperValue::Float(value->float_value);
    case PickleKind::kTuple:
    case PickleKind::kList: {
      std::vector<double> numbers;
      for (const PickleValue* item : value->items) {
        if (item->kind == PickleKind::kInt) {
          numbers.push_back(static_cast<double>(item->int_value));
        } else if (item->kind == PickleKind::kFloat) {
          numbers.push_back(item->float_value);
        } else {
          return Invalid("optimizer param_groups[", group, "][", QuoteName(key), "] holds a ",
                         PickleTypeName(*item), "; a tuple hyperparameter holds numbers");
        }
      }
      return core::HyperValue::Tuple(std::move(numbers));
    }
    default:
      return Invalid("optimizer param_groups[", group, "][", QuoteName(key), "] is a ",
                     PickleTypeName(*value),
                     "; hyperparameters are None, a bool, an int, a float or a tuple of numbers");
  }
}

absl::StatusOr<core::OptimizerStateDict::Group> ParseGroup(const PickleValue* value, size_t g) {
  if (value->kind != PickleKind::kDict) {
    return Invalid("optimizer param_groups[", g, "] is a ", PickleTypeName(*value),
                   ", not a dict");
  }
  core::OptimizerStateDict::Group group;
  bool has_params = false;
  for (const auto& [key, item] : value->entries) {
    if (key->kind != PickleKind::kString) {
      return Invalid("optimizer param_groups[", g, "] has a key of type ", PickleTypeName(*key),
                     "; param group keys are str");
    }
    if (key->text == "params" || key->text == "param_names") {
      if (!IsSequence(item)) {
        return Invalid("optimizer param_groups[", g, "][", QuoteName(key->text), "] is a ",
                       PickleTypeName(*item), ", not a list");
      }
      for (const PickleValue* element : item->items) {
        const bool params = key->text == "params";
        if (element->kind != (params ? PickleKind::kInt : PickleKind::kString)) {
          return Invalid("optimizer param_groups[", g, "][", QuoteName(key->text), "] holds a ",
                         PickleTypeName(*element), ", not ", params ? "an int" : "a str");
        }
        if (params) {
          group.params.push_back(element->int_value);
        } else {
          group.param_names.push_back(element->text);
        }
      }
      has_params = has_params || key->text == "params";
      continue;
    }
    PARAMD_ASSIGN_OR_RETURN(core::HyperValue hyper, HyperValueOf(item, g, key->text));
    group.hyperparameters.emplace_back(key->text, std::move(hyper));
  }
  if (!has_params) {
    return Invalid("optimizer param_groups[", g, "] has no 'params'; ", kOptimizerAdvice);
  }
  return group;
}

}  // namespace

absl::StatusOr<ParsedOptimizer> ParseOptimizerDict(const PickleValue* value,
                                                   std::vector<ParsedEntry>& tensors) {
  if (value->kind != PickleKind::kDict) {
    return Invalid("the file's 'optimizer' is a ", PickleTypeName(*value),
                   ", not optimizer.state_dict(); ", kOptimizerAdvice);
  }
  const PickleValue* state = Member(value, "state");
  const PickleValue* groups = Member(value, "param_groups");
  if (state == nullptr || groups == nullptr || state->kind != PickleKind::kDict ||
      !IsSequence(groups)) {
    return Invalid("the file's 'optimizer' needs 'state' (a dict) and 'param_groups' (a list); ",
                   kOptimizerAdvice);
  }
  ParsedOptimizer out;
  for (size_t g = 0; g < groups->items.size(); ++g) {
    PARAMD_ASSIGN_OR_RETURN(core::OptimizerStateDict::Group group, ParseGroup(groups->items[g], g));
    out.dict.param_groups.push_back(std::move(group));
  }
  absl::flat_hash_map<int64_t, size_t> positions;
  for (const auto& [key, entry] : state->entries) {
    if (key->kind != PickleKind::kInt) {
      return Invalid("optimizer state has a key of type ", PickleTypeName(*key),
                     "; torch keys the state by parameter index (an int)");
    }
    if (entry->kind != PickleKind::kDict) {
      return Invalid("optimizer state[", key->int_value, "] is a ", PickleTypeName(*entry),
                     ", not a dict");
    }
    auto [it, inserted] = positions.emplace(key->int_value, out.dict.state.size());
    if (!inserted) {
      return Invalid("optimizer state has parameter index ", key->int_value,
                     " twice; the pickle is damaged");
    }
    out.dict.state.push_back({key->int_value, {}});
    core::OptimizerStateDict::ParamState& param = out.dict.state.back();
    for (const auto& [name, item] : entry->entries) {
      if (name->kind != PickleKind::kString) {
        return Invalid("optimizer state[", key->int_value, "] has a key of type ",
                       PickleTypeName(*name), "; state keys are str");
      }
      const std::string where =
          absl::StrCat("optimizer['state'][", key->int_value, "][", QuoteName(name->text), "]");
      if (item->kind == PickleKind::kNone) continue;  // a buffer never made
      if (name->text == "step" &&
          (item->kind == PickleKind::kInt || item->kind == PickleKind::kFloat)) {
        // Older torch kept Adam's step as a Python number.
        const double step = item->kind == PickleKind::kInt
                                ? static_cast<double>(item->int_value)
                                : item->float_value;
        PARAMD_ASSIGN_OR_RETURN(core::Tensor tensor, core::Tensor::Full(DType::kFloat32, {}, step));
        param.tensors.emplace_back(name->text, std::move(tensor));
        continue;
      }
      if (item->kind != PickleKind::kCall) {
        return Invalid(where, " is a ", PickleTypeName(*item), ", not a tensor");
      }
      ParsedEntry parsed;
      parsed.name = where;
      PARAMD_ASSIGN_OR_RETURN(parsed.tensor, ParseTensorValue(item, where));
      out.slots.push_back({it->second, param.tensors.size()});
      param.tensors.emplace_back(name->text, core::Tensor());
      tensors.push_back(std::move(parsed));
    }
  }
  return out;
}

}  // namespace paramd::io::torch_internal
