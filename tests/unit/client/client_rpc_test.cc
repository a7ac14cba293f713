// The client against an in-process fake of the paramd services: status mapping, stream
// checks and chunking through real gRPC calls, without the daemon.
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "gmock/gmock.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"
#include "paramd/client.h"
#include "paramd/v1/models.grpc.pb.h"
#include "paramd/v1/parameters.grpc.pb.h"

namespace paramd::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

// A tensor of `dtype` and `shape` with no data yet.
HostTensor Meta(DType dtype, std::vector<int64_t> shape) {
  HostTensor tensor;
  tensor.dtype = dtype;
  tensor.shape = std::move(shape);
  return tensor;
}

class FakeModels final : public v1::Models::Service {
 public:
  // Two pages: "net", then (with the first page's token) "vision".
  grpc::Status ListModels(grpc::ServerContext*, const v1::ListModelsRequest* request,
                          v1::ListModelsResponse* response) override {
    if (request->page_token() == "after-net") {
      response->add_models()->set_name("vision");
      return grpc::Status::OK;
    }
    if (!request->page_token().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad page_token");
    }
    response->set_next_page_token("after-net");
    v1::ModelInfo* info = response->add_models();
    info->set_name("net");
    info->set_type("Sequential");
    info->set_version(4);
    info->set_training(false);
    info->set_parameter_numel(12);
    return grpc::Status::OK;
  }
  grpc::Status DescribeModel(grpc::ServerContext*, const v1::DescribeModelRequest* request,
                             v1::ModelInfo*) override {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        "model '" + request->name() + "' not found; ListModels shows the models");
  }
};

class FakeParameters final : public v1::Parameters::Service {
 public:
  // StateDict: one int8 tensor of 5 bytes in chunks "ab", "cde"; metadata {"": 1}.
  grpc::Status StateDict(grpc::ServerContext*, const v1::StateDictRequest* request,
                         grpc::ServerWriter<v1::TensorFrame>* writer) override {
    v1::TensorFrame frame;
    frame.mutable_start()->set_model(request->model());
    frame.mutable_start()->set_version(11);
    (*frame.mutable_start()->mutable_metadata())[""] = 1;
    writer->Write(frame);
    v1::TensorHeader* header = frame.mutable_header();
    header->set_name(request->prefix() + "w");
    header->mutable_meta()->set_dtype(v1::INT8);
    header->mutable_meta()->add_shape(5);
    header->mutable_meta()->set_device("cpu");
    header->add_tied_with("v");
    writer->Write(frame);
    if (request->metadata_only()) return grpc::Status::OK;
    for (const auto& [offset, data] : {std::pair<int, const char*>{0, "ab"}, {2, "cde"}}) {
      frame.mutable_chunk()->set_offset(offset);
      frame.mutable_chunk()->set_data(data);
      writer->Write(frame);
    }
    return grpc::Status::OK;
  }

  // GetTensor: a header then a chunk at the wrong offset.
  grpc::Status GetTensor(grpc::ServerContext*, const v1::GetTensorRequest* request,
                         grpc::ServerWriter<v1::TensorFrame>* writer) override {
    if (request->name() == "missing") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "no parameter or buffer named 'missing'");
    }
    v1::TensorFrame frame;
    frame.mutable_start()->set_version(1);
    writer->Write(frame);
    frame.mutable_header()->set_name(request->name());
    frame.mutable_header()->mutable_meta()->set_dtype(v1::INT8);
    frame.mutable_header()->mutable_meta()->add_shape(4);
    writer->Write(frame);
    frame.mutable_chunk()->set_offset(1);
    frame.mutable_chunk()->set_data("abc");
    writer->Write(frame);
    return grpc::Status::OK;
  }

  // SetTensors: records every frame; version 9.
  grpc::Status SetTensors(grpc::ServerContext*, grpc::ServerReader<v1::WriteFrame>* reader,
                          v1::WriteResponse* response) override {
    std::lock_guard<std::mutex> lock(mutex_);
    frames_.clear();
    v1::WriteFrame frame;
    while (reader->Read(&frame)) frames_.push_back(frame);
    if (frames_.empty() || frames_[0].options().if_version() == 3) {
      return grpc::Status(grpc::StatusCode::ABORTED, "model 'net' is at version 8, not 3");
    }
    response->set_version(9);
    return grpc::Status::OK;
  }

  // SetTensor: records every frame as SetTensors does; version 9.
  grpc::Status SetTensor(grpc::ServerContext* context, grpc::ServerReader<v1::WriteFrame>* reader,
                         v1::WriteResponse* response) override {
    return SetTensors(context, reader, response);
  }

  // Answers in two messages (as the daemon splits long key lists); a write to model "bad"
  // is refused with a cut status message and the whole text in two pieces.
  grpc::Status LoadStateDict(
      grpc::ServerContext*,
      grpc::ServerReaderWriter<v1::LoadStateDictResponse, v1::WriteFrame>* stream) override {
    v1::WriteFrame frame;
    std::lock_guard<std::mutex> lock(mutex_);
    frames_.clear();
    while (stream->Read(&frame)) frames_.push_back(frame);
    v1::LoadStateDictResponse first;
    v1::LoadStateDictResponse second;
    if (!frames_.empty() && frames_[0].options().model() == "bad") {
      first.add_missing_keys("b");
      first.set_error_text("Error(s) in loading state_dict for Net:\n\tMissing key(s) ");
      second.set_error_text("in state_dict: \"b\". ");
      stream->Write(first);
      stream->Write(second);
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "Error(s) in loading... (60 bytes in all)");
    }
    first.set_version(5);
    first.add_missing_keys("b");
    second.set_version(5);
    second.add_unexpected_keys("extra");
    stream->Write(first);
    stream->Write(second);
    return grpc::Status::OK;
  }

  std::vector<v1::WriteFrame> frames() {
    std::lock_guard<std::mutex> lock(mutex_);
    return frames_;
  }

 private:
  std::mutex mutex_;
  std::vector<v1::WriteFrame> frames_;
};

class ClientRpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::EnableDefaultHealthCheckService(true);
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&models_);
    builder.RegisterService(&parameters_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    auto client = Client::Connect("127.0.0.1:" + std::to_string(port));
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }
  void TearDown() override {
    client_.reset();
    if (server_) server_->Shutdown();
  }

  FakeModels models_;
  FakeParameters parameters_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<Client> client_;
};

TEST_F(ClientRpcTest, HealthIsServing) { EXPECT_TRUE(client_->Health().ok()); }

TEST_F(ClientRpcTest, HealthReportsNotServing) {
  server_->GetHealthCheckService()->SetServingStatus(false);
  absl::Status status = client_->Health();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(status.message(), HasSubstr("NOT_SERVING"));
}

TEST_F(ClientRpcTest, UnaryCallsConvertReplies) {
  // ListModels follows next_page_token through every page.
  auto models = client_->ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  ASSERT_EQ(models->size(), 2u);
  EXPECT_EQ((*models)[1].name, "vision");
  EXPECT_EQ((*models)[0].name, "net");
  EXPECT_EQ((*models)[0].type, "Sequential");
  EXPECT_EQ((*models)[0].version, 4u);
  EXPECT_FALSE((*models)[0].training);
  EXPECT_EQ((*models)[0].parameter_numel, 12u);
}

TEST_F(ClientRpcTest, ServerErrorsKeepCodeAndMessage) {
  auto info = client_->DescribeModel("ghost");
  ASSERT_FALSE(info.ok());
  EXPECT_EQ(info.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(info.status().message(), "model 'ghost' not found; ListModels shows the models");
  auto tensor = client_->Model("net").GetTensor("missing");
  EXPECT_EQ(tensor.status().code(), absl::StatusCode::kNotFound);
  // Not implemented by the fake: the server's UNIMPLEMENTED comes through.
  EXPECT_EQ(client_->Model("net").TieParameters("a", "b").status().code(),
            absl::StatusCode::kUnimplemented);
}

TEST_F(ClientRpcTest, StateDictAssemblesChunks) {
  std::vector<std::pair<uint64_t, uint64_t>> progress;
  StateDictOptions options;
  options.prefix = "p.";
  options.progress = [&](uint64_t done, uint64_t total) { progress.emplace_back(done, total); };
  auto result = client_->Model("net").StateDict(options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->version, 11u);
  ASSERT_EQ(result->entries.size(), 1u);
  EXPECT_EQ(result->entries[0].name, "p.w");
  EXPECT_EQ(result->entries[0].tensor.data, "abcde");
  EXPECT_EQ(result->entries[0].tensor.device, "cpu");
  EXPECT_THAT(result->entries[0].tensor.tied_with, ElementsAre("v"));
  EXPECT_THAT(result->metadata, ElementsAre(Pair("", 1)));
  EXPECT_THAT(progress, ElementsAre(Pair(2, 5), Pair(5, 5)));

  options.metadata_only = true;
  auto meta = client_->Model("net").StateDict(options);
  ASSERT_TRUE(meta.ok()) << meta.status();
  EXPECT_TRUE(meta->entries[0].tensor.data.empty());
  EXPECT_EQ(meta->entries[0].tensor.nbytes(), 5u);
}

TEST_F(ClientRpcTest, BadChunkOffsetIsDataLoss) {
  auto tensor = client_->Model("net").GetTensor("w");
  ASSERT_FALSE(tensor.ok());
  EXPECT_EQ(tensor.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(tensor.status().message(), HasSubstr("chunk at byte 1 arrived where byte 0"));
}

TEST_F(ClientRpcTest, SetTensorsStreamsOptionsHeadersAndChunks) {
  HostTensor big = Meta(DType::kUInt8, {static_cast<int64_t>(kChunkBytes + 10)});
  big.data.assign(big.nbytes(), 'x');
  auto small = HostTensor::FromDoubles(DType::kFloat32, {}, {1.5});
  ASSERT_TRUE(small.ok());
  std::vector<TensorWrite> writes = {{"big", big, std::nullopt}, {"small", *small, Region{{0, 1}}}};
  auto version = client_->Model("net").SetTensors(writes, /*if_version=*/8);
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(*version, 9u);
  std::vector<v1::WriteFrame> frames = parameters_.frames();
  ASSERT_EQ(frames.size(), 6u);
  EXPECT_EQ(frames[0].options().model(), "net");
  EXPECT_EQ(frames[0].options().if_version(), 8u);
  EXPECT_EQ(frames[1].header().name(), "big");
  EXPECT_EQ(frames[2].chunk().data().size(), kChunkBytes);
  EXPECT_EQ(frames[3].chunk().offset(), kChunkBytes);
  EXPECT_EQ(frames[3].chunk().data().size(), 10u);
  EXPECT_EQ(frames[4].header().name(), "small");
  EXPECT_EQ(frames[4].header().region().ranges(0).stop(), 1);
  EXPECT_EQ(frames[5].chunk().data().size(), 4u);
}

TEST_F(ClientRpcTest, VersionConflictIsAborted) {
  auto tensor = HostTensor::FromDoubles(DType::kFloat32, {1}, {1});
  ASSERT_TRUE(tensor.ok());
  auto version = client_->Model("net").SetTensors({{"w", *tensor, std::nullopt}}, 3);
  EXPECT_EQ(version.status().code(), absl::StatusCode::kAborted);
  EXPECT_THAT(version.status().message(), HasSubstr("version 8"));
}

TEST_F(ClientRpcTest, MalformedTensorIsRefusedBeforeSending) {
  HostTensor bad = Meta(DType::kFloat32, {2});
  bad.data = "abc";
  auto version = client_->Model("net").SetTensor("w", bad);
  EXPECT_EQ(version.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(version.status().message(), HasSubstr("holds 3 bytes"));
}

TEST_F(ClientRpcTest, LoadStateDictSendsOptionsAndReturnsKeys) {
  auto a = HostTensor::FromDoubles(DType::kFloat32, {2}, {1, 2});
  ASSERT_TRUE(a.ok());
  LoadOptions options;
  options.strict = false;
  options.assign = true;
  options.metadata = std::map<std::string, int>{{"", 1}};
  auto result = client_->Model("net").LoadStateDict({{"a", *a}}, options, 2);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->version, 5u);
  EXPECT_THAT(result->missing_keys, ElementsAre("b"));
  EXPECT_THAT(result->unexpected_keys, ElementsAre("extra"));
  std::vector<v1::WriteFrame> frames = parameters_.frames();
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_TRUE(frames[0].options().non_strict());
  EXPECT_TRUE(frames[0].options().assign());
  EXPECT_TRUE(frames[0].options().has_metadata());
  EXPECT_EQ(frames[0].options().if_version(), 2u);
  EXPECT_EQ(frames[1].header().name(), "a");
}

TEST_F(ClientRpcTest, RefusedLoadStateDictCarriesTheWholeStreamedText) {
  auto a = HostTensor::FromDoubles(DType::kFloat32, {1}, {1});
  ASSERT_TRUE(a.ok());
  auto result = client_->Model("bad").LoadStateDict({{"a", *a}});
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(result.status().message(),
            "Error(s) in loading state_dict for Net:\n\tMissing key(s) in state_dict: \"b\". ");
}

TEST(ClientConnectTest, UnreachableServerIsUnavailable) {
  ConnectOptions options;
  options.unary_deadline = std::chrono::milliseconds(2000);
  auto client = Client::Connect("127.0.0.1:1", options);
  ASSERT_TRUE(client.ok());
  absl::Status status = (*client)->ListModels().status();
  EXPECT_TRUE(status.code() == absl::StatusCode::kUnavailable ||
              status.code() == absl::StatusCode::kDeadlineExceeded)
      << status;
  EXPECT_EQ(Client::Connect("").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace paramd::client

namespace paramd::client {
namespace {

// Records what a streamed read hands it; fails on the piece numbered `fail_at` when set.
class RecordingConsumer : public TensorConsumer {
 public:
  absl::Status BeginTensor(const std::string& name, const HostTensor& meta) override {
    calls.push_back("begin " + name + " " + std::to_string(meta.nbytes()) + " " + meta.device);
    return absl::OkStatus();
  }
  absl::Status TensorData(absl::string_view bytes) override {
    if (static_cast<int>(calls.size()) == fail_at) return absl::ResourceExhaustedError("disk full");
    calls.push_back("data " + std::string(bytes));
    return absl::OkStatus();
  }
  absl::Status EndTensor() override {
    calls.push_back("end");
    return absl::OkStatus();
  }
  std::vector<std::string> calls;
  int fail_at = -1;
};

TEST_F(ClientRpcTest, StateDictToHandsEachChunkToTheConsumerAsItArrives) {
  RecordingConsumer consumer;
  std::vector<std::pair<uint64_t, uint64_t>> progress;
  StateDictOptions options;
  options.prefix = "p.";
  options.progress = [&](uint64_t done, uint64_t total) { progress.emplace_back(done, total); };
  absl::StatusOr<uint64_t> version = client_->Model("net").StateDictTo(consumer, options);
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(*version, 11u);
  EXPECT_THAT(consumer.calls, ElementsAre("begin p.w 5 cpu", "data ab", "data cde", "end"));
  EXPECT_THAT(progress, ElementsAre(Pair(2, 5), Pair(5, 5)));
}

TEST_F(ClientRpcTest, AConsumerErrorEndsTheReadWithIt) {
  RecordingConsumer consumer;
  consumer.fail_at = 2;  // the second piece
  absl::StatusOr<uint64_t> version = client_->Model("net").StateDictTo(consumer);
  EXPECT_EQ(version.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(version.status().message(), "disk full");
  EXPECT_THAT(consumer.calls, ElementsAre("begin w 5 cpu", "data ab"));
}

// Serves one uint8 tensor "big" of kChunkBytes + 10 bytes, byte i being i % 251; fails the
// piece at `fail_offset` when set.
class PatternProducer : public TensorProducer {
 public:
  PatternProducer() {
    tensors_.push_back({"big", Meta(DType::kUInt8, {static_cast<int64_t>(kChunkBytes + 10)})});
  }
  const std::vector<NamedTensor>& tensors() const override { return tensors_; }
  absl::Status Read(size_t index, uint64_t offset, absl::Span<char> out) override {
    reads.emplace_back(index, offset, out.size());
    if (offset == fail_offset) return absl::DataLossError("CRC-32 mismatch");
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<char>((offset + i) % 251);
    return absl::OkStatus();
  }
  std::vector<std::tuple<size_t, uint64_t, size_t>> reads;
  uint64_t fail_offset = UINT64_MAX;

 private:
  std::vector<NamedTensor> tensors_;
};

TEST_F(ClientRpcTest, LoadStateDictFromSendsEachChunkAsItIsRead) {
  PatternProducer producer;
  LoadOptions options;
  options.strict = false;
  auto result = client_->Model("net").LoadStateDictFrom(producer, options, 4);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->version, 5u);
  EXPECT_THAT(result->missing_keys, ElementsAre("b"));
  EXPECT_THAT(producer.reads, ElementsAre(std::make_tuple(size_t{0}, uint64_t{0}, kChunkBytes),
                                          std::make_tuple(size_t{0}, uint64_t{kChunkBytes}, size_t{10})));
  std::vector<v1::WriteFrame> frames = parameters_.frames();
  ASSERT_EQ(frames.size(), 4u);
  EXPECT_TRUE(frames[0].options().non_strict());
  EXPECT_EQ(frames[0].options().if_version(), 4u);
  EXPECT_EQ(frames[0].options().reserve_bytes(), kChunkBytes + 10);
  EXPECT_EQ(frames[1].header().name(), "big");
  EXPECT_EQ(frames[1].header().meta().shape(0), static_cast<int64_t>(kChunkBytes + 10));
  EXPECT_EQ(frames[2].chunk().offset(), 0u);
  EXPECT_EQ(frames[3].chunk().offset(), kChunkBytes);
  std::string sent = frames[2].chunk().data() + frames[3].chunk().data();
  ASSERT_EQ(sent.size(), kChunkBytes + 10);
  for (size_t i = 0; i < sent.size(); i += 4099) {
    ASSERT_EQ(sent[i], static_cast<char>(i % 251)) << i;
  }
}

TEST_F(ClientRpcTest, AProducerErrorCancelsTheLoadAndIsItsResult) {
  PatternProducer producer;
  producer.fail_offset = kChunkBytes;  // the tensor's last piece
  auto result = client_->Model("net").LoadStateDictFrom(producer);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(result.status().message(), "CRC-32 mismatch");
}

// SetTensorFrom sends what SetTensor sends for the same tensor: the options, one header
// naming the key (not the producer's name) with the region, and the chunks.
TEST_F(ClientRpcTest, SetTensorFromSendsSetTensorsFramesFromTheProducer) {
  PatternProducer producer;
  const Region region = {{0, static_cast<int64_t>(kChunkBytes + 10)}};
  absl::StatusOr<uint64_t> version =
      client_->Model("net").SetTensorFrom("w", producer, region, /*if_version=*/8);
  ASSERT_TRUE(version.ok()) << version.status();
  EXPECT_EQ(*version, 9u);
  const std::vector<v1::WriteFrame> streamed = parameters_.frames();

  HostTensor whole = Meta(DType::kUInt8, {static_cast<int64_t>(kChunkBytes + 10)});
  whole.data.resize(whole.nbytes());
  for (size_t i = 0; i < whole.data.size(); ++i) whole.data[i] = static_cast<char>(i % 251);
  ASSERT_TRUE(client_->Model("net").SetTensor("w", whole, region, 8).ok());
  const std::vector<v1::WriteFrame> sent = parameters_.frames();
  ASSERT_EQ(streamed.size(), 4u);
  ASSERT_EQ(sent.size(), streamed.size());
  for (size_t i = 0; i < sent.size(); ++i) {
    EXPECT_EQ(streamed[i].SerializeAsString(), sent[i].SerializeAsString()) << "frame " << i;
  }
  EXPECT_EQ(streamed[1].header().name(), "w");
  EXPECT_EQ(streamed[1].header().region().ranges(0).stop(),
            static_cast<int64_t>(kChunkBytes + 10));
}

TEST_F(ClientRpcTest, SetTensorFromCancelsOnAProducerErrorAndNeedsOneTensor) {
  PatternProducer producer;
  producer.fail_offset = kChunkBytes;
  absl::StatusOr<uint64_t> failed = client_->Model("net").SetTensorFrom("w", producer);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(failed.status().message(), "CRC-32 mismatch");

  class Two : public TensorProducer {
   public:
    const std::vector<NamedTensor>& tensors() const override { return tensors_; }
    absl::Status Read(size_t, uint64_t, absl::Span<char>) override {
      return absl::InternalError("never read");
    }
    std::vector<NamedTensor> tensors_ = {{"a", Meta(DType::kInt8, {1})},
                                         {"b", Meta(DType::kInt8, {1})}};
  } two;
  EXPECT_EQ(client_->Model("net").SetTensorFrom("w", two).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ClientRpcTest, GetTensorToChecksTheStreamAsGetTensorDoes) {
  RecordingConsumer consumer;
  absl::StatusOr<uint64_t> version = client_->Model("net").GetTensorTo("w", consumer);
  EXPECT_EQ(version.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(version.status().message(), HasSubstr("chunk at byte 1 arrived where byte 0"));
  EXPECT_THAT(consumer.calls, ElementsAre("begin w 4 "));
  RecordingConsumer none;
  EXPECT_EQ(client_->Model("net").GetTensorTo("missing", none).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(none.calls.empty());
}

TEST_F(ClientRpcTest, AProducedShapeThatOverflowsIsRefusedBeforeSending) {
  class Huge : public TensorProducer {
   public:
    const std::vector<NamedTensor>& tensors() const override { return tensors_; }
    absl::Status Read(size_t, uint64_t, absl::Span<char>) override {
      return absl::InternalError("never read");
    }
    std::vector<NamedTensor> tensors_ = {
        {"x", Meta(DType::kFloat64, {int64_t{1} << 40, int64_t{1} << 40})}};
  } huge;
  auto result = client_->Model("net").LoadStateDictFrom(huge);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(result.status().message(), HasSubstr("too large"));
}

}  // namespace
}  // namespace paramd::client
