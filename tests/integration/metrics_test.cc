// The real daemon's observability: --metrics-listen serves Prometheus's text format, and a
// known workload (a model created, N writes, a read, a forward, a failed call, a checkpoint
// saved and loaded) shows up in it by name and value; --metrics-max-models folds the models
// past the cap into "_other"; --log-format json writes one valid JSON object a line, with the
// call fields, whatever a client names its model.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <thread>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "paramd/client.h"
#include "paramd/v1/checkpoints.grpc.pb.h"
#include "paramd/v1/models.grpc.pb.h"
#include "paramd/v1/parameters.grpc.pb.h"
#include "tests/integration/daemon.h"
#include "tests/integration/specs.h"
#include "tests/integration/wire.h"

namespace paramd::testing {
namespace {

// The seed's MLP (w2 = [2.0], Linear(1, 2), ReLU, Linear(2, 1)) with a forward program: 8
// float32 tensors' elements, 32 bytes.
constexpr char kSpec[] = R"({"type": "MLP",
 "parameters": [{"name": "w2", "shape": [1], "init": {"constant": 2.0}}],
 "children": [
   {"name": "linear1", "type": "Linear", "args": {"in_features": 1, "out_features": 2}},
   {"name": "relu", "type": "ReLU"},
   {"name": "linear2", "type": "Linear", "args": {"in_features": 2, "out_features": 1}}],
 "forward": ["linear1", "relu", "linear2"]})";

using Labels = std::map<std::string, std::string>;

// One scrape: every sample by its name and labels.
struct Scrape {
  std::map<std::pair<std::string, Labels>, double> samples;
  std::vector<std::string> families;  // the names of `# TYPE` lines

  std::optional<double> Get(const std::string& name, const Labels& labels = {}) const {
    auto it = samples.find({name, labels});
    if (it == samples.end()) return std::nullopt;
    return it->second;
  }
  // The samples of `name` whatever their labels.
  std::vector<Labels> LabelsOf(const std::string& name) const {
    std::vector<Labels> found;
    for (const auto& [key, value] : samples) {
      if (key.first == name) found.push_back(key.second);
    }
    return found;
  }
};

// Parses the text exposition format (label values here hold no `"`, `,` or `}`).
Scrape Parse(const std::string& text) {
  Scrape scrape;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    if (absl::StartsWith(line, "# TYPE ")) {
      std::vector<std::string> words = absl::StrSplit(line, ' ');
      scrape.families.push_back(words.at(2));
      continue;
    }
    if (line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    absl::string_view series = line.substr(0, space);
    double value = 0;
    if (!absl::SimpleAtod(line.substr(space + 1), &value)) continue;  // NaN quantiles
    std::string name(series);
    Labels labels;
    if (const size_t brace = series.find('{'); brace != absl::string_view::npos) {
      name = std::string(series.substr(0, brace));
      absl::string_view inner = series.substr(brace + 1, series.size() - brace - 2);
      for (absl::string_view pair : absl::StrSplit(inner, ',', absl::SkipEmpty())) {
        const size_t eq = pair.find('=');
        labels[std::string(pair.substr(0, eq))] =
            std::string(pair.substr(eq + 2, pair.size() - eq - 3));
      }
    }
    scrape.samples[{name, labels}] = value;
  }
  return scrape;
}

// GET http://ADDRESS/metrics with a plain socket: the body, or "" on failure.
std::string HttpGet(const std::string& address, const std::string& path = "/metrics") {
  const size_t colon = address.rfind(':');
  int port = 0;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port)) return "";
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
  timeval timeout{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return "";
  }
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.0\r\nHost: ", address, "\r\n\r\n");
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return "";
  }
  std::string response;
  char buffer[65536];
  ssize_t got;
  while ((got = read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, got);
  close(fd);
  const size_t body = response.find("\r\n\r\n");
  if (!absl::StartsWith(response, "HTTP/1.1 200") && !absl::StartsWith(response, "HTTP/1.0 200")) {
    return "";
  }
  return body == std::string::npos ? "" : response.substr(body + 4);
}

// The value of `key=` on the daemon's start line.
std::string StartField(const std::string& log, const std::string& key) {
  const size_t at = log.find(" " + key + "=");
  if (at == std::string::npos) return "";
  const size_t begin = at + key.size() + 2;
  return log.substr(begin, log.find_first_of(" \n", begin) - begin);
}

Labels Rpc(const std::string& service, const std::string& method) {
  return {{"grpc_service", "paramd.v1." + service}, {"grpc_method", method}};
}

Labels Rpc(const std::string& service, const std::string& method, const std::string& code) {
  Labels labels = Rpc(service, method);
  labels["grpc_code"] = code;
  return labels;
}

class MetricsTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> args) {
    args.insert(args.end(), {"--metrics-listen", "127.0.0.1:0", "--max-memory", "1G",
                             "--workers", "2"});
    auto daemon = Daemon::Start(args);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
    metrics_address_ = StartField(daemon_->Log(), "metrics");
    // Scripts find the gRPC address as the start line's `listen=` (examples/with-daemon takes
    // the last one): the metrics address must not look like it.
    const std::string log = daemon_->Log();
    EXPECT_EQ(log.find("listen="), log.rfind("listen=")) << log;
    EXPECT_EQ(StartField(log, "listen"), daemon_->address());
    ASSERT_THAT(metrics_address_, ::testing::StartsWith("127.0.0.1:"));
    models_ = v1::Models::NewStub(daemon_->channel());
    parameters_ = v1::Parameters::NewStub(daemon_->channel());
    checkpoints_ = v1::Checkpoints::NewStub(daemon_->channel());
  }

  Scrape ScrapeNow() {
    const std::string body = HttpGet(metrics_address_);
    EXPECT_FALSE(body.empty()) << "no answer from http://" << metrics_address_ << "/metrics";
    return Parse(body);
  }

  grpc::Status Create(const std::string& name, v1::ModelInfo* info = nullptr) {
    grpc::ClientContext context;
    v1::CreateModelRequest request;
    request.set_name(name);
    request.set_spec_json(kSpec);
    v1::ModelInfo ignored;
    return models_->CreateModel(&context, request, info != nullptr ? info : &ignored);
  }

  grpc::Status Write(const std::string& model, float value) {
    std::vector<v1::WriteFrame> frames = {OptionsFrame(model)};
    for (auto& frame : FloatTensorFrames("w2", {1}, {value})) frames.push_back(frame);
    v1::WriteResponse response;
    return SendFrames(
        [&](grpc::ClientContext* c, v1::WriteResponse* r) { return parameters_->SetTensor(c, r); },
        frames, &response);
  }

  v1::ModelInfo Describe(const std::string& model) {
    grpc::ClientContext context;
    v1::DescribeModelRequest request;
    request.set_name(model);
    v1::ModelInfo info;
    EXPECT_TRUE(models_->DescribeModel(&context, request, &info).ok());
    return info;
  }

  absl::Status Forward(const std::string& model) {
    auto client = client::Client::Connect(daemon_->address());
    if (!client.ok()) return client.status();
    auto input = client::HostTensor::FromDoubles(client::DType::kFloat32, {1, 1}, {1.0});
    if (!input.ok()) return input.status();
    return (*client)->Model(model).Forward(*input).status();
  }

  std::unique_ptr<Daemon> daemon_;
  std::string metrics_address_;
  std::unique_ptr<v1::Models::Stub> models_;
  std::unique_ptr<v1::Parameters::Stub> parameters_;
  std::unique_ptr<v1::Checkpoints::Stub> checkpoints_;
};

TEST_F(MetricsTest, AKnownWorkloadShowsUpByNameAndValue) {
  Start({});
  constexpr int kWrites = 5;
  ASSERT_TRUE(Create("mlp").ok());
  for (int i = 0; i < kWrites; ++i) ASSERT_TRUE(Write("mlp", 1.0f + i).ok());
  const WireRead read = GetTensor(*parameters_, "mlp", "w2");
  ASSERT_TRUE(read.status.ok()) << read.status.error_message();
  const absl::Status forward = Forward("mlp");
  ASSERT_TRUE(forward.ok()) << forward;
  {
    grpc::ClientContext context;
    v1::DescribeModelRequest request;
    request.set_name("missing");
    v1::ModelInfo info;
    ASSERT_EQ(models_->DescribeModel(&context, request, &info).error_code(),
              grpc::StatusCode::NOT_FOUND);
  }
  v1::SaveResponse saved;
  {
    grpc::ClientContext context;
    v1::SaveRequest request;
    request.set_model("mlp");
    request.set_path("mlp.safetensors");
    ASSERT_TRUE(checkpoints_->Save(&context, request, &saved).ok());
  }
  {
    grpc::ClientContext context;
    v1::LoadRequest request;
    request.set_model("mlp");
    request.set_path("mlp.safetensors");
    v1::LoadResponse response;
    ASSERT_TRUE(LoadCheckpoint(*checkpoints_, &context, request, &response).ok());
  }

  const Scrape scrape = ScrapeNow();
  const std::string handled = "paramd_grpc_server_handled_total";
  EXPECT_EQ(scrape.Get(handled, Rpc("Models", "CreateModel", "OK")), 1);
  EXPECT_EQ(scrape.Get(handled, Rpc("Parameters", "SetTensor", "OK")), kWrites);
  EXPECT_EQ(scrape.Get(handled, Rpc("Parameters", "GetTensor", "OK")), 1);
  EXPECT_EQ(scrape.Get(handled, Rpc("Inference", "Forward", "OK")), 1);
  EXPECT_EQ(scrape.Get(handled, Rpc("Models", "DescribeModel", "NOT_FOUND")), 1);
  EXPECT_EQ(scrape.Get(handled, Rpc("Models", "DescribeModel", "OK")), std::nullopt);
  EXPECT_EQ(scrape.Get(handled, Rpc("Checkpoints", "Save", "OK")), 1);
  EXPECT_EQ(scrape.Get(handled, Rpc("Checkpoints", "Load", "OK")), 1);

  const std::string latency = "paramd_grpc_server_handling_seconds";
  EXPECT_EQ(scrape.Get(latency + "_count", Rpc("Parameters", "SetTensor", "OK")), kWrites);
  EXPECT_GT(scrape.Get(latency + "_sum", Rpc("Parameters", "SetTensor", "OK")).value_or(0), 0);
  Labels inf = Rpc("Parameters", "SetTensor", "OK");
  inf["le"] = "+Inf";
  EXPECT_EQ(scrape.Get(latency + "_bucket", inf), kWrites);
  EXPECT_EQ(scrape.Get(latency + "_count", Rpc("Models", "DescribeModel", "NOT_FOUND")), 1);

  // Each write sends its options, a header and 4 bytes of data: tens of bytes, not more.
  const double received =
      scrape.Get("paramd_grpc_server_received_bytes_total", Rpc("Parameters", "SetTensor"))
          .value_or(0);
  EXPECT_GE(received, kWrites * (4 + 3 + 2));
  EXPECT_LE(received, kWrites * 100);
  const double sent =
      scrape.Get("paramd_grpc_server_sent_bytes_total", Rpc("Parameters", "GetTensor")).value_or(0);
  EXPECT_GE(sent, 4 + 3);
  EXPECT_LE(sent, 200);
  EXPECT_GT(scrape.Get("paramd_grpc_server_received_bytes_total", Rpc("Models", "CreateModel"))
                .value_or(0),
            std::string(kSpec).size());

  EXPECT_EQ(scrape.Get("paramd_forward_seconds_count", {{"model", "mlp"}}), 1);
  EXPECT_EQ(scrape.Get("paramd_checkpoint_seconds_count", {{"operation", "save"}}), 1);
  EXPECT_EQ(scrape.Get("paramd_checkpoint_seconds_count", {{"operation", "load"}}), 1);
  EXPECT_EQ(scrape.Get("paramd_checkpoint_bytes_total", {{"operation", "save"}}), saved.size());
  EXPECT_EQ(scrape.Get("paramd_checkpoint_bytes_total", {{"operation", "load"}}), saved.size());
  EXPECT_GT(saved.size(), 32u);

  const v1::ModelInfo info = Describe("mlp");
  EXPECT_EQ(info.version(), 1 + kWrites + 1);  // created, written, loaded
  EXPECT_EQ(scrape.Get("paramd_model_version", {{"model", "mlp"}}), info.version());
  EXPECT_EQ(scrape.Get("paramd_model_tensor_bytes", {{"model", "mlp"}, {"device", "cpu"}}),
            info.nbytes());
  EXPECT_EQ(info.nbytes(), 8 * 4);  // w2, linear1 (2 + 2), linear2 (2 + 1): 8 floats
  EXPECT_EQ(scrape.Get("paramd_models"), 1);
  // A loaded checkpoint's tensors may be the file's mapping, outside the allocator's count.
  EXPECT_TRUE(scrape.Get("paramd_memory_used_bytes", {{"device", "cpu"}}).has_value());
  EXPECT_EQ(scrape.Get("paramd_memory_limit_bytes", {{"device", "cpu"}}), 1 << 30);
  EXPECT_EQ(scrape.Get("paramd_executor_workers"), 2);
  EXPECT_EQ(scrape.Get("paramd_executor_max_queued_calls"), 64);
  // A worker counts its task as running until the task returns, just after the answer left:
  // idle soon after, not necessarily at once.
  Scrape idle = scrape;
  for (int i = 0; i < 100 && idle.Get("paramd_executor_running_tasks") != 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    idle = ScrapeNow();
  }
  EXPECT_EQ(idle.Get("paramd_executor_admitted_calls"), 0);
  EXPECT_EQ(idle.Get("paramd_executor_running_tasks"), 0);
  EXPECT_EQ(idle.Get("paramd_executor_queued_tasks"), 0);

  // Prometheus's conventions: the paramd_ prefix, counters in _total, units in the name.
  for (const std::string& family : scrape.families) {
    if (absl::StartsWith(family, "exposer_")) continue;  // prometheus-cpp's own
    EXPECT_TRUE(absl::StartsWith(family, "paramd_")) << family;
  }
  for (const auto& [key, value] : scrape.samples) {
    const std::string& name = key.first;
    if (absl::StrContains(name, "bytes") && absl::StartsWith(name, "paramd_")) {
      EXPECT_TRUE(absl::EndsWith(name, "_bytes") || absl::EndsWith(name, "_bytes_total")) << name;
    }
  }
}

TEST_F(MetricsTest, ModelsPastTheCapFoldIntoOther) {
  Start({"--metrics-max-models", "2"});
  for (const char* name : {"a", "b", "c", "d"}) ASSERT_TRUE(Create(name).ok()) << name;
  ASSERT_TRUE(Forward("d").ok());
  const Scrape scrape = ScrapeNow();
  // The forward met "d" first: it has one of the two labels; the scrape then met a, b, c in
  // name order and labelled "a"; "b" and "c" are summed under "_other".
  EXPECT_EQ(scrape.Get("paramd_forward_seconds_count", {{"model", "d"}}), 1);
  EXPECT_EQ(scrape.Get("paramd_model_tensor_bytes", {{"model", "a"}, {"device", "cpu"}}), 32);
  EXPECT_EQ(scrape.Get("paramd_model_tensor_bytes", {{"model", "d"}, {"device", "cpu"}}), 32);
  EXPECT_EQ(scrape.Get("paramd_model_tensor_bytes", {{"model", "_other"}, {"device", "cpu"}}),
            64);
  EXPECT_EQ(scrape.LabelsOf("paramd_model_tensor_bytes").size(), 3u);
  EXPECT_EQ(scrape.Get("paramd_model_version", {{"model", "a"}}), 1);
  EXPECT_EQ(scrape.LabelsOf("paramd_model_version").size(), 2u);  // "_other" has none
  EXPECT_EQ(scrape.Get("paramd_models"), 4);
  EXPECT_GE(scrape.Get("paramd_memory_used_bytes", {{"device", "cpu"}}).value_or(0), 4 * 32);

  // A later model's forward goes to "_other" too, and the label set stays at the cap.
  ASSERT_TRUE(Forward("b").ok());
  const Scrape again = ScrapeNow();
  EXPECT_EQ(again.Get("paramd_forward_seconds_count", {{"model", "_other"}}), 1);
  EXPECT_EQ(again.LabelsOf("paramd_forward_seconds_count").size(), 2u);
}

TEST_F(MetricsTest, MetricsAreOffByDefaultAndABadAddressStopsTheStart) {
  auto daemon = Daemon::Start();
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  EXPECT_EQ(StartField((*daemon)->Log(), "metrics"), "off");
  auto bad = Daemon::Start({"--metrics-listen", "no-port-here"});
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), ::testing::HasSubstr("--metrics-listen"));
}

// Every line of the log as JSON; fails the test on a line that is not one object.
std::vector<nlohmann::json> JsonLines(const std::string& log) {
  std::vector<nlohmann::json> lines;
  for (absl::string_view line : absl::StrSplit(log, '\n', absl::SkipEmpty())) {
    nlohmann::json parsed = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    EXPECT_TRUE(parsed.is_object()) << "not a JSON object: " << line;
    if (!parsed.is_object()) continue;
    EXPECT_TRUE(parsed["time"].is_string()) << line;
    EXPECT_TRUE(parsed["level"].is_string()) << line;
    EXPECT_TRUE(parsed["msg"].is_string()) << line;
    lines.push_back(std::move(parsed));
  }
  return lines;
}

// The `call` lines of `method`.
std::vector<nlohmann::json> CallLines(const std::vector<nlohmann::json>& lines,
                                      const std::string& method) {
  std::vector<nlohmann::json> found;
  for (const nlohmann::json& line : lines) {
    if (line["msg"] == "call" && line.value("method", "") == method) found.push_back(line);
  }
  return found;
}

TEST(JsonLogTest, EveryLineIsOneJsonObjectWithTheCallFields) {
  const std::string token = "metrics-test-writer-token";
  const std::string tokens_path = ::testing::TempDir() + "/json_log_tokens";
  {
    std::FILE* file = std::fopen(tokens_path.c_str(), "w");
    ASSERT_NE(file, nullptr);
    std::fputs("admin-ci admin "
               "sha256:f07448f3bc2f936e0e9aed9123a58289d4defe3afe37ce61af84feed8ab0c948\n",
               file);
    std::fclose(file);
  }
  auto daemon = Daemon::Start({"--log-format", "json", "--auth-tokens", tokens_path});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  auto models = v1::Models::NewStub((*daemon)->channel());
  auto parameters = v1::Parameters::NewStub((*daemon)->channel());
  auto checkpoints = v1::Checkpoints::NewStub((*daemon)->channel());
  auto create = [&](const std::string& name) {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + token);
    v1::CreateModelRequest request;
    request.set_name(name);
    request.set_spec_json(kSpec);
    v1::ModelInfo info;
    return models->CreateModel(&context, request, &info);
  };
  // Quotes, a newline, a backslash, a control byte and a non-ASCII letter: valid UTF-8,
  // as protobuf's strings must be.
  const std::string hostile =
      "m\"}\n{\"time\":\"x\",\"level\":\"error\",\"msg\":\"FORGED\"}\\\x01\xc3\xa9";
  ASSERT_EQ(create(hostile).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // A name that is not UTF-8 fails in protobuf's parser, which logs it: as JSON too.
  ASSERT_FALSE(create("bad\xff").ok());
  ASSERT_TRUE(create("mlp").ok());
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + token);
    std::vector<v1::WriteFrame> frames = {OptionsFrame("mlp")};
    for (auto& frame : FloatTensorFrames("w2", {1}, {3.0f})) frames.push_back(frame);
    v1::WriteResponse response;
    auto stream = parameters->SetTensor(&context, &response);
    for (const auto& frame : frames) ASSERT_TRUE(stream->Write(frame));
    stream->WritesDone();
    ASSERT_TRUE(stream->Finish().ok());
  }
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + token);
    v1::SaveRequest request;
    request.set_model("mlp");
    request.set_path("mlp.safetensors");
    v1::SaveResponse response;
    ASSERT_TRUE(checkpoints->Save(&context, request, &response).ok());
  }
  {
    grpc::ClientContext context;  // no token: UNAUTHENTICATED, logged without one
    v1::DeleteModelRequest request;
    request.set_name("mlp");
    v1::DeleteModelResponse response;
    ASSERT_EQ(models->DeleteModel(&context, request, &response).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  ASSERT_EQ((*daemon)->Stop(), 0);

  const std::string log = (*daemon)->Log();
  EXPECT_THAT(log, ::testing::Not(::testing::HasSubstr(token)));
  const std::vector<nlohmann::json> lines = JsonLines(log);
  ASSERT_FALSE(lines.empty());
  for (const nlohmann::json& line : lines) EXPECT_NE(line["msg"], "FORGED");

  const auto creates = CallLines(lines, "/paramd.v1.Models/CreateModel");
  ASSERT_EQ(creates.size(), 3u) << log;
  // The hostile name comes back whole, in one line.
  EXPECT_EQ(creates[0]["model"], hostile);
  EXPECT_EQ(creates[0]["status"], "INVALID_ARGUMENT");
  EXPECT_EQ(creates[0]["level"], "warning");
  EXPECT_TRUE(creates[0]["version"].is_null());  // no answer, no version
  EXPECT_NE(creates[1]["status"], "OK");
  EXPECT_EQ(creates[2]["model"], "mlp");
  EXPECT_EQ(creates[2]["status"], "OK");
  EXPECT_EQ(creates[2]["version"], 1);
  EXPECT_EQ(creates[2]["token"], "admin-ci");
  EXPECT_THAT(creates[2]["peer"].get<std::string>(), ::testing::HasSubstr("127.0.0.1"));
  EXPECT_TRUE(creates[2]["duration_ms"].is_number());
  bool protobuf_line = false;
  for (const nlohmann::json& line : lines) {
    protobuf_line = protobuf_line || line.value("source", "").rfind("libprotobuf", 0) == 0;
  }
  EXPECT_TRUE(protobuf_line) << log;

  // A successful tensor write is not logged (a training loop makes too many); a save is,
  // with the version the file holds.
  EXPECT_THAT(CallLines(lines, "/paramd.v1.Parameters/SetTensor"), ::testing::IsEmpty());
  const auto saves = CallLines(lines, "/paramd.v1.Checkpoints/Save");
  ASSERT_EQ(saves.size(), 1u) << log;
  EXPECT_EQ(saves[0]["status"], "OK");
  EXPECT_EQ(saves[0]["model"], "mlp");
  EXPECT_EQ(saves[0]["version"], 2);
  EXPECT_EQ(saves[0]["token"], "admin-ci");

  const auto deletes = CallLines(lines, "/paramd.v1.Models/DeleteModel");
  ASSERT_EQ(deletes.size(), 1u) << log;
  EXPECT_EQ(deletes[0]["status"], "UNAUTHENTICATED");
  EXPECT_EQ(deletes[0]["token"], "none");
}

}  // namespace
}  // namespace paramd::testing
