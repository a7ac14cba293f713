// The write frames the client hand-encodes (base/chunk_frame.h, SendWriteFrames) against
// protobuf's own parser, and the FrameLender that hands their bytes to gRPC.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/chunk_frame.h"
#include "client/cpp/src/frame_lender.h"
#include "client/cpp/src/wire.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace paramd::client::internal {
namespace {

// `frame`'s bytes parsed as a WriteFrame; fails the test when protobuf refuses them.
v1::WriteFrame ParseWriteFrame(const EncodedFrame& frame) {
  v1::WriteFrame parsed;
  EXPECT_TRUE(parsed.ParseFromString(frame.head + std::string(frame.data)));
  return parsed;
}

TEST(ChunkFramePrefixTest, ParsesAsWriteFrameAndTensorFrameForAnyOffsetAndSize) {
  std::mt19937_64 random(42);
  std::vector<std::pair<uint64_t, size_t>> cases = {{0, 0},
                                                    {0, 1},
                                                    {1, 127},
                                                    {127, 128},
                                                    {128, 16383},
                                                    {16384, 16384},
                                                    {0, kChunkBytes},
                                                    {uint64_t{1} << 32, 3},
                                                    {(uint64_t{1} << 32) - 1, 1},
                                                    {(uint64_t{1} << 35) + 7, kChunkBytes},
                                                    {std::numeric_limits<uint64_t>::max(), 2}};
  for (int i = 0; i < 200; ++i) {
    // Offsets of every varint length, sizes up to a chunk.
    const uint64_t offset = random() >> (random() % 64);
    cases.emplace_back(offset, static_cast<size_t>(random() % (kChunkBytes + 1)));
  }
  for (const auto& [offset, size] : cases) {
    SCOPED_TRACE(testing::Message() << "offset " << offset << ", size " << size);
    std::string data(size, '\0');
    for (size_t i = 0; i < size; i += 4096) data[i] = static_cast<char>(random());
    const std::string bytes = wire::ChunkFramePrefix(offset, size) + data;
    v1::WriteFrame write;
    ASSERT_TRUE(write.ParseFromString(bytes));
    ASSERT_TRUE(write.has_chunk());
    EXPECT_EQ(write.chunk().offset(), offset);
    EXPECT_EQ(write.chunk().data(), data);
    v1::TensorFrame read;
    ASSERT_TRUE(read.ParseFromString(bytes));
    ASSERT_TRUE(read.has_chunk());
    EXPECT_EQ(read.chunk().offset(), offset);
    EXPECT_EQ(read.chunk().data(), data);
  }
}

TEST(ChunkFramePrefixTest, VarintsAreProtobufs) {
  for (uint64_t value : {uint64_t{0}, uint64_t{1}, uint64_t{127}, uint64_t{128}, uint64_t{300},
                         uint64_t{1} << 32, std::numeric_limits<uint64_t>::max()}) {
    std::string bytes;
    wire::AppendVarint(value, &bytes);
    EXPECT_EQ(bytes.size(), wire::VarintSize(value));
    v1::TensorChunk chunk;
    chunk.set_offset(value);
    // A TensorChunk holding only the offset is its tag and then the varint.
    EXPECT_EQ(chunk.SerializeAsString(), value == 0 ? "" : std::string(1, '\x08') + bytes);
  }
}

HostTensor Bytes(size_t size) {
  HostTensor tensor;
  tensor.dtype = DType::kUInt8;
  tensor.shape = {static_cast<int64_t>(size)};
  tensor.data.resize(size);
  for (size_t i = 0; i < size; ++i) tensor.data[i] = static_cast<char>(i * 13 + 5);
  return tensor;
}

TEST(SendWriteFramesTest, EveryFrameParsesAndChunksBorrowTheTensorsBytes) {
  std::mt19937_64 random(7);
  std::vector<HostTensor> tensors;
  std::vector<std::string> names;
  for (size_t size : {size_t{0}, size_t{1}, kChunkBytes, kChunkBytes + 1, size_t{0},
                      static_cast<size_t>(random() % (3 * kChunkBytes))}) {
    tensors.push_back(Bytes(size));
    names.push_back("t" + std::to_string(names.size()));
  }
  std::vector<OutgoingTensor> outgoing;
  for (size_t i = 0; i < tensors.size(); ++i) outgoing.push_back({&names[i], &tensors[i]});

  std::vector<std::string> received(tensors.size());
  int index = -1;
  ASSERT_TRUE(SendWriteFrames(v1::WriteOptions(), outgoing, {}, [&](const EncodedFrame& frame) {
    const v1::WriteFrame parsed = ParseWriteFrame(frame);
    EXPECT_EQ(frame.is_chunk, parsed.has_chunk());
    if (parsed.has_header()) {
      ++index;
      EXPECT_EQ(parsed.header().name(), names[index]);
    } else if (parsed.has_chunk()) {
      const std::string& source = tensors[index].data;
      // The data is the tensor's own memory, not a copy.
      EXPECT_EQ(frame.data.data(), source.data() + parsed.chunk().offset());
      EXPECT_EQ(parsed.chunk().offset(), received[index].size());
      received[index] += parsed.chunk().data();
    }
    return true;
  }));
  ASSERT_EQ(index, static_cast<int>(tensors.size()) - 1);
  for (size_t i = 0; i < tensors.size(); ++i) EXPECT_EQ(received[i], tensors[i].data) << i;
}

TEST(SendWriteFramesTest, AHeaderCarriesNothingOfThePreviousOne) {
  // Empty tensors send no chunk between their headers.
  const HostTensor first = Bytes(0), second = Bytes(0);
  const std::string first_name = "a", second_name = "b";
  const Region region = {{0, 0}};
  std::vector<v1::WriteFrame> frames;
  ASSERT_TRUE(SendWriteFrames(
      v1::WriteOptions(),
      {{&first_name, &first, &region, true, true}, {&second_name, &second, nullptr, false, false}},
      {}, [&](const EncodedFrame& frame) {
        frames.push_back(ParseWriteFrame(frame));
        return true;
      }));
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_EQ(frames[1].header().region().ranges_size(), 1);
  EXPECT_EQ(frames[2].header().name(), "b");
  EXPECT_EQ(frames[2].header().region().ranges_size(), 0);
  EXPECT_FALSE(frames[2].header().meta().is_parameter());
  EXPECT_FALSE(frames[2].header().meta().requires_grad());
}

TEST(FrameLenderTest, LendsTheDataUncopiedAndWaitsUntilGrpcDropsIt) {
  const std::string data(1000, 'x');
  EncodedFrame frame{wire::ChunkFramePrefix(0, data.size()), data, true};
  FrameLender lender;
  grpc::ByteBuffer held = lender.Lend(frame);
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(held.Dump(&slices).ok());
  ASSERT_EQ(slices.size(), 2u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(slices[0].begin()), slices[0].size()),
            frame.head);
  EXPECT_EQ(reinterpret_cast<const char*>(slices[1].begin()), data.data());
  EXPECT_EQ(slices[1].size(), data.size());
  slices.clear();

  // gRPC's copy of the message outlives the caller's: the lender waits for it.
  grpc::ByteBuffer grpc_copy(held);
  held.Clear();
  std::atomic<bool> dropped = false;
  std::thread grpc_side([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    dropped = true;
    grpc_copy.Clear();
  });
  lender.WaitForReturns();
  EXPECT_TRUE(dropped);
  grpc_side.join();
}

TEST(FrameLenderTest, AFrameWithoutDataLendsNothing) {
  FrameLender lender;
  grpc::ByteBuffer buffer = lender.Lend({"head", {}, false});
  EXPECT_EQ(buffer.Length(), 4u);
  lender.WaitForReturns();  // returns at once
}

}  // namespace
}  // namespace paramd::client::internal
