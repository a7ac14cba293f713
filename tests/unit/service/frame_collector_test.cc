// The daemon's side of a write stream (FrameCollector, server/service/tensor_stream.h) on
// frames as gRPC hands them over: chunks read where they arrived, in any slicing, and
// chunk frames whose lengths disagree with their bytes refused, as protobuf refuses them.
#include <string>
#include <vector>

#include "base/chunk_frame.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/service/tensor_stream.h"

namespace paramd::service {
namespace {

using ::testing::HasSubstr;

// `bytes` as gRPC hands a message over: in slices of `cut` bytes (gRPC merges slices of up
// to 23 bytes as they are added, so small cuts still arrive as fewer slices).
grpc::ByteBuffer Received(const std::string& bytes, size_t cut) {
  std::vector<grpc::Slice> slices;
  for (size_t at = 0; at < bytes.size(); at += cut) slices.emplace_back(bytes.substr(at, cut));
  return grpc::ByteBuffer(slices.data(), slices.size());
}

std::string OptionsFrame() {
  v1::WriteFrame frame;
  frame.mutable_options()->set_model("net");
  return frame.SerializeAsString();
}

std::string HeaderFrame(const std::string& name, int64_t bytes) {
  v1::WriteFrame frame;
  frame.mutable_header()->set_name(name);
  frame.mutable_header()->mutable_meta()->set_dtype(v1::UINT8);
  frame.mutable_header()->mutable_meta()->add_shape(bytes);
  return frame.SerializeAsString();
}

std::string Bytes(size_t size) {
  std::string bytes(size, '\0');
  for (size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>(i * 7 + 1);
  return bytes;
}

TEST(FrameCollectorTest, TakesChunksInAnySlicingAndInEitherEncoding) {
  const std::string data = Bytes(1000);
  v1::WriteFrame by_protobuf;  // offset 0 left out, as protobuf encoders do
  by_protobuf.mutable_chunk()->set_data(data.substr(0, 400));
  for (size_t cut : {size_t{1}, size_t{30}, size_t{333}, size_t{4096}}) {
    SCOPED_TRACE(cut);
    FrameCollector<v1::WriteFrame> collector;
    ASSERT_TRUE(collector.Add(Received(OptionsFrame(), cut)).ok());
    ASSERT_TRUE(collector.Add(Received(HeaderFrame("w", 1000), cut)).ok());
    ASSERT_TRUE(collector.Add(Received(by_protobuf.SerializeAsString(), cut)).ok());
    ASSERT_TRUE(
        collector.Add(Received(wire::ChunkFramePrefix(400, 600) + data.substr(400), cut)).ok());
    absl::StatusOr<IncomingWrite> write = collector.Finish();
    ASSERT_TRUE(write.ok()) << write.status();
    ASSERT_EQ(write->tensors.size(), 1u);
    const core::Tensor& tensor = write->tensors[0].second;
    EXPECT_EQ(std::string(static_cast<const char*>(tensor.data()), tensor.nbytes()), data);
  }
}

// Note [Bool bytes] in server/core/tensor.h: PyTorch reads any non-zero byte as True.
TEST(FrameCollectorTest, BoolBytesOtherThanZeroAndOneArriveAsOne) {
  v1::WriteFrame header;
  header.mutable_header()->set_name("mask");
  header.mutable_header()->mutable_meta()->set_dtype(v1::BOOL);
  header.mutable_header()->mutable_meta()->add_shape(4);
  v1::WriteFrame chunk;
  chunk.mutable_chunk()->set_data(std::string("\x00\x02\xff\x01", 4));
  FrameCollector<v1::WriteFrame> collector;
  ASSERT_TRUE(collector.Add(Received(OptionsFrame(), 4096)).ok());
  ASSERT_TRUE(collector.Add(Received(header.SerializeAsString(), 4096)).ok());
  ASSERT_TRUE(collector.Add(Received(chunk.SerializeAsString(), 4096)).ok());
  absl::StatusOr<IncomingWrite> write = collector.Finish();
  ASSERT_TRUE(write.ok()) << write.status();
  const core::Tensor& mask = write->tensors[0].second;
  EXPECT_EQ(std::string(static_cast<const char*>(mask.data()), mask.nbytes()),
            std::string("\x00\x01\x01\x01", 4));
}

// A gradient or optimizer state is whole: a header with a region is refused as it arrives,
// whatever data follows.
TEST(FrameCollectorTest, GradientAndOptimizerStateHeadersWithARegionAreRefused) {
  v1::GradientFrame options;
  options.mutable_options()->set_optimizer("opt");
  v1::GradientFrame header;
  header.mutable_header()->set_name("0.weight");
  header.mutable_header()->mutable_meta()->set_dtype(v1::FLOAT32);
  header.mutable_header()->mutable_meta()->add_shape(3);
  header.mutable_header()->mutable_meta()->add_shape(4);
  v1::Range* range = header.mutable_header()->mutable_region()->add_ranges();
  range->set_start(0);
  range->set_stop(1);
  FrameCollector<v1::GradientFrame> gradients;
  ASSERT_TRUE(gradients.Add(Received(options.SerializeAsString(), 4096)).ok());
  const absl::Status refused = gradients.Add(Received(header.SerializeAsString(), 4096));
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.message(), HasSubstr("the gradient of '0.weight' names a region"));

  v1::OptimizerStateFrame head;
  head.mutable_options()->set_optimizer("opt");
  v1::OptimizerStateFrame state;
  *state.mutable_header() = header.header();
  FrameCollector<v1::OptimizerStateFrame> states;
  ASSERT_TRUE(states.Add(Received(head.SerializeAsString(), 4096)).ok());
  EXPECT_THAT(states.Add(Received(state.SerializeAsString(), 4096)).message(),
              HasSubstr("the optimizer state tensor '0.weight' names a region"));
}

TEST(FrameCollectorTest, RefusesChunkFramesWhoseLengthsDisagreeWithTheirBytes) {
  const std::string good = wire::ChunkFramePrefix(0, 4) + "abcd";
  std::string long_length = good;  // the chunk claims a byte more than it holds
  long_length[1] = static_cast<char>(long_length[1] + 1);
  std::string short_length = good;  // and a byte less: the last one would be a stray field
  short_length[1] = static_cast<char>(short_length[1] - 1);
  for (const std::string& bytes : {long_length, short_length, good + "e", good.substr(0, 7)}) {
    FrameCollector<v1::WriteFrame> collector;
    ASSERT_TRUE(collector.Add(Received(OptionsFrame(), 64)).ok());
    ASSERT_TRUE(collector.Add(Received(HeaderFrame("w", 4), 64)).ok());
    const absl::Status status = collector.Add(Received(bytes, 3));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << testing::PrintToString(bytes);
    EXPECT_THAT(status.message(), HasSubstr("does not parse as paramd.v1.WriteFrame"));
  }
}

}  // namespace
}  // namespace paramd::service
