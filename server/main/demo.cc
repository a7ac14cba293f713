// paramd_demo: builds the example models from their specs and prints what PyTorch would
// print for them: the module repr, state_dict() and named_parameters().
//
//   paramd_demo [SPEC.json ...]      (default: every file in examples/specs)
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/core/repr.h"
#include "server/core/spec.h"
#include "server/core/traversal.h"

namespace {

std::string Describe(const paramd::core::Tensor& tensor) {
  return absl::StrCat(paramd::core::DTypeName(tensor.dtype()), " ",
                      paramd::core::ShapeString(tensor.shape()));
}

int ShowModel(const std::filesystem::path& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  auto root = paramd::core::BuildModuleFromText(text.str(), /*seed=*/0);
  std::cout << "=== " << path.filename().string() << "\n";
  if (!root.ok()) {
    std::cout << "error: " << root.status().message() << "\n";
    return 1;
  }
  std::cout << paramd::core::Repr(**root) << "\n";
  std::cout << "state_dict():\n";
  for (const auto& entry : paramd::core::GetStateDict(**root).entries) {
    std::cout << "  " << entry.name << "  " << Describe(entry.tensor) << "\n";
  }
  std::cout << "named_parameters():\n";
  for (const auto& [name, parameter] : paramd::core::NamedParameters(*root)) {
    std::cout << "  " << name << "  " << Describe(parameter->data()) << "\n";
  }
  std::cout << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::filesystem::path> specs;
  for (int i = 1; i < argc; ++i) specs.emplace_back(argv[i]);
  if (specs.empty()) {
    std::filesystem::path dir = "examples/specs";
    if (!std::filesystem::is_directory(dir)) {
      std::cerr << "usage: paramd_demo [SPEC.json ...] (run from the repository root for the "
                   "examples)\n";
      return 2;
    }
    for (const auto& entry : std::filesystem::directory_iterator(dir)) specs.push_back(entry.path());
    std::sort(specs.begin(), specs.end());
  }
  int failures = 0;
  for (const auto& spec : specs) failures += ShowModel(spec);
  return failures == 0 ? 0 : 1;
}
