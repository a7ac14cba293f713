// paramctl's streamed .npz files (client/cli/npz_stream.h): the writer gives byte for byte
// what SerializeNpz gives whatever the pieces its data arrives in, and the reader hands out
// what ParseNpz reads, chunk by chunk, refusing every malformed, lying or corrupt archive with
// a message naming the file and member, and checking each member's CRC-32 before its last
// piece leaves.
#include "client/cli/npz_stream.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "base/zip/zip.h"
#include "client/cli/mapped_input.h"
#include "client/cli/npy.h"
#include "paramd/tensor.h"
#include "tests/unit/npz_archives.h"

namespace paramd::cli {
namespace {

using paramd::client::DType;
using paramd::client::HostTensor;
using ::testing::HasSubstr;

HostTensor Make(DType dtype, std::vector<int64_t> shape, const std::vector<double>& values) {
  absl::StatusOr<HostTensor> t = HostTensor::FromDoubles(dtype, std::move(shape), values);
  EXPECT_TRUE(t.ok()) << t.status();
  return *t;
}

std::vector<double> Iota(size_t n, double start = 0) {
  std::vector<double> values(n);
  for (size_t i = 0; i < n; ++i) values[i] = start + static_cast<double>(i);
  return values;
}

NamedTensors SeveralTensors() {
  return {
      {"encoder.weight", Make(DType::kFloat32, {2, 3}, Iota(6, -3))},
      {"encoder.bias", Make(DType::kFloat64, {3}, {0.5, 1e-300, -7})},
      {"half", Make(DType::kFloat16, {2}, {0.25, 1024})},
      {"brain", Make(DType::kBFloat16, {3}, {1.5, -2, 3e38})},
      {"steps", Make(DType::kInt64, {}, {12345678901.0})},
      {"i8", Make(DType::kInt8, {2}, {-5, 5})},
      {"mask", Make(DType::kBool, {2, 2}, {1, 0, 0, 1})},
      {"empty", Make(DType::kFloat32, {0, 4}, {})},
      {"big", Make(DType::kInt32, {50000}, Iota(50000, -100))},
  };
}

// What state-dict --out does, with the data in pieces of `piece` bytes.
std::string WriteStreamed(const NamedTensors& tensors, size_t piece) {
  zip::StringSink sink;
  NpzWriter writer(sink);
  for (const auto& [name, tensor] : tensors) {
    HostTensor meta = tensor;
    meta.data.clear();
    EXPECT_TRUE(writer.BeginTensor(name, meta).ok());
    for (size_t at = 0; at < tensor.data.size(); at += piece) {
      EXPECT_TRUE(writer.TensorData(absl::string_view(tensor.data).substr(at, piece)).ok());
    }
    EXPECT_TRUE(writer.EndTensor().ok());
  }
  EXPECT_TRUE(writer.Finish().ok());
  EXPECT_EQ(writer.entries(), tensors.size());
  return std::move(sink.data);
}

TEST(NpzWriterTest, WritesWhatSerializeNpzWritesWhateverThePieces) {
  const NamedTensors tensors = SeveralTensors();
  absl::StatusOr<std::string> whole = SerializeNpz(tensors);
  ASSERT_TRUE(whole.ok()) << whole.status();
  // Odd pieces split bfloat16 elements; 1 MiB is what the daemon sends.
  for (size_t piece : {size_t{1}, size_t{3}, size_t{4096}, size_t{1} << 20}) {
    EXPECT_EQ(WriteStreamed(tensors, piece), *whole) << "pieces of " << piece;
  }
}

// A FIFO or a device cannot seek back to patch a CRC-32 in: each member then carries a data
// descriptor, and the archive reads back to the same tensors.
TEST(NpzWriterTest, WritesInOrderToASinkThatCannotRewrite) {
  struct InOrderSink final : zip::Sink {
    absl::Status Append(absl::Span<const uint8_t> bytes) override {
      data.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      return absl::OkStatus();
    }
    uint64_t size() const override { return data.size(); }
    std::string data;
  };
  const NamedTensors tensors = SeveralTensors();
  InOrderSink sink;
  NpzWriter writer(sink, /*in_order=*/true);
  for (const auto& [name, tensor] : tensors) {
    HostTensor meta = tensor;
    meta.data.clear();
    ASSERT_TRUE(writer.BeginTensor(name, meta).ok());
    for (size_t at = 0; at < tensor.data.size(); at += 4096) {
      ASSERT_TRUE(writer.TensorData(absl::string_view(tensor.data).substr(at, 4096)).ok());
    }
    ASSERT_TRUE(writer.EndTensor().ok());
  }
  ASSERT_TRUE(writer.Finish().ok());
  absl::StatusOr<NamedTensors> read = ParseNpz(sink.data);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ((*read)[i].first, tensors[i].first);
    if (tensors[i].second.dtype != DType::kBFloat16) {
      EXPECT_EQ((*read)[i].second.data, tensors[i].second.data) << tensors[i].first;
    }
  }
}

TEST(NpzWriterTest, RefusesBadAndRepeatedNames) {
  zip::StringSink sink;
  NpzWriter writer(sink);
  const HostTensor meta = Make(DType::kInt8, {0}, {});
  EXPECT_EQ(writer.BeginTensor("", meta).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(writer.BeginTensor("a", meta).ok());
  ASSERT_TRUE(writer.EndTensor().ok());
  absl::Status twice = writer.BeginTensor("a", meta);
  EXPECT_EQ(twice.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(twice.message(), HasSubstr("'a' appears twice"));
}

std::string TempPath(const std::string& name) {
  return absl::StrCat(::testing::TempDir(), "/npz_stream_", getpid(), "_", name);
}

bool Exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

TEST(NpzFileWriterTest, AppearsOnlyWhenCommitted) {
  const std::string path = TempPath("commit.npz");
  const HostTensor t = Make(DType::kInt16, {3}, {1, 2, 3});
  {
    absl::StatusOr<std::unique_ptr<NpzFileWriter>> file = NpzFileWriter::Create(path);
    ASSERT_TRUE(file.ok()) << file.status();
    HostTensor meta = t;
    meta.data.clear();
    ASSERT_TRUE((*file)->BeginTensor("t", meta).ok());
    ASSERT_TRUE((*file)->TensorData(t.data).ok());
    EXPECT_TRUE(Exists(path + ".part"));
    EXPECT_FALSE(Exists(path));
    // Dropped unfinished (a read that failed): nothing is left behind.
  }
  EXPECT_FALSE(Exists(path + ".part"));
  EXPECT_FALSE(Exists(path));

  absl::StatusOr<std::unique_ptr<NpzFileWriter>> file = NpzFileWriter::Create(path);
  ASSERT_TRUE(file.ok());
  HostTensor meta = t;
  meta.data.clear();
  ASSERT_TRUE((*file)->BeginTensor("t", meta).ok());
  ASSERT_TRUE((*file)->TensorData(t.data).ok());
  ASSERT_TRUE((*file)->EndTensor().ok());
  ASSERT_TRUE((*file)->Commit().ok());
  EXPECT_FALSE(Exists(path + ".part"));
  absl::StatusOr<NamedTensors> back = ReadNpz(path);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), 1u);
  EXPECT_EQ((*back)[0].second.data, t.data);
  std::remove(path.c_str());
}

TEST(NpzFileWriterTest, AMissingDirectoryIsNotFound) {
  const std::string path = ::testing::TempDir() + "/npz_stream_no_such_dir/x.npz";
  absl::StatusOr<std::unique_ptr<NpzFileWriter>> file = NpzFileWriter::Create(path);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(file.status().message(), HasSubstr(path));
}

// ---------------------------------------------------------------------------------------
// NpzFileReader

std::string WriteFile(const std::string& name, const std::string& bytes) {
  const std::string path = TempPath(name);
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

// How the reader hands its pieces out: read into a buffer, or lent where it lends them
// (and read where it does not), as SendProduced asks for them.
enum class Pieces { kRead, kLent };

// What LoadStateDictFrom does: every tensor in order, in pieces of `chunk` bytes. `reads`
// counts the pieces handed out before any error, `lent` those of them that were lent.
absl::StatusOr<NamedTensors> ReadAll(NpzFileReader& reader, size_t chunk,
                                     Pieces pieces = Pieces::kRead, int* reads = nullptr,
                                     int* lent = nullptr) {
  NamedTensors out;
  for (size_t i = 0; i < reader.tensors().size(); ++i) {
    HostTensor tensor = reader.tensors()[i].tensor;
    tensor.data.resize(tensor.nbytes());
    for (size_t at = 0; at < tensor.data.size(); at += chunk) {
      const size_t size = std::min(chunk, tensor.data.size() - at);
      absl::StatusOr<const char*> held = pieces == Pieces::kLent
                                             ? reader.Lend(i, at, size)
                                             : absl::StatusOr<const char*>(nullptr);
      if (!held.ok()) return held.status();
      if (*held != nullptr) {
        std::memcpy(tensor.data.data() + at, *held, size);
        if (lent != nullptr) ++*lent;
      } else {
        absl::Status status = reader.Read(i, at, absl::MakeSpan(tensor.data.data() + at, size));
        if (!status.ok()) return status;
      }
      if (reads != nullptr) ++*reads;
    }
    out.emplace_back(reader.tensors()[i].name, std::move(tensor));
  }
  return out;
}

absl::StatusOr<NamedTensors> ReadFileStreamed(const std::string& bytes, size_t chunk,
                                              Pieces pieces = Pieces::kRead, int* reads = nullptr,
                                              int* lent = nullptr) {
  const std::string path = WriteFile("read.npz", bytes);
  absl::StatusOr<std::unique_ptr<NpzFileReader>> reader = NpzFileReader::Open(path);
  std::remove(path.c_str());  // the open descriptor keeps it readable
  if (!reader.ok()) return reader.status();
  return ReadAll(**reader, chunk, pieces, reads, lent);
}

void ExpectSame(const NamedTensors& got, const NamedTensors& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].first, want[i].first);
    EXPECT_EQ(got[i].second.dtype, want[i].second.dtype) << got[i].first;
    EXPECT_EQ(got[i].second.shape, want[i].second.shape) << got[i].first;
    EXPECT_EQ(got[i].second.data, want[i].second.data) << got[i].first;
  }
}

// `npz` read all three ways: streamed in pieces of `chunk` bytes, read or lent, and whole
// by ParseNpz.
void ExpectReadsAsParseNpz(const std::string& npz, size_t chunk) {
  absl::StatusOr<NamedTensors> whole = ParseNpz(npz);
  ASSERT_TRUE(whole.ok()) << whole.status();
  for (Pieces pieces : {Pieces::kRead, Pieces::kLent}) {
    absl::StatusOr<NamedTensors> streamed = ReadFileStreamed(npz, chunk, pieces);
    ASSERT_TRUE(streamed.ok()) << streamed.status();
    ExpectSame(*streamed, *whole);
  }
}

// An .npy file with header text `dict` (padded as np.save pads) and `data`.
std::string Npy(const std::string& dict, const std::string& data) {
  std::string header = dict;
  while ((10 + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY\x01";
  out.push_back('\0');
  out.push_back(static_cast<char>(header.size() & 0xFF));
  out.push_back(static_cast<char>(header.size() >> 8));
  return out + header + data;
}

std::string Zip(const std::vector<std::pair<std::string, std::string>>& members,
                zip::Method method = zip::Method::kStored) {
  zip::StringSink sink;
  zip::Writer writer(sink, zip::WriterOptions{.alignment = 0});
  for (const auto& [name, data] : members) EXPECT_TRUE(writer.AddEntry(name, data, method).ok());
  EXPECT_TRUE(writer.Finish().ok());
  return std::move(sink.data);
}

template <size_t N>
std::string Bytes(const char (&literal)[N]) {
  return std::string(literal, N - 1);
}

TEST(NpzFileReaderTest, ReadsWhatNumPyWroteStoredAndDeflated) {
  ExpectReadsAsParseNpz(Bytes(test_data::kNpzStored), 8);
  ExpectReadsAsParseNpz(Bytes(test_data::kNpzDeflated), 8);
  ExpectReadsAsParseNpz(Bytes(test_data::kNpzZip64), 1);
}

TEST(NpzFileReaderTest, ReadsLargeMembersInChunksStoredAndDeflated) {
  NamedTensors tensors = SeveralTensors();
  tensors.erase(tensors.begin() + 3);  // bfloat16 comes back as float32: compared below
  absl::StatusOr<std::string> npz = SerializeNpz(tensors);
  ASSERT_TRUE(npz.ok());
  for (size_t chunk : {size_t{8}, size_t{4096}, size_t{1} << 20}) {
    ExpectReadsAsParseNpz(*npz, chunk);
  }
  std::vector<std::pair<std::string, std::string>> members;
  for (const auto& [name, tensor] : tensors) members.emplace_back(name + ".npy", *SerializeNpy(tensor));
  ExpectReadsAsParseNpz(Zip(members, zip::Method::kDeflate), 4096);
}

TEST(NpzFileReaderTest, SwapsBigEndianAndReordersFortranOrder) {
  std::string big;  // int32 1..6, big-endian
  for (int v = 1; v <= 6; ++v) big += std::string("\0\0\0", 3) + static_cast<char>(v);
  const std::string npz = Zip({
      {"be.npy", Npy("{'descr': '>i4', 'fortran_order': False, 'shape': (6,), }", big)},
      {"f.npy", Npy("{'descr': '>i4', 'fortran_order': True, 'shape': (2, 3), }", big)},
      {"b.npy", Npy("{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }", std::string("\x00\x07\x01", 3))},
  });
  ExpectReadsAsParseNpz(npz, 8);
  absl::StatusOr<NamedTensors> streamed = ReadFileStreamed(npz, 8);
  ASSERT_TRUE(streamed.ok());
  EXPECT_EQ((*streamed)[1].second.ToDoubles(), (std::vector<double>{1, 3, 5, 2, 4, 6}));
  EXPECT_EQ((*streamed)[2].second.data, std::string("\x00\x01\x01", 3));
}

struct Hostile {
  std::string name;
  std::string npz;
  std::string message;
};

void PatchLE32(std::string& bytes, size_t at, uint32_t value) {
  for (int i = 0; i < 4; ++i) bytes[at + i] = static_cast<char>((value >> (8 * i)) & 0xFF);
}

// Sets a lone entry's uncompressed size in its local and central headers.
std::string WithRecordedSize(std::string npz, uint32_t size) {
  PatchLE32(npz, 22, size);
  PatchLE32(npz, npz.find("PK\x01\x02") + 24, size);
  return npz;
}

TEST(NpzFileReaderTest, RefusesHostileArchivesAtOpen) {
  const std::string member = Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }",
                                 std::string(16, '\x01'));
  const std::string good = Zip({{"w.npy", member}});
  const std::string deflated = Zip({{"w.npy", member}}, zip::Method::kDeflate);
  const std::vector<Hostile> cases = {
      {"empty", "", "not a valid .npz file"},
      {"truncated", good.substr(0, good.size() / 2), "not a valid .npz file"},
      {"not npy", Zip({{"w.npy", "hello"}}), "member 'w.npy': not a .npy file"},
      {"short data", Zip({{"w.npy", member.substr(0, member.size() - 4)}}),
       "member 'w.npy': truncated data: shape (4,) of '<f4' needs 16 bytes"},
      {"long data", Zip({{"w.npy", member + "xxxx"}}), "trailing data"},
      {"huge shape",
       Zip({{"w.npy", Npy("{'descr': '<f8', 'fortran_order': False, 'shape': "
                          "(1099511627776, 1099511627776), }",
                          "")}}),
       "is too large"},
      {"terabyte shape",
       Zip({{"w.npy",
             Npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776,), }", "")}}),
       "needs 8796093022208 bytes"},
      {"dtype", Zip({{"w.npy", Npy("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }",
                                   std::string(8, '\0'))}}),
       "NumPy dtype '<c8' is not supported"},
      {"bomb", WithRecordedSize(deflated, 3000000000u), "is impossible for"},
      {"duplicate keys", Zip({{"a", member}, {"a.npy", member}}), "more than one member is named 'a'"},
  };
  for (const Hostile& c : cases) {
    absl::StatusOr<NamedTensors> read = ReadFileStreamed(c.npz, 8);
    EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(read.status().message(), HasSubstr(c.message)) << c.name;
    EXPECT_THAT(read.status().message(), HasSubstr("npz_stream_")) << c.name;
  }
  absl::StatusOr<std::unique_ptr<NpzFileReader>> missing = NpzFileReader::Open(TempPath("none"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

// Open maps the archive and reads it from its end: a directory or a pipe is refused for what
// it is (mmap(2) would say "No such device"), with what load-state-dict wants instead.
TEST(NpzFileReaderTest, RefusesADirectoryOrAPipeForWhatItIs) {
  absl::StatusOr<std::unique_ptr<NpzFileReader>> dir = NpzFileReader::Open(::testing::TempDir());
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dir.status().message(),
              HasSubstr("is a directory; load-state-dict needs an .npz file (a .safetensors or "
                        ".pt checkpoint"));
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const std::string path = absl::StrCat("/proc/self/fd/", fds[0]);
  absl::StatusOr<std::unique_ptr<NpzFileReader>> piped = NpzFileReader::Open(path);
  close(fds[0]);
  close(fds[1]);
  EXPECT_EQ(piped.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(piped.status().message(),
              HasSubstr("'" + path + "' is a pipe; load-state-dict needs a regular file"));
}

// A member's key travels in a protobuf string field: a name that is not UTF-8 is refused at
// Open, by its number and bytes, rather than left to the serializer and the daemon.
TEST(NpzFileReaderTest, RefusesAMemberNameThatIsNotUtf8ByNumberAndBytes) {
  const std::string member =
      Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", std::string(4, '\x01'));
  const std::string npz = Zip({{"a.npy", member}, {"b_\xff\xfe.npy", member}});
  const std::string path = WriteFile("badutf8.npz", npz);
  absl::StatusOr<std::unique_ptr<NpzFileReader>> reader = NpzFileReader::Open(path);
  absl::StatusOr<NamedTensors> whole = ParseNpz(npz, path);
  std::remove(path.c_str());
  EXPECT_EQ(reader.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(reader.status().message(),
              HasSubstr("member 2 of '" + path +
                        "' has a name that is not UTF-8 (bytes 62 5f ff fe 2e 6e 70 79)"));
  EXPECT_EQ(whole.status(), reader.status());
  // Text beyond ASCII is fine.
  const std::string text = WriteFile("utf8.npz", Zip({{"gr\xc3\xb6\xc3\x9f"
                                                       "e.npy",
                                                       member}}));
  absl::StatusOr<std::unique_ptr<NpzFileReader>> ok = NpzFileReader::Open(text);
  std::remove(text.c_str());
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ((*ok)->tensors()[0].name,
            "gr\xc3\xb6\xc3\x9f"
            "e");
}

TEST(NpzFileReaderTest, ACorruptMemberFailsOnItsLastChunkBeforeHandingItOut) {
  const std::string data(64, '\x02');
  const std::string member =
      Npy("{'descr': '|u1', 'fortran_order': False, 'shape': (64,), }", data);
  std::string stored = Zip({{"a.npy", member}, {"b.npy", member}});
  // A data byte of 'b' flipped: its CRC-32 no longer matches.
  stored[stored.rfind(data) + 60] ^= 0x40;
  for (Pieces pieces : {Pieces::kRead, Pieces::kLent}) {
    int reads = 0;
    absl::StatusOr<NamedTensors> read = ReadFileStreamed(stored, 16, pieces, &reads);
    EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(read.status().message(), HasSubstr("member 'b.npy': CRC-32 mismatch"));
    // All four pieces of 'a' and the first three of 'b' went; b's last never did.
    EXPECT_EQ(reads, 7);
  }
}

// Note [Lent from the file]: a stored member in native order is lent from the mapping; a
// deflated, byte-swapped or Fortran-ordered one is read (and converted) as before.
TEST(NpzFileReaderTest, LendsStoredNativeMembersAndReadsTheRest) {
  const std::string native = Npy("{'descr': '<i4', 'fortran_order': False, 'shape': (8,), }",
                                 std::string(32, '\x01'));
  const std::string swapped = Npy("{'descr': '>i4', 'fortran_order': False, 'shape': (8,), }",
                                  std::string(32, '\x02'));
  const std::string fortran = Npy("{'descr': '<i4', 'fortran_order': True, 'shape': (2, 4), }",
                                  std::string(32, '\x03'));
  const std::string npz = Zip({{"n.npy", native}, {"s.npy", swapped}, {"f.npy", fortran}});
  ExpectReadsAsParseNpz(npz, 8);
  int reads = 0, lent = 0;
  ASSERT_TRUE(ReadFileStreamed(npz, 8, Pieces::kLent, &reads, &lent).ok());
  EXPECT_EQ(reads, 12);
  EXPECT_EQ(lent, 4);  // n.npy's four pieces
  lent = 0;
  ASSERT_TRUE(ReadFileStreamed(Zip({{"n.npy", native}}, zip::Method::kDeflate), 8, Pieces::kLent,
                               &reads, &lent)
                  .ok());
  EXPECT_EQ(lent, 0);
}

// A file cut short while its pages are lent: the touch past its new end raises SIGBUS, and
// paramctl exits with a message instead of dying by the signal (the daemon, whose write
// stream is cut off with it, commits nothing).
TEST(NpzFileReaderDeathTest, AFileCutWhileLentExitsWithAMessage) {
  absl::StatusOr<std::string> npz =
      SerializeNpz({{"x", Make(DType::kFloat32, {16384}, Iota(16384))}});
  ASSERT_TRUE(npz.ok());
  const std::string path = WriteFile("cut.npz", *npz);
  EXPECT_EXIT(
      {
        ExitCleanlyOnBusError();
        absl::StatusOr<std::unique_ptr<NpzFileReader>> reader = NpzFileReader::Open(path);
        if (!reader.ok() || truncate(path.c_str(), 0) != 0) std::_Exit(3);
        (void)(*reader)->Lend(0, 0, 65536);
        std::_Exit(4);
      },
      ::testing::ExitedWithCode(1), "cut.npz' changed while it was being sent");
  std::remove(path.c_str());
}

TEST(NpzFileReaderTest, CorruptOrLyingDeflateStreamsAreRefused) {
  const std::string data(5000, '\x03');
  const std::string member =
      Npy("{'descr': '|u1', 'fortran_order': False, 'shape': (5000,), }", data);
  std::string broken = Zip({{"a.npy", member}}, zip::Method::kDeflate);
  // Cut the stream: its second half zeroed.
  const size_t start = broken.find("a.npy") + 5;
  const size_t end = broken.find("PK\x01\x02");
  for (size_t i = start + (end - start) / 2; i < end; ++i) broken[i] = '\0';
  absl::StatusOr<NamedTensors> read = ReadFileStreamed(broken, 1024);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(read.status().message(), HasSubstr("member 'a.npy'"));

  // A stream holding more than its recorded size (the header's shape agreeing with the
  // record): 5000 bytes of data recorded as 4000.
  const std::string longer =
      Npy("{'descr': '|u1', 'fortran_order': False, 'shape': (4000,), }", data);
  const std::string lying = WithRecordedSize(Zip({{"a.npy", longer}}, zip::Method::kDeflate),
                                             static_cast<uint32_t>(longer.size() - 1000));
  read = ReadFileStreamed(lying, 1024);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(read.status().message(), HasSubstr("more data than the recorded size"));
}

TEST(NpzFileReaderTest, ReadsOutOfOrderAreAFailedPrecondition) {
  absl::StatusOr<std::string> npz = SerializeNpz({{"x", Make(DType::kInt8, {4}, {1, 2, 3, 4})}});
  ASSERT_TRUE(npz.ok());
  const std::string path = WriteFile("order.npz", *npz);
  absl::StatusOr<std::unique_ptr<NpzFileReader>> reader = NpzFileReader::Open(path);
  std::remove(path.c_str());
  ASSERT_TRUE(reader.ok());
  char out[4];
  EXPECT_EQ((*reader)->Read(0, 2, absl::MakeSpan(out, 2)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*reader)->Read(0, 0, absl::MakeSpan(out, 4)).code(), absl::StatusCode::kOk);
  EXPECT_EQ((*reader)->Read(1, 0, absl::MakeSpan(out, 1)).code(),
            absl::StatusCode::kFailedPrecondition);
  // Lend keeps Read's order, and says so the same way.
  EXPECT_EQ((*reader)->Lend(0, 2, 2).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*reader)->Lend(1, 0, 1).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace paramd::cli
