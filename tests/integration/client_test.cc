// Every RPC through the C++ client library against the real daemon, including the seed's
// examples end to end.
#include "paramd/client.h"

#include <chrono>
#include <cstring>
#include <optional>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/client_fixture.h"
#include "tests/integration/daemon.h"
#include "tests/integration/specs.h"

namespace paramd::testing {
namespace {

using client::DType;
using client::HostTensor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class ClientTest : public DaemonClientTest {};

constexpr char kCnnSpec[] = R"({"type": "MyModel", "children": [
   {"name": "conv1", "type": "Conv2d", "args": {"in_channels": 1, "out_channels": 20, "kernel_size": 5}},
   {"name": "pool", "type": "MaxPool2d", "args": {"kernel_size": 2, "stride": 2}},
   {"name": "fc1", "type": "Linear", "args": {"in_features": 2880, "out_features": 10}}]})";

std::vector<std::string> Names(const std::vector<client::NamedTensor>& entries) {
  std::vector<std::string> names;
  for (const auto& entry : entries) names.push_back(entry.name);
  return names;
}

TEST_F(ClientTest, HealthListDescribeDelete) {
  EXPECT_TRUE(client_->Health().ok());
  ASSERT_TRUE(client_->CreateModel("b", kMlpSpec).ok());
  ASSERT_TRUE(client_->CreateModel("a", kSharedSpec).ok());
  auto models = client_->ListModels();
  ASSERT_TRUE(models.ok());
  ASSERT_EQ(models->size(), 2u);
  EXPECT_EQ((*models)[0].name, "a");
  auto info = client_->DescribeModel("b");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->type, "MLP");
  EXPECT_EQ(info->device, "cpu");
  EXPECT_TRUE(info->training);
  EXPECT_EQ(info->state_dict_entries, 5u);
  EXPECT_EQ(info->nbytes, (1u + 2 + 2 + 2 + 1) * 4);
  EXPECT_TRUE(client_->DeleteModel("b").ok());
  EXPECT_EQ(client_->DescribeModel("b").status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(client_->DescribeModel("b").status().message(),
              HasSubstr("model 'b' not found; ListModels shows the loaded models"));
  EXPECT_EQ(client_->DeleteModel("b").code(), absl::StatusCode::kNotFound);
}

// gRPC answers a request the daemon cannot parse (here a model name that is not UTF-8) with
// UNIMPLEMENTED and no message; the client says what that can mean.
TEST_F(ClientTest, AnUnparseableRequestGetsAMessageSayingWhatItCanMean) {
  ASSERT_TRUE(client_->CreateModel("b", kMlpSpec).ok());
  const absl::Status status = client_->DescribeModel("b\xff").status();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented);
  EXPECT_THAT(status.message(), HasSubstr("could not parse the request"));
  EXPECT_THAT(status.message(), HasSubstr("is not UTF-8"));
  EXPECT_TRUE(client_->DescribeModel("b").ok());
}

TEST_F(ClientTest, SeedMlpAndSequentialKeysAndValues) {
  ASSERT_TRUE(client_->CreateModel("mlp", kMlpSpec).ok());
  auto mlp = client_->Model("mlp");
  auto sd = mlp.StateDict();
  ASSERT_TRUE(sd.ok()) << sd.status();
  EXPECT_THAT(Names(sd->entries),
              ElementsAre("w2", "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"));
  EXPECT_THAT(sd->entries[0].tensor.ToDoubles(), ElementsAre(2.0));
  auto params = mlp.NamedParameters();
  ASSERT_TRUE(params.ok());
  EXPECT_THAT(Names(params->entries),
              ElementsAre("w2", "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"));

  ASSERT_TRUE(client_->CreateModel("seq", R"({"type": "Sequential", "children": [
      {"type": "Linear", "args": {"in_features": 1, "out_features": 2}}, {"type": "ReLU"},
      {"type": "Linear", "args": {"in_features": 2, "out_features": 1}}]})").ok());
  auto seq = client_->Model("seq");
  auto keys = seq.StateDict({.metadata_only = true});
  ASSERT_TRUE(keys.ok());
  EXPECT_THAT(Names(keys->entries), ElementsAre("0.weight", "0.bias", "2.weight", "2.bias"));
  EXPECT_THAT(keys->entries[1].tensor.shape, ElementsAre(2));
  auto modules = seq.NamedModules();
  ASSERT_TRUE(modules.ok());
  ASSERT_EQ(modules->modules.size(), 4u);
  EXPECT_EQ(modules->modules[1].name, "0");
  EXPECT_EQ(modules->modules[1].type, "Linear");
  auto info = seq.Describe();
  EXPECT_THAT(info->repr, HasSubstr("(0): Linear(in_features=1, out_features=2, bias=True)"));
}

TEST_F(ClientTest, SeedCnnParameterShapes) {
  ASSERT_TRUE(client_->CreateModel("cnn", kCnnSpec).ok());
  auto params = client_->Model("cnn").NamedParameters();
  ASSERT_TRUE(params.ok());
  ASSERT_THAT(Names(params->entries),
              ElementsAre("conv1.weight", "conv1.bias", "fc1.weight", "fc1.bias"));
  EXPECT_THAT(params->entries[0].tensor.shape, ElementsAre(20, 1, 5, 5));
  EXPECT_THAT(params->entries[2].tensor.shape, ElementsAre(10, 2880));
}

TEST_F(ClientTest, SeedTyingRegionWriteAndTieParameters) {
  ASSERT_TRUE(client_->CreateModel("net", kSharedSpec).ok());
  auto net = client_->Model("net");
  auto version = net.SetTensor("2.weight", Floats({}, {100}), client::Region{{0, 1}, {0, 1}});
  ASSERT_TRUE(version.ok()) << version.status();
  auto shared = net.GetTensor("4.weight", client::Region{{0, 1}, {0, 1}});
  ASSERT_TRUE(shared.ok());
  EXPECT_THAT(shared->ToDoubles(), ElementsAre(100.0));
  EXPECT_EQ(shared->version, *version);
  auto params = net.NamedParameters();
  EXPECT_EQ(params->entries.size(), 6u);  // the shared Linear once
  auto all = net.NamedParameters({.remove_duplicate = false});
  EXPECT_EQ(all->entries.size(), 8u);
  auto sd = net.StateDict({.metadata_only = true});
  EXPECT_THAT(sd->entries[2].tensor.tied_with, ElementsAre("4.weight"));
  // _metadata in PyTorch's order: the shared Linear under both of its paths.
  std::vector<std::string> order;
  for (const auto& [path, module_version] : sd->ordered_metadata) order.push_back(path);
  EXPECT_THAT(order, ElementsAre("", "0", "1", "2", "3", "4", "5", "6"));
  EXPECT_EQ(sd->ordered_metadata.size(), sd->metadata.size());

  // lm_head.weight = embed.weight through the RPC, then a write through one name.
  ASSERT_TRUE(client_->CreateModel("lm", R"({"type": "LM", "children": [
      {"name": "embed", "type": "Embedding", "args": {"num_embeddings": 10, "embedding_dim": 4}},
      {"name": "lm_head", "type": "Linear", "args": {"in_features": 4, "out_features": 10, "bias": false}}]})")
                  .ok());
  auto lm = client_->Model("lm");
  ASSERT_TRUE(lm.TieParameters("lm_head.weight", "embed.weight").ok());
  ASSERT_TRUE(lm.SetTensor("embed.weight", Floats({4}, {1, 2, 3, 4}), client::Region{{9, 10}}).ok());
  auto head = lm.GetTensor("lm_head.weight", client::Region{{9, 10}});
  EXPECT_THAT(head->ToDoubles(), ElementsAre(1, 2, 3, 4));
  EXPECT_EQ(lm.NamedParameters()->entries.size(), 1u);
  EXPECT_EQ(lm.TieParameters("lm_head.weight", "embed.nope").status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(ClientTest, LoadStateDictStrictNonStrictAndVersions) {
  ASSERT_TRUE(client_->CreateModel("mlp", kMlpSpec).ok());
  auto mlp = client_->Model("mlp");
  std::vector<client::NamedTensor> partial = {{"w2", Floats({1}, {5})},
                                              {"linear1.weight", Floats({3, 1}, {1, 2, 3})},
                                              {"linear1.bias", Floats({2}, {0, 0})},
                                              {"extra", Floats({1}, {0})}};
  auto strict = mlp.LoadStateDict(partial);
  EXPECT_EQ(strict.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(strict.status().message(),
              HasSubstr("Missing key(s) in state_dict: \"linear2.weight\", \"linear2.bias\". "));
  partial[1].tensor = Floats({2, 1}, {1, 2});
  auto loose = mlp.LoadStateDict(partial, {.strict = false});
  ASSERT_TRUE(loose.ok()) << loose.status();
  EXPECT_THAT(loose->missing_keys, ElementsAre("linear2.weight", "linear2.bias"));
  EXPECT_THAT(loose->unexpected_keys, ElementsAre("extra"));
  EXPECT_EQ(loose->version, 2u);
  EXPECT_THAT(mlp.GetTensor("w2")->ToDoubles(), ElementsAre(5.0));
  // Conditional write against a stale version.
  const absl::Status stale = mlp.SetTensor("w2", Floats({1}, {6}), std::nullopt, 1).status();
  EXPECT_EQ(stale.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(CurrentVersionOf(stale), std::optional<uint64_t>(2));
  EXPECT_TRUE(mlp.SetTensor("w2", Floats({1}, {6}), std::nullopt, 2).ok());
}

// GetSpec gives the tree as it stands after RegisterBuffer and TieParameters, ties and
// shared modules included: a model built from it has the same state_dict keys, repr and
// de-duplicated parameters.
TEST_F(ClientTest, GetSpecRebuildsTheTreeAsItStands) {
  ASSERT_TRUE(client_->CreateModel("mlp", kMlpSpec).ok());
  auto mlp = client_->Model("mlp");
  ASSERT_TRUE(mlp.TieParameters("linear2.bias", "w2").ok());
  ASSERT_TRUE(mlp.RegisterBuffer("linear1", "scale", Floats({2}, {1, 2})).ok());
  ASSERT_TRUE(client_->CreateModel("net", kSharedSpec).ok());
  for (const std::string name : {"mlp", "net"}) {
    SCOPED_TRACE(name);
    auto spec = client_->GetSpec(name);
    ASSERT_TRUE(spec.ok()) << spec.status();
    auto original = client_->DescribeModel(name);
    ASSERT_TRUE(original.ok());
    EXPECT_EQ(spec->version, original->version);
    auto copy = client_->CreateModel(name + "_copy", spec->spec_json);
    ASSERT_TRUE(copy.ok()) << copy.status() << "\n" << spec->spec_json;
    EXPECT_EQ(copy->repr, original->repr);
    EXPECT_EQ(copy->parameter_count, original->parameter_count);
    EXPECT_EQ(copy->state_dict_entries, original->state_dict_entries);
    auto keys = [&](const std::string& model) {
      std::vector<std::pair<std::string, std::vector<std::string>>> out;
      auto sd = client_->Model(model).StateDict({.metadata_only = true});
      EXPECT_TRUE(sd.ok()) << sd.status();
      if (sd.ok()) {
        for (const auto& entry : sd->entries) out.emplace_back(entry.name, entry.tensor.tied_with);
      }
      return out;
    };
    EXPECT_EQ(keys(name + "_copy"), keys(name));
  }
  EXPECT_EQ(client_->GetSpec("nope").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ClientTest, BatchNormBuffersModeAndMetadataRule) {
  ASSERT_TRUE(client_->CreateModel("bn", kBatchNormSpec).ok());
  auto bn = client_->Model("bn");
  auto buffers = bn.NamedBuffers();
  ASSERT_TRUE(buffers.ok());
  EXPECT_THAT(Names(buffers->entries),
              ElementsAre("1.running_mean", "1.running_var", "1.num_batches_tracked"));
  EXPECT_EQ(buffers->entries[2].tensor.dtype, DType::kInt64);
  auto sd = bn.StateDict();
  ASSERT_TRUE(sd.ok());
  EXPECT_EQ(sd->metadata.at("1"), 2);
  // A state_dict without num_batches_tracked and without _metadata loads (BatchNorm rule).
  std::vector<client::NamedTensor> entries;
  for (auto& entry : sd->entries) {
    if (entry.name != "1.num_batches_tracked") entries.push_back(entry);
  }
  EXPECT_TRUE(bn.LoadStateDict(entries).ok());
  // With version-2 metadata it is missing.
  auto with_metadata = bn.LoadStateDict(entries, {.metadata = sd->metadata});
  EXPECT_THAT(with_metadata.status().message(), HasSubstr("\"1.num_batches_tracked\""));

  auto eval = bn.SetMode(false);
  ASSERT_TRUE(eval.ok());
  EXPECT_FALSE(eval->training);
  auto moved = bn.MoveModel("cuda:0");
  EXPECT_EQ(moved.status().code(), absl::StatusCode::kFailedPrecondition);
  auto misspelt = bn.MoveModel("gpu");
  EXPECT_EQ(misspelt.status().code(), absl::StatusCode::kInvalidArgument);
  auto unmoved = bn.MoveModel("cpu");  // where it is: nothing to do, no new version
  ASSERT_TRUE(unmoved.ok()) << unmoved.status();
  EXPECT_EQ(unmoved->device, "cpu");
  EXPECT_EQ(unmoved->version, eval->version);
  // Without a GPU a model cannot be made in GPU memory either; nothing is created.
  auto on_gpu = client_->CreateModel("gpu", kMlpSpec, "cuda");
  EXPECT_EQ(on_gpu.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(on_gpu.status().message(), HasSubstr("use device 'cpu'"));
  EXPECT_EQ(client_->DescribeModel("gpu").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ClientTest, RegisterParameterAndBufferWithPyTorchRules) {
  ASSERT_TRUE(client_->CreateModel("mlp", kMlpSpec).ok());
  auto mlp = client_->Model("mlp");
  ASSERT_TRUE(mlp.RegisterParameter("linear1", "scale", Floats({2}, {1, 1})).ok());
  ASSERT_TRUE(mlp.RegisterParameter("", "gone", std::nullopt).ok());
  ASSERT_TRUE(mlp.RegisterBuffer("", "steps", Floats({1}, {0}), /*persistent=*/false).ok());
  auto keys = mlp.StateDict({.metadata_only = true});
  EXPECT_THAT(Names(keys->entries),
              ElementsAre("w2", "linear1.weight", "linear1.bias", "linear1.scale", "linear2.weight",
                          "linear2.bias"));
  auto buffers = mlp.NamedBuffers();
  EXPECT_THAT(Names(buffers->entries), ElementsAre("steps"));
  auto taken = mlp.RegisterParameter("", "w1", Floats({1}, {1}));
  EXPECT_EQ(taken.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(taken.status().message(), "attribute 'w1' already exists");
  EXPECT_EQ(mlp.RegisterBuffer("", "a.b", Floats({1}, {1})).status().message(),
            "buffer name can't contain \".\"");
  EXPECT_EQ(mlp.RegisterParameter("nope", "x", Floats({1}, {1})).status().message(),
            "MLP has no attribute `nope`");
}

TEST_F(ClientTest, WireDtypeCastsFloatTensorsOnly) {
  ASSERT_TRUE(client_->CreateModel("bn", kBatchNormSpec).ok());
  auto sd = client_->Model("bn").StateDict({.wire_dtype = DType::kBFloat16});
  ASSERT_TRUE(sd.ok()) << sd.status();
  EXPECT_EQ(sd->entries[0].tensor.dtype, DType::kBFloat16);
  EXPECT_EQ(sd->entries[0].tensor.data.size(), 3u * 2 * 2);
  EXPECT_EQ(sd->entries.back().tensor.dtype, DType::kInt64);  // num_batches_tracked as is
}

// The client lends the tensors' bytes to gRPC (no copy): several chunks of several tensors
// arrive intact, and the caller's tensors are untouched.
TEST_F(ClientTest, APushOfManyChunksArrivesIntact) {
  constexpr int64_t kNumel = (3 << 20) / 4 + 5;  // a bit over three 1 MiB chunks
  ASSERT_TRUE(client_
                  ->CreateModel("big", absl::StrCat(R"({"type": "Net", "parameters": [)",
                                                    R"({"name": "a", "shape": [)", kNumel, "]},",
                                                    R"({"name": "b", "shape": [)", kNumel, "]}]}"))
                  .ok());
  auto model = client_->Model("big");
  std::vector<client::NamedTensor> tensors(2);
  for (int i = 0; i < 2; ++i) {
    tensors[i].name = i == 0 ? "a" : "b";
    tensors[i].tensor = Floats({kNumel}, std::vector<double>(kNumel, 0.0));
    std::string& data = tensors[i].tensor.data;
    for (size_t j = 0; j < data.size(); ++j) data[j] = static_cast<char>((j * 31 + i) % 251);
  }
  const std::vector<client::NamedTensor> sent = tensors;
  auto loaded = model.LoadStateDict(tensors);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  auto back = model.StateDict();
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->entries.size(), 2u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_TRUE(back->entries[i].tensor.data == sent[i].tensor.data) << sent[i].name;
    EXPECT_TRUE(tensors[i].tensor.data == sent[i].tensor.data) << sent[i].name;
  }
}

// Collects a streamed read whole, to compare with the call that returns it whole.
class Collect : public client::TensorConsumer {
 public:
  absl::Status BeginTensor(const std::string& name, const HostTensor& meta) override {
    tensor = meta;
    return absl::OkStatus();
  }
  absl::Status TensorData(absl::string_view bytes) override {
    tensor.data.append(bytes.data(), bytes.size());
    return absl::OkStatus();
  }
  absl::Status EndTensor() override { return absl::OkStatus(); }
  HostTensor tensor;
};

// Hands out `tensor`'s bytes; fails the piece at `fail_offset` when set.
class Produce : public client::TensorProducer {
 public:
  explicit Produce(HostTensor tensor) : tensors_{{"ignored", std::move(tensor)}} {
    data_ = std::move(tensors_[0].tensor.data);
    tensors_[0].tensor.data.clear();
  }
  const std::vector<client::NamedTensor>& tensors() const override { return tensors_; }
  absl::Status Read(size_t, uint64_t offset, absl::Span<char> out) override {
    if (offset == fail_offset) return absl::InvalidArgumentError("x.npy: the file ends early");
    std::memcpy(out.data(), data_.data() + offset, out.size());
    return absl::OkStatus();
  }
  uint64_t fail_offset = UINT64_MAX;

 private:
  std::vector<client::NamedTensor> tensors_;
  std::string data_;
};

// GetTensorTo and SetTensorFrom are GetTensor and SetTensor a chunk at a time: the same
// regions, wire dtype and if_version, the same answers.
TEST_F(ClientTest, StreamedGetAndSetOfOneTensorMatchTheWholeCalls) {
  ASSERT_TRUE(client_->CreateModel("net", kSharedSpec).ok());
  auto model = client_->Model("net");
  const client::Region rows = {{2, 6}};
  Produce rows_in(Floats({4, 8}, std::vector<double>(32, 1.25)));
  auto version = model.SetTensorFrom("2.weight", rows_in, rows, /*if_version=*/1);
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(*version, 2u);
  Produce stale(Floats({1}, {3}));
  EXPECT_EQ(model.SetTensorFrom("2.bias", stale, std::nullopt, 1).status().code(),
            absl::StatusCode::kAborted);
  Produce one(Floats({}, {-4}));  // one element fills the region, as SetTensor takes it
  ASSERT_TRUE(model.SetTensorFrom("4.bias", one, client::Region{{0, 3}}).ok());

  for (const client::GetTensorOptions& options :
       {client::GetTensorOptions{}, client::GetTensorOptions{.wire_dtype = DType::kBFloat16}}) {
    for (const std::optional<client::Region>& region :
         {std::optional<client::Region>(), std::optional<client::Region>(rows)}) {
      auto whole = model.GetTensor("4.weight", region, options);
      ASSERT_TRUE(whole.ok()) << whole.status();
      Collect streamed;
      auto at = model.GetTensorTo("4.weight", streamed, region, options);
      ASSERT_TRUE(at.ok()) << at.status();
      EXPECT_EQ(*at, 3u);
      EXPECT_EQ(streamed.tensor.dtype, whole->dtype);
      EXPECT_EQ(streamed.tensor.shape, whole->shape);
      EXPECT_EQ(streamed.tensor.is_parameter, whole->is_parameter);
      EXPECT_TRUE(streamed.tensor.data == whole->data);
    }
  }
  auto bias = model.GetTensor("2.bias");
  ASSERT_TRUE(bias.ok());
  const std::vector<double> values = bias->ToDoubles();
  ASSERT_EQ(values.size(), 8u);
  EXPECT_THAT(std::vector<double>(values.begin(), values.begin() + 3), ElementsAre(-4, -4, -4));
  auto weight = model.GetTensor("2.weight", rows);
  ASSERT_TRUE(weight.ok());
  EXPECT_EQ(weight->ToDoubles(), std::vector<double>(32, 1.25));
  Collect missing;
  EXPECT_EQ(model.GetTensorTo("nope", missing).status().code(), absl::StatusCode::kNotFound);
}

// A producer that fails on the tensor's last piece (a file cut while it is read) cancels
// the write: the daemon, which had all but that piece, commits nothing.
TEST_F(ClientTest, AProducerErrorOnTheLastPieceCommitsNothing) {
  constexpr int64_t kNumel = (3 << 20) / 4 + 5;  // four chunks, the last one short
  ASSERT_TRUE(client_
                  ->CreateModel("big", absl::StrCat(R"({"type": "Net", "parameters": [)",
                                                    R"({"name": "w", "shape": [)", kNumel, "]}]}"))
                  .ok());
  auto model = client_->Model("big");
  auto before = model.GetTensor("w");
  ASSERT_TRUE(before.ok());
  Produce cut(Floats({kNumel}, std::vector<double>(kNumel, 7.0)));
  cut.fail_offset = 3 * client::kChunkBytes;
  auto version = model.SetTensorFrom("w", cut);
  EXPECT_EQ(version.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(version.status().message(), HasSubstr("the file ends early"));
  auto after = model.GetTensor("w");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->version, before->version);
  EXPECT_TRUE(after->data == before->data);
  auto info = client_->DescribeModel("big");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->version, 1u);
}

// A write cut short (here by its deadline) returns its error promptly: waiting for gRPC to
// hand back the lent bytes does not stall it.
TEST_F(ClientTest, AWriteCutShortReturnsPromptly) {
  constexpr int64_t kNumel = (64 << 20) / 4;
  ASSERT_TRUE(client_
                  ->CreateModel("big", absl::StrCat(R"({"type": "Net", "parameters": [)",
                                                    R"({"name": "w", "shape": [)", kNumel, "]}]}"))
                  .ok());
  client::ConnectOptions options;
  options.stream_deadline = std::chrono::milliseconds(5);
  auto hurried = client::Client::Connect(daemon_->address(), options);
  ASSERT_TRUE(hurried.ok()) << hurried.status();
  client::HostTensor tensor = Floats({kNumel}, std::vector<double>(kNumel, 1.0));
  for (int i = 0; i < 3; ++i) {
    const auto start = std::chrono::steady_clock::now();
    auto written = (*hurried)->Model("big").SetTensor("w", tensor);
    const auto took = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(written.status().code(), absl::StatusCode::kDeadlineExceeded) << written.status();
    EXPECT_LT(took, std::chrono::seconds(2));
  }
}

}  // namespace
}  // namespace paramd::testing
