// The real paramd daemon driven over its gRPC contract, frame by frame: the seed examples end
// to end, large and small tensors, consistency under concurrent writers, and a battery of bad
// requests that must leave every model byte-for-byte unchanged.
#include <atomic>
#include <chrono>
#include <filesystem>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon.h"
#include "tests/integration/specs.h"
#include "tests/integration/stub_fixture.h"
#include "tests/integration/wire.h"

namespace paramd::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kBigSpec[] = R"({"type": "Net", "parameters": [
   {"name": "big", "shape": [1024, 1024]}, {"name": "small", "shape": [3]},
   {"name": "scalar", "shape": []}]})";

class ServiceTest : public DaemonStubsTest {
 protected:

  grpc::Status Create(const std::string& name, const std::string& spec,
                      v1::ModelInfo* info = nullptr) {
    grpc::ClientContext context;
    v1::CreateModelRequest request;
    request.set_name(name);
    request.set_spec_json(spec);
    v1::ModelInfo ignored;
    return models_->CreateModel(&context, request, info ? info : &ignored);
  }

  std::vector<std::string> Names(const WireRead& read) {
    std::vector<std::string> names;
    for (const auto& t : read.tensors) names.push_back(t.name);
    return names;
  }
};

TEST_F(ServiceTest, ServesHealthAndStopsCleanlyOnSigterm) {
  auto health = grpc::health::v1::Health::NewStub(daemon_->channel());
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  ASSERT_TRUE(health->Check(&context, request, &response).ok());
  EXPECT_EQ(response.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(daemon_->Stop(), 0);
  EXPECT_THAT(daemon_->Log(), HasSubstr("msg=\"paramd started\""));
  EXPECT_THAT(daemon_->Log(), HasSubstr("msg=\"paramd stopped\""));
}

// A second daemon on a port in use, or on a data directory in use, does not start: gRPC
// would otherwise share the port (SO_REUSEPORT) and split the clients between the two, and
// two daemons would overwrite each other's snapshots (Note [A port of its own], Note [One
// daemon a data directory]). The first one serves on, and after it stops the directory is
// free again, whatever the lock file still holds.
TEST_F(ServiceTest, ASecondDaemonOnAPortOrADataDirectoryInUseDoesNotStart) {
  ASSERT_TRUE(Create("m", kBigSpec).ok());
  auto same_port = Daemon::Start({"--listen", daemon_->address()});
  ASSERT_FALSE(same_port.ok());
  EXPECT_THAT(same_port.status().message(),
              HasSubstr("cannot listen on '" + daemon_->address() + "'"));
  auto same_dir = Daemon::Start({"--data-dir", daemon_->data_dir()});
  ASSERT_FALSE(same_dir.ok());
  EXPECT_THAT(same_dir.status().message(),
              HasSubstr(absl::StrCat("--data-dir '", daemon_->data_dir(),
                                     "' is in use by another paramd (pid ", daemon_->pid(), ")")));
  grpc::ClientContext context;
  v1::DescribeModelRequest request;
  request.set_name("m");
  v1::ModelInfo info;
  ASSERT_TRUE(models_->DescribeModel(&context, request, &info).ok());

  daemon_->Kill();  // the lock goes with the process, however it ends
  ASSERT_TRUE(daemon_->Restart().ok());
  EXPECT_EQ(daemon_->Stop(), 0);
}

// The start log names the socket, which is also what a client dials.
TEST_F(ServiceTest, UnixSocketListenLogsTheSocketPath) {
  char dir[] = "/tmp/paramd-unix-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string listen = absl::StrCat("unix:", dir, "/paramd.sock");
  auto daemon = Daemon::Start({"--listen", listen});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  EXPECT_THAT((*daemon)->Log(), HasSubstr(absl::StrCat(" listen=", listen, " ")));
  EXPECT_EQ((*daemon)->address(), listen);
  auto health = grpc::health::v1::Health::NewStub((*daemon)->channel());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::health::v1::HealthCheckResponse response;
  EXPECT_TRUE(health->Check(&context, {}, &response).ok());
  EXPECT_EQ((*daemon)->Stop(), 0);
  std::filesystem::remove_all(dir);
}

// Lists the services over reflection protocol `Reflection` (v1 or v1alpha: the same messages
// under two packages), then resolves the file declaring each one, as grpcurl does before a
// call. Returns the listed names; each resolved file must declare its service.
template <typename Reflection, typename Request, typename Response>
std::vector<std::string> ListAndResolveServices(const std::shared_ptr<grpc::Channel>& channel) {
  auto stub = Reflection::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto stream = stub->ServerReflectionInfo(&context);
  Request request;
  request.set_list_services("");
  EXPECT_TRUE(stream->Write(request));
  Response response;
  EXPECT_TRUE(stream->Read(&response));
  std::vector<std::string> services;
  for (const auto& service : response.list_services_response().service()) {
    services.push_back(service.name());
  }
  for (const std::string& service : services) {
    request.set_file_containing_symbol(service);
    EXPECT_TRUE(stream->Write(request)) << service;
    Response file;
    EXPECT_TRUE(stream->Read(&file)) << service;
    EXPECT_FALSE(file.has_error_response())
        << service << ": " << file.error_response().error_message();
    // The file asked for and the files it imports. (gRPC 1.51's v1alpha service also repeats
    // the files of the stream's earlier answers: it never clears its response.)
    std::vector<std::string> declared;
    for (const std::string& bytes : file.file_descriptor_response().file_descriptor_proto()) {
      google::protobuf::FileDescriptorProto proto;
      EXPECT_TRUE(proto.ParseFromString(bytes)) << service;
      for (const auto& s : proto.service()) declared.push_back(proto.package() + "." + s.name());
    }
    EXPECT_THAT(declared, ::testing::Contains(service));
  }
  request.set_file_containing_symbol("paramd.v1.NoSuchThing");
  EXPECT_TRUE(stream->Write(request));
  Response missing;
  EXPECT_TRUE(stream->Read(&missing));
  EXPECT_EQ(missing.error_response().error_code(), grpc::StatusCode::NOT_FOUND);
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  return services;
}

const std::vector<std::string> kServedServices = {
    "paramd.v1.Models", "paramd.v1.Parameters", "paramd.v1.Checkpoints", "paramd.v1.Inference",
    "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection"};

TEST_F(ServiceTest, ServesReflectionForGenericTools) {
  namespace v1alpha = grpc::reflection::v1alpha;
  std::vector<std::string> services =
      ListAndResolveServices<v1alpha::ServerReflection, v1alpha::ServerReflectionRequest,
                             v1alpha::ServerReflectionResponse>(daemon_->channel());
  EXPECT_THAT(services, ::testing::IsSupersetOf(kServedServices));
}

TEST_F(ServiceTest, ServesReflectionV1ForCurrentTools) {
  namespace rv1 = grpc::reflection::v1;
  std::vector<std::string> services =
      ListAndResolveServices<rv1::ServerReflection, rv1::ServerReflectionRequest,
                             rv1::ServerReflectionResponse>(daemon_->channel());
  EXPECT_THAT(services, ::testing::IsSupersetOf(kServedServices));
}

TEST_F(ServiceTest, SeedMlpEndToEnd) {
  v1::ModelInfo info;
  ASSERT_TRUE(Create("mlp", kMlpSpec, &info).ok());
  EXPECT_EQ(info.version(), 1u);
  EXPECT_EQ(info.repr(),
            "MLP(\n  (linear1): Linear(in_features=1, out_features=2, bias=True)\n"
            "  (relu): ReLU()\n  (linear2): Linear(in_features=2, out_features=1, bias=True)\n)");
  EXPECT_EQ(info.parameter_count(), 5u);
  EXPECT_EQ(info.parameter_numel(), 1u + 2 + 2 + 2 + 1);
  WireRead sd = StateDict(*parameters_, "mlp");
  ASSERT_TRUE(sd.status.ok()) << sd.status.error_message();
  EXPECT_THAT(Names(sd),
              ElementsAre("w2", "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"));
  EXPECT_EQ(sd.metadata.size(), 4u);
  // state_dict()._metadata's order, which the map cannot carry.
  EXPECT_THAT(sd.metadata_order, ElementsAre("", "linear1", "relu", "linear2"));
  EXPECT_THAT(StateDict(*parameters_, "mlp", "model.").metadata_order,
              ElementsAre("model", "model.linear1", "model.relu", "model.linear2"));
  EXPECT_THAT(Floats(sd.tensors[0].data), ElementsAre(2.0f));
  EXPECT_THAT(sd.tensors[1].meta.shape(), ElementsAre(2, 1));
  EXPECT_TRUE(sd.tensors[1].meta.is_parameter());
  EXPECT_TRUE(sd.tensors[1].meta.requires_grad());

  // load_state_dict with PyTorch's strict error text (pytorch-semantics.md §4 example).
  std::vector<v1::WriteFrame> frames = {OptionsFrame("mlp")};
  for (auto [name, shape, count] : std::vector<std::tuple<std::string, std::vector<int64_t>, int>>{
           {"w2", {1}, 1}, {"linear1.weight", {3, 1}, 3}, {"linear1.bias", {2}, 2}, {"extra", {1}, 1}}) {
    auto tensor = FloatTensorFrames(name, shape, std::vector<float>(count, 1.0f));
    frames.insert(frames.end(), tensor.begin(), tensor.end());
  }
  v1::LoadStateDictResponse loaded;
  grpc::Status status = LoadStateDict(*parameters_, frames, &loaded);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message(),
            "Error(s) in loading state_dict for MLP:\n"
            "\tMissing key(s) in state_dict: \"linear2.weight\", \"linear2.bias\". \n"
            "\tUnexpected key(s) in state_dict: \"extra\". \n"
            "\tsize mismatch for linear1.weight: copying a param with shape torch.Size([3, 1]) "
            "from checkpoint, the shape in current model is torch.Size([2, 1]).");
}

TEST_F(ServiceTest, SeedTiedSequentialRegionWriteIsSeenThroughTheSharedName) {
  ASSERT_TRUE(Create("net", kSharedSpec).ok());
  WireRead sd = StateDict(*parameters_, "net", "", /*metadata_only=*/true);
  ASSERT_TRUE(sd.status.ok());
  EXPECT_THAT(Names(sd), ElementsAre("0.weight", "0.bias", "2.weight", "2.bias", "4.weight",
                                     "4.bias", "6.weight", "6.bias"));
  EXPECT_THAT(sd.tensors[2].tied_with, ElementsAre("4.weight"));
  EXPECT_TRUE(sd.tensors[2].data.empty());
  // net[2].weight[0, 0] = 100 as one call.
  auto frame = HeaderFrame("2.weight", v1::FLOAT32, {});
  auto* range = frame.mutable_header()->mutable_region()->add_ranges();
  range->set_start(0);
  range->set_stop(1);
  range = frame.mutable_header()->mutable_region()->add_ranges();
  range->set_start(0);
  range->set_stop(1);
  v1::WriteResponse written;
  ASSERT_TRUE(SetTensors(*parameters_, {OptionsFrame("net"), frame, ChunkFrame(0, FloatBytes({100}))},
                         &written)
                  .ok());
  EXPECT_EQ(written.version(), 2u);
  WireRead shared = GetTensor(*parameters_, "net", "4.weight");
  ASSERT_TRUE(shared.status.ok());
  EXPECT_EQ(Floats(shared.tensors[0].data)[0], 100.0f);
  EXPECT_EQ(shared.version, 2u);
  EXPECT_EQ(shared.tensors[0].meta.version(), 2u);
}

TEST_F(ServiceTest, TensorsLargerThanOneChunkAndScalarsRoundTrip) {
  ASSERT_TRUE(Create("big", kBigSpec).ok());
  std::vector<float> big(1024 * 1024);
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i % 9973) * 0.5f;
  std::vector<v1::WriteFrame> frames = {OptionsFrame("big")};
  for (const auto& part : {FloatTensorFrames("big", {1024, 1024}, big),
                           FloatTensorFrames("small", {3}, {1, 2, 3}),
                           FloatTensorFrames("scalar", {}, {7})}) {
    frames.insert(frames.end(), part.begin(), part.end());
  }
  EXPECT_GT(frames.size(), 6u);  // the big tensor needs several chunks
  v1::WriteResponse written;
  ASSERT_TRUE(SetTensors(*parameters_, frames, &written).ok());
  WireRead sd = StateDict(*parameters_, "big");
  ASSERT_TRUE(sd.status.ok());
  EXPECT_EQ(Floats(sd.tensors[0].data), big);
  EXPECT_THAT(Floats(sd.tensors[1].data), ElementsAre(1, 2, 3));
  EXPECT_THAT(Floats(sd.tensors[2].data), ElementsAre(7));
  EXPECT_TRUE(sd.tensors[2].meta.shape().empty());
}

TEST_F(ServiceTest, ConcurrentReadersAlwaysSeeOneWholeVersion) {
  ASSERT_TRUE(Create("c", kBigSpec).ok());
  std::atomic<bool> stop{false};
  std::atomic<int> writes{0}, checked{0};
  auto writer = [&] {
    while (!stop) {
      grpc::ClientContext context;
      v1::DescribeModelRequest request;
      request.set_name("c");
      v1::ModelInfo info;
      if (!models_->DescribeModel(&context, request, &info).ok()) continue;
      // Every element of every tensor becomes the version this write will create.
      const float next = static_cast<float>(info.version() + 1);
      std::vector<v1::WriteFrame> frames = {OptionsFrame("c", info.version())};
      for (const auto& part : {FloatTensorFrames("big", {1024, 1024}, std::vector<float>(1 << 20, next)),
                               FloatTensorFrames("small", {3}, {next, next, next}),
                               FloatTensorFrames("scalar", {}, {next})}) {
        frames.insert(frames.end(), part.begin(), part.end());
      }
      v1::WriteResponse written;
      grpc::Status status = SetTensors(*parameters_, frames, &written);
      if (status.ok()) {
        EXPECT_EQ(written.version(), info.version() + 1);
        ++writes;
      } else {
        EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED) << status.error_message();
      }
    }
  };
  auto reader = [&] {
    while (!stop) {
      WireRead sd = StateDict(*parameters_, "c");
      ASSERT_TRUE(sd.status.ok());
      if (sd.version == 1) continue;  // the initial values are not uniform
      for (const auto& tensor : sd.tensors) {
        for (float value : Floats(tensor.data)) {
          ASSERT_EQ(value, static_cast<float>(sd.version)) << tensor.name;
        }
      }
      ++checked;
    }
  };
  std::vector<std::thread> threads;
  threads.emplace_back(writer);
  threads.emplace_back(writer);
  threads.emplace_back(reader);
  threads.emplace_back(reader);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while ((writes < 20 || checked < 20) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  stop = true;
  for (auto& t : threads) t.join();
  EXPECT_GE(writes.load(), 20);
  EXPECT_GE(checked.load(), 20);
}

TEST_F(ServiceTest, IfVersionMismatchIsAbortedAndChangesNothing) {
  ASSERT_TRUE(Create("mlp", kMlpSpec).ok());
  std::vector<v1::WriteFrame> frames = {OptionsFrame("mlp", 7)};
  auto tensor = FloatTensorFrames("w2", {1}, {9});
  frames.insert(frames.end(), tensor.begin(), tensor.end());
  v1::WriteResponse written;
  grpc::Status status = SetTensors(*parameters_, frames, &written);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_THAT(status.error_message(), HasSubstr("is at version 1, not 7"));
  EXPECT_THAT(Floats(GetTensor(*parameters_, "mlp", "w2").tensors[0].data), ElementsAre(2.0f));
}

// A tied or shared tensor's bytes travel once when the request asks for aliases, and under
// every name when it does not (older clients, examples/go).
TEST_F(ServiceTest, StateDictAliasesSendTiedBytesOnce) {
  ASSERT_TRUE(Create("lm", kTiedEmbeddingSpec).ok());
  ASSERT_TRUE(Create("net", kSharedSpec).ok());
  auto read = [&](const std::string& model, bool aliases, v1::DType wire_dtype) {
    grpc::ClientContext context;
    v1::StateDictRequest request;
    request.set_model(model);
    request.set_aliases(aliases);
    request.set_wire_dtype(wire_dtype);
    auto reader = parameters_->StateDict(&context, request);
    return ReadFrames(reader);
  };
  for (v1::DType wire_dtype : {v1::DTYPE_UNSPECIFIED, v1::BFLOAT16}) {
    const WireRead plain = read("lm", false, wire_dtype);
    const WireRead aliased = read("lm", true, wire_dtype);
    ASSERT_TRUE(plain.status.ok() && aliased.status.ok());
    ASSERT_EQ(plain.tensors.size(), 2u);
    ASSERT_EQ(aliased.tensors.size(), 2u);
    EXPECT_EQ(plain.tensors[1].alias_of, "");
    EXPECT_EQ(plain.tensors[1].data, plain.tensors[0].data);
    EXPECT_EQ(aliased.tensors[0].data, plain.tensors[0].data);
    EXPECT_EQ(aliased.tensors[1].name, "lm_head.weight");
    EXPECT_EQ(aliased.tensors[1].alias_of, "embed.weight");
    EXPECT_EQ(aliased.tensors[1].data, "");  // no chunks
    EXPECT_EQ(aliased.tensors[1].meta.dtype(), aliased.tensors[0].meta.dtype());
    EXPECT_THAT(aliased.tensors[1].meta.shape(), ElementsAre(10, 4));
  }
  // The shared Linear: net.4's entries point at net.2's.
  const WireRead net = read("net", true, v1::DTYPE_UNSPECIFIED);
  ASSERT_TRUE(net.status.ok());
  std::vector<std::string> aliases;
  for (const auto& tensor : net.tensors) {
    if (!tensor.alias_of.empty()) aliases.push_back(tensor.name + "->" + tensor.alias_of);
  }
  EXPECT_THAT(aliases, ElementsAre("4.weight->2.weight", "4.bias->2.bias"));
}

// The trailer a call's context received under `key`, or "(none)".
std::string Trailer(const grpc::ClientContext& context, const std::string& key) {
  const auto& trailers = context.GetServerTrailingMetadata();
  auto it = trailers.find(key);
  return it == trailers.end() ? "(none)" : std::string(it->second.data(), it->second.size());
}

TEST_F(ServiceTest, VersionConflictCarriesTheCurrentVersionTrailer) {
  ASSERT_TRUE(Create("mlp", kMlpSpec).ok());
  auto tensor = FloatTensorFrames("w2", {1}, {9});
  std::vector<v1::WriteFrame> frames = {OptionsFrame("mlp", 0)};
  frames.insert(frames.end(), tensor.begin(), tensor.end());
  v1::WriteResponse written;
  ASSERT_TRUE(SetTensors(*parameters_, frames, &written).ok());  // now at version 2

  {  // A stream write with a stale if_version.
    frames[0] = OptionsFrame("mlp", 1);
    grpc::ClientContext context;
    auto writer = parameters_->SetTensors(&context, &written);
    for (const auto& frame : frames) {
      if (!writer->Write(frame)) break;
    }
    writer->WritesDone();
    const grpc::Status status = writer->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED) << status.error_message();
    EXPECT_EQ(Trailer(context, "paramd-current-version"), "2");
    // The version travels in the trailer alone: no status details reach the client.
    EXPECT_EQ(status.error_details(), "");
  }
  {  // A unary delete with a stale if_version.
    grpc::ClientContext context;
    v1::DeleteModelRequest request;
    request.set_name("mlp");
    request.set_if_version(7);
    v1::DeleteModelResponse response;
    const grpc::Status status = models_->DeleteModel(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::ABORTED) << status.error_message();
    EXPECT_EQ(Trailer(context, "paramd-current-version"), "2");
  }
  {  // Any other failure carries no version.
    grpc::ClientContext context;
    v1::DeleteModelRequest request;
    request.set_name("nope");
    request.set_if_version(7);
    v1::DeleteModelResponse response;
    const grpc::Status status = models_->DeleteModel(&context, request, &response);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << status.error_message();
    EXPECT_EQ(Trailer(context, "paramd-current-version"), "(none)");
  }
}

// Every bad request gets a clear error with the right code, and afterwards every model is
// byte-for-byte what it was and the daemon still answers.
TEST_F(ServiceTest, BatteryOfBadRequestsChangesNothing) {
  ASSERT_TRUE(Create("mlp", kMlpSpec).ok());
  ASSERT_TRUE(Create("big", kBigSpec).ok());
  const WireRead before_mlp = StateDict(*parameters_, "mlp");
  const WireRead before_big = StateDict(*parameters_, "big");

  auto expect_code = [](const grpc::Status& status, grpc::StatusCode code, const char* what) {
    EXPECT_EQ(status.error_code(), code) << what << ": " << status.error_message();
    EXPECT_FALSE(status.error_message().empty()) << what;
  };
  auto write = [&](std::vector<v1::WriteFrame> frames) {
    v1::WriteResponse response;
    return SetTensors(*parameters_, frames, &response);
  };
  auto w2 = [](std::vector<float> values) { return FloatTensorFrames("w2", {1}, values); };
  auto with = [](std::vector<v1::WriteFrame> a, const std::vector<v1::WriteFrame>& b) {
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };

  expect_code(write(with({OptionsFrame("nope")}, w2({1}))), grpc::StatusCode::NOT_FOUND,
              "unknown model");
  expect_code(write(with({OptionsFrame("mlp")}, FloatTensorFrames("linear9.weight", {1}, {1}))),
              grpc::StatusCode::NOT_FOUND, "unknown key");
  expect_code(write(with({OptionsFrame("mlp")}, FloatTensorFrames("", {1}, {1}))),
              grpc::StatusCode::NOT_FOUND, "empty key");
  expect_code(write(with({OptionsFrame("mlp")}, FloatTensorFrames("linear1.weight", {3}, {1, 2, 3}))),
              grpc::StatusCode::INVALID_ARGUMENT, "wrong shape");
  expect_code(write({OptionsFrame("mlp"), HeaderFrame("w2", v1::DTYPE_UNSPECIFIED, {1}),
                     ChunkFrame(0, FloatBytes({1}))}),
              grpc::StatusCode::INVALID_ARGUMENT, "no dtype");
  expect_code(write({OptionsFrame("mlp"), HeaderFrame("w2", v1::FLOAT64, {1}),
                     ChunkFrame(0, FloatBytes({1}))}),
              grpc::StatusCode::INVALID_ARGUMENT, "bytes do not match dtype");
  expect_code(write({OptionsFrame("mlp"), HeaderFrame("w2", v1::FLOAT32, {1})}),
              grpc::StatusCode::INVALID_ARGUMENT, "stream ends early");
  expect_code(write({OptionsFrame("mlp"), HeaderFrame("w2", v1::FLOAT32, {1}),
                     ChunkFrame(0, FloatBytes({1, 2}))}),
              grpc::StatusCode::INVALID_ARGUMENT, "too many bytes");
  {
    auto frames = FloatTensorFrames("big", {1024, 1024}, std::vector<float>(1 << 20, 5.0f));
    std::swap(frames[1], frames[2]);  // chunks out of order
    expect_code(write(with({OptionsFrame("big")}, frames)), grpc::StatusCode::INVALID_ARGUMENT,
                "reordered chunks");
    frames = FloatTensorFrames("big", {1024, 1024}, std::vector<float>(1 << 20, 5.0f));
    frames.pop_back();  // truncated
    auto good = FloatTensorFrames("small", {3}, {5, 5, 5});
    expect_code(write(with(with({OptionsFrame("big")}, good), frames)),
                grpc::StatusCode::INVALID_ARGUMENT, "truncated big tensor after a good one");
  }
  expect_code(write({OptionsFrame("mlp"), HeaderFrame("w2", v1::FLOAT32, {1 << 20, 1 << 20}),
                     ChunkFrame(0, FloatBytes({1}))}),
              grpc::StatusCode::RESOURCE_EXHAUSTED, "2^40 elements");
  expect_code(write({OptionsFrame("mlp"), HeaderFrame("w2", v1::FLOAT32, {-1})}),
              grpc::StatusCode::INVALID_ARGUMENT, "negative shape");
  expect_code(write({ChunkFrame(0, FloatBytes({1}))}), grpc::StatusCode::INVALID_ARGUMENT,
              "chunk before options");
  expect_code(write(w2({1})), grpc::StatusCode::INVALID_ARGUMENT, "header before options");
  {
    auto frame = HeaderFrame("linear1.weight", v1::FLOAT32, {});
    auto* range = frame.mutable_header()->mutable_region()->add_ranges();
    range->set_start(0);
    range->set_stop(5);
    expect_code(write({OptionsFrame("mlp"), frame, ChunkFrame(0, FloatBytes({1}))}),
                grpc::StatusCode::INVALID_ARGUMENT, "region out of bounds");
  }
  expect_code(Create("bad", R"({"type": "Net", "children": [{"name": "a.b", "type": "ReLU"}]})"),
              grpc::StatusCode::INVALID_ARGUMENT, "dotted child name");
  expect_code(Create("bad", "{not json"), grpc::StatusCode::INVALID_ARGUMENT, "invalid JSON spec");
  expect_code(Create("bad", R"({"type": "Linear", "args": {"in_features": -1, "out_features": 2}})"),
              grpc::StatusCode::INVALID_ARGUMENT, "negative feature count");
  expect_code(Create("mlp", kMlpSpec), grpc::StatusCode::ALREADY_EXISTS, "duplicate model");
  expect_code(Create("a/b", kMlpSpec), grpc::StatusCode::INVALID_ARGUMENT, "bad model name");
  expect_code(Create("", kMlpSpec), grpc::StatusCode::INVALID_ARGUMENT, "empty model name");
  {
    grpc::ClientContext context;
    v1::CreateModelRequest request;
    request.set_name("gpu");
    request.set_spec_json(kMlpSpec);
    request.set_device("cuda:0");
    v1::ModelInfo info;
    expect_code(models_->CreateModel(&context, request, &info),
                grpc::StatusCode::FAILED_PRECONDITION, "cuda without a GPU");
  }
  expect_code(GetTensor(*parameters_, "mlp", "linear1.nope").status, grpc::StatusCode::NOT_FOUND,
              "get unknown key");
  {
    v1::LoadStateDictResponse response;
    expect_code(LoadStateDict(*parameters_, with({OptionsFrame("mlp")}, w2({1})), &response),
                grpc::StatusCode::INVALID_ARGUMENT, "strict load with missing keys");
    expect_code(LoadStateDict(*parameters_, with(with({OptionsFrame("mlp")}, w2({1})), w2({1})),
                              &response),
                grpc::StatusCode::INVALID_ARGUMENT, "duplicate keys");
  }
  {
    grpc::ClientContext context;
    v1::TieParametersRequest request;
    request.set_model("mlp");
    request.set_name("linear2.weight");
    request.set_target("linear1.weight");
    v1::WriteResponse response;
    expect_code(parameters_->TieParameters(&context, request, &response),
                grpc::StatusCode::INVALID_ARGUMENT, "tie between different shapes");
  }

  const WireRead after_mlp = StateDict(*parameters_, "mlp");
  const WireRead after_big = StateDict(*parameters_, "big");
  ASSERT_TRUE(after_mlp.status.ok());
  EXPECT_EQ(after_mlp.version, before_mlp.version);
  EXPECT_EQ(after_big.version, before_big.version);
  ASSERT_EQ(after_mlp.tensors.size(), before_mlp.tensors.size());
  for (size_t i = 0; i < after_mlp.tensors.size(); ++i) {
    EXPECT_EQ(after_mlp.tensors[i].data, before_mlp.tensors[i].data) << after_mlp.tensors[i].name;
  }
  for (size_t i = 0; i < after_big.tensors.size(); ++i) {
    EXPECT_EQ(after_big.tensors[i].data, before_big.tensors[i].data) << after_big.tensors[i].name;
  }
  grpc::ClientContext context;
  v1::ListModelsResponse list;
  ASSERT_TRUE(models_->ListModels(&context, v1::ListModelsRequest(), &list).ok());
  EXPECT_EQ(list.models_size(), 2);
  // One log line per failed call, naming the model and the status.
  const std::string log = daemon_->Log();
  EXPECT_THAT(log, HasSubstr("msg=\"get tensor\" model=mlp status=NOT_FOUND"));
  EXPECT_THAT(log, HasSubstr("msg=\"set tensors\" model=big status=INVALID_ARGUMENT"));
  EXPECT_THAT(log, HasSubstr("msg=\"create model\" model=mlp status=ALREADY_EXISTS"));
  EXPECT_THAT(log, HasSubstr("msg=\"tie parameters\" model=mlp status=INVALID_ARGUMENT"));
}

TEST_F(ServiceTest, MemoryLimitGivesResourceExhausted) {
  auto limited = Daemon::Start({"--max-memory", "1M"});
  ASSERT_TRUE(limited.ok()) << limited.status();
  auto models = v1::Models::NewStub((*limited)->channel());
  grpc::ClientContext context;
  v1::CreateModelRequest request;
  request.set_name("big");
  request.set_spec_json(kBigSpec);  // 4 MiB of parameters
  v1::ModelInfo info;
  grpc::Status status = models->CreateModel(&context, request, &info);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("--max-memory"));
  EXPECT_EQ((*limited)->Stop(), 0);
}

// The GPU has a ceiling of its own, apart from the CPU's: a small --max-gpu-memory leaves
// CPU models under --max-memory alone, and the start line reports both.
TEST_F(ServiceTest, GpuMemoryLimitIsAFlagOfItsOwn) {
  auto daemon = Daemon::Start({"--max-memory", "64M", "--max-gpu-memory", "1M"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  EXPECT_THAT((*daemon)->Log(), HasSubstr(" max_memory=67108864 "));
  EXPECT_THAT((*daemon)->Log(), HasSubstr(" max_gpu_memory=1048576 "));
  auto models = v1::Models::NewStub((*daemon)->channel());
  grpc::ClientContext context;
  v1::CreateModelRequest request;
  request.set_name("big");
  request.set_spec_json(kBigSpec);  // 4 MiB of parameters, on the CPU
  v1::ModelInfo info;
  const grpc::Status status = models->CreateModel(&context, request, &info);
  EXPECT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ((*daemon)->Stop(), 0);
}

}  // namespace
}  // namespace paramd::testing
