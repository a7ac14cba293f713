// The ZIP reader and writer under torch.save files (pytorch-semantics.md §5.1): stored
// entries, 64-byte aligned data, ZIP64, data descriptors, and every malformed input refused.
#include "server/io/zip.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/unit/io/test_util.h"

namespace paramd::io {
namespace {

using ::testing::HasSubstr;
using test_util::AsSpan;

class FailingFile : public StringWritableFile {
 public:
  absl::Status Append(absl::Span<const uint8_t> bytes) override {
    if (data.size() + bytes.size() > limit) return absl::ResourceExhaustedError("disk full");
    return StringWritableFile::Append(bytes);
  }
  size_t limit = 100;
};

std::string DataOf(const ZipReader& zip, const ZipEntry& entry) {
  const absl::Span<const uint8_t> data = zip.Data(entry);
  return std::string(reinterpret_cast<const char*>(data.data()), data.size());
}

uint32_t Crc(const std::string& data) { return Crc32(AsSpan(data)); }

void Put16(std::string& out, uint32_t v) {
  out.push_back(static_cast<char>(v & 0xFF));
  out.push_back(static_cast<char>((v >> 8) & 0xFF));
}
void Put32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void Put64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

// An archive assembled field by field, independent of ZipWriter, so that the reader is tested
// against layouts ZipWriter never produces: data descriptors with zeroed local sizes (as
// PyTorch's miniz writes), ZIP64 everywhere, other methods and flags.
struct RawEntry {
  std::string name;
  std::string data;
  uint16_t method = 0;
  uint16_t flags = 0;
  bool descriptor = false;
  bool zip64 = false;
  std::string local_name;  // when non-empty, the local header's name differs
};

std::string BuildZip(const std::vector<RawEntry>& entries, bool zip64_end = false) {
  std::string out;
  std::string directory;
  for (const RawEntry& entry : entries) {
    const uint64_t offset = out.size();
    const uint32_t crc = Crc(entry.data);
    const uint16_t flags = entry.flags | (entry.descriptor ? 8 : 0);
    const std::string& local_name = entry.local_name.empty() ? entry.name : entry.local_name;
    std::string local_extra;
    if (entry.zip64) {
      Put16(local_extra, 1);
      Put16(local_extra, 16);
      Put64(local_extra, entry.descriptor ? 0 : entry.data.size());
      Put64(local_extra, entry.descriptor ? 0 : entry.data.size());
    }
    Put32(out, 0x04034b50);
    Put16(out, 45);
    Put16(out, flags);
    Put16(out, entry.method);
    Put16(out, 0);
    Put16(out, 0x21);
    Put32(out, entry.descriptor ? 0 : crc);
    const uint32_t size32 = entry.zip64
                                ? 0xFFFFFFFF
                                : (entry.descriptor ? 0 : static_cast<uint32_t>(entry.data.size()));
    Put32(out, size32);
    Put32(out, size32);
    Put16(out, local_name.size());
    Put16(out, local_extra.size());
    out += local_name + local_extra + entry.data;
    if (entry.descriptor) {
      Put32(out, 0x08074b50);
      Put32(out, crc);
      if (entry.zip64) {
        Put64(out, entry.data.size());
        Put64(out, entry.data.size());
      } else {
        Put32(out, entry.data.size());
        Put32(out, entry.data.size());
      }
    }
    std::string extra;
    if (entry.zip64) {
      Put16(extra, 1);
      Put16(extra, 24);
      Put64(extra, entry.data.size());
      Put64(extra, entry.data.size());
      Put64(extra, offset);
    }
    Put32(directory, 0x02014b50);
    Put16(directory, 45);
    Put16(directory, 45);
    Put16(directory, flags);
    Put16(directory, entry.method);
    Put16(directory, 0);
    Put16(directory, 0x21);
    Put32(directory, crc);
    Put32(directory, entry.zip64 ? 0xFFFFFFFF : entry.data.size());
    Put32(directory, entry.zip64 ? 0xFFFFFFFF : entry.data.size());
    Put16(directory, entry.name.size());
    Put16(directory, extra.size());
    Put16(directory, 0);
    Put16(directory, 0);
    Put16(directory, 0);
    Put32(directory, 0);
    Put32(directory, entry.zip64 ? 0xFFFFFFFF : offset);
    directory += entry.name + extra;
  }
  const uint64_t directory_offset = out.size();
  out += directory;
  if (zip64_end) {
    const uint64_t zip64_offset = out.size();
    Put32(out, 0x06064b50);
    Put64(out, 44);
    Put16(out, 45);
    Put16(out, 45);
    Put32(out, 0);
    Put32(out, 0);
    Put64(out, entries.size());
    Put64(out, entries.size());
    Put64(out, directory.size());
    Put64(out, directory_offset);
    Put32(out, 0x07064b50);
    Put32(out, 0);
    Put64(out, zip64_offset);
    Put32(out, 1);
  }
  Put32(out, 0x06054b50);
  Put16(out, 0);
  Put16(out, 0);
  Put16(out, zip64_end ? 0xFFFF : entries.size());
  Put16(out, zip64_end ? 0xFFFF : entries.size());
  Put32(out, zip64_end ? 0xFFFFFFFF : directory.size());
  Put32(out, zip64_end ? 0xFFFFFFFF : directory_offset);
  Put16(out, 0);
  return out;
}

void ExpectInvalid(const absl::Status& status, const std::string& fragment) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(fragment));
}

std::string WriteArchive(const std::vector<std::pair<std::string, std::string>>& entries,
                         ZipWriterOptions options = {}) {
  StringWritableFile file;
  ZipWriter writer(file, options);
  for (const auto& [name, data] : entries) EXPECT_TRUE(writer.AddEntry(name, data).ok());
  EXPECT_TRUE(writer.Finish().ok());
  return file.data;
}

// --- writer ---------------------------------------------------------------------------

TEST(ZipWriterTest, RoundTripsStoredEntriesWithDataAlignedTo64Bytes_PytorchSemantics5) {
  const std::vector<std::pair<std::string, std::string>> entries = {
      {
          "archive/data.pkl",
          "\x80\x02}q\x00.",
      },
      {"archive/byteorder", "little"},
      {"archive/data/0", std::string(13, '\x01')},
      {"archive/data/1", ""},
      {"a/very/long/name/" + std::string(100, 'n'), std::string(1000, 'x')},
      {"archive/version", "3\n"},
  };
  const std::string bytes = WriteArchive(entries);
  absl::StatusOr<ZipReader> zip = ZipReader::Open(AsSpan(bytes));
  ASSERT_TRUE(zip.ok()) << zip.status();
  ASSERT_EQ(zip->entries().size(), entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    const ZipEntry& entry = zip->entries()[i];
    EXPECT_EQ(entry.name, entries[i].first);
    EXPECT_EQ(DataOf(*zip, entry), entries[i].second);
    EXPECT_EQ(entry.data_offset % 64, 0u) << entry.name;
    EXPECT_EQ(entry.crc32, Crc(entries[i].second));
    EXPECT_TRUE(zip->VerifyCrc(entry).ok());
    // PyTorch's padding: the local header's extra field is 'FB', u16 length, 'Z's.
    const size_t extra = entry.local_header_offset + 30 + entry.name.size();
    EXPECT_EQ(bytes.substr(extra, 2), "FB") << entry.name;
    const size_t padding =
        static_cast<uint8_t>(bytes[extra + 2]) | (static_cast<uint8_t>(bytes[extra + 3]) << 8);
    EXPECT_EQ(extra + 4 + padding, entry.data_offset);
    EXPECT_EQ(bytes.substr(extra + 4, padding), std::string(padding, 'Z'));
  }
  ASSERT_NE(zip->Find("archive/version"), nullptr);
  EXPECT_EQ(zip->Find("archive/nope"), nullptr);
  // No ZIP64 records where everything fits 32 bits.
  EXPECT_EQ(bytes.find(std::string("PK\x06\x06", 4)), std::string::npos);
}

TEST(ZipWriterTest, ForcedZip64WritesExtraFieldsAndZip64EndRecords_PytorchSemantics5) {
  const std::vector<std::pair<std::string, std::string>> entries = {{"archive/data/0", "abcdefgh"},
                                                                    {"archive/version", "3\n"}};
  const std::string bytes = WriteArchive(entries, ZipWriterOptions{.force_zip64 = true});
  EXPECT_NE(bytes.find(std::string("PK\x06\x06", 4)), std::string::npos);
  EXPECT_NE(bytes.find(std::string("PK\x06\x07", 4)), std::string::npos);
  // The classic end record defers to the ZIP64 one.
  const std::string end = bytes.substr(bytes.size() - 22);
  EXPECT_EQ(end.substr(8, 4), "\xFF\xFF\xFF\xFF");
  EXPECT_EQ(end.substr(12, 8), std::string(8, '\xFF'));
  absl::StatusOr<ZipReader> zip = ZipReader::Open(AsSpan(bytes));
  ASSERT_TRUE(zip.ok()) << zip.status();
  ASSERT_EQ(zip->entries().size(), 2u);
  for (size_t i = 0; i < entries.size(); ++i) {
    EXPECT_EQ(zip->entries()[i].name, entries[i].first);
    EXPECT_EQ(DataOf(*zip, zip->entries()[i]), entries[i].second);
    EXPECT_EQ(zip->entries()[i].data_offset % 64, 0u);
    EXPECT_TRUE(zip->VerifyCrc(zip->entries()[i]).ok());
  }
}

TEST(ZipWriterTest, RefusesBadNamesAndUseAfterFinish_PytorchSemantics5) {
  StringWritableFile file;
  ZipWriter writer(file);
  ExpectInvalid(writer.AddEntry("", "x"), "empty");
  ExpectInvalid(writer.AddEntry(std::string("a\0b", 3), "x"), "NUL");
  ExpectInvalid(writer.AddEntry(std::string(70000, 'n'), "x"), "exceeds 65535");
  ASSERT_TRUE(writer.AddEntry("a", "x").ok());
  ExpectInvalid(writer.AddEntry("a", "y"), "written twice");
  ASSERT_TRUE(writer.Finish().ok());
  EXPECT_EQ(writer.AddEntry("b", "x").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(writer.Finish().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ZipWriterTest, AWriteErrorStopsTheWriter_PytorchSemantics5) {
  FailingFile file;
  ZipWriter writer(file);
  EXPECT_TRUE(writer.AddEntry("a", "x").ok());
  EXPECT_EQ(writer.AddEntry("b", std::string(200, 'y')).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(writer.Finish().code(), absl::StatusCode::kResourceExhausted);
}

// --- reader ---------------------------------------------------------------------------

TEST(ZipReaderTest, ReadsDataDescriptorsWithZeroedLocalSizes_PytorchSemantics5) {
  const std::string bytes = BuildZip({{.name = "m/data.pkl", .data = "hello", .descriptor = true},
                                      {.name = "m/version", .data = "3\n", .descriptor = true}});
  absl::StatusOr<ZipReader> zip = ZipReader::Open(AsSpan(bytes));
  ASSERT_TRUE(zip.ok()) << zip.status();
  ASSERT_EQ(zip->entries().size(), 2u);
  EXPECT_EQ(DataOf(*zip, zip->entries()[0]), "hello");
  EXPECT_EQ(DataOf(*zip, zip->entries()[1]), "3\n");
  EXPECT_TRUE(zip->VerifyCrc(zip->entries()[0]).ok());
}

TEST(ZipReaderTest, ReadsHandBuiltZip64Archives_PytorchSemantics5) {
  for (bool descriptor : {false, true}) {
    const std::string bytes =
        BuildZip({{.name = "a/x", .data = "0123456789", .descriptor = descriptor, .zip64 = true},
                  {.name = "a/y", .data = "", .descriptor = descriptor, .zip64 = true}},
                 /*zip64_end=*/true);
    absl::StatusOr<ZipReader> zip = ZipReader::Open(AsSpan(bytes));
    ASSERT_TRUE(zip.ok()) << zip.status();
    ASSERT_EQ(zip->entries().size(), 2u);
    EXPECT_EQ(DataOf(*zip, zip->entries()[0]), "0123456789");
    EXPECT_EQ(zip->entries()[1].size, 0u);
  }
}

TEST(ZipReaderTest, RefusesCompressedAndEncryptedEntries_PytorchSemantics5) {
  ExpectInvalid(
      ZipReader::Open(AsSpan(BuildZip({{.name = "a/x", .data = "zz", .method = 8}}))).status(),
      "is compressed (method 8, deflate); paramd reads only stored");
  ExpectInvalid(
      ZipReader::Open(AsSpan(BuildZip({{.name = "a/x", .data = "zz", .flags = 1}}))).status(),
      "is encrypted");
}

TEST(ZipReaderTest, RefusesInconsistentArchives_PytorchSemantics5) {
  ExpectInvalid(ZipReader::Open(
                    AsSpan(BuildZip({{.name = "a/x", .data = "1"}, {.name = "a/x", .data = "2"}})))
                    .status(),
                "appears more than once");
  ExpectInvalid(
      ZipReader::Open(AsSpan(BuildZip({{.name = "a/x", .data = "1", .local_name = "a/y"}})))
          .status(),
      "in its local header");
  ExpectInvalid(
      ZipReader::Open(AsSpan(BuildZip({{.name = std::string("a\0x", 3), .data = "1"}}))).status(),
      "NUL byte");
  ExpectInvalid(ZipReader::Open(AsSpan(std::string("PK\x03\x04 not a zip at all", 24))).status(),
                "no end of central directory record");
  ExpectInvalid(ZipReader::Open(AsSpan(std::string("PK"))).status(), "too few");

  // A local header CRC that disagrees with the central directory.
  std::string bytes = BuildZip({{.name = "a/x", .data = "abc"}});
  bytes[14] ^= 0x55;
  ExpectInvalid(ZipReader::Open(AsSpan(bytes)).status(), "disagrees");

  // Data that no longer matches its CRC is caught by VerifyCrc.
  bytes = BuildZip({{.name = "a/x", .data = "abc"}});
  bytes[30 + 3] = 'X';
  absl::StatusOr<ZipReader> zip = ZipReader::Open(AsSpan(bytes));
  ASSERT_TRUE(zip.ok()) << zip.status();
  ExpectInvalid(zip->VerifyCrc(zip->entries()[0]), "fails its CRC-32 check");

  // The end record counts more entries than the directory holds.
  bytes = BuildZip({{.name = "a/x", .data = "abc"}});
  bytes[bytes.size() - 12] = 2;
  bytes[bytes.size() - 14] = 2;
  ExpectInvalid(ZipReader::Open(AsSpan(bytes)).status(), "cannot hold them");

  // A ZIP64 central entry whose extra field lacks the values its 0xFFFFFFFF fields defer to.
  bytes = BuildZip({{.name = "a/x", .data = "abc", .zip64 = true}}, true);
  const size_t central = bytes.find(std::string("PK\x01\x02", 4));
  bytes[central + 46 + 3 + 2] = 8;  // the ZIP64 field's length: 24 -> 8
  ExpectInvalid(ZipReader::Open(AsSpan(bytes)).status(), "");
}

TEST(ZipReaderTest, EveryTruncationIsRefusedWithoutReadingOutOfBounds_PytorchSemantics5) {
  for (bool zip64 : {false, true}) {
    const std::string bytes =
        WriteArchive({{"archive/data.pkl", "pickle"}, {"archive/data/0", std::string(100, 'd')}},
                     ZipWriterOptions{.force_zip64 = zip64});
    for (size_t length = 0; length < bytes.size(); ++length) {
      // A copy of exactly `length` bytes, so that a read past it is a real overrun.
      const std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + length);
      absl::Status status = ZipReader::Open(absl::MakeConstSpan(prefix)).status();
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << length << ": " << status;
    }
  }
}

TEST(ZipReaderTest, CorruptBytesAreRefusedOrReadWithinBounds_PytorchSemantics5) {
  const std::string bytes =
      WriteArchive({{"archive/data.pkl", "pickle"}, {"archive/data/0", std::string(40, 'd')}},
                   ZipWriterOptions{.force_zip64 = true});
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (uint8_t flip : {0x01, 0x80, 0xFF}) {
      std::vector<uint8_t> corrupt(bytes.begin(), bytes.end());
      corrupt[i] ^= flip;
      absl::StatusOr<ZipReader> zip = ZipReader::Open(absl::MakeConstSpan(corrupt));
      if (!zip.ok()) {
        EXPECT_EQ(zip.status().code(), absl::StatusCode::kInvalidArgument);
        continue;
      }
      for (const ZipEntry& entry : zip->entries()) {
        EXPECT_LE(entry.data_offset + entry.size, corrupt.size());
        (void)zip->VerifyCrc(entry);
      }
    }
  }
}

TEST(ZipReaderTest, AcceptsAnEmptyArchiveAndAComment_PytorchSemantics5) {
  std::string empty = WriteArchive({});
  absl::StatusOr<ZipReader> zip = ZipReader::Open(AsSpan(empty));
  ASSERT_TRUE(zip.ok()) << zip.status();
  EXPECT_TRUE(zip->entries().empty());

  std::string commented = WriteArchive({{"a/x", "1"}});
  commented[commented.size() - 2] = 5;
  commented += "hello";
  zip = ZipReader::Open(AsSpan(commented));
  ASSERT_TRUE(zip.ok()) << zip.status();
  EXPECT_EQ(zip->entries().size(), 1u);
}

}  // namespace
}  // namespace paramd::io
