// The real daemon, under --max-memory 256M, fed models whose shared modules expand to
// exponentially many state_dict keys (Note [Expanded size]): a few kilobytes of spec at
// depth 40 (2^41 keys), through CreateModel and through a safetensors file carrying the
// spec, is refused at once with the count, the limit and the flag, and the daemon's memory
// stays under its limit; a depth-12 chain (8,192 keys) still works as PyTorch lists it; and
// registrations and ties that would take a model past the limit change nothing.
#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "paramd/v1/checkpoints.grpc.pb.h"
#include "tests/integration/daemon.h"
#include "tests/integration/specs.h"
#include "tests/integration/wire.h"

namespace paramd::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

constexpr uint64_t kMaxMemory = uint64_t{256} << 20;
constexpr auto kPrompt = std::chrono::seconds(5);

constexpr char kDepth40Error[] =
    "spec expands to 2199023255552 state_dict keys (shared modules are listed once per path, as "
    "in PyTorch); the limit is 1048576 (--max-state-dict-keys)";

// The daemon's peak resident memory (VmHWM), in bytes; 0 when unreadable.
uint64_t PeakRss(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    absl::string_view rest = line;
    if (!absl::ConsumePrefix(&rest, "VmHWM:")) continue;
    rest = absl::StripAsciiWhitespace(rest);
    uint64_t kib = 0;
    if (absl::SimpleAtoi(absl::StripSuffix(rest, " kB"), &kib)) return kib << 10;
  }
  return 0;
}

// PyTorch's state_dict keys of SharedChainSpec(depth): the Linear's weight and bias under
// each of its 2^depth paths, in pre-order (child "0" before child "1").
std::vector<std::string> ChainKeys(int depth) {
  std::vector<std::string> keys;
  for (uint64_t path = 0; path < (uint64_t{1} << depth); ++path) {
    std::vector<std::string> digits;
    for (int bit = depth - 1; bit >= 0; --bit) digits.push_back((path >> bit) & 1 ? "1" : "0");
    const std::string prefix = absl::StrJoin(digits, ".");
    keys.push_back(prefix + ".weight");
    keys.push_back(prefix + ".bias");
  }
  return keys;
}

class SharedModulesTest : public ::testing::Test {
 protected:
  void StartDaemon(std::vector<std::string> extra_args = {}) {
    extra_args.insert(extra_args.begin(), {"--max-memory", "256M"});
    auto daemon = Daemon::Start(extra_args);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
    models_ = v1::Models::NewStub(daemon_->channel());
    parameters_ = v1::Parameters::NewStub(daemon_->channel());
    checkpoints_ = v1::Checkpoints::NewStub(daemon_->channel());
  }

  static void Prompt(grpc::ClientContext& context) {
    context.set_deadline(std::chrono::system_clock::now() + kPrompt);
  }

  grpc::Status Create(const std::string& name, const std::string& spec) {
    grpc::ClientContext context;
    Prompt(context);
    v1::CreateModelRequest request;
    request.set_name(name);
    request.set_spec_json(spec);
    v1::ModelInfo info;
    return models_->CreateModel(&context, request, &info);
  }

  grpc::Status Describe(const std::string& name, v1::ModelInfo* info) {
    grpc::ClientContext context;
    Prompt(context);
    v1::DescribeModelRequest request;
    request.set_name(name);
    return models_->DescribeModel(&context, request, info);
  }

  size_t ModelCount() {
    grpc::ClientContext context;
    v1::ListModelsResponse response;
    EXPECT_TRUE(models_->ListModels(&context, {}, &response).ok());
    return static_cast<size_t>(response.models_size());
  }

  grpc::Status Register(bool parameter, const std::string& model, const std::string& module_path,
                        const std::string& name) {
    v1::WriteFrame options = OptionsFrame(model);
    options.mutable_options()->set_module_path(module_path);
    options.mutable_options()->set_name(name);
    std::vector<v1::WriteFrame> frames = FloatTensorFrames(name, {1}, {1});
    frames.insert(frames.begin(), options);
    v1::WriteResponse response;
    return SendFrames(
        [&](grpc::ClientContext* c, v1::WriteResponse* r) {
          Prompt(*c);
          return parameter ? parameters_->RegisterParameter(c, r)
                           : parameters_->RegisterBuffer(c, r);
        },
        frames, &response);
  }

  grpc::Status Tie(const std::string& model, const std::string& name, const std::string& target) {
    grpc::ClientContext context;
    Prompt(context);
    v1::TieParametersRequest request;
    request.set_model(model);
    request.set_name(name);
    request.set_target(target);
    v1::WriteResponse response;
    return parameters_->TieParameters(&context, request, &response);
  }

  void ExpectMemoryUnderItsLimit() {
    const uint64_t peak = PeakRss(daemon_->pid());
    EXPECT_GT(peak, 0u);
    EXPECT_LT(peak, kMaxMemory) << "the daemon's peak RSS";
  }

  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<v1::Models::Stub> models_;
  std::unique_ptr<v1::Parameters::Stub> parameters_;
  std::unique_ptr<v1::Checkpoints::Stub> checkpoints_;
};

TEST_F(SharedModulesTest, ADepth40ChainIsRefusedAtCreateModelPromptlyAndWithinMemory) {
  StartDaemon();
  const std::string spec = SharedChainSpec(40);
  EXPECT_LT(spec.size(), 8u << 10);
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status status = Create("chain", spec);
  EXPECT_LT(std::chrono::steady_clock::now() - start, kPrompt);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_EQ(status.error_message(), kDepth40Error);
  EXPECT_EQ(ModelCount(), 0u);
  ExpectMemoryUnderItsLimit();
}

TEST_F(SharedModulesTest, ADepth40ChainInASafetensorsFileIsRefusedAtLoadPromptlyAndWithinMemory) {
  StartDaemon();
  // A safetensors file with one tensor and the chain as its paramd.spec.
  nlohmann::json json = nlohmann::json::object();
  json["__metadata__"]["paramd.spec"] = SharedChainSpec(40);
  json["w"]["dtype"] = "F32";
  json["w"]["shape"] = nlohmann::json::array({1});
  json["w"]["data_offsets"] = nlohmann::json::array({0, 4});
  std::string header = json.dump();
  header.append((8 - header.size() % 8) % 8, ' ');
  std::string file(8, '\0');
  for (int i = 0; i < 8; ++i) file[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  file += header;
  file += FloatBytes({1});
  const std::string path = daemon_->checkpoint_dir() + "/chain.safetensors";
  std::ofstream(path, std::ios::binary) << file;

  grpc::ClientContext context;
  Prompt(context);
  v1::LoadRequest request;
  request.set_model("chain");
  request.set_path("chain.safetensors");
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status status = LoadCheckpoint(*checkpoints_, &context, request);
  EXPECT_LT(std::chrono::steady_clock::now() - start, kPrompt);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_EQ(status.error_message(), kDepth40Error);
  EXPECT_EQ(ModelCount(), 0u);
  ExpectMemoryUnderItsLimit();
}

// PyTorch lists a shared module's tensors under every path: 2^12 paths, 8,192 keys.
TEST_F(SharedModulesTest, ADepth12ChainListsEveryPathInPyTorchsOrder) {
  StartDaemon();
  ASSERT_TRUE(Create("chain", SharedChainSpec(12)).ok());
  v1::ModelInfo info;
  ASSERT_TRUE(Describe("chain", &info).ok());
  EXPECT_EQ(info.state_dict_entries(), 8192u);
  EXPECT_EQ(info.parameter_count(), 2u);  // named_parameters() de-duplicates

  const WireRead sd = StateDict(*parameters_, "chain");
  ASSERT_TRUE(sd.status.ok()) << sd.status.error_message();
  std::vector<std::string> names;
  for (const WireTensor& tensor : sd.tensors) names.push_back(tensor.name);
  EXPECT_EQ(names, ChainKeys(12));
  EXPECT_THAT(sd.metadata, SizeIs(8191));  // every module path, the root's "" included
  // The first name of the shared weight lists the 4,095 others; each other names the first.
  ASSERT_EQ(sd.tensors.size(), 8192u);
  EXPECT_THAT(sd.tensors[0].tied_with, SizeIs(4095));
  EXPECT_EQ(sd.tensors[0].tied_with[0], sd.tensors[2].name);
  EXPECT_EQ(sd.tensors[2].tied_with, std::vector<std::string>{sd.tensors[0].name});
  EXPECT_EQ(sd.tensors[8191].tied_with, std::vector<std::string>{sd.tensors[1].name});

  // named_modules: 13 module objects; with keep_duplicates each of the Linear's 4,096
  // paths would name the 4,095 others, which is past the limit and refused.
  {
    grpc::ClientContext context;
    v1::NamedModulesRequest request;
    request.set_model("chain");
    auto reader = parameters_->NamedModules(&context, request);
    v1::NamedModulesResponse response;
    int messages = 0;
    for (v1::NamedModulesResponse message; reader->Read(&message); ++messages) response = message;
    ASSERT_TRUE(reader->Finish().ok());
    EXPECT_EQ(messages, 1);  // 13 entries and 4,095 names fit in one
    ASSERT_THAT(response.modules(), SizeIs(13));
    EXPECT_THAT(response.modules(12).shared_with(), SizeIs(4095));
  }
  {
    grpc::ClientContext context;
    v1::NamedModulesRequest request;
    request.set_model("chain");
    request.set_keep_duplicates(true);
    auto reader = parameters_->NamedModules(&context, request);
    v1::NamedModulesResponse response;
    EXPECT_FALSE(reader->Read(&response));
    const grpc::Status status = reader->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(),
                HasSubstr("would list 22361430 shared_with names (each path of a shared module "
                          "names all its other paths); the limit is 1048576 "
                          "(--max-state-dict-keys)"));
  }
  ExpectMemoryUnderItsLimit();
}

// A tensor added to a module shared along 4,096 paths adds 4,096 keys: past a limit of
// 10,000 it is refused and the model is left as it was; on the root it is one key.
TEST_F(SharedModulesTest, RegistrationsAndTiesPastTheLimitChangeNothing) {
  StartDaemon({"--max-state-dict-keys", "10000"});
  ASSERT_TRUE(Create("chain", SharedChainSpec(12)).ok());
  v1::ModelInfo before;
  ASSERT_TRUE(Describe("chain", &before).ok());
  const std::string leaf = absl::StrJoin(std::vector<std::string>(12, "0"), ".");

  for (bool parameter : {true, false}) {
    const grpc::Status status = Register(parameter, "chain", leaf, "extra");
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
    EXPECT_EQ(status.error_message(),
              absl::StrCat("registering ", parameter ? "parameter" : "buffer", " 'extra' on '",
                           leaf,
                           "' would expand the model to 12288 state_dict keys (shared modules "
                           "are listed once per path, as in PyTorch); the limit is 10000 "
                           "(--max-state-dict-keys)"));
  }
  const grpc::Status tied = Tie("chain", leaf + ".w", leaf + ".weight");
  EXPECT_EQ(tied.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << tied.error_message();
  EXPECT_THAT(tied.error_message(), HasSubstr("12288 state_dict keys"));

  v1::ModelInfo after;
  ASSERT_TRUE(Describe("chain", &after).ok());
  EXPECT_EQ(after.version(), before.version());
  EXPECT_EQ(after.state_dict_entries(), 8192u);
  EXPECT_EQ(after.repr(), before.repr());
  EXPECT_EQ(GetTensor(*parameters_, "chain", leaf + ".extra").status.error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GetTensor(*parameters_, "chain", leaf + ".w").status.error_code(),
            grpc::StatusCode::NOT_FOUND);

  // At the root a registration adds one key, and a tie that replaces the Linear's own
  // bias adds none: both go through.
  EXPECT_TRUE(Register(true, "chain", "", "extra").ok());
  EXPECT_TRUE(Tie("chain", leaf + ".bias", "extra").ok());
  ASSERT_TRUE(Describe("chain", &after).ok());
  EXPECT_EQ(after.state_dict_entries(), 8193u);
  EXPECT_EQ(after.version(), before.version() + 2);
}

}  // namespace
}  // namespace paramd::testing
