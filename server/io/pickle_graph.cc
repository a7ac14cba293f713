// The object graph of pickle.h: PickleGraph's builders and PickleTypeName.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/io/pickle.h"

namespace paramd::io {

std::string PickleTypeName(const PickleValue& value) {
  switch (value.kind) {
    case PickleKind::kNone:
      return "NoneType";
    case PickleKind::kBool:
      return "bool";
    case PickleKind::kInt:
      return "int";
    case PickleKind::kFloat:
      return "float";
    case PickleKind::kString:
      return "str";
    case PickleKind::kBytes:
      return "bytes";
    case PickleKind::kTuple:
      return "tuple";
    case PickleKind::kList:
      return "list";
    case PickleKind::kSet:
      return "set";
    case PickleKind::kDict:
      return value.ordered ? "collections.OrderedDict" : "dict";
    case PickleKind::kGlobal:
      return absl::StrCat("global ", value.text, ".", value.name);
    case PickleKind::kCall:
      if (!value.items.empty() && value.items[0]->kind == PickleKind::kGlobal) {
        return absl::StrCat("result of ", value.items[0]->text, ".", value.items[0]->name);
      }
      return "call result";
    case PickleKind::kPersistentId:
      return "persistent id";
  }
  return "value";
}

PickleValue* PickleGraph::Add(PickleKind kind) {
  nodes_.push_back(std::make_unique<PickleValue>());
  nodes_.back()->kind = kind;
  return nodes_.back().get();
}

PickleValue* PickleGraph::Bool(bool value) {
  PickleValue* node = Add(PickleKind::kBool);
  node->bool_value = value;
  return node;
}

PickleValue* PickleGraph::Int(int64_t value) {
  PickleValue* node = Add(PickleKind::kInt);
  node->int_value = value;
  return node;
}

PickleValue* PickleGraph::Float(double value) {
  PickleValue* node = Add(PickleKind::kFloat);
  node->float_value = value;
  return node;
}

PickleValue* PickleGraph::String(absl::string_view value) {
  PickleValue* node = Add(PickleKind::kString);
  node->text = std::string(value);
  return node;
}

PickleValue* PickleGraph::Tuple(std::vector<const PickleValue*> items) {
  PickleValue* node = Add(PickleKind::kTuple);
  node->items = std::move(items);
  return node;
}

PickleValue* PickleGraph::Dict(bool ordered) {
  PickleValue* node = Add(PickleKind::kDict);
  node->ordered = ordered;
  return node;
}

PickleValue* PickleGraph::Global(absl::string_view module_name, absl::string_view attribute) {
  PickleValue* node = Add(PickleKind::kGlobal);
  node->text = std::string(module_name);
  node->name = std::string(attribute);
  return node;
}

PickleValue* PickleGraph::Call(const PickleValue* callable, const PickleValue* args) {
  PickleValue* node = Add(PickleKind::kCall);
  node->items = {callable, args};
  return node;
}

PickleValue* PickleGraph::PersistentId(const PickleValue* pid) {
  PickleValue* node = Add(PickleKind::kPersistentId);
  node->items = {pid};
  return node;
}

}  // namespace paramd::io
