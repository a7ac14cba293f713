// Fuzzes BuildModuleFromText, and checks that every tree it builds is exported by ExportSpec
// into a spec that rebuilds the same tree (state_dict keys, shapes, dtypes, ties, shared
// modules, repr) and exports to the same spec again.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/core/repr.h"
#include "server/core/spec.h"
#include "server/core/spec_export.h"
#include "server/core/traversal.h"
#include "tests/fuzz/fuzz_support.h"

namespace paramd::fuzz {
namespace {

// state_dict and named_modules(remove_duplicate=False) visit every path to a shared module,
// as PyTorch's do, and a few nested refs make that count exponential. The properties are
// checked only on trees with a bounded number of paths; building is fuzzed on all of them.
constexpr uint64_t kMaxPaths = 4096;

uint64_t CountPaths(const core::Module& module,
                    absl::flat_hash_map<const core::Module*, uint64_t>& memo) {
  if (auto it = memo.find(&module); it != memo.end()) return it->second;
  uint64_t paths = 1;
  for (const auto& [name, child] : module.children()) {
    if (child != nullptr) paths = std::min(kMaxPaths + 1, paths + CountPaths(*child, memo));
  }
  memo.emplace(&module, paths);
  return paths;
}

std::vector<std::string> Names(const core::Named<core::Module>& modules) {
  std::vector<std::string> names;
  for (const auto& [name, module] : modules) names.push_back(name);
  return names;
}

void CheckSameTree(const std::shared_ptr<core::Module>& a, const std::shared_ptr<core::Module>& b,
                   const std::string& spec) {
  PARAMD_FUZZ_CHECK(core::Repr(*a) == core::Repr(*b),
                    absl::StrCat(core::Repr(*a), "\nvs\n", core::Repr(*b), "\nfrom ", spec));
  const core::StateDict sa = core::GetStateDict(*a);
  const core::StateDict sb = core::GetStateDict(*b);
  PARAMD_FUZZ_CHECK(sa.entries.size() == sb.entries.size(), spec);
  absl::flat_hash_map<const core::TensorSlot*, size_t> first_a, first_b;
  for (size_t i = 0; i < sa.entries.size(); ++i) {
    const core::StateDictEntry& x = sa.entries[i];
    const core::StateDictEntry& y = sb.entries[i];
    PARAMD_FUZZ_CHECK(x.name == y.name && x.tensor.shape() == y.tensor.shape() &&
                          x.tensor.dtype() == y.tensor.dtype() &&
                          x.is_parameter == y.is_parameter,
                      absl::StrCat(x.name, " vs ", y.name, " from ", spec));
    // Ties and shared modules: the same slot object at the same entries in both trees.
    const size_t tied_a = first_a.emplace(x.slot.get(), i).first->second;
    const size_t tied_b = first_b.emplace(y.slot.get(), i).first->second;
    PARAMD_FUZZ_CHECK(tied_a == tied_b, absl::StrCat(x.name, " from ", spec));
  }
  PARAMD_FUZZ_CHECK(sa.metadata == sb.metadata, spec);
  PARAMD_FUZZ_CHECK(Names(core::NamedModules(a, "", false)) == Names(core::NamedModules(b, "", false)),
                    spec);
  PARAMD_FUZZ_CHECK(Names(core::NamedModules(a)) == Names(core::NamedModules(b)), spec);
}

}  // namespace
}  // namespace paramd::fuzz

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  paramd::fuzz::LimitBackendMemory();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace paramd;
  using namespace paramd::fuzz;
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<std::shared_ptr<core::Module>> built = core::BuildModuleFromText(text, 1);
  if (!built.ok()) return 0;
  PARAMD_FUZZ_CHECK(*built != nullptr, "a spec that builds has a root");
  absl::flat_hash_map<const core::Module*, uint64_t> memo;
  if (CountPaths(**built, memo) > kMaxPaths) return 0;

  const nlohmann::ordered_json spec = core::ExportSpec(*built);
  absl::StatusOr<std::shared_ptr<core::Module>> rebuilt = core::BuildModule(spec, 1);
  PARAMD_FUZZ_CHECK(rebuilt.ok(), absl::StrCat(rebuilt.status().ToString(), "\nexported: ",
                                               spec.dump(), "\nfrom: ", text));
  CheckSameTree(*built, *rebuilt, spec.dump());
  PARAMD_FUZZ_CHECK(core::ExportSpec(*rebuilt) == spec,
                    absl::StrCat("export is not a fixed point: ", spec.dump(), "\nvs ",
                                 core::ExportSpec(*rebuilt).dump()));
  return 0;
}
