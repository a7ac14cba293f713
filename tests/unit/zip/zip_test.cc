// The ZIP reader and writer under torch.save files (pytorch-semantics.md §5.1) and .npz
// files: stored and deflated entries, 64-byte aligned data, ZIP64, data descriptors (read and
// streamed), archives Python's zipfile wrote, and every malformed input refused.
#include "base/zip/zip.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/unit/npz_archives.h"

namespace paramd::zip {
namespace {

using ::testing::HasSubstr;

absl::Span<const uint8_t> AsSpan(const std::string& bytes) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

// A sink that fails once it would hold more than `limit` bytes.
class FailingSink : public Sink {
 public:
  absl::Status Append(absl::Span<const uint8_t> bytes) override {
    if (inner.size() + bytes.size() > limit) return absl::ResourceExhaustedError("disk full");
    return inner.Append(bytes);
  }
  uint64_t size() const override { return inner.size(); }

  StringSink inner;
  size_t limit = 100;
};

std::string DataOf(const Reader& zip, const Entry& entry) {
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

// An archive assembled field by field, independent of Writer, so that the reader is tested
// against layouts Writer never produces: data descriptors with zeroed local sizes (as
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
                         WriterOptions options = {}) {
  StringSink file;
  Writer writer(file, options);
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
  absl::StatusOr<Reader> zip = Reader::Open(AsSpan(bytes));
  ASSERT_TRUE(zip.ok()) << zip.status();
  ASSERT_EQ(zip->entries().size(), entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& entry = zip->entries()[i];
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
  const std::string bytes = WriteArchive(entries, WriterOptions{.force_zip64 = true});
  EXPECT_NE(bytes.find(std::string("PK\x06\x06", 4)), std::string::npos);
  EXPECT_NE(bytes.find(std::string("PK\x06\x07", 4)), std::string::npos);
  // The classic end record defers to the ZIP64 one.
  const std::string end = bytes.substr(bytes.size() - 22);
  EXPECT_EQ(end.substr(8, 4), "\xFF\xFF\xFF\xFF");
  EXPECT_EQ(end.substr(12, 8), std::string(8, '\xFF'));
  absl::StatusOr<Reader> zip = Reader::Open(AsSpan(bytes));
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
  StringSink file;
  Writer writer(file);
  ExpectInvalid(writer.AddEntry("", "x"), "empty");
  ExpectInvalid(writer.AddEntry(std::string("a\0b", 3), "x"), "NUL");
  ExpectInvalid(writer.AddEntry(std::string(70000, 'n'), "x"), "exceeds 65535");
  ExpectInvalid(writer.AddEntry("m", "x", static_cast<Method>(12)), "neither stored");
  ASSERT_TRUE(writer.AddEntry("a", "x").ok());
  ExpectInvalid(writer.AddEntry("a", "y"), "written twice");
  ASSERT_TRUE(writer.Finish().ok());
  EXPECT_EQ(writer.AddEntry("b", "x").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(writer.Finish().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(ZipWriterTest, AWriteErrorStopsTheWriter_PytorchSemantics5) {
  FailingSink file;
  Writer writer(file);
  EXPECT_TRUE(writer.AddEntry("a", "x").ok());
  EXPECT_EQ(writer.AddEntry("b", std::string(200, 'y')).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(writer.Finish().code(), absl::StatusCode::kResourceExhausted);
}

// --- reader ---------------------------------------------------------------------------

TEST(ZipReaderTest, ReadsDataDescriptorsWithZeroedLocalSizes_PytorchSemantics5) {
  const std::string bytes = BuildZip({{.name = "m/data.pkl", .data = "hello", .descriptor = true},
                                      {.name = "m/version", .data = "3\n", .descriptor = true}});
  absl::StatusOr<Reader> zip = Reader::Open(AsSpan(bytes));
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
    absl::StatusOr<Reader> zip = Reader::Open(AsSpan(bytes));
    ASSERT_TRUE(zip.ok()) << zip.status();
    ASSERT_EQ(zip->entries().size(), 2u);
    EXPECT_EQ(DataOf(*zip, zip->entries()[0]), "0123456789");
    EXPECT_EQ(zip->entries()[1].size, 0u);
  }
}

TEST(ZipReaderTest, RefusesUnsupportedMethodsAndEncryptedEntries_PytorchSemantics5) {
  // Deflate is read (np.savez_compressed); torch_checkpoint_test covers the torch reader's
  // refusal of compressed records.
  absl::StatusOr<Reader> zip =
      Reader::Open(AsSpan(BuildZip({{.name = "a/x", .data = "zz", .method = 8}})));
  ASSERT_TRUE(zip.ok()) << zip.status();
  EXPECT_EQ(zip->entries()[0].method, Method::kDeflate);
  ExpectInvalid(zip->Extract(zip->entries()[0]).status(), "corrupt deflate data");
  ExpectInvalid(
      Reader::Open(AsSpan(BuildZip({{.name = "a/x", .data = "zz", .method = 12}}))).status(),
      "compression method 12 is not supported");
  ExpectInvalid(
      Reader::Open(AsSpan(BuildZip({{.name = "a/x", .data = "zz", .flags = 1}}))).status(),
      "is encrypted; encrypted members are not supported");
}

TEST(ZipReaderTest, RefusesInconsistentArchives_PytorchSemantics5) {
  ExpectInvalid(
      Reader::Open(AsSpan(BuildZip({{.name = "a/x", .data = "1"}, {.name = "a/x", .data = "2"}})))
          .status(),
      "appears more than once");
  ExpectInvalid(
      Reader::Open(AsSpan(BuildZip({{.name = "a/x", .data = "1", .local_name = "a/y"}}))).status(),
      "in its local header");
  ExpectInvalid(
      Reader::Open(AsSpan(BuildZip({{.name = std::string("a\0x", 3), .data = "1"}}))).status(),
      "NUL byte");
  ExpectInvalid(Reader::Open(AsSpan(std::string("PK\x03\x04 not a zip at all", 24))).status(),
                "no end of central directory record");
  ExpectInvalid(Reader::Open(AsSpan(std::string("PK"))).status(), "too few");

  // A local header CRC that disagrees with the central directory.
  std::string bytes = BuildZip({{.name = "a/x", .data = "abc"}});
  bytes[14] ^= 0x55;
  ExpectInvalid(Reader::Open(AsSpan(bytes)).status(), "disagrees");

  // Data that no longer matches its CRC is caught by VerifyCrc.
  bytes = BuildZip({{.name = "a/x", .data = "abc"}});
  bytes[30 + 3] = 'X';
  absl::StatusOr<Reader> zip = Reader::Open(AsSpan(bytes));
  ASSERT_TRUE(zip.ok()) << zip.status();
  ExpectInvalid(zip->VerifyCrc(zip->entries()[0]), "fails its CRC-32 check");

  // The end record counts more entries than the directory holds.
  bytes = BuildZip({{.name = "a/x", .data = "abc"}});
  bytes[bytes.size() - 12] = 2;
  bytes[bytes.size() - 14] = 2;
  ExpectInvalid(Reader::Open(AsSpan(bytes)).status(), "cannot hold them");

  // A ZIP64 central entry whose extra field lacks the values its 0xFFFFFFFF fields defer to.
  bytes = BuildZip({{.name = "a/x", .data = "abc", .zip64 = true}}, true);
  const size_t central = bytes.find(std::string("PK\x01\x02", 4));
  bytes[central + 46 + 3 + 2] = 8;  // the ZIP64 field's length: 24 -> 8
  ExpectInvalid(Reader::Open(AsSpan(bytes)).status(), "");
}

TEST(ZipReaderTest, EveryTruncationIsRefusedWithoutReadingOutOfBounds_PytorchSemantics5) {
  for (bool zip64 : {false, true}) {
    const std::string bytes =
        WriteArchive({{"archive/data.pkl", "pickle"}, {"archive/data/0", std::string(100, 'd')}},
                     WriterOptions{.force_zip64 = zip64});
    for (size_t length = 0; length < bytes.size(); ++length) {
      // A copy of exactly `length` bytes, so that a read past it is a real overrun.
      const std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + length);
      absl::Status status = Reader::Open(absl::MakeConstSpan(prefix)).status();
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << length << ": " << status;
    }
  }
}

TEST(ZipReaderTest, CorruptBytesAreRefusedOrReadWithinBounds_PytorchSemantics5) {
  const std::string bytes =
      WriteArchive({{"archive/data.pkl", "pickle"}, {"archive/data/0", std::string(40, 'd')}},
                   WriterOptions{.force_zip64 = true});
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (uint8_t flip : {0x01, 0x80, 0xFF}) {
      std::vector<uint8_t> corrupt(bytes.begin(), bytes.end());
      corrupt[i] ^= flip;
      absl::StatusOr<Reader> zip = Reader::Open(absl::MakeConstSpan(corrupt));
      if (!zip.ok()) {
        EXPECT_EQ(zip.status().code(), absl::StatusCode::kInvalidArgument);
        continue;
      }
      for (const Entry& entry : zip->entries()) {
        EXPECT_LE(entry.data_offset + entry.size, corrupt.size());
        (void)zip->VerifyCrc(entry);
      }
    }
  }
}

// Open's `checked` sees each entry once its local header is checked, in central directory
// order, with where its data starts: what a caller needs to let the header's pages go.
TEST(ZipReaderTest, OpenReportsEachEntryOnceItsLocalHeaderIsChecked) {
  const std::string bytes = WriteArchive({{"a", "xyz"}, {"b/c", ""}, {"d", std::string(70, 'd')}});
  std::vector<Entry> seen;
  absl::StatusOr<Reader> zip =
      Reader::Open(AsSpan(bytes), [&](const Entry& entry) { seen.push_back(entry); });
  ASSERT_TRUE(zip.ok()) << zip.status();
  ASSERT_EQ(seen.size(), zip->entries().size());
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_EQ(seen[i].name, zip->entries()[i].name);
    EXPECT_EQ(seen[i].local_header_offset, zip->entries()[i].local_header_offset);
    EXPECT_EQ(seen[i].data_offset, zip->entries()[i].data_offset);
  }
  // A bad local header stops Open before that entry is reported.
  std::string broken = bytes;
  broken[zip->entries()[1].local_header_offset] = 'X';
  seen.clear();
  ExpectInvalid(Reader::Open(AsSpan(broken), [&](const Entry& entry) { seen.push_back(entry); })
                    .status(),
                "has no local header");
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0].name, "a");
}

TEST(ZipReaderTest, AcceptsAnEmptyArchiveAndAComment_PytorchSemantics5) {
  std::string empty = WriteArchive({});
  absl::StatusOr<Reader> zip = Reader::Open(AsSpan(empty));
  ASSERT_TRUE(zip.ok()) << zip.status();
  EXPECT_TRUE(zip->entries().empty());

  std::string commented = WriteArchive({{"a/x", "1"}});
  commented[commented.size() - 2] = 5;
  commented += "hello";
  zip = Reader::Open(AsSpan(commented));
  ASSERT_TRUE(zip.ok()) << zip.status();
  EXPECT_EQ(zip->entries().size(), 1u);
}

// --- archives other writers made ----------------------------------------------------------

using test_data::Bytes;
using test_data::kNpzDeflated;
using test_data::kNpzStored;
using test_data::kNpzZip64;

TEST(ZipReaderTest, ReadsArchivesPythonsZipfileWrote) {
  for (const std::string& bytes : {Bytes(kNpzStored), Bytes(kNpzDeflated)}) {
    absl::StatusOr<Reader> zip = Reader::Open(AsSpan(bytes));
    ASSERT_TRUE(zip.ok()) << zip.status();
    ASSERT_EQ(zip->entries().size(), 2u);
    EXPECT_EQ(zip->entries()[0].name, "weight.npy");
    EXPECT_EQ(zip->entries()[1].name, "bias.npy");
    const bool deflated = bytes == Bytes(kNpzDeflated);
    for (const Entry& entry : zip->entries()) {
      EXPECT_EQ(entry.method, deflated ? Method::kDeflate : Method::kStored);
      EXPECT_EQ(entry.compressed_size < entry.size, deflated) << entry.name;
      EXPECT_TRUE(zip->VerifyCrc(entry).ok()) << entry.name;
      absl::StatusOr<std::string> content = zip->Extract(entry);
      ASSERT_TRUE(content.ok()) << content.status();
      EXPECT_EQ(content->size(), entry.size);
      EXPECT_EQ(content->substr(0, 6), "\x93NUMPY");
      if (!deflated) {
        EXPECT_EQ(*content, DataOf(*zip, entry));
      }
    }
    EXPECT_EQ(zip->entries()[0].size, 136u);
    EXPECT_EQ(zip->entries()[1].size, 152u);
  }
  absl::StatusOr<Reader> zip = Reader::Open(AsSpan(Bytes(kNpzZip64)));
  ASSERT_TRUE(zip.ok()) << zip.status();
  ASSERT_EQ(zip->entries().size(), 1u);
  EXPECT_EQ(zip->entries()[0].name, "x.npy");
  EXPECT_EQ(zip->Extract(zip->entries()[0]).value().substr(128), "\x04\x05");
}

TEST(ZipReaderTest, ExtractNamesCorruptDataWithoutTheEntry) {
  std::string stored = Bytes(kNpzStored);
  stored[stored.find("\x93NUMPY") + 130] ^= 0x01;
  absl::StatusOr<Reader> zip = Reader::Open(AsSpan(stored));
  ASSERT_TRUE(zip.ok()) << zip.status();
  const absl::Status extracted = zip->Extract(zip->entries()[0]).status();
  ExpectInvalid(extracted, "CRC-32 mismatch");
  EXPECT_THAT(std::string(extracted.message()), ::testing::Not(HasSubstr("weight.npy")));
  ExpectInvalid(zip->VerifyCrc(zip->entries()[0]), "'weight.npy' fails its CRC-32 check");

  std::string deflated = Bytes(kNpzDeflated);
  deflated[deflated.find("weight.npy") + 10 + 20 + 5] ^= 0x55;  // inside the deflate stream
  zip = Reader::Open(AsSpan(deflated));
  ASSERT_TRUE(zip.ok()) << zip.status();
  EXPECT_EQ(zip->Extract(zip->entries()[0]).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(zip->VerifyCrc(zip->entries()[0]).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(zip->Extract(zip->entries()[1]).ok());
}

TEST(ZipReaderTest, ARecordedSizeDeflateCannotReachIsRefusedBeforeAllocating) {
  // 2 bytes of deflate (an empty stream), then an entry that claims a terabyte from them.
  const std::string bytes =
      BuildZip({{.name = "x", .data = std::string("\x03\x00", 2), .method = 8}});
  absl::StatusOr<Reader> zip = Reader::Open(AsSpan(bytes));
  ASSERT_TRUE(zip.ok()) << zip.status();
  Entry lying = zip->entries()[0];
  lying.size = uint64_t{1} << 40;
  ExpectInvalid(zip->Extract(lying).status(), "is impossible for 2 compressed bytes");
  lying.size = 0;
  absl::StatusOr<std::string> empty = zip->Extract(lying);
  ExpectInvalid(empty.status(), "CRC-32 mismatch");  // BuildZip's CRC is of the raw bytes
}

// --- deflate and streamed entries -------------------------------------------------------

std::string Repetitive(size_t n) {
  std::string text;
  for (size_t i = 0; text.size() < n; ++i) absl::StrAppend(&text, "tensor ", i % 17, "; ");
  text.resize(n);
  return text;
}

TEST(ZipWriterTest, DeflatedEntriesRoundTripAndInflateWithZlib) {
  const std::vector<std::pair<std::string, std::string>> entries = {
      {"a.txt", Repetitive(100000)}, {"empty", ""}, {"b.bin", std::string(3, '\x7F')}};
  StringSink sink;
  Writer writer(sink);
  for (const auto& [name, data] : entries) {
    ASSERT_TRUE(writer.AddEntry(name, data, Method::kDeflate).ok());
  }
  ASSERT_TRUE(writer.Finish().ok());
  absl::StatusOr<Reader> zip = Reader::Open(AsSpan(sink.data));
  ASSERT_TRUE(zip.ok()) << zip.status();
  ASSERT_EQ(zip->entries().size(), entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& entry = zip->entries()[i];
    EXPECT_EQ(entry.method, Method::kDeflate);
    EXPECT_EQ(entry.size, entries[i].second.size());
    EXPECT_EQ(entry.crc32, Crc(entries[i].second));
    EXPECT_EQ(zip->Extract(entry).value(), entries[i].second);
    EXPECT_TRUE(zip->VerifyCrc(entry).ok());
    // zlib's own raw inflate agrees.
    std::string inflated(entry.size + 1, '\0');
    z_stream stream{};
    ASSERT_EQ(inflateInit2(&stream, -MAX_WBITS), Z_OK);
    const absl::Span<const uint8_t> data = zip->Data(entry);
    stream.next_in = const_cast<Bytef*>(data.data());
    stream.avail_in = static_cast<uInt>(data.size());
    stream.next_out = reinterpret_cast<Bytef*>(inflated.data());
    stream.avail_out = static_cast<uInt>(inflated.size());
    EXPECT_EQ(inflate(&stream, Z_FINISH), Z_STREAM_END);
    inflated.resize(stream.total_out);
    inflateEnd(&stream);
    EXPECT_EQ(inflated, entries[i].second);
  }
  EXPECT_LT(zip->entries()[0].compressed_size, 10000u);
}

// VerifyCrcs cuts large stored entries into pieces checked on several threads: every
// piece boundary, an empty entry and a deflated one still verify, and a corruption is found
// wherever it lies, reported for the first corrupt entry in central directory order.
TEST(ZipReaderTest, VerifyCrcsChecksEveryPieceOnEveryThreadCount) {
  std::string large(40 << 20, '\0');
  for (size_t i = 0; i < large.size(); ++i) large[i] = static_cast<char>((i * 2654435761u) >> 13);
  StringSink sink;
  Writer writer(sink);
  ASSERT_TRUE(writer.AddEntry("small", std::string(100, 's')).ok());
  ASSERT_TRUE(writer.AddEntry("empty", "").ok());
  ASSERT_TRUE(writer.AddEntry("large", large).ok());
  ASSERT_TRUE(writer.AddEntry("deflated", Repetitive(100000), Method::kDeflate).ok());
  ASSERT_TRUE(writer.AddEntry("tail", std::string((8 << 20) + 1, 't')).ok());
  ASSERT_TRUE(writer.Finish().ok());
  std::string bytes = std::move(sink.data);
  for (int threads : {0, 1, 2, 5}) {
    absl::StatusOr<Reader> zip = Reader::Open(AsSpan(bytes));
    ASSERT_TRUE(zip.ok()) << zip.status();
    EXPECT_TRUE(zip->VerifyCrcs(threads).ok()) << threads;
  }
  absl::StatusOr<Reader> zip = Reader::Open(AsSpan(bytes));
  ASSERT_TRUE(zip.ok());
  const Entry* large_entry = zip->Find("large");
  const Entry* tail_entry = zip->Find("tail");
  // The last byte of "tail" (a 1-byte last piece); then also one byte in the third 8 MiB
  // piece of "large", which comes first in the directory.
  const std::pair<uint64_t, std::string> corruptions[] = {
      {tail_entry->data_offset + tail_entry->size - 1, "'tail'"},
      {large_entry->data_offset + (17 << 20) + 3, "'large'"}};
  for (const auto& [offset, reported] : corruptions) {
    bytes[offset] = static_cast<char>(bytes[offset] ^ 0x20);
    for (int threads : {1, 3}) {
      absl::StatusOr<Reader> corrupt = Reader::Open(AsSpan(bytes));
      ASSERT_TRUE(corrupt.ok());
      const absl::Status status = corrupt->VerifyCrcs(threads);
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_THAT(status.message(), HasSubstr(reported + " fails its CRC-32 check")) << threads;
    }
  }
}

TEST(ZipWriterTest, StreamedEntriesEndInDataDescriptors) {
  for (bool zip64 : {false, true}) {
    for (Method method : {Method::kStored, Method::kDeflate}) {
      SCOPED_TRACE(absl::StrCat("zip64 ", zip64, ", method ", static_cast<int>(method)));
      const std::string content = Repetitive(70000);
      StringSink sink;
      Writer writer(sink, WriterOptions{.force_zip64 = zip64});
      ASSERT_TRUE(writer.AddEntry("first", "known").ok());
      ASSERT_TRUE(writer.BeginEntry("streamed", method).ok());
      for (size_t at = 0; at < content.size(); at += 30000) {
        ASSERT_TRUE(writer.Write(AsSpan(content.substr(at, 30000))).ok());
      }
      ASSERT_TRUE(writer.EndEntry().ok());
      ASSERT_TRUE(writer.AddEntry("last", "").ok());
      ASSERT_TRUE(writer.Finish().ok());
      EXPECT_EQ(writer.combined_crc32(), Crc("known" + content));

      absl::StatusOr<Reader> zip = Reader::Open(AsSpan(sink.data));
      ASSERT_TRUE(zip.ok()) << zip.status();
      ASSERT_EQ(zip->entries().size(), 3u);
      const Entry& entry = zip->entries()[1];
      EXPECT_EQ(entry.name, "streamed");
      EXPECT_EQ(entry.method, method);
      EXPECT_EQ(entry.data_offset % 64, 0u);
      EXPECT_EQ(zip->Extract(entry).value(), content);
      // The local header: bit 3, zero CRC, sizes zero (all ones under ZIP64).
      const std::string local = sink.data.substr(entry.local_header_offset, 30);
      EXPECT_EQ(local[6] & 8, 8);
      EXPECT_EQ(local.substr(14, 4), std::string(4, '\0'));
      EXPECT_EQ(local.substr(18, 8), std::string(8, zip64 ? '\xFF' : '\0'));
      // The descriptor right after the data: signature, CRC, compressed and full sizes.
      const std::string descriptor =
          sink.data.substr(entry.data_offset + entry.compressed_size, zip64 ? 24 : 16);
      std::string expected;
      Put32(expected, 0x08074b50);
      Put32(expected, Crc(content));
      if (zip64) {
        Put64(expected, entry.compressed_size);
        Put64(expected, content.size());
      } else {
        Put32(expected, entry.compressed_size);
        Put32(expected, content.size());
      }
      EXPECT_EQ(descriptor, expected);
    }
  }
}

TEST(ZipWriterTest, StreamingOutOfOrderIsAFailedPrecondition) {
  StringSink sink;
  Writer writer(sink);
  EXPECT_EQ(writer.Write(AsSpan(std::string("x"))).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(writer.EndEntry().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(writer.BeginEntry("a").ok());
  EXPECT_EQ(writer.AddEntry("b", "x").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(writer.BeginEntry("b").code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(writer.Finish().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(writer.EndEntry().ok());
  ExpectInvalid(writer.BeginEntry("a"), "written twice");
  ASSERT_TRUE(writer.Finish().ok());
}

TEST(ZipWriterTest, WithoutAlignmentAndAsUnixFilesAsPythonsZipfileWrites) {
  StringSink sink;
  Writer writer(sink, WriterOptions{.alignment = 0, .unix_mode = 0100644});
  ASSERT_TRUE(writer.AddEntry("w.npy", "data").ok());
  ASSERT_TRUE(writer.Finish().ok());
  const std::string& bytes = sink.data;
  // No extra field: the name right after the 30-byte header, the data right after it.
  EXPECT_EQ(bytes.substr(28, 2), std::string(2, '\0'));
  EXPECT_EQ(bytes.substr(30, 9), "w.npydata");
  const size_t central = bytes.find(std::string("PK\x01\x02", 4));
  ASSERT_NE(central, std::string::npos);
  EXPECT_EQ(bytes.substr(central + 4, 2), std::string("\x14\x03", 2));       // made by Unix, 2.0
  EXPECT_EQ(bytes.substr(central + 38, 4), std::string("\0\0\xA4\x81", 4));  // 0100644
  absl::StatusOr<Reader> zip = Reader::Open(AsSpan(bytes));
  ASSERT_TRUE(zip.ok()) << zip.status();
  EXPECT_EQ(DataOf(*zip, zip->entries()[0]), "data");
}

TEST(ZipCrcTest, MatchesZlibAndChains) {
  const std::string text = Repetitive(5000);
  const uint32_t zlib_crc =
      static_cast<uint32_t>(crc32(0, reinterpret_cast<const Bytef*>(text.data()), text.size()));
  EXPECT_EQ(Crc(text), zlib_crc);
  EXPECT_EQ(Crc32(AsSpan(text.substr(1234)), Crc(text.substr(0, 1234))), zlib_crc);
  EXPECT_EQ(Crc(""), 0u);
}

}  // namespace
}  // namespace paramd::zip
