// Model specs: the JSON form of a module tree (DESIGN.md section 6), built into Modules.
//
//   {"type": "MLP",
//    "attributes": ["w1"],                        plain attributes: hasattr only
//    "parameters": [{"name": "w2", "shape": [1], "init": {"constant": 2.0}},
//                   {"name": "weight", "tie": "embed.weight"},   same Parameter object
//                   {"name": "bias", "none": true}],            register_parameter(None)
//    "buffers": [{"name": "steps", "shape": [], "dtype": "int64", "persistent": false}],
//    "children": [{"name": "linear1", "type": "Linear", "args": {"in_features": 1, ...}},
//                 {"name": "4", "ref": "2"}],                    same Module object
//    "forward": ["linear1", {"op": "relu"}, "linear2"]}
//
// Built-in types take PyTorch's constructor arguments (layers/). Any other type is a custom
// container that takes no "args". Initial values are drawn from a generator seeded with
// `seed`, in document order, so the same spec and seed give the same tensors.
// Pure functions; thread-safe.
#pragma once

#include "absl/strings/string_view.h"
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "nlohmann/json.hpp"
#include "server/core/expanded_size.h"
#include "server/core/module.h"

namespace paramd::core {

// INVALID_ARGUMENT naming the JSON path of the first problem ("$.children[1].args.bias: ..."),
// or, for a tree whose shared modules expand to more than `max_state_dict_keys` state_dict
// keys or module paths, "spec expands to N state_dict keys ...; the limit is L
// (--max-state-dict-keys)" (expanded_size.h). The count runs once the tree's refs and ties
// are resolved, before anything walks its paths.
absl::StatusOr<std::shared_ptr<Module>> BuildModule(
    const nlohmann::json& spec, uint64_t seed,
    uint64_t max_state_dict_keys = kDefaultMaxStateDictKeys);
absl::StatusOr<std::shared_ptr<Module>> BuildModuleFromText(
    absl::string_view spec_json, uint64_t seed,
    uint64_t max_state_dict_keys = kDefaultMaxStateDictKeys);

}  // namespace paramd::core
