// The hyperparameters of torch.optim's SGD, Adam and AdamW, as torch keeps them in a param
// group: an ordered list of (name, value) in the order torch 2.15 writes them into
// `optimizer.state_dict()["param_groups"]`, each value with its Python type (torch writes
// `momentum=0` as an int and `lr=0.1` as a float, and a client rebuilding the dict keeps
// them so). Values are checked where torch checks them, in its constructor only, with its
// messages.
//
// Pure values and functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace paramd::core {

enum class OptimizerKind { kSgd, kAdam, kAdamW };

// "SGD", "Adam", "AdamW": torch.optim's class names.
absl::string_view OptimizerKindName(OptimizerKind kind);
// INVALID_ARGUMENT for another name, listing the three.
absl::StatusOr<OptimizerKind> ParseOptimizerKind(absl::string_view name);

// One hyperparameter value with its Python type: None, a bool, an int, a float, or a tuple
// of numbers (Adam's betas). An int is kept exactly in `integer` (what is given back and
// saved) and as the nearest double in `number` (what checks and steps compute with, as
// torch's arithmetic converts a Python int).
struct HyperValue {
  enum class Type { kNone, kBool, kInt, kFloat, kTuple };
  Type type = Type::kNone;
  double number = 0;  // kBool (0 or 1), kInt (rounded), kFloat
  std::vector<double> tuple;
  int64_t integer = 0;  // kInt

  static HyperValue None() { return {}; }
  static HyperValue Bool(bool value) { return {Type::kBool, value ? 1.0 : 0.0, {}}; }
  static HyperValue Int(int64_t value) {
    return {Type::kInt, static_cast<double>(value), {}, value};
  }
  static HyperValue Float(double value) { return {Type::kFloat, value, {}}; }
  static HyperValue Tuple(std::vector<double> values) { return {Type::kTuple, 0, std::move(values)}; }

  bool is_number() const { return type == Type::kInt || type == Type::kFloat; }
  bool operator==(const HyperValue& other) const = default;
};

// Python's repr of the value ("0.1", "0", "True", "None", "(0.9, 0.999)").
std::string HyperValueRepr(const HyperValue& value);

using Hyperparameters = std::vector<std::pair<std::string, HyperValue>>;

// The value of `name`, or null.
const HyperValue* FindHyperparameter(const Hyperparameters& hyperparameters,
                                     absl::string_view name);

// torch.optim's defaults for `kind`, in the order torch writes them.
Hyperparameters DefaultHyperparameters(OptimizerKind kind);

// `base` with `overrides` applied (each replaces the value of its name, keeping its place).
// INVALID_ARGUMENT for a name `kind` does not have (listing those it has) or a value of the
// wrong type; the values themselves are not checked, as torch checks them only in its
// constructor (a param group's own lr=-1.0, or a later write of it, is taken).
absl::StatusOr<Hyperparameters> ApplyHyperparameters(OptimizerKind kind, const Hyperparameters& base,
                                                     const Hyperparameters& overrides);

// The defaults of torch.optim.<kind>(params, **arguments): torch's defaults with `arguments`
// applied, checked as the constructor checks its keyword arguments before it builds the
// param groups, with torch 2.15's comparisons and ValueError texts ("Invalid learning rate:
// -1.0"; SGD's `lr < 0.0` lets NaN through where Adam's `not 0.0 <= lr` does not). AdamW
// has no decoupled_weight_decay argument (TypeError's text in torch).
absl::StatusOr<Hyperparameters> ConstructorDefaults(OptimizerKind kind,
                                                    const Hyperparameters& arguments);

// The constructor's checks after it built the param groups, on its defaults only: fused
// with differentiable, or with foreach, is refused with torch's RuntimeError texts.
absl::Status CheckFusedDefaults(const Hyperparameters& defaults);

// A param group's hyperparameters as add_param_group makes them: the group's `own` values
// first, in their order (ApplyHyperparameters' checks, no value checks), then the
// `defaults` it lacks, in theirs, as torch's setdefault appends them.
absl::StatusOr<Hyperparameters> GroupHyperparameters(OptimizerKind kind,
                                                     const Hyperparameters& defaults,
                                                     const Hyperparameters& own);

// A param group's hyperparameters as load_state_dict leaves them: the loaded values in the
// loaded order (ApplyHyperparameters' checks, no value checks), then what torch 2.15's
// __setstate__ fills in (its keys, order and values: SGD's fused False), then torch's
// defaults for the rest (torch leaves them missing, and its step raises KeyError; paramd
// cannot step without them). AdamW's decoupled_weight_decay is set to True, as
// AdamW.__setstate__ sets it.
absl::StatusOr<Hyperparameters> LoadedHyperparameters(OptimizerKind kind,
                                                      const Hyperparameters& loaded);

// The values the step computes with, read from checked hyperparameters.
struct GroupOptions {
  double lr = 0;
  double weight_decay = 0;
  bool maximize = false;
  double momentum = 0;
  double dampening = 0;
  bool nesterov = false;
  double beta1 = 0;
  double beta2 = 0;
  double eps = 0;
  bool amsgrad = false;
  bool decoupled_weight_decay = false;
};
GroupOptions ReadGroupOptions(OptimizerKind kind, const Hyperparameters& hyperparameters);

}  // namespace paramd::core
