// wire::ReadChunkFrame (base/chunk_frame.h), which client and server use to read chunk
// frames where gRPC received them, against protobuf's own parser: wherever it answers,
// protobuf reads the same frame the same way, however the bytes are split.
#include "base/chunk_frame.h"

#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "paramd/v1/parameters.pb.h"

namespace paramd::wire {
namespace {

// `bytes` cut at random places into pieces, some of them empty.
std::vector<absl::string_view> Split(const std::string& bytes, std::mt19937_64& random) {
  std::vector<absl::string_view> pieces;
  size_t at = 0;
  while (at < bytes.size()) {
    if (random() % 8 == 0) pieces.emplace_back();
    const size_t n = std::min<size_t>(bytes.size() - at, 1 + random() % 40);
    pieces.push_back(absl::string_view(bytes).substr(at, n));
    at += n;
  }
  return pieces;
}

std::string Joined(const std::vector<absl::string_view>& pieces) {
  std::string joined;
  for (absl::string_view piece : pieces) joined.append(piece.data(), piece.size());
  return joined;
}

TEST(ReadChunkFrameTest, ReadsWhatEitherEncoderWritesSplitAnywhere) {
  std::mt19937_64 random(11);
  for (int i = 0; i < 300; ++i) {
    const uint64_t offset = i % 3 == 0 ? 0 : random() >> (random() % 64);
    std::string data(1 + random() % 300, '\0');
    for (char& byte : data) byte = static_cast<char>(random());
    v1::TensorFrame message;
    message.mutable_chunk()->set_offset(offset);
    message.mutable_chunk()->set_data(data);
    // The hand-written prefix (which always writes the offset) and protobuf's encoder
    // (which leaves out an offset of 0).
    for (const std::string& bytes :
         {ChunkFramePrefix(offset, data.size()) + data, message.SerializeAsString()}) {
      SCOPED_TRACE(testing::Message() << "offset " << offset << ", size " << data.size());
      const std::vector<absl::string_view> pieces = Split(bytes, random);
      const std::optional<ChunkFrameView> view = ReadChunkFrame(pieces);
      ASSERT_TRUE(view.has_value());
      EXPECT_EQ(view->offset, offset);
      EXPECT_EQ(view->size, data.size());
      EXPECT_EQ(Joined(view->data), data);
      // The data is the pieces' own memory, not a copy.
      for (absl::string_view piece : view->data) {
        EXPECT_GE(piece.data(), bytes.data());
        EXPECT_LE(piece.data() + piece.size(), bytes.data() + bytes.size());
      }
    }
  }
}

TEST(ReadChunkFrameTest, LeavesEveryOtherFrameToProtobuf) {
  v1::TensorFrame header;
  header.mutable_header()->set_name("w");
  v1::TensorFrame start;
  start.mutable_start()->set_version(3);
  v1::TensorFrame empty_chunk;
  empty_chunk.mutable_chunk()->set_offset(5);  // no data field
  const std::string good = ChunkFramePrefix(2, 4) + "abcd";
  std::string long_length = good;
  long_length[1] = static_cast<char>(long_length[1] + 1);
  std::string short_length = good;
  short_length[1] = static_cast<char>(short_length[1] - 1);
  for (const std::string& bytes :
       {std::string(), header.SerializeAsString(), start.SerializeAsString(),
        empty_chunk.SerializeAsString(), good.substr(0, good.size() - 1), good + "e",
        good + header.SerializeAsString(), long_length, short_length,
        // The data field before the offset field.
        std::string("\x1a\x08\x12\x04"
                    "abcd\x08\x02",
                    10)}) {
    const absl::string_view piece = bytes;
    EXPECT_FALSE(ReadChunkFrame(absl::MakeConstSpan(&piece, 1)).has_value())
        << testing::PrintToString(bytes);
  }
}

TEST(ReadChunkFrameTest, AgreesWithProtobufOnDamagedFrames) {
  std::mt19937_64 random(23);
  int answered = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string data(random() % 40, 'x');
    std::string bytes = ChunkFramePrefix(random() >> (random() % 64), data.size()) + data;
    // One to three byte changes, or a cut, or bytes added.
    switch (random() % 3) {
      case 0:
        for (int n = 1 + random() % 3; n > 0; --n) {
          bytes[random() % bytes.size()] = static_cast<char>(random());
        }
        break;
      case 1:
        bytes.resize(random() % bytes.size());
        break;
      default:
        bytes.append(1 + random() % 3, static_cast<char>(random()));
    }
    const std::vector<absl::string_view> pieces = Split(bytes, random);
    const std::optional<ChunkFrameView> view = ReadChunkFrame(pieces);
    if (!view.has_value()) continue;
    ++answered;
    SCOPED_TRACE(testing::PrintToString(bytes));
    v1::TensorFrame parsed;
    ASSERT_TRUE(parsed.ParseFromString(bytes));
    ASSERT_TRUE(parsed.has_chunk());
    EXPECT_EQ(parsed.chunk().offset(), view->offset);
    EXPECT_EQ(parsed.chunk().data(), Joined(view->data));
  }
  // Changes inside the data, or to an offset, leave a frame both read.
  EXPECT_GT(answered, 1000);
}

// A chunk frame with data "ab" whose offset is written as `continued` bytes of 0xff, then
// 0x01: the largest offset, in more bytes than any encoder writes.
std::string OverlongOffsetFrame(size_t continued) {
  std::string chunk = "\x08" + std::string(continued, '\xff') + "\x01";
  chunk += std::string(
      "\x12\x02"
      "ab",
      4);
  return "\x1a" + std::string(1, static_cast<char>(chunk.size())) + chunk;
}

TEST(ReadChunkFrameTest, OverlongVarintsReadAsProtobufReadsThem) {
  // An offset in ten bytes (the most a varint may take), and one in eleven.
  const std::string ten = OverlongOffsetFrame(9);
  v1::TensorFrame parsed;
  ASSERT_TRUE(parsed.ParseFromString(ten));
  const absl::string_view piece = ten;
  const std::optional<ChunkFrameView> view = ReadChunkFrame(absl::MakeConstSpan(&piece, 1));
  ASSERT_TRUE(view.has_value());
  EXPECT_EQ(view->offset, std::numeric_limits<uint64_t>::max());
  EXPECT_EQ(view->offset, parsed.chunk().offset());

  const std::string eleven = OverlongOffsetFrame(10);
  EXPECT_FALSE(parsed.ParseFromString(eleven));
  const absl::string_view bad = eleven;
  EXPECT_FALSE(ReadChunkFrame(absl::MakeConstSpan(&bad, 1)).has_value());
}

}  // namespace
}  // namespace paramd::wire
