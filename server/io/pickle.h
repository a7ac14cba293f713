// A restricted Python pickle reader and a protocol-2 writer, for the data.pkl of torch.save
// files (pytorch-semantics.md §5.2–§5.6).
//
// Unpickle never executes anything: it builds a PickleGraph of plain values, and where a
// pickle would call something (REDUCE, NEWOBJ, BUILD) it records the call as a node for the
// torch layer to interpret. Only the globals a state_dict needs are accepted (the allow-list
// follows torch's weights_only unpickler); any other global, such as `posix system` or a
// pickled nn.Module class, is refused with a message naming it. The opcodes accepted are
// those torch's weights_only reader accepts plus protocol 4's framing, short strings,
// MEMOIZE, STACK_GLOBAL and bytes; any other opcode is refused ("Unsupported operand <n>").
// Hostile input cannot exhaust the stack or memory: the graph is acyclic by construction,
// its depth and size are bounded, and every length is checked against the input left.
//
// PickleProtocol2 writes a graph back as CPython's pickler does at protocol 2, memoizing by node
// identity (a node reached twice is written once and then fetched with BINGET), so a graph
// shaped like the objects torch.save pickles gives byte-identical output.
//
// Ownership: a PickleGraph owns its nodes; node pointers stay valid while it lives (moving
// the graph keeps them valid). Thread-safety: a graph is safe to read from many threads
// once built; the functions share no state.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace paramd::io {

enum class PickleKind {
  kNone,
  kBool,
  kInt,
  kFloat,
  kString,  // str (UTF-8)
  kBytes,   // bytes, including `_codecs.encode(s, 'latin1')` as protocol 2 writes them
  kTuple,
  kList,
  kSet,
  kDict,          // dict, or collections.OrderedDict when `ordered`
  kGlobal,        // an allowed module attribute: `module`.`name`
  kCall,          // REDUCE or NEWOBJ of an allowed global: items = {callable, args}
  kPersistentId,  // BINPERSID: items = {pid}
};

struct PickleValue {
  PickleKind kind = PickleKind::kNone;
  bool bool_value = false;
  int64_t int_value = 0;
  double float_value = 0;
  std::string text;  // kString, kBytes; kGlobal: the module
  std::string name;  // kGlobal: the attribute
  // kTuple, kList, kSet elements; kCall {callable, args}; kPersistentId {pid}.
  std::vector<const PickleValue*> items;
  // kDict entries in insertion order (a repeated str key keeps its first position).
  std::vector<std::pair<const PickleValue*, const PickleValue*>> entries;
  bool ordered = false;  // kDict: collections.OrderedDict
  bool newobj = false;   // kCall: made by NEWOBJ rather than REDUCE
  // kDict (OrderedDict attributes) and kCall: the BUILD state, nullptr when none.
  const PickleValue* state = nullptr;
  // Longest path to a leaf (a leaf is 0); bounded by UnpickleLimits::max_depth.
  int depth = 0;
  // Set once the node is inside another one; sealed containers are never changed again,
  // which keeps the graph acyclic.
  bool sealed = false;

  bool is_global(absl::string_view module_name, absl::string_view attribute) const {
    return kind == PickleKind::kGlobal && text == module_name && name == attribute;
  }
};

// "str", "int", "tuple", "collections.OrderedDict", "global torch.FloatStorage", ...: for
// messages.
std::string PickleTypeName(const PickleValue& value);

class PickleGraph {
 public:
  PickleGraph() = default;
  PickleGraph(PickleGraph&&) = default;
  PickleGraph& operator=(PickleGraph&&) = default;

  // Adds a node; the graph owns it. The builders below fill in the common kinds.
  PickleValue* Add(PickleKind kind);
  PickleValue* None() { return Add(PickleKind::kNone); }
  PickleValue* Bool(bool value);
  PickleValue* Int(int64_t value);
  PickleValue* Float(double value);
  PickleValue* String(absl::string_view value);
  PickleValue* Tuple(std::vector<const PickleValue*> items);
  PickleValue* Dict(bool ordered);
  PickleValue* Global(absl::string_view module_name, absl::string_view attribute);
  PickleValue* Call(const PickleValue* callable, const PickleValue* args);
  PickleValue* PersistentId(const PickleValue* pid);

  const PickleValue* root() const { return root_; }
  void set_root(const PickleValue* root) { root_ = root; }
  size_t size() const { return nodes_.size(); }

 private:
  std::vector<std::unique_ptr<PickleValue>> nodes_;
  const PickleValue* root_ = nullptr;
};

struct UnpickleLimits {
  // Deepest nesting of containers and calls; a torch state_dict needs about 6.
  int max_depth = 200;
  // Nodes in the graph, memo entries, and values on the stack, each.
  size_t max_nodes = size_t{1} << 24;
};

// Reads one pickle from `data` (which must end right after STOP). INVALID_ARGUMENT, with the
// byte offset, for truncated or malformed input, an opcode outside the accepted set
// ("Unsupported operand <n>"), a global outside the allow-list ("Unsupported global: GLOBAL
// <module>.<name> was not an allowed global by default ..."; modules sys, os, posix and nt
// are "blocked" as in torch), a REDUCE/NEWOBJ of something not an allowed global, SETITEM on
// a non-dict, APPEND on a non-list, BUILD on anything but an OrderedDict or a call, a
// persistent id other than ('storage', ...), a missing memo entry, invalid UTF-8, a
// container changed after it was used (a reference cycle), or a limit exceeded.
absl::StatusOr<PickleGraph> Unpickle(absl::Span<const uint8_t> data,
                                     const UnpickleLimits& limits = {});

// The protocol-2 pickle of `root` as CPython's C pickler writes it: PROTO 2; GLOBAL, str,
// non-empty tuple, list, dict and call results memoized (BINPUT) in the order they are
// first written and fetched with BINGET when the same node is met again; ints as
// BININT1/BININT2/BININT/LONG1; OrderedDict as `GLOBAL 'collections OrderedDict'`,
// EMPTY_TUPLE, REDUCE, items, then its state and BUILD; dict and OrderedDict items in
// batches of 1000 (MARK ... SETITEMS; a lone OrderedDict item, or a dict of one item, uses
// SETITEM); STOP. INVALID_ARGUMENT for kBytes and kSet (torch state_dicts hold neither) or
// a graph deeper than `max_depth`.
absl::StatusOr<std::string> PickleProtocol2(const PickleValue& root, int max_depth = 200);

}  // namespace paramd::io
