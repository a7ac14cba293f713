#include "client/cpp/src/wire.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace paramd::client::internal {
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

v1::TensorFrame Start(uint64_t version) {
  v1::TensorFrame frame;
  frame.mutable_start()->set_model("net");
  frame.mutable_start()->set_version(version);
  return frame;
}

v1::TensorFrame Header(const std::string& name, v1::DType dtype, std::vector<int64_t> shape) {
  v1::TensorFrame frame;
  v1::TensorHeader* header = frame.mutable_header();
  header->set_name(name);
  header->mutable_meta()->set_dtype(dtype);
  for (int64_t dim : shape) header->mutable_meta()->add_shape(dim);
  return frame;
}

v1::TensorFrame Chunk(uint64_t offset, std::string data) {
  v1::TensorFrame frame;
  frame.mutable_chunk()->set_offset(offset);
  frame.mutable_chunk()->set_data(std::move(data));
  return frame;
}

// Feeds `frames` in order; the first error, or Finish's status.
absl::Status Feed(TensorStreamReceiver& receiver, std::vector<v1::TensorFrame> frames) {
  for (v1::TensorFrame& frame : frames) {
    absl::Status status = receiver.Add(frame);
    if (!status.ok()) return status;
  }
  return receiver.Finish();
}

TEST(FromGrpcStatusTest, KeepsCodeAndMessage) {
  grpc::ClientContext context;
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK, context).ok());
  absl::Status status =
      FromGrpcStatus(grpc::Status(grpc::StatusCode::ABORTED, "moved on"), context);
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(status.message(), "moved on");
  // No trailer: no current version.
  EXPECT_EQ(CurrentVersionOf(status), std::nullopt);
  EXPECT_EQ(FromGrpcStatus(grpc::Status(grpc::StatusCode::NOT_FOUND, "x"), context).code(),
            absl::StatusCode::kNotFound);
}

TEST(ProtoDTypeTest, RoundTripsEveryDType) {
  for (DType dtype :
       {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16, DType::kInt64,
        DType::kInt32, DType::kInt16, DType::kInt8, DType::kUInt8, DType::kBool}) {
    EXPECT_EQ(FromProtoDType(ToProtoDType(dtype)), dtype);
  }
  EXPECT_EQ(FromProtoDType(v1::DTYPE_UNSPECIFIED), std::nullopt);
  EXPECT_EQ(FromProtoDType(static_cast<v1::DType>(99)), std::nullopt);
}

TEST(TensorStreamReceiverTest, AssemblesTensorsAcrossChunks) {
  TensorStreamReceiver receiver(/*expect_data=*/true);
  v1::TensorFrame header = Header("0.weight", v1::INT16, {2, 2});
  header.mutable_header()->mutable_meta()->set_device("cpu");
  header.mutable_header()->mutable_meta()->set_is_parameter(true);
  header.mutable_header()->mutable_meta()->set_requires_grad(true);
  header.mutable_header()->mutable_meta()->set_version(3);
  header.mutable_header()->add_tied_with("2.weight");
  ASSERT_TRUE(Feed(receiver, {Start(7), header, Chunk(0, "abc"), Chunk(3, "defgh"),
                              Header("0.bias", v1::INT8, {2}), Chunk(0, "xy")})
                  .ok());
  EXPECT_EQ(receiver.start().version(), 7u);
  ASSERT_EQ(receiver.entries().size(), 2u);
  const NamedTensor& weight = receiver.entries()[0];
  EXPECT_EQ(weight.name, "0.weight");
  EXPECT_EQ(weight.tensor.dtype, DType::kInt16);
  EXPECT_THAT(weight.tensor.shape, ElementsAre(2, 2));
  EXPECT_EQ(weight.tensor.data, "abcdefgh");
  EXPECT_EQ(weight.tensor.device, "cpu");
  EXPECT_TRUE(weight.tensor.is_parameter);
  EXPECT_TRUE(weight.tensor.requires_grad);
  EXPECT_EQ(weight.tensor.version, 3u);
  EXPECT_THAT(weight.tensor.tied_with, ElementsAre("2.weight"));
  EXPECT_EQ(receiver.entries()[1].tensor.data, "xy");
}

TEST(TensorStreamReceiverTest, ZeroByteTensorsHaveNoChunks) {
  TensorStreamReceiver receiver(/*expect_data=*/true);
  ASSERT_TRUE(Feed(receiver, {Start(1), Header("empty", v1::FLOAT32, {0, 4}),
                              Header("one", v1::UINT8, {}), Chunk(0, "z")})
                  .ok());
  ASSERT_EQ(receiver.entries().size(), 2u);
  EXPECT_TRUE(receiver.entries()[0].tensor.data.empty());
}

TEST(TensorStreamReceiverTest, MetadataOnlyStreamsCarryHeadersOnly) {
  TensorStreamReceiver receiver(/*expect_data=*/false);
  ASSERT_TRUE(
      Feed(receiver, {Start(2), Header("a", v1::FLOAT32, {3}), Header("b", v1::FLOAT64, {1})})
          .ok());
  ASSERT_EQ(receiver.entries().size(), 2u);
  EXPECT_EQ(receiver.entries()[0].tensor.nbytes(), 12u);
  EXPECT_TRUE(receiver.entries()[0].tensor.data.empty());

  TensorStreamReceiver strict(/*expect_data=*/false);
  absl::Status status = Feed(strict, {Start(2), Header("a", v1::FLOAT32, {1}), Chunk(0, "abcd")});
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("metadata-only"));
}

TEST(TensorStreamReceiverTest, RefusesAStreamWithoutStartFrame) {
  TensorStreamReceiver receiver(/*expect_data=*/true);
  absl::Status status = Feed(receiver, {Header("a", v1::INT8, {1}), Chunk(0, "x")});
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("instead of a start frame"));

  TensorStreamReceiver empty(/*expect_data=*/true);
  status = Feed(empty, {});
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("without a start frame"));

  TensorStreamReceiver twice(/*expect_data=*/true);
  EXPECT_EQ(Feed(twice, {Start(1), Start(1)}).code(), absl::StatusCode::kDataLoss);
}

TEST(TensorStreamReceiverTest, RefusesChunksOutOfOrder) {
  TensorStreamReceiver receiver(/*expect_data=*/true);
  absl::Status status =
      Feed(receiver, {Start(1), Header("w", v1::INT8, {4}), Chunk(0, "ab"), Chunk(3, "d")});
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("tensor 'w': a chunk at byte 3 arrived where byte 2"));
}

TEST(TensorStreamReceiverTest, RefusesTensorsThatEndShort) {
  TensorStreamReceiver at_end(/*expect_data=*/true);
  absl::Status status = Feed(at_end, {Start(1), Header("w", v1::INT8, {4}), Chunk(0, "ab")});
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("tensor 'w' ended short: got 2 of 4 bytes"));

  TensorStreamReceiver before_next(/*expect_data=*/true);
  status = Feed(before_next, {Start(1), Header("w", v1::INT8, {4}), Chunk(0, "ab"),
                              Header("b", v1::INT8, {1}), Chunk(0, "x")});
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("tensor 'w' ended short"));
}

TEST(TensorStreamReceiverTest, RefusesDataBeyondTheTensor) {
  TensorStreamReceiver receiver(/*expect_data=*/true);
  absl::Status status = Feed(receiver, {Start(1), Header("w", v1::INT16, {2}), Chunk(0, "abcde")});
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("5 bytes arrived but its dtype and shape give 4"));

  TensorStreamReceiver extra_chunk(/*expect_data=*/true);
  status = Feed(extra_chunk, {Start(1), Header("w", v1::INT8, {2}), Chunk(0, "ab"), Chunk(2, "c")});
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("past the end of tensor 'w'"));

  TensorStreamReceiver orphan(/*expect_data=*/true);
  status = Feed(orphan, {Start(1), Chunk(0, "ab")});
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("before any tensor header"));
}

TEST(TensorStreamReceiverTest, RefusesBadHeaders) {
  TensorStreamReceiver unknown(/*expect_data=*/true);
  absl::Status status = Feed(unknown, {Start(1), Header("w", v1::DTYPE_UNSPECIFIED, {1})});
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("unset or unknown"));

  TensorStreamReceiver negative(/*expect_data=*/true);
  status = Feed(negative, {Start(1), Header("w", v1::FLOAT32, {2, -1})});
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("negative dimension -1"));

  TensorStreamReceiver huge(/*expect_data=*/true);
  status = Feed(huge, {Start(1), Header("w", v1::FLOAT64, {int64_t{1} << 40, int64_t{1} << 40})});
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("too large"));
}

TEST(TensorStreamReceiverTest, ReportsProgress) {
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  TensorStreamReceiver receiver(/*expect_data=*/true, [&](uint64_t done, uint64_t total) {
    calls.emplace_back(done, total);
  });
  ASSERT_TRUE(Feed(receiver, {Start(1), Header("a", v1::INT8, {3}), Chunk(0, "ab"), Chunk(2, "c"),
                              Header("b", v1::INT8, {1}), Chunk(0, "d")})
                  .ok());
  EXPECT_THAT(calls, ElementsAre(Pair(2, 3), Pair(3, 3), Pair(4, 4)));
}

// `frame` serialized and received as gRPC hands it over: in slices cut every `cut` bytes.
grpc::ByteBuffer Received(const v1::TensorFrame& frame, size_t cut) {
  const std::string bytes = frame.SerializeAsString();
  std::vector<grpc::Slice> slices;
  for (size_t at = 0; at < bytes.size(); at += cut) {
    slices.emplace_back(bytes.substr(at, cut));
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

absl::Status FeedReceived(TensorStreamReceiver& receiver,
                          const std::vector<v1::TensorFrame>& frames, size_t cut) {
  for (const v1::TensorFrame& frame : frames) {
    absl::Status status = receiver.Add(Received(frame, cut));
    if (!status.ok()) return status;
  }
  return receiver.Finish();
}

// Records what a consumer is handed.
class RecordingConsumer : public TensorConsumer {
 public:
  absl::Status BeginTensor(const std::string& name, const HostTensor& meta) override {
    tensors.emplace_back(name, "");
    return absl::OkStatus();
  }
  absl::Status TensorData(absl::string_view bytes) override {
    tensors.back().second.append(bytes.data(), bytes.size());
    ++pieces;
    return absl::OkStatus();
  }
  absl::Status EndTensor() override {
    ++ended;
    return absl::OkStatus();
  }

  std::vector<std::pair<std::string, std::string>> tensors;
  int pieces = 0;
  int ended = 0;
};

TEST(TensorStreamReceiverTest, ReadsReceivedFramesInAnySlicesAsParsedOnes) {
  const std::string a(1000, 'a'), b = "0123456789abcdef";
  const std::vector<v1::TensorFrame> frames = {Start(7),
                                               Header("w", v1::INT8, {1000}),
                                               Chunk(0, a.substr(0, 300)),
                                               Chunk(300, a.substr(300)),
                                               Header("b", v1::INT32, {4}),
                                               Chunk(0, b)};
  for (size_t cut : {size_t{1}, size_t{7}, size_t{64}, size_t{4096}}) {
    SCOPED_TRACE(cut);
    TensorStreamReceiver receiver(/*expect_data=*/true);
    ASSERT_TRUE(FeedReceived(receiver, frames, cut).ok());
    EXPECT_EQ(receiver.start().version(), 7u);
    ASSERT_EQ(receiver.entries().size(), 2u);
    EXPECT_EQ(receiver.entries()[0].tensor.data, a);
    EXPECT_EQ(receiver.entries()[1].tensor.data, b);

    RecordingConsumer consumer;
    TensorStreamReceiver streamed(/*expect_data=*/true);
    streamed.StreamTo(&consumer);
    ASSERT_TRUE(FeedReceived(streamed, frames, cut).ok());
    EXPECT_THAT(consumer.tensors, ElementsAre(Pair("w", a), Pair("b", b)));
    EXPECT_EQ(consumer.ended, 2);
    // Each chunk reaches the consumer as the slices it arrived in, uncopied (gRPC merges
    // slices of up to 23 bytes as they are added).
    if (cut == 64) {
      EXPECT_GE(consumer.pieces, (1000 + 16) / 64);
    }
  }
}

TEST(TensorStreamReceiverTest, RefusesBadReceivedFramesAsParsedOnes) {
  struct Case {
    std::vector<v1::TensorFrame> frames;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{Chunk(0, "ab")}, "began with a chunk frame"},
      {{Start(1), Chunk(0, "ab")}, "before any tensor header"},
      {{Start(1), Header("w", v1::INT8, {4}), Chunk(0, "ab"), Chunk(3, "d")},
       "a chunk at byte 3 arrived where byte 2"},
      {{Start(1), Header("w", v1::INT16, {2}), Chunk(0, "abcde")},
       "5 bytes arrived but its dtype and shape give 4"},
      {{Start(1), Header("w", v1::INT8, {2}), Chunk(0, "ab"), Chunk(2, "c")},
       "past the end of tensor 'w'"},
      {{Start(1), Header("w", v1::INT8, {4}), Chunk(0, "ab")}, "ended short: got 2 of 4"},
  };
  for (const Case& c : cases) {
    TensorStreamReceiver receiver(/*expect_data=*/true);
    const absl::Status status = FeedReceived(receiver, c.frames, 3);
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << c.message;
    EXPECT_THAT(status.message(), HasSubstr(c.message));
  }

  TensorStreamReceiver metadata_only(/*expect_data=*/false);
  EXPECT_THAT(FeedReceived(metadata_only, {Start(1), Header("w", v1::INT8, {2}), Chunk(0, "ab")}, 5)
                  .message(),
              HasSubstr("metadata-only"));

  TensorStreamReceiver garbage(/*expect_data=*/true);
  ASSERT_TRUE(garbage.Add(Received(Start(1), 4)).ok());
  grpc::Slice junk(
      std::string("\x1a\xff\xff\xff\xff\x0f"
                  "abc"));
  const absl::Status status = garbage.Add(grpc::ByteBuffer(&junk, 1));
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(status.message(), HasSubstr("does not parse as a TensorFrame"));
}

TEST(CheckOutgoingTest, DataMustMatchDTypeAndShape) {
  HostTensor tensor = Meta(DType::kFloat32, {2});
  tensor.data = std::string(8, '\0');
  EXPECT_TRUE(CheckOutgoing("w", tensor).ok());
  tensor.data.resize(7);
  absl::Status status = CheckOutgoing("w", tensor);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              HasSubstr("'w' holds 7 bytes but its dtype float32 and shape give 8"));
  tensor.shape = {-2};
  EXPECT_EQ(CheckOutgoing("w", tensor).code(), absl::StatusCode::kInvalidArgument);
}

TEST(SendWriteFramesTest, OptionsThenHeadersThenChunksOfAtMostOneMebibyte) {
  HostTensor big = Meta(DType::kUInt8, {static_cast<int64_t>(kChunkBytes * 2 + 5)});
  big.data.resize(big.nbytes());
  for (size_t i = 0; i < big.data.size(); ++i) big.data[i] = static_cast<char>(i * 7);
  HostTensor empty = Meta(DType::kFloat32, {0});
  const std::string big_name = "big";
  const std::string empty_name = "empty";
  const Region region = {{1, 3}};
  std::vector<OutgoingTensor> tensors = {{&big_name, &big, &region, true, true},
                                         {&empty_name, &empty, nullptr, false, false}};
  v1::WriteOptions options;
  options.set_model("net");
  options.set_if_version(4);

  std::vector<v1::WriteFrame> frames;
  std::vector<std::pair<uint64_t, uint64_t>> progress;
  ASSERT_TRUE(SendWriteFrames(
      options, tensors, [&](uint64_t done, uint64_t total) { progress.emplace_back(done, total); },
      [&](const EncodedFrame& frame) {
        EXPECT_TRUE(frames.emplace_back().ParseFromString(frame.head + std::string(frame.data)));
        return true;
      }));
  ASSERT_EQ(frames.size(), 6u);
  EXPECT_EQ(frames[0].options().model(), "net");
  EXPECT_EQ(frames[0].options().if_version(), 4u);
  const v1::TensorHeader& header = frames[1].header();
  EXPECT_EQ(header.name(), "big");
  EXPECT_EQ(header.meta().dtype(), v1::UINT8);
  EXPECT_THAT(header.meta().shape(), ElementsAre(kChunkBytes * 2 + 5));
  EXPECT_TRUE(header.meta().is_parameter());
  EXPECT_TRUE(header.meta().requires_grad());
  ASSERT_EQ(header.region().ranges_size(), 1);
  EXPECT_EQ(header.region().ranges(0).start(), 1);
  EXPECT_EQ(header.region().ranges(0).stop(), 3);
  std::string reassembled;
  for (int i = 2; i <= 4; ++i) {
    ASSERT_TRUE(frames[i].has_chunk());
    EXPECT_EQ(frames[i].chunk().offset(), reassembled.size());
    EXPECT_LE(frames[i].chunk().data().size(), kChunkBytes);
    reassembled += frames[i].chunk().data();
  }
  EXPECT_EQ(reassembled, big.data);
  EXPECT_EQ(frames[5].header().name(), "empty");
  EXPECT_EQ(frames[5].header().region().ranges_size(), 0);
  const uint64_t total = big.data.size();
  EXPECT_THAT(progress, ElementsAre(Pair(kChunkBytes, total), Pair(2 * kChunkBytes, total),
                                    Pair(total, total)));
}

TEST(SendWriteFramesTest, StopsWhenTheStreamBreaks) {
  HostTensor tensor = Meta(DType::kUInt8, {static_cast<int64_t>(kChunkBytes * 3)});
  tensor.data.resize(tensor.nbytes());
  const std::string name = "w";
  int writes = 0;
  EXPECT_FALSE(SendWriteFrames(v1::WriteOptions(), {{&name, &tensor, nullptr, false, false}}, {},
                               [&](const EncodedFrame&) { return ++writes < 3; }));
  EXPECT_EQ(writes, 3);
}

}  // namespace
}  // namespace paramd::client::internal
