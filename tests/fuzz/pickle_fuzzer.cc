// Fuzzes the restricted unpickler, and checks that every graph it builds is written by
// PickleProtocol2 into a pickle that reads back as the same graph and is written again
// byte for byte (the writer is a fixed point).
#include <cstring>
#include <set>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "server/io/pickle.h"
#include "tests/fuzz/fuzz_support.h"

namespace paramd::fuzz {
namespace {

using io::PickleKind;
using io::PickleValue;

// Whether the graph below `value` holds a value the writer refuses by design (bytes, set).
bool HoldsUnwritable(const PickleValue* value, std::set<const PickleValue*>& seen) {
  if (value == nullptr || !seen.insert(value).second) return false;
  if (value->kind == PickleKind::kBytes || value->kind == PickleKind::kSet) return true;
  for (const PickleValue* item : value->items) {
    if (HoldsUnwritable(item, seen)) return true;
  }
  for (const auto& [key, item] : value->entries) {
    if (HoldsUnwritable(key, seen) || HoldsUnwritable(item, seen)) return true;
  }
  return HoldsUnwritable(value->state, seen);
}

// Structural equality. The graphs are DAGs that may share a node many times over, so pairs
// already found equal are not walked again.
class SameGraph {
 public:
  bool operator()(const PickleValue* a, const PickleValue* b) {
    if (a == nullptr || b == nullptr) return a == b;
    if (!equal_.insert({a, b}).second) return true;
    if (a->kind != b->kind || a->bool_value != b->bool_value || a->int_value != b->int_value ||
        std::memcmp(&a->float_value, &b->float_value, sizeof(double)) != 0 ||
        a->text != b->text || a->name != b->name || a->ordered != b->ordered ||
        a->newobj != b->newobj || a->items.size() != b->items.size() ||
        a->entries.size() != b->entries.size()) {
      return Mismatch(a, b);
    }
    for (size_t i = 0; i < a->items.size(); ++i) {
      if (!(*this)(a->items[i], b->items[i])) return false;
    }
    for (size_t i = 0; i < a->entries.size(); ++i) {
      if (!(*this)(a->entries[i].first, b->entries[i].first) ||
          !(*this)(a->entries[i].second, b->entries[i].second)) {
        return false;
      }
    }
    return (*this)(a->state, b->state) || Mismatch(a, b);
  }

  const std::string& why() const { return why_; }

 private:
  bool Mismatch(const PickleValue* a, const PickleValue* b) {
    if (why_.empty()) {
      why_ = absl::StrCat(io::PickleTypeName(*a), " vs ", io::PickleTypeName(*b));
    }
    return false;
  }

  std::set<std::pair<const PickleValue*, const PickleValue*>> equal_;
  std::string why_;
};

}  // namespace
}  // namespace paramd::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace paramd;
  using namespace paramd::fuzz;
  absl::StatusOr<io::PickleGraph> graph = io::Unpickle(absl::MakeConstSpan(data, size));
  if (!graph.ok()) return 0;
  PARAMD_FUZZ_CHECK(graph->root() != nullptr, "a pickle that reads has a root");

  absl::StatusOr<std::string> written = io::PickleProtocol2(*graph->root());
  std::set<const PickleValue*> seen;
  if (HoldsUnwritable(graph->root(), seen)) return 0;
  PARAMD_FUZZ_CHECK(written.ok(), written.status().ToString());

  absl::StatusOr<io::PickleGraph> again = io::Unpickle(AsBytes(*written));
  PARAMD_FUZZ_CHECK(again.ok(), again.status().ToString());
  SameGraph same;
  PARAMD_FUZZ_CHECK(same(graph->root(), again->root()), same.why());
  absl::StatusOr<std::string> rewritten = io::PickleProtocol2(*again->root());
  PARAMD_FUZZ_CHECK(rewritten.ok() && *rewritten == *written, "the writer is not a fixed point");
  return 0;
}
