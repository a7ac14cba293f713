// Training checkpoints, torch.save({"model": model.state_dict(), "optimizer":
// optimizer.state_dict()}, f), through CheckpointStore: the layout paramd writes is torch
// 2.15's (every param-group key, Adam's step a 0-dim float32 tensor, SGD without momentum
// an empty state), a file round-trips into an existing optimizer, and hostile files (wrong
// types, deep nesting, huge lists) end with INVALID_ARGUMENT and change neither the model
// nor the optimizer. Real torch is in tests/interop/test_training_checkpoints.py.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/zip/zip.h"
#include "server/core/spec.h"
#include "server/io/checkpoint_store.h"
#include "server/io/pickle.h"
#include "server/io/torch_checkpoint.h"
#include "tests/unit/io/test_util.h"

namespace paramd::io {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using test_util::AsSpan;
using test_util::Bytes;
using test_util::Make;

constexpr char kSpec[] = R"({"type": "Linear", "args": {"in_features": 2, "out_features": 1}})";

// An optimizer.state_dict() flattened for comparison: groups' hyperparameters and params,
// and each state tensor's bytes by "<index>.<key>".
struct Flat {
  std::vector<std::pair<core::Hyperparameters, std::vector<int64_t>>> groups;
  std::vector<std::pair<std::string, std::vector<uint8_t>>> state;
  bool operator==(const Flat&) const = default;
};

Flat Flatten(const core::OptimizerStateDict& dict) {
  Flat flat;
  for (const auto& group : dict.param_groups) {
    flat.groups.emplace_back(group.hyperparameters, group.params);
  }
  for (const auto& entry : dict.state) {
    for (const auto& [key, tensor] : entry.tensors) {
      flat.state.emplace_back(absl::StrCat(entry.index, ".", key), Bytes(tensor));
    }
  }
  return flat;
}

class TrainingCheckpointTest : public test_util::ScratchDirTest {
 protected:
  void SetUp() override {
    ScratchDirTest::SetUp();
    std::filesystem::create_directories(dir_ / "ckpt");
    absl::StatusOr<CheckpointDir> directory = CheckpointDir::Open(PathOf("ckpt"));
    ASSERT_TRUE(directory.ok()) << directory.status();
    store_ = std::make_unique<CheckpointStore>(*directory, &models_, FileSystem::Posix(),
                                               CheckpointStore::Options{}, &optimizers_);
  }

  std::shared_ptr<core::Model> AddModel(const std::string& name, uint64_t seed) {
    auto root = core::BuildModuleFromText(kSpec, seed);
    EXPECT_TRUE(root.ok()) << root.status();
    auto model = std::make_shared<core::Model>(name, *root, Device::Cpu());
    EXPECT_TRUE(models_.Add(model).ok());
    return model;
  }

  std::shared_ptr<core::Optimizer> AddOptimizer(const std::string& name,
                                                const std::shared_ptr<core::Model>& model,
                                                core::OptimizerKind kind,
                                                const core::Hyperparameters& defaults = {}) {
    auto optimizer = core::Optimizer::Create(name, model, kind, defaults, {});
    EXPECT_TRUE(optimizer.ok()) << optimizer.status();
    EXPECT_TRUE(optimizers_.Add(*optimizer).ok());
    return *optimizer;
  }

  // zero_grad, push and step, `steps` times.
  static void Train(core::Optimizer& optimizer, int steps) {
    for (int i = 0; i < steps; ++i) {
      ASSERT_TRUE(optimizer.ZeroGrad().ok());
      const core::Tensor weight = Make(DType::kFloat32, {1, 2}, {0.5, -1.0 * i});
      const core::Tensor bias = Make(DType::kFloat32, {1}, {0.25 * i});
      ASSERT_TRUE(optimizer.AccumulateGradients({{"weight", weight}, {"bias", bias}}).ok());
      ASSERT_TRUE(optimizer.Step(std::nullopt).ok());
    }
  }

  static std::vector<std::vector<uint8_t>> Weights(core::Model& model) {
    return model.Read([](const std::shared_ptr<core::Module>& root, uint64_t) {
      std::vector<std::vector<uint8_t>> out;
      for (const auto& entry : core::GetStateDict(*root).entries) {
        out.push_back(Bytes(entry.tensor));
      }
      return out;
    });
  }

  absl::Status Save(const std::string& model, const std::string& optimizer,
                    const std::string& path) {
    CheckpointStore::SaveRequest request;
    request.model = model;
    request.path = path;
    request.optimizer = optimizer;
    return store_->Save(request).status();
  }

  absl::Status Load(const std::string& model, const std::string& optimizer,
                    const std::string& path) {
    CheckpointStore::LoadRequest request;
    request.model = model;
    request.path = path;
    request.optimizer = optimizer;
    return store_->Load(request).status();
  }

  // The file's data.pkl as a graph.
  PickleGraph DataPickle(const std::string& path) {
    const std::string bytes = test_util::ReadFile(PathOf("ckpt/" + path));
    absl::StatusOr<zip::Reader> zip = zip::Reader::Open(AsSpan(bytes));
    EXPECT_TRUE(zip.ok()) << zip.status();
    for (const zip::Entry& entry : zip->entries()) {
      if (!absl::EndsWith(entry.name, "/data.pkl")) continue;
      absl::StatusOr<PickleGraph> graph = Unpickle(zip->Data(entry));
      EXPECT_TRUE(graph.ok()) << graph.status();
      return *std::move(graph);
    }
    ADD_FAILURE() << "no data.pkl";
    return {};
  }

  core::ModelRegistry models_;
  core::OptimizerRegistry optimizers_;
  std::unique_ptr<CheckpointStore> store_;
};

std::vector<std::string> Keys(const PickleValue* dict) {
  std::vector<std::string> keys;
  for (const auto& [key, value] : dict->entries) {
    keys.push_back(key->kind == PickleKind::kString ? key->text : absl::StrCat(key->int_value));
  }
  return keys;
}

const PickleValue* At(const PickleValue* dict, const std::string& key) {
  for (const auto& [k, v] : dict->entries) {
    if ((k->kind == PickleKind::kString && k->text == key) ||
        (k->kind == PickleKind::kInt && absl::StrCat(k->int_value) == key)) {
      return v;
    }
  }
  return nullptr;
}

TEST_F(TrainingCheckpointTest, TheLayoutIsTorchsOptimizerStateDict) {
  auto model = AddModel("m", 1);
  auto adam = AddOptimizer("adam", model, core::OptimizerKind::kAdam);
  Train(*adam, 2);
  ASSERT_TRUE(Save("m", "adam", "run.pt").ok());
  PickleGraph graph = DataPickle("run.pt");
  const PickleValue* root = graph.root();
  ASSERT_EQ(root->kind, PickleKind::kDict);
  EXPECT_FALSE(root->ordered);
  EXPECT_THAT(Keys(root), ElementsAre("model", "optimizer"));
  EXPECT_TRUE(At(root, "model")->ordered);  // the state_dict, an OrderedDict
  const PickleValue* optimizer = At(root, "optimizer");
  EXPECT_THAT(Keys(optimizer), ElementsAre("state", "param_groups"));
  // torch 2.15's Adam.param_groups keys, in its order, then params; no param_names for an
  // optimizer made from model.parameters() (docs/training.md's table).
  const PickleValue* groups = At(optimizer, "param_groups");
  ASSERT_EQ(groups->kind, PickleKind::kList);
  ASSERT_EQ(groups->items.size(), 1u);
  EXPECT_THAT(Keys(groups->items[0]),
              ElementsAre("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize", "foreach",
                          "capturable", "differentiable", "fused", "decoupled_weight_decay",
                          "params"));
  EXPECT_EQ(At(groups->items[0], "betas")->kind, PickleKind::kTuple);
  EXPECT_EQ(At(groups->items[0], "weight_decay")->kind, PickleKind::kInt);
  EXPECT_EQ(At(groups->items[0], "foreach")->kind, PickleKind::kNone);
  const PickleValue* state = At(optimizer, "state");
  EXPECT_THAT(Keys(state), ElementsAre("0", "1"));
  EXPECT_THAT(Keys(At(state, "0")), ElementsAre("step", "exp_avg", "exp_avg_sq"));
  // step: _rebuild_tensor_v2 over a FloatStorage of one element, size ().
  const PickleValue* step = At(At(state, "0"), "step");
  ASSERT_EQ(step->kind, PickleKind::kCall);
  EXPECT_TRUE(step->items[0]->is_global("torch._utils", "_rebuild_tensor_v2"));
  const PickleValue* pid = step->items[1]->items[0]->items[0];
  EXPECT_TRUE(pid->items[1]->is_global("torch", "FloatStorage"));
  EXPECT_TRUE(step->items[1]->items[2]->items.empty());

  auto plain = AddModel("p", 1);
  auto sgd = AddOptimizer("sgd", plain, core::OptimizerKind::kSgd);
  Train(*sgd, 1);
  ASSERT_TRUE(Save("p", "sgd", "sgd.pt").ok());
  PickleGraph sgd_graph = DataPickle("sgd.pt");
  const PickleValue* sgd_state = At(At(sgd_graph.root(), "optimizer"), "state");
  EXPECT_EQ(sgd_state->kind, PickleKind::kDict);
  EXPECT_TRUE(sgd_state->entries.empty()) << "SGD without momentum keeps no state";
}

TEST_F(TrainingCheckpointTest, AFileLoadsIntoAnExistingOptimizerAndModel) {
  auto model = AddModel("m", 1);
  core::Hyperparameters amsgrad = {{"amsgrad", core::HyperValue::Bool(true)},
                                   {"lr", core::HyperValue::Float(0.01)}};
  auto adam = AddOptimizer("adam", model, core::OptimizerKind::kAdam, amsgrad);
  Train(*adam, 3);
  ASSERT_TRUE(Save("m", "adam", "run.pt").ok());

  auto other = AddModel("other", 7);  // other weights
  auto fresh = AddOptimizer("fresh", other, core::OptimizerKind::kAdam);
  ASSERT_TRUE(Load("other", "fresh", "run.pt").ok());
  EXPECT_EQ(Flatten(fresh->StateDict()), Flatten(adam->StateDict()));
  EXPECT_EQ(Weights(*other), Weights(*model));
  // Both continue identically.
  Train(*adam, 1);
  Train(*fresh, 1);
  EXPECT_EQ(Flatten(fresh->StateDict()), Flatten(adam->StateDict()));
  EXPECT_EQ(Weights(*other), Weights(*model));

  // A training checkpoint without an optimizer named loads its "model" as a state_dict.
  auto third = AddModel("third", 9);
  ASSERT_TRUE(Load("third", "", "run.pt").ok());
}

TEST_F(TrainingCheckpointTest, RefusalsChangeNeitherTheModelNorTheOptimizer) {
  auto model = AddModel("m", 1);
  auto adam = AddOptimizer("adam", model, core::OptimizerKind::kAdam);
  Train(*adam, 2);
  ASSERT_TRUE(Save("m", "adam", "run.pt").ok());
  ASSERT_TRUE(Save("m", "", "plain.pt").ok());
  auto target = AddModel("t", 5);
  auto sgd = AddOptimizer("sgd", target, core::OptimizerKind::kSgd);
  auto target_adam = AddOptimizer("t_adam", target, core::OptimizerKind::kAdam);
  Train(*target_adam, 1);
  const auto weights = Weights(*target);
  const Flat state = Flatten(target_adam->StateDict());

  // Adam's state into SGD: the model's load would succeed, the optimizer's does not.
  absl::Status wrong_kind = Load("t", "sgd", "run.pt");
  EXPECT_EQ(wrong_kind.code(), absl::StatusCode::kInvalidArgument) << wrong_kind;
  EXPECT_THAT(std::string(wrong_kind.message()), HasSubstr("SGD has no hyperparameter 'betas'"));
  absl::Status no_optimizer = Load("t", "t_adam", "plain.pt");
  EXPECT_EQ(no_optimizer.code(), absl::StatusCode::kInvalidArgument) << no_optimizer;
  EXPECT_THAT(std::string(no_optimizer.message()), HasSubstr("holds no optimizer state"));
  absl::Status elsewhere = Load("t", "adam", "run.pt");
  EXPECT_EQ(elsewhere.code(), absl::StatusCode::kFailedPrecondition) << elsewhere;
  EXPECT_EQ(Load("missing", "adam", "run.pt").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Load("t", "nope", "run.pt").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Save("m", "adam", "run.safetensors").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Weights(*target), weights);
  EXPECT_EQ(Flatten(target_adam->StateDict()), state);
  EXPECT_EQ(Flatten(sgd->StateDict()).state.size(), 0u);
}

// A hand-built training checkpoint: Linear(2, 1)'s state_dict over storages '0' and '1', and
// the optimizer object `make_optimizer` builds in the same graph.
template <typename MakeOptimizer>
std::string HandBuiltCheckpoint(MakeOptimizer make_optimizer) {
  PickleGraph graph;
  auto tensor = [&](const std::string& key, std::vector<int64_t> shape) {
    int64_t numel = 1;
    std::vector<const PickleValue*> sizes, strides;
    for (int64_t d : shape) numel *= d;
    int64_t stride = numel;
    for (int64_t d : shape) {
      stride /= d;
      sizes.push_back(graph.Int(d));
      strides.push_back(graph.Int(stride));
    }
    const PickleValue* pid =
        graph.Tuple({graph.String("storage"), graph.Global("torch", "FloatStorage"),
                     graph.String(key), graph.String("cpu"), graph.Int(numel)});
    return graph.Call(graph.Global("torch._utils", "_rebuild_tensor_v2"),
                      graph.Tuple({graph.PersistentId(pid), graph.Int(0),
                                   graph.Tuple(std::move(sizes)), graph.Tuple(std::move(strides)),
                                   graph.Bool(false), graph.Dict(true)}));
  };
  PickleValue* model = graph.Dict(/*ordered=*/true);
  model->entries.emplace_back(graph.String("weight"), tensor("0", {1, 2}));
  model->entries.emplace_back(graph.String("bias"), tensor("1", {1}));
  PickleValue* root = graph.Dict(/*ordered=*/false);
  root->entries.emplace_back(graph.String("model"), model);
  root->entries.emplace_back(graph.String("optimizer"), make_optimizer(graph, tensor));
  graph.set_root(root);
  absl::StatusOr<std::string> pickle = PickleProtocol2(*root, 10000);
  EXPECT_TRUE(pickle.ok()) << pickle.status();
  const float weight[2] = {3, 4}, bias[1] = {5};
  zip::StringSink sink;
  zip::Writer writer(sink);
  EXPECT_TRUE(writer.AddEntry("archive/data.pkl", *pickle).ok());
  const std::string weight_bytes(reinterpret_cast<const char*>(weight), sizeof(weight));
  const std::string bias_bytes(reinterpret_cast<const char*>(bias), sizeof(bias));
  EXPECT_TRUE(writer.AddEntry("archive/data/0", weight_bytes).ok());
  EXPECT_TRUE(writer.AddEntry("archive/data/1", bias_bytes).ok());
  EXPECT_TRUE(writer.AddEntry("archive/version", "3\n").ok());
  EXPECT_TRUE(writer.Finish().ok());
  return sink.data;
}

// {"state": state, "param_groups": [{"lr": 0.001, ..., "params": params}]}, Adam's defaults.
const PickleValue* AdamDict(PickleGraph& graph, const PickleValue* state, PickleValue* params) {
  PickleValue* group = graph.Dict(false);
  for (const auto& [key, value] : core::DefaultHyperparameters(core::OptimizerKind::kAdam)) {
    using Type = core::HyperValue::Type;
    const PickleValue* node = nullptr;
    if (value.type == Type::kTuple) {
      node = graph.Tuple({graph.Float(value.tuple[0]), graph.Float(value.tuple[1])});
    } else if (value.type == Type::kBool) {
      node = graph.Bool(value.number != 0);
    } else if (value.type == Type::kNone) {
      node = graph.None();
    } else if (value.type == Type::kInt) {
      node = graph.Int(value.integer);
    } else {
      node = graph.Float(value.number);
    }
    group->entries.emplace_back(graph.String(key), node);
  }
  group->entries.emplace_back(graph.String("params"), params);
  PickleValue* groups = graph.Add(PickleKind::kList);
  groups->items.push_back(group);
  PickleValue* dict = graph.Dict(false);
  dict->entries.emplace_back(graph.String("state"), state);
  dict->entries.emplace_back(graph.String("param_groups"), groups);
  return dict;
}

PickleValue* Params(PickleGraph& graph, int64_t count) {
  PickleValue* params = graph.Add(PickleKind::kList);
  for (int64_t i = 0; i < count; ++i) params->items.push_back(graph.Int(i));
  return params;
}

TEST_F(TrainingCheckpointTest, HostileFilesAreInvalidArgumentAndChangeNothing) {
  auto model = AddModel("m", 1);
  auto adam = AddOptimizer("adam", model, core::OptimizerKind::kAdam);
  Train(*adam, 1);
  const auto weights = Weights(*model);
  const Flat state = Flatten(adam->StateDict());
  struct Case {
    std::string name;
    std::string file;
    std::string message;
  };
  std::vector<Case> cases;
  // A str where exp_avg's tensor should be.
  cases.push_back({"wrong_type.pt", HandBuiltCheckpoint([](PickleGraph& g, auto&) {
                     PickleValue* entry = g.Dict(false);
                     entry->entries.emplace_back(g.String("exp_avg"), g.String("not a tensor"));
                     PickleValue* state = g.Dict(false);
                     state->entries.emplace_back(g.Int(0), entry);
                     return AdamDict(g, state, Params(g, 2));
                   }),
                   "optimizer['state'][0]['exp_avg'] is a str, not a tensor"});
  // A state tensor of the wrong shape.
  cases.push_back({"wrong_shape.pt", HandBuiltCheckpoint([](PickleGraph& g, auto& tensor) {
                     PickleValue* entry = g.Dict(false);
                     entry->entries.emplace_back(g.String("step"), g.Float(1));
                     entry->entries.emplace_back(g.String("exp_avg"), tensor("0", {2}));
                     entry->entries.emplace_back(g.String("exp_avg_sq"), tensor("0", {2}));
                     PickleValue* state = g.Dict(false);
                     state->entries.emplace_back(g.Int(0), entry);
                     return AdamDict(g, state, Params(g, 2));
                   }),
                   "but the parameter has shape"});
  // A million parameter indices for a group of two.
  cases.push_back({"huge_list.pt", HandBuiltCheckpoint([](PickleGraph& g, auto&) {
                     return AdamDict(g, g.Dict(false), Params(g, 1'000'000));
                   }),
                   "doesn't match the size of optimizer's group"});
  // A hyperparameter nested 500 lists deep.
  cases.push_back({"deep.pt", HandBuiltCheckpoint([](PickleGraph& g, auto&) {
                     PickleValue* params = Params(g, 2);
                     const PickleValue* dict = AdamDict(g, g.Dict(false), params);
                     PickleValue* nested = g.Add(PickleKind::kList);
                     for (int i = 0; i < 500; ++i) {
                       PickleValue* outer = g.Add(PickleKind::kList);
                       outer->items.push_back(nested);
                       nested = outer;
                     }
                     const_cast<PickleValue*>(dict)->entries.emplace_back(g.String("deep"), nested);
                     return dict;
                   }),
                   ""});
  // The state keyed by str instead of the parameter's index.
  cases.push_back({"str_key.pt", HandBuiltCheckpoint([](PickleGraph& g, auto&) {
                     PickleValue* state = g.Dict(false);
                     state->entries.emplace_back(g.String("0"), g.Dict(false));
                     return AdamDict(g, state, Params(g, 2));
                   }),
                   "torch keys the state by parameter index"});
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    test_util::WriteFile(PathOf("ckpt/" + c.name), c.file);
    absl::Status status = Load("m", "adam", c.name);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message));
    EXPECT_EQ(Weights(*model), weights);
    EXPECT_EQ(Flatten(adam->StateDict()), state);
  }
}

}  // namespace
}  // namespace paramd::io
