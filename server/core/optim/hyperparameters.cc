#include "server/core/optim/hyperparameters.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "server/core/py_format.h"

namespace paramd::core {
namespace {

using Type = HyperValue::Type;

// What a hyperparameter may hold.
enum class Accepts { kNumber, kBool, kOptionalBool, kPair };

struct Spec {
  const char* name;
  Accepts accepts;
};

const std::vector<Spec>& Specs(OptimizerKind kind) {
  static const std::vector<Spec> sgd = {
      {"lr", Accepts::kNumber},        {"momentum", Accepts::kNumber},
      {"dampening", Accepts::kNumber}, {"weight_decay", Accepts::kNumber},
      {"nesterov", Accepts::kBool},    {"maximize", Accepts::kBool},
      {"foreach", Accepts::kOptionalBool}, {"differentiable", Accepts::kBool},
      {"fused", Accepts::kOptionalBool}};
  static const std::vector<Spec> adam = {
      {"lr", Accepts::kNumber},          {"betas", Accepts::kPair},
      {"eps", Accepts::kNumber},         {"weight_decay", Accepts::kNumber},
      {"amsgrad", Accepts::kBool},       {"maximize", Accepts::kBool},
      {"foreach", Accepts::kOptionalBool}, {"capturable", Accepts::kBool},
      {"differentiable", Accepts::kBool}, {"fused", Accepts::kOptionalBool},
      {"decoupled_weight_decay", Accepts::kBool}};
  return kind == OptimizerKind::kSgd ? sgd : adam;
}

bool TypeFits(Accepts accepts, const HyperValue& value) {
  switch (accepts) {
    case Accepts::kNumber:
      return value.is_number();
    case Accepts::kBool:
      return value.type == Type::kBool;
    case Accepts::kOptionalBool:
      return value.type == Type::kBool || value.type == Type::kNone;
    case Accepts::kPair:
      return value.type == Type::kTuple && value.tuple.size() == 2;
  }
  return false;
}

absl::string_view AcceptsText(Accepts accepts) {
  switch (accepts) {
    case Accepts::kNumber:
      return "a number";
    case Accepts::kBool:
      return "True or False";
    case Accepts::kOptionalBool:
      return "None, True or False";
    case Accepts::kPair:
      return "a tuple of two numbers";
  }
  return "";
}

double Number(const Hyperparameters& h, absl::string_view name) {
  const HyperValue* value = FindHyperparameter(h, name);
  return value == nullptr ? 0 : value->number;
}

bool Flag(const Hyperparameters& h, absl::string_view name) { return Number(h, name) != 0; }

// The checks of torch's constructor before it builds the param groups, on its keyword
// arguments `h`, with torch 2.15's comparisons and ValueError texts. SGD compares `lr < 0.0`
// (NaN passes), Adam `not 0.0 <= lr` (NaN fails).
absl::Status CheckConstructorValues(OptimizerKind kind, const Hyperparameters& h) {
  const auto refuse = [&](absl::string_view what, absl::string_view name) {
    return absl::InvalidArgumentError(
        absl::StrCat("Invalid ", what, ": ", HyperValueRepr(*FindHyperparameter(h, name))));
  };
  if (kind == OptimizerKind::kSgd) {
    if (Number(h, "lr") < 0.0) return refuse("learning rate", "lr");
    if (Number(h, "momentum") < 0.0) return refuse("momentum value", "momentum");
    if (Number(h, "weight_decay") < 0.0) return refuse("weight_decay value", "weight_decay");
    if (Flag(h, "nesterov") && (Number(h, "momentum") <= 0 || Number(h, "dampening") != 0)) {
      return absl::InvalidArgumentError("Nesterov momentum requires a momentum and zero dampening");
    }
    return absl::OkStatus();
  }
  if (!(0.0 <= Number(h, "lr"))) return refuse("learning rate", "lr");
  if (!(0.0 <= Number(h, "eps"))) return refuse("epsilon value", "eps");
  const std::vector<double>& betas = FindHyperparameter(h, "betas")->tuple;
  for (int i = 0; i < 2; ++i) {
    if (!(0.0 <= betas[i] && betas[i] < 1.0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("Invalid beta parameter at index ", i, ": ", PyFloatRepr(betas[i])));
    }
  }
  if (!(0.0 <= Number(h, "weight_decay"))) return refuse("weight_decay value", "weight_decay");
  return absl::OkStatus();
}

}  // namespace

absl::string_view OptimizerKindName(OptimizerKind kind) {
  switch (kind) {
    case OptimizerKind::kSgd:
      return "SGD";
    case OptimizerKind::kAdam:
      return "Adam";
    case OptimizerKind::kAdamW:
      return "AdamW";
  }
  return "?";
}

absl::StatusOr<OptimizerKind> ParseOptimizerKind(absl::string_view name) {
  for (OptimizerKind kind : {OptimizerKind::kSgd, OptimizerKind::kAdam, OptimizerKind::kAdamW}) {
    if (name == OptimizerKindName(kind)) return kind;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown optimizer kind '", name, "'; paramd has torch.optim's SGD, Adam and AdamW"));
}

std::string HyperValueRepr(const HyperValue& value) {
  switch (value.type) {
    case Type::kNone:
      return "None";
    case Type::kBool:
      return value.number != 0 ? "True" : "False";
    case Type::kInt:
      return absl::StrCat(value.integer);
    case Type::kFloat:
      return PyFloatRepr(value.number);
    case Type::kTuple: {
      std::vector<std::string> parts;
      for (double v : value.tuple) parts.push_back(PyFloatRepr(v));
      return absl::StrCat("(", absl::StrJoin(parts, ", "), parts.size() == 1 ? ",)" : ")");
    }
  }
  return "";
}

const HyperValue* FindHyperparameter(const Hyperparameters& hyperparameters,
                                     absl::string_view name) {
  for (const auto& [key, value] : hyperparameters) {
    if (key == name) return &value;
  }
  return nullptr;
}

Hyperparameters DefaultHyperparameters(OptimizerKind kind) {
  if (kind == OptimizerKind::kSgd) {
    return {{"lr", HyperValue::Float(1e-3)},       {"momentum", HyperValue::Int(0)},
            {"dampening", HyperValue::Int(0)},     {"weight_decay", HyperValue::Int(0)},
            {"nesterov", HyperValue::Bool(false)}, {"maximize", HyperValue::Bool(false)},
            {"foreach", HyperValue::None()},       {"differentiable", HyperValue::Bool(false)},
            {"fused", HyperValue::None()}};
  }
  const bool adamw = kind == OptimizerKind::kAdamW;
  return {{"lr", HyperValue::Float(1e-3)},
          {"betas", HyperValue::Tuple({0.9, 0.999})},
          {"eps", HyperValue::Float(1e-8)},
          {"weight_decay", adamw ? HyperValue::Float(1e-2) : HyperValue::Int(0)},
          {"amsgrad", HyperValue::Bool(false)},
          {"maximize", HyperValue::Bool(false)},
          {"foreach", HyperValue::None()},
          {"capturable", HyperValue::Bool(false)},
          {"differentiable", HyperValue::Bool(false)},
          {"fused", HyperValue::None()},
          {"decoupled_weight_decay", HyperValue::Bool(adamw)}};
}

absl::StatusOr<Hyperparameters> ApplyHyperparameters(OptimizerKind kind, const Hyperparameters& base,
                                                     const Hyperparameters& overrides) {
  Hyperparameters result = base;
  const std::vector<Spec>& specs = Specs(kind);
  for (const auto& [name, value] : overrides) {
    const Spec* spec = nullptr;
    for (const Spec& candidate : specs) {
      if (name == candidate.name) spec = &candidate;
    }
    if (spec == nullptr) {
      std::vector<std::string> names;
      for (const Spec& candidate : specs) names.push_back(candidate.name);
      return absl::InvalidArgumentError(absl::StrCat(
          OptimizerKindName(kind), " has no hyperparameter '", name, "'; it has ",
          absl::StrJoin(names, ", ")));
    }
    if (!TypeFits(spec->accepts, value)) {
      return absl::InvalidArgumentError(absl::StrCat(OptimizerKindName(kind), "'s ", name,
                                                     " must be ", AcceptsText(spec->accepts),
                                                     ", not ", HyperValueRepr(value)));
    }
    bool placed = false;
    for (auto& [key, current] : result) {
      if (key == name) {
        current = value;
        placed = true;
      }
    }
    if (!placed) result.emplace_back(name, value);
  }
  return result;
}

absl::StatusOr<Hyperparameters> ConstructorDefaults(OptimizerKind kind,
                                                    const Hyperparameters& arguments) {
  if (kind == OptimizerKind::kAdamW && FindHyperparameter(arguments, "decoupled_weight_decay")) {
    return absl::InvalidArgumentError(
        "AdamW.__init__() got an unexpected keyword argument 'decoupled_weight_decay'");
  }
  PARAMD_ASSIGN_OR_RETURN(Hyperparameters defaults,
                          ApplyHyperparameters(kind, DefaultHyperparameters(kind), arguments));
  PARAMD_RETURN_IF_ERROR(CheckConstructorValues(kind, defaults));
  return defaults;
}

absl::Status CheckFusedDefaults(const Hyperparameters& defaults) {
  if (!Flag(defaults, "fused")) return absl::OkStatus();
  if (Flag(defaults, "differentiable")) {
    return absl::InvalidArgumentError("`fused` does not support `differentiable`");
  }
  if (Flag(defaults, "foreach")) {
    return absl::InvalidArgumentError("`fused` and `foreach` cannot be `True` together.");
  }
  return absl::OkStatus();
}

absl::StatusOr<Hyperparameters> GroupHyperparameters(OptimizerKind kind,
                                                     const Hyperparameters& defaults,
                                                     const Hyperparameters& own) {
  PARAMD_ASSIGN_OR_RETURN(Hyperparameters result, ApplyHyperparameters(kind, {}, own));
  for (const auto& [name, value] : defaults) {
    if (FindHyperparameter(result, name) == nullptr) result.emplace_back(name, value);
  }
  return result;
}

absl::StatusOr<Hyperparameters> LoadedHyperparameters(OptimizerKind kind,
                                                      const Hyperparameters& loaded) {
  PARAMD_ASSIGN_OR_RETURN(Hyperparameters result, ApplyHyperparameters(kind, {}, loaded));
  // The setdefaults of torch 2.15's __setstate__, in its order and with its values (SGD's
  // fused is False there, None in the constructor).
  const Hyperparameters set_state =
      kind == OptimizerKind::kSgd
          ? Hyperparameters{{"nesterov", HyperValue::Bool(false)},
                            {"maximize", HyperValue::Bool(false)},
                            {"foreach", HyperValue::None()},
                            {"differentiable", HyperValue::Bool(false)},
                            {"fused", HyperValue::Bool(false)}}
          : Hyperparameters{{"amsgrad", HyperValue::Bool(false)},
                            {"maximize", HyperValue::Bool(false)},
                            {"foreach", HyperValue::None()},
                            {"capturable", HyperValue::Bool(false)},
                            {"differentiable", HyperValue::Bool(false)},
                            {"decoupled_weight_decay", HyperValue::Bool(false)},
                            {"fused", HyperValue::None()}};
  // Then the values torch's step needs and a load does not fill (torch's step raises
  // KeyError without them): torch's defaults.
  const Hyperparameters defaults = DefaultHyperparameters(kind);
  for (const Hyperparameters* fill : {&set_state, &defaults}) {
    for (const auto& [name, value] : *fill) {
      if (FindHyperparameter(result, name) == nullptr) result.emplace_back(name, value);
    }
  }
  if (kind == OptimizerKind::kAdamW) {
    for (auto& [key, current] : result) {
      if (key == "decoupled_weight_decay") current = HyperValue::Bool(true);
    }
  }
  return result;
}

GroupOptions ReadGroupOptions(OptimizerKind kind, const Hyperparameters& h) {
  GroupOptions options;
  options.lr = Number(h, "lr");
  options.weight_decay = Number(h, "weight_decay");
  options.maximize = Flag(h, "maximize");
  if (kind == OptimizerKind::kSgd) {
    options.momentum = Number(h, "momentum");
    options.dampening = Number(h, "dampening");
    options.nesterov = Flag(h, "nesterov");
    return options;
  }
  const HyperValue* betas = FindHyperparameter(h, "betas");
  options.beta1 = betas->tuple[0];
  options.beta2 = betas->tuple[1];
  options.eps = Number(h, "eps");
  options.amsgrad = Flag(h, "amsgrad");
  options.decoupled_weight_decay = Flag(h, "decoupled_weight_decay");
  return options;
}

}  // namespace paramd::core
