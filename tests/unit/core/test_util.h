// Helpers shared by the core tests.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "tests/integration/specs.h"
#include "server/core/spec.h"
#include "server/core/traversal.h"

namespace paramd::core::testing {

inline std::shared_ptr<Module> Build(const std::string& spec, uint64_t seed = 0) {
  auto module = BuildModuleFromText(spec, seed);
  EXPECT_TRUE(module.ok()) << module.status();
  return module.ok() ? *module : std::make_shared<Module>("Invalid");
}

inline std::vector<std::string> StateDictKeys(const Module& root, absl::string_view prefix = "") {
  std::vector<std::string> keys;
  for (const auto& entry : GetStateDict(root, prefix).entries) keys.push_back(entry.name);
  return keys;
}

template <typename T>
std::vector<std::string> Names(const Named<T>& named) {
  std::vector<std::string> names;
  for (const auto& [name, value] : named) names.push_back(name);
  return names;
}

inline std::vector<double> Values(const Tensor& tensor) {
  auto values = ToDoubles(tensor);
  EXPECT_TRUE(values.ok()) << values.status();
  return values.ok() ? *values : std::vector<double>{};
}

inline Tensor MakeTensor(Shape shape, std::vector<double> values, DType dtype = DType::kFloat32) {
  auto tensor = Tensor::FromDoubles(dtype, std::move(shape), values);
  EXPECT_TRUE(tensor.ok()) << tensor.status();
  return *tensor;
}

// The seed's MLP (pytorch-semantics.md §8).
inline constexpr char kMlpSpec[] = R"({"type": "MLP",
 "attributes": ["w1"],
 "parameters": [{"name": "w2", "shape": [1], "init": {"constant": 2.0}}],
 "children": [
   {"name": "linear1", "type": "Linear", "args": {"in_features": 1, "out_features": 2}},
   {"name": "relu", "type": "ReLU"},
   {"name": "linear2", "type": "Linear", "args": {"in_features": 2, "out_features": 1}}]})";

// shared = Linear(8, 8); Sequential(Linear(4, 8), ReLU(), shared, ReLU(), shared, ReLU(),
// Linear(8, 1)) from the seed.
inline constexpr char kSharedSpec[] = R"({"type": "Sequential", "children": [
   {"type": "Linear", "args": {"in_features": 4, "out_features": 8}},
   {"type": "ReLU"},
   {"type": "Linear", "args": {"in_features": 8, "out_features": 8}},
   {"type": "ReLU"},
   {"ref": "2"},
   {"type": "ReLU"},
   {"type": "Linear", "args": {"in_features": 8, "out_features": 1}}]})";

// Tied embedding of pytorch-semantics.md §9.
inline constexpr char kTiedEmbeddingSpec[] = R"({"type": "TiedLM", "children": [
   {"name": "embed", "type": "Embedding", "args": {"num_embeddings": 10, "embedding_dim": 4}},
   {"name": "lm_head", "type": "Linear",
    "args": {"in_features": 4, "out_features": 10, "bias": false},
    "parameters": [{"name": "weight", "tie": "embed.weight"}]}]})";

// A chain of Sequentials sharing the next level twice (tests/integration/specs.h).
using paramd::testing::SharedChainSpec;

}  // namespace paramd::core::testing
