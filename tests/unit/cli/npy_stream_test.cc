// NpyWriter, NpyFileWriter and NpyFileReader: paramctl's get --out FILE.npy and set --in
// FILE.npy, a chunk at a time. The writer must write exactly what WriteNpy writes, whatever
// the pieces; the reader must read exactly what ReadNpy reads and refuse what it refuses.
#include "client/cli/npy_stream.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/zip/zip.h"
#include "client/cli/mapped_input.h"
#include "client/cli/npy.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "paramd/tensor.h"

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

// One tensor of every dtype HostTensor has, odd sizes included.
std::vector<HostTensor> EveryDType() {
  return {
      Make(DType::kFloat32, {2, 3}, Iota(6, -3)),
      Make(DType::kFloat64, {3}, {0.5, 1e-300, -7}),
      Make(DType::kFloat16, {2}, {0.25, 1024}),
      Make(DType::kBFloat16, {3}, {1.5, -2, 3e38}),
      Make(DType::kBFloat16, {7, 3}, Iota(21, -10)),
      Make(DType::kInt64, {}, {12345678901.0}),
      Make(DType::kInt32, {50000}, Iota(50000, -100)),
      Make(DType::kInt16, {3}, {-32768, 0, 300}),
      Make(DType::kInt8, {2}, {-5, 5}),
      Make(DType::kUInt8, {3}, {0, 1, 255}),
      Make(DType::kBool, {2, 2}, {1, 0, 0, 1}),
      Make(DType::kFloat32, {0, 4}, {}),
      Make(DType::kFloat32, {1000000, 0}, {}),  // a header of version 1.0 with growth room
  };
}

std::string TempPath(const std::string& name) {
  return absl::StrCat(::testing::TempDir(), "/npy_stream_", getpid(), "_", name);
}

bool Exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

std::string ReadBytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream bytes;
  bytes << file.rdbuf();
  return bytes.str();
}

std::string WriteBytes(const std::string& name, const std::string& bytes) {
  const std::string path = TempPath(name);
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

HostTensor MetaOf(const HostTensor& tensor) {
  HostTensor meta = tensor;
  meta.data.clear();
  return meta;
}

// What get --out does, with the data in pieces of `piece` bytes.
std::string WriteStreamed(const HostTensor& tensor, size_t piece) {
  zip::StringSink sink;
  NpyWriter writer(sink);
  EXPECT_TRUE(writer.BeginTensor("t", MetaOf(tensor)).ok());
  for (size_t at = 0; at < tensor.data.size(); at += piece) {
    EXPECT_TRUE(writer.TensorData(absl::string_view(tensor.data).substr(at, piece)).ok());
  }
  EXPECT_TRUE(writer.EndTensor().ok());
  EXPECT_TRUE(writer.complete());
  return std::move(sink.data);
}

TEST(NpyWriterTest, WritesWhatWriteNpyWritesForEveryDTypeWhateverThePieces) {
  for (const HostTensor& tensor : EveryDType()) {
    const std::string path = TempPath("whole.npy");
    ASSERT_TRUE(WriteNpy(path, tensor).ok());
    const std::string whole = ReadBytes(path);
    std::remove(path.c_str());
    // Odd pieces split bfloat16 (and every wider) element; 1 MiB is what the daemon sends.
    for (size_t piece : {size_t{1}, size_t{3}, size_t{4096}, size_t{1} << 20}) {
      EXPECT_EQ(WriteStreamed(tensor, piece), whole)
          << DTypeName(tensor.dtype) << " in pieces of " << piece;
    }
  }
}

TEST(NpyWriterTest, RefusesASecondTensorAndDataBeyondOrShortOfTheHeader) {
  const HostTensor t = Make(DType::kInt16, {2}, {1, 2});
  {
    zip::StringSink sink;
    NpyWriter writer(sink);
    ASSERT_TRUE(writer.BeginTensor("a", MetaOf(t)).ok());
    ASSERT_TRUE(writer.TensorData(t.data).ok());
    EXPECT_EQ(writer.TensorData("x").code(), absl::StatusCode::kDataLoss);
    ASSERT_TRUE(writer.EndTensor().ok());
    absl::Status second = writer.BeginTensor("b", MetaOf(t));
    EXPECT_EQ(second.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(second.message(), HasSubstr("'b' would be a second"));
  }
  zip::StringSink sink;
  NpyWriter writer(sink);
  ASSERT_TRUE(writer.BeginTensor("a", MetaOf(t)).ok());
  ASSERT_TRUE(writer.TensorData(absl::string_view(t.data).substr(0, 3)).ok());
  EXPECT_EQ(writer.EndTensor().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(writer.complete());
}

TEST(NpyFileWriterTest, AppearsOnlyWhenCommittedAndNamesItsPath) {
  // Quotes and spaces in the name are the file system's business, not ours.
  const std::string path = TempPath("it's a \"tensor\".npy");
  const HostTensor t = Make(DType::kBFloat16, {3}, {1, 2, 3});
  {
    absl::StatusOr<std::unique_ptr<NpyFileWriter>> file = NpyFileWriter::Create(path);
    ASSERT_TRUE(file.ok()) << file.status();
    ASSERT_TRUE((*file)->BeginTensor("t", MetaOf(t)).ok());
    ASSERT_TRUE((*file)->TensorData(t.data).ok());
    EXPECT_TRUE(Exists(path + ".part"));
    EXPECT_FALSE(Exists(path));
    // Not whole: Commit refuses, and dropping it leaves nothing behind.
    absl::Status early = (*file)->Commit();
    EXPECT_EQ(early.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(early.message(), HasSubstr(path));
  }
  EXPECT_FALSE(Exists(path + ".part"));
  EXPECT_FALSE(Exists(path));
  {
    // A tensor that ends short is refused naming the file, and leaves nothing either.
    absl::StatusOr<std::unique_ptr<NpyFileWriter>> file = NpyFileWriter::Create(path);
    ASSERT_TRUE(file.ok());
    ASSERT_TRUE((*file)->BeginTensor("t", MetaOf(t)).ok());
    ASSERT_TRUE((*file)->TensorData(absl::string_view(t.data).substr(0, 5)).ok());
    absl::Status short_end = (*file)->EndTensor();
    EXPECT_EQ(short_end.code(), absl::StatusCode::kDataLoss);
    EXPECT_THAT(short_end.message(), HasSubstr(path));
  }
  EXPECT_FALSE(Exists(path + ".part"));

  absl::StatusOr<std::unique_ptr<NpyFileWriter>> file = NpyFileWriter::Create(path);
  ASSERT_TRUE(file.ok());
  ASSERT_TRUE((*file)->BeginTensor("t", MetaOf(t)).ok());
  ASSERT_TRUE((*file)->TensorData(t.data).ok());
  ASSERT_TRUE((*file)->EndTensor().ok());
  ASSERT_TRUE((*file)->Commit().ok());
  EXPECT_FALSE(Exists(path + ".part"));
  EXPECT_EQ((*file)->meta().dtype, DType::kBFloat16);
  EXPECT_EQ((*file)->meta().shape, (std::vector<int64_t>{3}));
  absl::StatusOr<HostTensor> back = ReadNpy(path);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->dtype, DType::kFloat32);  // bfloat16 widened, as WriteNpy does
  EXPECT_EQ(back->ToDoubles(), (std::vector<double>{1, 2, 3}));
  std::remove(path.c_str());
}

TEST(NpyFileWriterTest, AMissingDirectoryIsNotFound) {
  const std::string path = ::testing::TempDir() + "/npy_stream_no_such_dir/x.npy";
  absl::StatusOr<std::unique_ptr<NpyFileWriter>> file = NpyFileWriter::Create(path);
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(file.status().message(), HasSubstr(path));
}

// ---------------------------------------------------------------------------------------
// NpyFileReader

// How the reader hands its pieces out: read into a buffer, or lent where it lends them
// (and read where it does not), as SendProduced asks for them.
enum class Pieces { kRead, kLent };

// What SetTensorFrom does: the tensor in order, in pieces of `chunk` bytes; `lent` counts
// the pieces that were lent.
absl::StatusOr<HostTensor> ReadAll(NpyFileReader& reader, size_t chunk,
                                   Pieces pieces = Pieces::kRead, int* lent = nullptr) {
  if (reader.tensors().size() != 1) return absl::InternalError("not one tensor");
  HostTensor tensor = reader.tensors()[0].tensor;
  tensor.data.resize(tensor.nbytes());
  for (size_t at = 0; at < tensor.data.size(); at += chunk) {
    const size_t size = std::min(chunk, tensor.data.size() - at);
    absl::StatusOr<const char*> held = pieces == Pieces::kLent
                                           ? reader.Lend(0, at, size)
                                           : absl::StatusOr<const char*>(nullptr);
    if (!held.ok()) return held.status();
    if (*held != nullptr) {
      std::memcpy(tensor.data.data() + at, *held, size);
      if (lent != nullptr) ++*lent;
      continue;
    }
    absl::Status status = reader.Read(0, at, absl::MakeSpan(tensor.data.data() + at, size));
    if (!status.ok()) return status;
  }
  return tensor;
}

absl::StatusOr<HostTensor> ReadStreamed(const std::string& bytes, size_t chunk,
                                        Pieces pieces = Pieces::kRead, int* lent = nullptr) {
  const std::string path = WriteBytes("read.npy", bytes);
  absl::StatusOr<std::unique_ptr<NpyFileReader>> reader = NpyFileReader::Open(path);
  std::remove(path.c_str());  // the open descriptor keeps it readable
  if (!reader.ok()) return reader.status();
  return ReadAll(**reader, chunk, pieces, lent);
}

// `npy` read all three ways: streamed in pieces of `chunk` bytes, read or lent, and whole
// by ParseNpy.
void ExpectReadsAsParseNpy(const std::string& npy, size_t chunk) {
  absl::StatusOr<HostTensor> whole = ParseNpy(npy);
  ASSERT_TRUE(whole.ok()) << whole.status();
  for (Pieces pieces : {Pieces::kRead, Pieces::kLent}) {
    absl::StatusOr<HostTensor> streamed = ReadStreamed(npy, chunk, pieces);
    ASSERT_TRUE(streamed.ok()) << streamed.status();
    EXPECT_EQ(streamed->dtype, whole->dtype);
    EXPECT_EQ(streamed->shape, whole->shape);
    EXPECT_EQ(streamed->data, whole->data);
  }
}

// An .npy file of format `major`.0 with header text `dict` (padded as np.save pads) and
// `data`.
std::string Npy(const std::string& dict, const std::string& data, int major = 1) {
  const size_t length_bytes = major == 1 ? 2 : 4;
  std::string header = dict;
  while ((8 + length_bytes + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back(static_cast<char>(major));
  out.push_back('\0');
  for (size_t i = 0; i < length_bytes; ++i) {
    out.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xFF));
  }
  return out + header + data;
}

std::string BigEndianInt32s(int count) {
  std::string big;
  for (int v = 1; v <= count; ++v) big += std::string("\0\0\0", 3) + static_cast<char>(v);
  return big;
}

TEST(NpyFileReaderTest, ReadsWhatWriteNpyWroteForEveryDTypeInAnyChunking) {
  for (HostTensor tensor : EveryDType()) {
    if (tensor.dtype == DType::kBFloat16) continue;  // comes back float32, checked above
    absl::StatusOr<std::string> npy = SerializeNpy(tensor);
    ASSERT_TRUE(npy.ok());
    for (size_t chunk : {size_t{8}, size_t{4096}, size_t{1} << 20}) {
      ExpectReadsAsParseNpy(*npy, chunk);
    }
  }
}

TEST(NpyFileReaderTest, ReadsVersions2And3BigEndianAndFortranOrder) {
  const std::string big = BigEndianInt32s(6);
  const std::string c_order = "{'descr': '>i4', 'fortran_order': False, 'shape': (2, 3), }";
  const std::string fortran = "{'descr': '>i4', 'fortran_order': True, 'shape': (2, 3), }";
  for (int major : {1, 2, 3}) {
    ExpectReadsAsParseNpy(Npy(c_order, big, major), 8);
    ExpectReadsAsParseNpy(Npy(fortran, big, major), 8);
  }
  // A header longer than the first page read.
  ExpectReadsAsParseNpy(Npy(c_order + std::string(5000, ' '), big, 2), 8);
  absl::StatusOr<HostTensor> f = ReadStreamed(Npy(fortran, big), 4);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->ToDoubles(), (std::vector<double>{1, 3, 5, 2, 4, 6}));
  // One-dimensional Fortran order is C order: streamed, not held whole.
  ExpectReadsAsParseNpy(
      Npy("{'descr': '<i4', 'fortran_order': True, 'shape': (6,), }", std::string(24, '\1')), 8);
  absl::StatusOr<HostTensor> b = ReadStreamed(
      Npy("{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }", std::string("\0\7\1", 3)),
      2);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->data, std::string("\0\1\1", 3));
}

struct Hostile {
  std::string name;
  std::string npy;
  std::string message;
};

TEST(NpyFileReaderTest, RefusesHostileFilesAtOpenAsReadNpyDoes) {
  const std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }";
  const std::string good = Npy(dict, std::string(16, '\0'));
  const std::vector<Hostile> cases = {
      {"empty", "", "empty (0 bytes), not a .npy file"},
      {"the magic alone", "\x93NUMPY", "truncated: it ends after 6 bytes, inside the .npy magic"},
      {"part of the magic", "\x93NUM", "truncated: it ends after 4 bytes"},
      {"the magic and a version", "\x93NUMPY\x01", "truncated: it ends after 7 bytes"},
      {"another file", "PK\x03\x04 not npy", "missing the \\x93NUMPY magic"},
      {"truncated data", good.substr(0, good.size() - 1), "truncated data: shape (2, 2)"},
      {"trailing data", good + "x", "trailing data"},
      {"header lies about its size", good.substr(0, 8) + "\xff\xff" + good.substr(10),
       "truncated in the header"},
      {"header cut", good.substr(0, 30), "truncated in the header"},
      {"huge shape",
       Npy("{'descr': '<f8', 'fortran_order': False, 'shape': (999999999999, 999999999), }", ""),
       "is too large"},
      {"huge shape, little data",
       Npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }", "12345678"),
       "truncated data"},
      {"wrong dtype", Npy("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", "12345678"),
       "NumPy dtype '<c8' is not supported"},
      {"wide unsigned", Npy("{'descr': '<u2', 'fortran_order': False, 'shape': (1,), }", "12"),
       "NumPy dtype '<u2' is not supported"},
      {"structured",
       Npy("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }", "1234"),
       "structured NumPy dtypes are not supported"},
      {"version 4", "\x93NUMPY\x04" + good.substr(7), "format version 4.0 is not supported"},
      {"unknown key",
       Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1, }", "1234"),
       "unexpected key 'x'"},
      {"negative dimension", Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", ""),
       "malformed .npy header"},
  };
  for (const Hostile& c : cases) {
    const std::string path = WriteBytes("hostile.npy", c.npy);
    absl::StatusOr<HostTensor> whole = ReadNpy(path);
    absl::StatusOr<std::unique_ptr<NpyFileReader>> reader = NpyFileReader::Open(path);
    std::remove(path.c_str());
    EXPECT_EQ(reader.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(reader.status().message(), HasSubstr(c.message)) << c.name;
    EXPECT_THAT(reader.status().message(), HasSubstr(path)) << c.name;
    // The same verdict, word for word, as reading it whole.
    EXPECT_EQ(reader.status(), whole.status()) << c.name;
  }
  absl::StatusOr<std::unique_ptr<NpyFileReader>> missing = NpyFileReader::Open(TempPath("none"));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
}

// The reader maps the file and reads it at offsets after checking its size: a directory, a
// pipe or a device is refused for what it is, before anything is read or sent.
// A directory is refused for what it is; a pipe or a device is read whole (and checked:
// zeros are no .npy) before anything is sent.
TEST(NpyFileReaderTest, RefusesADirectoryAndReadsAPipeWhole) {
  absl::StatusOr<std::unique_ptr<NpyFileReader>> dir = NpyFileReader::Open(::testing::TempDir());
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dir.status().message(), HasSubstr("is a directory; --in needs a .npy file"));
  absl::StatusOr<HostTensor> whole = ReadNpy(::testing::TempDir());
  EXPECT_THAT(whole.status().message(), HasSubstr("is a directory; a .npy or .npz file"));

  const HostTensor t = Make(DType::kFloat32, {2, 3}, Iota(6));
  absl::StatusOr<std::string> npy = SerializeNpy(t);
  ASSERT_TRUE(npy.ok());
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  ASSERT_EQ(write(fds[1], npy->data(), npy->size()), static_cast<ssize_t>(npy->size()));
  close(fds[1]);
  const std::string path = absl::StrCat("/proc/self/fd/", fds[0]);
  absl::StatusOr<std::unique_ptr<NpyFileReader>> piped = NpyFileReader::Open(path);
  close(fds[0]);
  ASSERT_TRUE(piped.ok()) << piped.status();
  EXPECT_EQ((*piped)->tensors()[0].tensor.shape, t.shape);
  std::string data(t.data.size(), '\0');
  ASSERT_TRUE((*piped)->Read(0, 0, absl::MakeSpan(data.data(), data.size())).ok());
  EXPECT_EQ(data, t.data);
  absl::StatusOr<std::unique_ptr<NpyFileReader>> device = NpyFileReader::Open("/dev/zero");
  EXPECT_THAT(device.status().message(), HasSubstr("missing the \\x93NUMPY magic"));
}

TEST(NpyFileReaderTest, AFileCutWhileItIsReadFailsThatRead) {
  const HostTensor t = Make(DType::kFloat32, {1024}, Iota(1024));
  absl::StatusOr<std::string> npy = SerializeNpy(t);
  ASSERT_TRUE(npy.ok());
  const std::string path = WriteBytes("cut.npy", *npy);
  absl::StatusOr<std::unique_ptr<NpyFileReader>> reader = NpyFileReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::string data(4096, '\0');
  ASSERT_TRUE((*reader)->Read(0, 0, absl::MakeSpan(data.data(), 2048)).ok());
  ASSERT_EQ(truncate(path.c_str(), static_cast<off_t>(npy->size() - 100)), 0);
  absl::Status cut = (*reader)->Read(0, 2048, absl::MakeSpan(data.data() + 2048, 2048));
  EXPECT_EQ(cut.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(cut.message(), HasSubstr("the file ends early"));
  EXPECT_THAT(cut.message(), HasSubstr(path));
  std::remove(path.c_str());
}

// Note [Lent from the file]: data in C order and native byte order is lent from the
// mapping; byte-swapped, boolean (made 0 or 1) or Fortran-ordered data is read.
TEST(NpyFileReaderTest, LendsNativeDataAndReadsWhatNeedsChanging) {
  const std::string big = BigEndianInt32s(6);
  const std::pair<std::string, int> cases[] = {
      {Npy("{'descr': '<i4', 'fortran_order': False, 'shape': (6,), }", big), 3},
      {Npy("{'descr': '>i4', 'fortran_order': False, 'shape': (6,), }", big), 0},
      {Npy("{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3), }", big), 0},
      {Npy("{'descr': '|b1', 'fortran_order': False, 'shape': (24,), }", big), 0},
  };
  for (const auto& [npy, lent_pieces] : cases) {
    ExpectReadsAsParseNpy(npy, 8);
    int lent = 0;
    ASSERT_TRUE(ReadStreamed(npy, 8, Pieces::kLent, &lent).ok());
    EXPECT_EQ(lent, lent_pieces) << npy.substr(10, 40);
  }
}

// A file cut short while its pages are lent: SIGBUS becomes a message and exit status 1.
TEST(NpyFileReaderDeathTest, AFileCutWhileLentExitsWithAMessage) {
  absl::StatusOr<std::string> npy = SerializeNpy(Make(DType::kFloat32, {16384}, Iota(16384)));
  ASSERT_TRUE(npy.ok());
  const std::string path = WriteBytes("cut.npy", *npy);
  EXPECT_EXIT(
      {
        ExitCleanlyOnBusError();
        absl::StatusOr<std::unique_ptr<NpyFileReader>> reader = NpyFileReader::Open(path);
        if (!reader.ok() || truncate(path.c_str(), 0) != 0) std::_Exit(3);
        absl::StatusOr<const char*> held = (*reader)->Lend(0, 0, 65536);
        if (!held.ok() || *held == nullptr) std::_Exit(4);
        // What the socket's copy or a TLS record would do with the lent bytes.
        volatile char sink = (*held)[65535];
        (void)sink;
        std::_Exit(5);
      },
      ::testing::ExitedWithCode(1), "cut.npy' changed while it was being sent");
  std::remove(path.c_str());
}

TEST(NpyFileReaderTest, ReadsOutOfOrderAreAFailedPrecondition) {
  absl::StatusOr<std::string> npy = SerializeNpy(Make(DType::kInt8, {16}, Iota(16)));
  const std::string path = WriteBytes("order.npy", *npy);
  absl::StatusOr<std::unique_ptr<NpyFileReader>> reader = NpyFileReader::Open(path);
  std::remove(path.c_str());
  ASSERT_TRUE(reader.ok());
  char out[16];
  EXPECT_EQ((*reader)->Read(1, 0, absl::MakeSpan(out, 1)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*reader)->Read(0, 4, absl::MakeSpan(out, 1)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*reader)->Read(0, 0, absl::MakeSpan(out, 17)).code(),
            absl::StatusCode::kFailedPrecondition);
  // Lend keeps Read's order, and says so the same way.
  EXPECT_EQ((*reader)->Lend(1, 0, 1).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*reader)->Lend(0, 4, 1).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*reader)->Lend(0, 0, 17).status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE((*reader)->Read(0, 0, absl::MakeSpan(out, 8)).ok());
  ASSERT_TRUE((*reader)->Read(0, 8, absl::MakeSpan(out + 8, 8)).ok());
  EXPECT_EQ(out[15], 15);
}

}  // namespace
}  // namespace paramd::cli
