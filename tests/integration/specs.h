// The seed's models as specs, shared by the integration tests.
#pragma once

#include <string>

namespace paramd::testing {

// MLP: w2 = [2.0], linear1 = Linear(1, 2), relu, linear2 = Linear(2, 1), plain attribute w1.
inline constexpr char kMlpSpec[] = R"({"type": "MLP", "attributes": ["w1"],
 "parameters": [{"name": "w2", "shape": [1], "init": {"constant": 2.0}}],
 "children": [
   {"name": "linear1", "type": "Linear", "args": {"in_features": 1, "out_features": 2}},
   {"name": "relu", "type": "ReLU"},
   {"name": "linear2", "type": "Linear", "args": {"in_features": 2, "out_features": 1}}]})";

// Linear(2, 3) then BatchNorm1d(3).
inline constexpr char kBatchNormSpec[] = R"({"type": "Sequential", "children": [
   {"type": "Linear", "args": {"in_features": 2, "out_features": 3}},
   {"type": "BatchNorm1d", "args": {"num_features": 3}}]})";

// shared = Linear(8, 8); Sequential(Linear(4, 8), ReLU(), shared, ReLU(), shared, ReLU(),
// Linear(8, 1)).
inline constexpr char kSharedSpec[] = R"({"type": "Sequential", "children": [
   {"type": "Linear", "args": {"in_features": 4, "out_features": 8}}, {"type": "ReLU"},
   {"type": "Linear", "args": {"in_features": 8, "out_features": 8}}, {"type": "ReLU"},
   {"ref": "2"}, {"type": "ReLU"}, {"type": "Linear", "args": {"in_features": 8, "out_features": 1}}]})";

// Tied embedding of pytorch-semantics.md §9: lm_head.weight is embed.weight.
inline constexpr char kTiedEmbeddingSpec[] = R"({"type": "TiedLM", "children": [
   {"name": "embed", "type": "Embedding", "args": {"num_embeddings": 10, "embedding_dim": 4}},
   {"name": "lm_head", "type": "Linear",
    "args": {"in_features": 4, "out_features": 10, "bias": false},
    "parameters": [{"name": "weight", "tie": "embed.weight"}]}]})";

// A chain of `depth` Sequentials, each holding the next level twice (the second time by
// ref), ending in a Linear(1, 1): 2^depth paths reach the Linear, so the state_dict has
// 2^(depth + 1) keys (a shared module's tensors are listed once per path, as in PyTorch).
// A few kilobytes of JSON at depth 40.
inline std::string SharedChainSpec(int depth) {
  std::string spec = R"({"type": "Linear", "args": {"in_features": 1, "out_features": 1}})";
  for (int level = depth - 1; level >= 0; --level) {
    // Level `level` sits at "0.0...0" (level zeros); its first child one ".0" further.
    std::string first_child = "0";
    for (int i = 0; i < level; ++i) first_child += ".0";
    spec = R"({"type": "Sequential", "children": [)" + spec + R"(, {"ref": ")" + first_child +
           R"("}]})";
  }
  return spec;
}

}  // namespace paramd::testing
