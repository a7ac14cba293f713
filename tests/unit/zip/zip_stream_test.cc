// The streaming pieces of base/zip that paramctl's .npz files use: entries of known size
// whose CRC-32 is patched in at their end (BeginSizedEntry), and Inflater, which inflates a
// deflate stream piece by piece.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <string>

#include "base/zip/zip.h"

namespace paramd::zip {
namespace {

using ::testing::HasSubstr;

absl::Span<const uint8_t> AsSpan(absl::string_view bytes) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

std::string Pattern(size_t size) {
  std::string data(size, '\0');
  for (size_t i = 0; i < size; ++i) data[i] = static_cast<char>((i * 131 + i / 7) & 0xFF);
  return data;
}

// A sink that appends but cannot seek back, as a pipe.
class AppendOnlySink : public Sink {
 public:
  absl::Status Append(absl::Span<const uint8_t> bytes) override { return inner.Append(bytes); }
  uint64_t size() const override { return inner.size(); }
  StringSink inner;
};

TEST(ZipSizedEntryTest, WritesByteForByteWhatAddEntryWrites) {
  const std::string a = Pattern(1000), b = Pattern(37);
  for (bool force_zip64 : {false, true}) {
    const WriterOptions options{.force_zip64 = force_zip64, .alignment = 0, .unix_mode = 0100644};
    StringSink whole, streamed;
    Writer reference(whole, options);
    ASSERT_TRUE(reference.AddEntry("a.npy", a).ok());
    ASSERT_TRUE(reference.AddEntry("b.npy", b).ok());
    ASSERT_TRUE(reference.Finish().ok());

    Writer writer(streamed, options);
    ASSERT_TRUE(writer.BeginSizedEntry("a.npy", a.size()).ok());
    for (size_t at = 0; at < a.size(); at += 333) {
      ASSERT_TRUE(writer.Write(AsSpan(absl::string_view(a).substr(at, 333))).ok());
    }
    ASSERT_TRUE(writer.EndEntry().ok());
    ASSERT_TRUE(writer.BeginSizedEntry("b.npy", b.size()).ok());
    ASSERT_TRUE(writer.Write(AsSpan(b)).ok());
    ASSERT_TRUE(writer.EndEntry().ok());
    ASSERT_TRUE(writer.Finish().ok());
    EXPECT_EQ(streamed.data, whole.data) << "force_zip64 " << force_zip64;

    absl::StatusOr<Reader> reader = Reader::Open(streamed.data);
    ASSERT_TRUE(reader.ok()) << reader.status();
    ASSERT_EQ(reader->entries().size(), 2u);
    EXPECT_EQ(*reader->Extract(reader->entries()[0]), a);
    EXPECT_EQ(reader->entries()[1].crc32, Crc32(AsSpan(b)));
  }
}

TEST(ZipSizedEntryTest, MoreOrFewerBytesThanDeclaredStopTheWriter) {
  StringSink sink;
  Writer longer(sink);
  ASSERT_TRUE(longer.BeginSizedEntry("x", 4).ok());
  absl::Status status = longer.Write(AsSpan("12345"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("declared with 4 bytes"));
  EXPECT_FALSE(longer.Finish().ok());

  StringSink other;
  Writer shorter(other);
  ASSERT_TRUE(shorter.BeginSizedEntry("x", 4).ok());
  ASSERT_TRUE(shorter.Write(AsSpan("123")).ok());
  status = shorter.EndEntry();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("ends after 3"));
}

TEST(ZipSizedEntryTest, NeedsASinkThatCanOverwrite) {
  AppendOnlySink sink;
  Writer writer(sink);
  ASSERT_TRUE(writer.BeginSizedEntry("x", 1).ok());
  ASSERT_TRUE(writer.Write(AsSpan("1")).ok());
  EXPECT_EQ(writer.EndEntry().code(), absl::StatusCode::kUnimplemented);
}

std::string RawDeflate(const std::string& data) {
  z_stream stream{};
  EXPECT_EQ(deflateInit2(&stream, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&stream, data.size()), '\0');
  stream.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  stream.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&stream, Z_FINISH), Z_STREAM_END);
  out.resize(stream.total_out);
  deflateEnd(&stream);
  return out;
}

TEST(ZipInflaterTest, InflatesPieceByPieceAndSeesTheEnd) {
  const std::string data = Pattern(200000);
  const std::string compressed = RawDeflate(data);
  Inflater inflater;
  std::string out;
  uint8_t buffer[4096];
  // Input in 1000-byte pieces, output in 4 KiB pieces.
  size_t at = 0;
  while (!inflater.finished()) {
    const size_t piece = std::min<size_t>(1000, compressed.size() - at);
    ASSERT_GT(piece, 0u) << "the stream did not end with its input";
    absl::Span<const uint8_t> input = AsSpan(absl::string_view(compressed).substr(at, piece));
    size_t got = 0;
    do {  // a full output may leave more to come from the same input
      absl::StatusOr<size_t> run = inflater.Run(input, absl::MakeSpan(buffer, sizeof(buffer)));
      ASSERT_TRUE(run.ok()) << run.status();
      got = *run;
      out.append(reinterpret_cast<const char*>(buffer), got);
    } while (got == sizeof(buffer));
    ASSERT_TRUE(input.empty() || inflater.finished());
    at += piece - input.size();
  }
  EXPECT_TRUE(inflater.finished());
  EXPECT_EQ(out, data);
}

TEST(ZipInflaterTest, CorruptStreamsAreInvalidArgument) {
  std::string compressed = RawDeflate(Pattern(5000));
  compressed[0] = static_cast<char>(0xFF);  // block type 3: reserved
  Inflater inflater;
  absl::Span<const uint8_t> input = AsSpan(compressed);
  uint8_t buffer[256];
  absl::StatusOr<size_t> got = inflater.Run(input, absl::MakeSpan(buffer, sizeof(buffer)));
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got.status().message(), HasSubstr("corrupt deflate data"));
}

}  // namespace
}  // namespace paramd::zip
