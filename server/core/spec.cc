#include "server/core/spec.h"

#include <functional>
#include <iterator>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "base/status_macros.h"
#include "base/text.h"
#include "server/core/forward.h"
#include "server/core/init.h"
#include "server/core/layers/layer.h"
#include "server/core/storage.h"
#include "server/core/traversal.h"

namespace paramd::core {
namespace {

using json = nlohmann::json;

absl::Status SpecError(absl::string_view path, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("spec error at ", path, ": ", message));
}

// Every problem found in a spec is the spec's fault, so the code is INVALID_ARGUMENT
// whatever the underlying check said (a failed lookup, a taken name).
absl::Status AtPath(absl::string_view path, const absl::Status& status) {
  return SpecError(path, status.message());
}

absl::Status CheckKeys(const json& node, absl::string_view path,
                       std::initializer_list<absl::string_view> allowed) {
  for (const auto& [key, value] : node.items()) {
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      return SpecError(path, absl::StrCat("unknown field ", QuoteName(key), "; expected one of ",
                                          absl::StrJoin(allowed, ", ")));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RequiredString(const json& node, absl::string_view field,
                                           absl::string_view path) {
  auto it = node.find(std::string(field));
  if (it == node.end()) return SpecError(path, absl::StrCat("missing field ", QuoteName(field)));
  if (!it->is_string()) {
    return SpecError(absl::StrCat(path, ".", field),
                     absl::StrCat("expected a string, got ", it->dump()));
  }
  return it->get<std::string>();
}

bool IsNone(const json& node) {
  auto it = node.find("none");
  return it != node.end() && it->is_boolean() && it->get<bool>();
}

absl::StatusOr<Shape> ReadShape(const json& node, absl::string_view path) {
  auto it = node.find("shape");
  if (it == node.end()) return SpecError(path, "missing field 'shape'");
  if (!it->is_array()) {
    return SpecError(absl::StrCat(path, ".shape"),
                     absl::StrCat("expected a list of sizes, got ", it->dump()));
  }
  Shape shape;
  for (const json& extent : *it) {
    if (!extent.is_number_integer() || extent.get<int64_t>() < 0) {
      return SpecError(absl::StrCat(path, ".shape"),
                       absl::StrCat("sizes must be non-negative integers, got ", it->dump()));
    }
    shape.push_back(extent.get<int64_t>());
  }
  absl::Status numel = CheckedNumel(shape, sizeof(double)).status();
  if (!numel.ok()) return AtPath(absl::StrCat(path, ".shape"), numel);
  return shape;
}

absl::StatusOr<DType> ReadDType(const json& node, absl::string_view path) {
  auto it = node.find("dtype");
  if (it == node.end()) return DType::kFloat32;
  if (!it->is_string()) {
    return SpecError(absl::StrCat(path, ".dtype"), absl::StrCat("expected a string, got ", it->dump()));
  }
  absl::StatusOr<DType> dtype = ParseDType(it->get<std::string>());
  if (!dtype.ok()) return AtPath(absl::StrCat(path, ".dtype"), dtype.status());
  return dtype;
}

void FlattenValues(const json& value, std::vector<double>& out, bool& ok) {
  if (value.is_array()) {
    for (const json& item : value) FlattenValues(item, out, ok);
  } else if (value.is_number() || value.is_boolean()) {
    out.push_back(value.is_boolean() ? (value.get<bool>() ? 1.0 : 0.0) : value.get<double>());
  } else {
    ok = false;
  }
}

absl::StatusOr<double> NumberField(const json& object, absl::string_view field, double fallback,
                                   absl::string_view path) {
  auto it = object.find(std::string(field));
  if (it == object.end()) return fallback;
  if (!it->is_number()) {
    return SpecError(absl::StrCat(path, ".", field), absl::StrCat("expected a number, got ", it->dump()));
  }
  return it->get<double>();
}

// The "init" of a declared parameter or buffer. Absent means zeros (torch.empty's contents
// are undefined; paramd makes them deterministic).
absl::StatusOr<Tensor> ReadInit(const json& node, DType dtype, const Shape& shape, InitRng& rng,
                                absl::string_view path) {
  auto it = node.find("init");
  const std::string init_path = absl::StrCat(path, ".init");
  if (it == node.end()) return Tensor::Full(dtype, shape, 0.0);
  const json& init = *it;
  if (init.is_string()) {
    const std::string kind = init.get<std::string>();
    if (kind == "zeros") return Tensor::Full(dtype, shape, 0.0);
    if (kind == "ones") return Tensor::Full(dtype, shape, 1.0);
    if (kind == "randn") return InitNormal(rng, dtype, shape, 0.0, 1.0);
    if (kind == "rand") return InitUniform(rng, dtype, shape, 0.0, 1.0);
    return SpecError(init_path, absl::StrCat("unknown init ", QuoteName(kind),
                                             "; expected zeros, ones, randn, rand, or an object "
                                             "with constant, normal, uniform or values"));
  }
  if (!init.is_object() || init.size() != 1) {
    return SpecError(init_path,
                     "expected a string or an object with one of constant, normal, uniform, values");
  }
  const std::string& kind = init.begin().key();
  const json& value = init.begin().value();
  if (kind == "constant") {
    if (!value.is_number() && !value.is_boolean()) {
      return SpecError(init_path + ".constant", absl::StrCat("expected a number, got ", value.dump()));
    }
    return Tensor::Full(dtype, shape, value.is_boolean() ? value.get<bool>() : value.get<double>());
  }
  if (kind == "normal" || kind == "uniform") {
    const std::string sub = absl::StrCat(init_path, ".", kind);
    if (!value.is_object()) return SpecError(sub, "expected an object");
    if (kind == "normal") {
      PARAMD_ASSIGN_OR_RETURN(double mean, NumberField(value, "mean", 0.0, sub));
      PARAMD_ASSIGN_OR_RETURN(double std, NumberField(value, "std", 1.0, sub));
      if (std < 0) return SpecError(sub + ".std", "must be non-negative");
      return InitNormal(rng, dtype, shape, mean, std);
    }
    PARAMD_ASSIGN_OR_RETURN(double low, NumberField(value, "low", 0.0, sub));
    PARAMD_ASSIGN_OR_RETURN(double high, NumberField(value, "high", 1.0, sub));
    if (high < low) return SpecError(sub, "high must not be below low");
    return InitUniform(rng, dtype, shape, low, high);
  }
  if (kind == "values") {
    std::vector<double> values;
    bool ok = true;
    FlattenValues(value, values, ok);
    if (!ok) return SpecError(init_path + ".values", "expected numbers or nested lists of numbers");
    absl::StatusOr<Tensor> tensor = Tensor::FromDoubles(dtype, shape, values);
    if (!tensor.ok()) return AtPath(init_path + ".values", tensor.status());
    return tensor;
  }
  return SpecError(init_path, absl::StrCat("unknown init ", QuoteName(kind),
                                           "; expected constant, normal, uniform or values"));
}

absl::StatusOr<bool> OptionalBool(const json& node, absl::string_view field, bool fallback,
                                  absl::string_view path) {
  auto it = node.find(std::string(field));
  if (it == node.end()) return fallback;
  if (!it->is_boolean()) {
    return SpecError(absl::StrCat(path, ".", field), absl::StrCat("expected true or false, got ", it->dump()));
  }
  return it->get<bool>();
}

class Builder {
 public:
  Builder(uint64_t seed, uint64_t max_state_dict_keys)
      : rng_(seed), max_state_dict_keys_(max_state_dict_keys) {}

  absl::StatusOr<std::shared_ptr<Module>> Build(const json& spec) {
    PARAMD_ASSIGN_OR_RETURN(root_, BuildNode(spec, "$", ""));
    for (const auto& resolve : deferred_) PARAMD_RETURN_IF_ERROR(resolve());
    PARAMD_RETURN_IF_ERROR(ResolveTies());
    PARAMD_RETURN_IF_ERROR(CheckAcyclic());
    // Refs multiply paths and can chain modules deeper than the spec nests: count both
    // before anything walks the tree (Note [Expanded size]).
    const ExpandedSize size = CountExpandedSize(*root_);
    if (size.depth > kMaxModuleDepth) {
      return SpecError("$", absl::StrCat("refs nest modules ", size.depth,
                                         " deep; at most ", kMaxModuleDepth,
                                         " levels are allowed (a module's path may have at most ",
                                         kMaxModuleDepth - 1, " names)"));
    }
    PARAMD_RETURN_IF_ERROR(CheckExpandedSize(size, max_state_dict_keys_, "spec expands to"));
    return root_;
  }

 private:
  absl::StatusOr<std::shared_ptr<Module>> BuildNode(const json& node, const std::string& path,
                                                    const std::string& module_path) {
    if (!node.is_object()) return SpecError(path, "a module spec must be a JSON object");
    PARAMD_RETURN_IF_ERROR(CheckKeys(
        node, path,
        {"name", "type", "custom", "args", "children", "parameters", "buffers", "attributes",
         "forward"}));
    PARAMD_ASSIGN_OR_RETURN(std::string type, RequiredString(node, "type", path));
    // "custom": true declares a user class that happens to share a built-in's name (the
    // seed's own `class Linear(nn.Module)`).
    PARAMD_ASSIGN_OR_RETURN(bool custom, OptionalBool(node, "custom", false, path));
    std::shared_ptr<Module> module;
    const LayerDef* layer = custom ? nullptr : FindLayer(type);
    if (layer != nullptr) {
      module = std::make_shared<Module>(layer, nlohmann::ordered_json::object());
      static const json kNoArgs = json::object();
      auto args = node.find("args");
      ArgReader reader(type, args == node.end() ? kNoArgs : *args, path + ".args");
      PARAMD_RETURN_IF_ERROR(layer->build(reader, *module, rng_));
    } else {
      if (!custom) PARAMD_RETURN_IF_ERROR(CheckCustomType(node, type, path));
      if (node.contains("args")) {
        return SpecError(path + ".args", absl::StrCat("the custom type ", QuoteName(type), " takes no args"));
      }
      module = std::make_shared<Module>(type);
    }
    if (root_ == nullptr) root_ = module;
    declared_.emplace_back();

    if (auto it = node.find("attributes"); it != node.end()) {
      if (!it->is_array()) return SpecError(path + ".attributes", "expected a list of names");
      for (const json& name : *it) {
        if (!name.is_string()) return SpecError(path + ".attributes", "expected a list of names");
        PARAMD_RETURN_IF_ERROR(Declare(name.get<std::string>(), path + ".attributes"));
        module->AddPlainAttribute(name.get<std::string>());
      }
    }
    PARAMD_RETURN_IF_ERROR(AddParameters(node, *module, path, module_path));
    PARAMD_RETURN_IF_ERROR(AddBuffers(node, *module, path));
    PARAMD_RETURN_IF_ERROR(AddChildren(node, module, path, module_path));
    if (auto it = node.find("forward"); it != node.end()) {
      PARAMD_RETURN_IF_ERROR(CheckForward(*it, *module, path + ".forward"));
      module->set_forward_program(*it);
    }
    declared_.pop_back();
    PARAMD_RETURN_IF_ERROR(Charge(ModuleStructureBytes(*module), path));
    return module;
  }

  // Note [Structure memory]: counted against --max-memory as the tree is built, so that a
  // spec whose structure cannot fit is refused before all of it exists. Given back when the
  // builder goes; the registry charges the model for good as it adds it.
  absl::Status Charge(uint64_t bytes, const std::string& path) {
    if (charge_ == nullptr) {
      absl::StatusOr<std::unique_ptr<MemoryReservation>> made =
          MemoryReservation::Make(Device::Cpu(), bytes);
      if (!made.ok()) return made.status();
      charge_ = *std::move(made);
    } else if (!charge_->Grow(bytes)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "spec error at ", path, ": the tree so far takes about ", charge_->remaining() + bytes,
          " bytes of host memory for its modules, slots and names, more than the memory limit "
          "leaves free (--max-memory); free models or raise --max-memory"));
    }
    return absl::OkStatus();
  }

  absl::Status CheckCustomType(const json& node, const std::string& type, const std::string& path) {
    for (const LayerDef* layer : AllLayers()) {
      if (absl::AsciiStrToLower(layer->type) == absl::AsciiStrToLower(type)) {
        return SpecError(path + ".type", absl::StrCat("unknown module type ", QuoteName(type),
                                                      "; did you mean ", QuoteName(layer->type), "?"));
      }
    }
    if (node.contains("args")) {
      std::vector<absl::string_view> names;
      for (const LayerDef* layer : AllLayers()) names.push_back(layer->type);
      return SpecError(path + ".type",
                       absl::StrCat("unknown module type ", QuoteName(type),
                                    " with args; the built-in types are ", absl::StrJoin(names, ", "),
                                    ", and any other type is a custom container that takes no "
                                    "args"));
    }
    return absl::OkStatus();
  }

  absl::Status AddParameters(const json& node, Module& module, const std::string& path,
                             const std::string& module_path) {
    auto it = node.find("parameters");
    if (it == node.end()) return absl::OkStatus();
    if (!it->is_array()) return SpecError(path + ".parameters", "expected a list");
    for (size_t i = 0; i < it->size(); ++i) {
      const json& item = (*it)[i];
      const std::string item_path = absl::StrCat(path, ".parameters[", i, "]");
      if (!item.is_object()) return SpecError(item_path, "expected an object");
      PARAMD_RETURN_IF_ERROR(CheckKeys(
          item, item_path, {"name", "shape", "dtype", "init", "requires_grad", "tie", "none"}));
      PARAMD_ASSIGN_OR_RETURN(std::string name, RequiredString(item, "name", item_path));
      PARAMD_RETURN_IF_ERROR(Declare(name, item_path + ".name"));
      if (item.contains("tie")) {
        PARAMD_ASSIGN_OR_RETURN(std::string target, RequiredString(item, "tie", item_path));
        PARAMD_RETURN_IF_ERROR(PlanTie(module, name, target, item_path,
                                       module_path.empty() ? name : module_path + "." + name));
        continue;
      }
      std::shared_ptr<Parameter> parameter;
      if (!IsNone(item)) {
        PARAMD_ASSIGN_OR_RETURN(Shape shape, ReadShape(item, item_path));
        PARAMD_ASSIGN_OR_RETURN(DType dtype, ReadDType(item, item_path));
        PARAMD_ASSIGN_OR_RETURN(bool requires_grad,
                                OptionalBool(item, "requires_grad", true, item_path));
        if (requires_grad && !IsFloatingPoint(dtype)) {
          return SpecError(item_path, "Only Tensors of floating point and complex dtype can "
                                      "require gradients; set requires_grad to false");
        }
        PARAMD_ASSIGN_OR_RETURN(Tensor value, ReadInit(item, dtype, shape, rng_, item_path));
        parameter = std::make_shared<Parameter>(std::move(value), requires_grad);
      }
      absl::Status status = module.RegisterParameter(name, std::move(parameter));
      if (!status.ok()) return AtPath(item_path + ".name", status);
    }
    return absl::OkStatus();
  }

  // A tie is resolved once the whole tree exists (refs included), so it may name any
  // parameter. Until then a new name holds a None slot, which keeps its registration
  // position.
  absl::Status PlanTie(Module& module, const std::string& name, const std::string& target,
                       const std::string& item_path, const std::string& key) {
    const std::shared_ptr<Parameter>* existing = module.parameters().Find(name);
    std::optional<Shape> expected;
    if (existing != nullptr && *existing != nullptr) expected = (*existing)->data().shape();
    if (existing == nullptr) {
      absl::Status status = module.RegisterParameter(name, nullptr);
      if (!status.ok()) return AtPath(item_path + ".name", status);
    }
    tie_index_.emplace(key, ties_.size());
    ties_.push_back({&module, name, target, item_path, expected});
    return absl::OkStatus();
  }

  // Resolves every tie, each after the tie its target is (a chain declared in any order:
  // `x` tied to `y` tied to `z`), with an explicit stack: a chain may be as long as the spec.
  absl::Status ResolveTies() {
    for (size_t first = 0; first < ties_.size(); ++first) {
      std::vector<size_t> chain = {first};
      while (!chain.empty()) {
        PendingTie& tie = ties_[chain.back()];
        if (tie.state == PendingTie::kDone) {
          chain.pop_back();
          continue;
        }
        if (tie.state == PendingTie::kFresh) {
          tie.state = PendingTie::kWaiting;
          auto it = tie_index_.find(tie.target);
          if (it != tie_index_.end() && ties_[it->second].state != PendingTie::kDone) {
            if (ties_[it->second].state == PendingTie::kWaiting) {
              return SpecError(tie.item_path + ".tie",
                               absl::StrCat("ties form a cycle through ", QuoteName(tie.target),
                                            "; a tie must lead to a parameter that has a value"));
            }
            chain.push_back(it->second);
            continue;
          }
        }
        PARAMD_RETURN_IF_ERROR(ApplyTie(tie));
        tie.state = PendingTie::kDone;
        chain.pop_back();
      }
    }
    return absl::OkStatus();
  }

  struct PendingTie {
    enum State { kFresh, kWaiting, kDone };
    Module* module;
    std::string name;
    std::string target;
    std::string item_path;
    std::optional<Shape> expected;
    State state = kFresh;
  };

  absl::Status ApplyTie(const PendingTie& tie) {
    absl::StatusOr<std::shared_ptr<Parameter>> tied = GetParameter(root_, tie.target);
    if (!tied.ok()) {
      return AtPath(tie.item_path + ".tie",
                    absl::Status(tied.status().code(),
                                 absl::StrCat(QuoteName(tie.target),
                                              " names no parameter: ", tied.status().message())));
    }
    if (tie.expected && (*tied)->data().shape() != *tie.expected) {
      return SpecError(tie.item_path + ".tie",
                       absl::StrCat("cannot tie ", QuoteName(tie.name), " of shape ",
                                    ShapeString(*tie.expected), " to ", QuoteName(tie.target),
                                    " of shape ", ShapeString((*tied)->data().shape())));
    }
    return tie.module->AssignParameter(tie.name, *tied);
  }

  absl::Status AddBuffers(const json& node, Module& module, const std::string& path) {
    auto it = node.find("buffers");
    if (it == node.end()) return absl::OkStatus();
    if (!it->is_array()) return SpecError(path + ".buffers", "expected a list");
    for (size_t i = 0; i < it->size(); ++i) {
      const json& item = (*it)[i];
      const std::string item_path = absl::StrCat(path, ".buffers[", i, "]");
      if (!item.is_object()) return SpecError(item_path, "expected an object");
      PARAMD_RETURN_IF_ERROR(
          CheckKeys(item, item_path, {"name", "shape", "dtype", "init", "persistent", "none"}));
      PARAMD_ASSIGN_OR_RETURN(std::string name, RequiredString(item, "name", item_path));
      PARAMD_RETURN_IF_ERROR(Declare(name, item_path + ".name"));
      PARAMD_ASSIGN_OR_RETURN(bool persistent, OptionalBool(item, "persistent", true, item_path));
      std::shared_ptr<Buffer> buffer;
      if (!IsNone(item)) {
        PARAMD_ASSIGN_OR_RETURN(Shape shape, ReadShape(item, item_path));
        PARAMD_ASSIGN_OR_RETURN(DType dtype, ReadDType(item, item_path));
        PARAMD_ASSIGN_OR_RETURN(Tensor value, ReadInit(item, dtype, shape, rng_, item_path));
        buffer = std::make_shared<Buffer>(std::move(value));
      }
      absl::Status status = module.RegisterBuffer(name, std::move(buffer), persistent);
      if (!status.ok()) return AtPath(item_path + ".name", status);
    }
    return absl::OkStatus();
  }

  absl::Status AddChildren(const json& node, const std::shared_ptr<Module>& module,
                           const std::string& path, const std::string& module_path) {
    auto it = node.find("children");
    if (it == node.end()) return absl::OkStatus();
    if (!it->is_array()) return SpecError(path + ".children", "expected a list");
    // Sequential and ModuleList name their children by position, as str(index).
    const bool positional = module->type() == "Sequential" || module->type() == "ModuleList";
    for (size_t i = 0; i < it->size(); ++i) {
      const json& item = (*it)[i];
      const std::string item_path = absl::StrCat(path, ".children[", i, "]");
      if (!item.is_object()) return SpecError(item_path, "a module spec must be a JSON object");
      std::string name;
      if (item.contains("name") || !positional) {
        PARAMD_ASSIGN_OR_RETURN(name, RequiredString(item, "name", item_path));
      } else {
        name = std::to_string(i);
      }
      PARAMD_RETURN_IF_ERROR(Declare(name, item_path + ".name"));
      const std::string child_path = module_path.empty() ? name : absl::StrCat(module_path, ".", name);
      std::shared_ptr<Module> child;
      if (item.contains("ref")) {
        PARAMD_RETURN_IF_ERROR(CheckKeys(item, item_path, {"name", "ref"}));
        PARAMD_ASSIGN_OR_RETURN(std::string target, RequiredString(item, "ref", item_path));
        PARAMD_RETURN_IF_ERROR(PlanRef(module, name, target, item_path));
        continue;
      }
      if (IsNone(item)) {
        PARAMD_RETURN_IF_ERROR(CheckKeys(item, item_path, {"name", "none"}));
      } else {
        PARAMD_ASSIGN_OR_RETURN(child, BuildNode(item, item_path, child_path));
      }
      absl::Status status = module->AddModule(name, std::move(child));
      if (!status.ok()) return AtPath(item_path + ".name", status);
    }
    return absl::OkStatus();
  }

  absl::Status PlanRef(const std::shared_ptr<Module>& module, const std::string& name,
                       const std::string& target, const std::string& item_path) {
    absl::Status status = module->AddModule(name, nullptr);
    if (!status.ok()) return AtPath(item_path + ".name", status);
    if (target.empty()) {
      return SpecError(item_path + ".ref", "a ref must name a module below the root");
    }
    Module* parent = module.get();
    deferred_.push_back([this, parent, name, target, item_path]() -> absl::Status {
      absl::StatusOr<std::shared_ptr<Module>> shared = GetSubmodule(root_, target);
      if (!shared.ok()) {
        return AtPath(item_path + ".ref",
                      absl::Status(shared.status().code(),
                                   absl::StrCat(QuoteName(target), " names no module: ",
                                                shared.status().message())));
      }
      return parent->AddModule(name, *shared);
    });
    return absl::OkStatus();
  }

  absl::Status CheckForward(const json& program, const Module& module, const std::string& path) {
    if (!program.is_array()) return SpecError(path, "expected a list of steps");
    for (size_t i = 0; i < program.size(); ++i) {
      const json& step = program[i];
      const std::string step_path = absl::StrCat(path, "[", i, "]");
      std::string call;
      if (step.is_string()) {
        call = step.get<std::string>();
      } else if (step.is_object()) {
        PARAMD_RETURN_IF_ERROR(CheckKeys(step, step_path, {"call", "op", "args", "in", "out"}));
        if (step.contains("call") == step.contains("op")) {
          return SpecError(step_path, "a step has exactly one of 'call' (a child) or 'op'");
        }
        if (step.contains("call")) {
          PARAMD_ASSIGN_OR_RETURN(call, RequiredString(step, "call", step_path));
        } else {
          PARAMD_RETURN_IF_ERROR(RequiredString(step, "op", step_path).status());
        }
      } else {
        return SpecError(step_path, "a step is a child's name or an object");
      }
      if (!call.empty() && !module.children().contains(call)) {
        return SpecError(step_path, absl::StrCat(module.type(), " has no child ", QuoteName(call)));
      }
      // Op names, argument names and types, and inputs: what Forward would refuse later.
      absl::Status step_status = ValidateForwardProgram(json::array({step}), module);
      if (!step_status.ok()) {
        return SpecError(step_path, absl::StripPrefix(step_status.message(), "step 0: "));
      }
    }
    return absl::OkStatus();
  }

  // A ref may only share a module, never make one its own ancestor. An explicit stack: refs
  // can chain modules deeper than the call stack allows.
  absl::Status CheckAcyclic() const {
    using ChildIterator = decltype(root_->children().begin());
    struct Frame {
      const Module* module;
      ChildIterator next;
    };
    absl::flat_hash_set<const Module*> on_path = {root_.get()};
    absl::flat_hash_set<const Module*> done;
    std::vector<Frame> stack = {{root_.get(), root_->children().begin()}};
    while (!stack.empty()) {
      Frame& frame = stack.back();
      if (frame.next == frame.module->children().end()) {
        on_path.erase(frame.module);
        done.insert(frame.module);
        stack.pop_back();
        continue;
      }
      const Module* child = (frame.next++)->second.get();
      if (child == nullptr || done.contains(child)) continue;
      if (on_path.contains(child)) {
        // The path is spelt only now: each frame's child being visited, then this one.
        std::vector<absl::string_view> names;
        for (const Frame& open : stack) names.push_back(std::prev(open.next)->first);
        return SpecError("$", absl::StrCat("the ref at ", QuoteName(absl::StrJoin(names, ".")),
                                           " makes a module its own descendant"));
      }
      on_path.insert(child);
      stack.push_back({child, child->children().begin()});
    }
    return absl::OkStatus();
  }

  // A name the spec declares twice in one module is a mistake even where PyTorch would let
  // the second assignment replace the first.
  absl::Status Declare(const std::string& name, const std::string& path) {
    if (!declared_.back().insert(name).second) {
      return SpecError(path, absl::StrCat("the name ", QuoteName(name),
                                          " is declared twice in this module; names must be unique"));
    }
    return absl::OkStatus();
  }

  InitRng rng_;
  const uint64_t max_state_dict_keys_;
  std::shared_ptr<Module> root_;
  std::vector<absl::flat_hash_set<std::string>> declared_;
  std::vector<std::function<absl::Status()>> deferred_;  // refs, in declaration order
  std::vector<PendingTie> ties_;
  absl::flat_hash_map<std::string, size_t> tie_index_;  // a tie's slot path to its place
  std::unique_ptr<MemoryReservation> charge_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<Module>> BuildModule(const nlohmann::json& spec, uint64_t seed,
                                                    uint64_t max_state_dict_keys) {
  Builder builder(seed, max_state_dict_keys);
  return builder.Build(spec);
}

absl::StatusOr<std::shared_ptr<Module>> BuildModuleFromText(absl::string_view spec_json,
                                                            uint64_t seed,
                                                            uint64_t max_state_dict_keys) {
  // Building and copying JSON recurse; a limit on nesting keeps hostile specs from
  // exhausting the stack. Real module trees are nowhere near it.
  constexpr int kMaxDepth = 256;
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < spec_json.size(); ++i) {
    const char c = spec_json[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxDepth) {
        return absl::InvalidArgumentError(absl::StrCat(
            "spec error at $: the spec nests deeper than ", kMaxDepth, " levels"));
      }
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  json spec = json::parse(spec_json, nullptr, /*allow_exceptions=*/false);
  if (spec.is_discarded()) {
    return absl::InvalidArgumentError(
        "spec error at $: not valid JSON; check quotes, commas and brackets");
  }
  return BuildModule(spec, seed, max_state_dict_keys);
}

}  // namespace paramd::core
