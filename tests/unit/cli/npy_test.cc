#include "client/cli/npy.h"

#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "paramd/tensor.h"
#include "base/half.h"
#include "tests/unit/npz_archives.h"

namespace paramd::cli {
namespace {

using paramd::client::DType;
using paramd::client::HostTensor;
using ::testing::HasSubstr;

// Reference files written by NumPy 2.4 (np.save, np.lib.format.write_array with an
// explicit version, np.savez, np.savez_compressed), byte for byte.
constexpr char kNpyFloat32[] =
    "\223NUMPY\001\000v\000{'descr': '<f4', 'fortran_order': False, 'shape': (2, "
    "3), }                                                          \n\000\000\200"
    "\277\000\000\000\277\000\000\000\000\000\000\000?\000\000\200?\000\000\300?";

constexpr char kNpyFloat64[] =
    "\223NUMPY\001\000v\000{'descr': '<f8', 'fortran_order': False, 'shape': (3,)"
    ", }                                                            \n\000\000\000"
    "\000\000\000\370?\000\000\000\000\000\000\002\300\234u\000\210<\3447~";

constexpr char kNpyFloat16[] =
    "\223NUMPY\001\000v\000{'descr': '<f2', 'fortran_order': False, 'shape': (2,)"
    ", }                                                            \n\0008\377\373";

constexpr char kNpyInt64[] =
    "\223NUMPY\001\000v\000{'descr': '<i8', 'fortran_order': False, 'shape': (2, "
    "2), }                                                          \n\001\000\000"
    "\000\000\000\000\000\376\377\377\377\377\377\377\377\003\000\000\000\000\000"
    "\000\000\000\000\000\000\000\001\000\000";

constexpr char kNpyInt32[] =
    "\223NUMPY\001\000v\000{'descr': '<i4', 'fortran_order': False, 'shape': (3,)"
    ", }                                                            \n\007\000\000"
    "\000\370\377\377\377\377\377\377\177";

constexpr char kNpyInt16[] =
    "\223NUMPY\001\000v\000{'descr': '<i2', 'fortran_order': False, 'shape': (2,)"
    ", }                                                            \n\000\200,\001";

constexpr char kNpyInt8[] =
    "\223NUMPY\001\000v\000{'descr': '|i1', 'fortran_order': False, 'shape': (4,)"
    ", }                                                            \n\200\377\000"
    "\177";

constexpr char kNpyUInt8[] =
    "\223NUMPY\001\000v\000{'descr': '|u1', 'fortran_order': False, 'shape': (3,)"
    ", }                                                            \n\000\001\377";

constexpr char kNpyBool[] =
    "\223NUMPY\001\000v\000{'descr': '|b1', 'fortran_order': False, 'shape': (3,)"
    ", }                                                            \n\001\000\001";

constexpr char kNpyScalar[] =
    "\223NUMPY\001\000v\000{'descr': '<f4', 'fortran_order': False, 'shape': (), "
    "}                                                              \n\000\000`@";

constexpr char kNpyEmpty[] =
    "\223NUMPY\001\000v\000{'descr': '<f4', 'fortran_order': False, 'shape': (0, "
    "3), }                                                          \n";

constexpr char kNpyLongFirstAxis[] =
    "\223NUMPY\001\000v\000{'descr': '<f4', 'fortran_order': False, 'shape': (100"
    "0000, 0), }                                                    \n";

constexpr char kNpyVersion2[] =
    "\223NUMPY\002\000t\000\000\000{'descr': '<i4', 'fortran_order': False, 'shap"
    "e': (3,), }                                                          \n\001\000"
    "\000\000\002\000\000\000\003\000\000\000";

constexpr char kNpyVersion3[] =
    "\223NUMPY\003\000t\000\000\000{'descr': '<i4', 'fortran_order': False, 'shap"
    "e': (3,), }                                                          \n\001\000"
    "\000\000\002\000\000\000\003\000\000\000";

constexpr char kNpyFortran2d[] =
    "\223NUMPY\001\000v\000{'descr': '<i2', 'fortran_order': True, 'shape': (2, 3"
    "), }                                                           \n\000\000\003"
    "\000\001\000\004\000\002\000\005\000";

constexpr char kNpyFortran3d[] =
    "\223NUMPY\001\000v\000{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3"
    ", 4), }                                                        \n\000\000\000"
    "\000\000\000@A\000\000\200@\000\000\200A\000\000\000A\000\000\240A\000\000\200"
    "?\000\000PA\000\000\240@\000\000\210A\000\000\020A\000\000\250A\000\000\000@"
    "\000\000`A\000\000\300@\000\000\220A\000\000 A\000\000\260A\000\000@@\000\000"
    "pA\000\000\340@\000\000\230A\000\0000A\000\000\270A";

constexpr char kNpyBigEndianFloat32[] =
    "\223NUMPY\001\000v\000{'descr': '>f4', 'fortran_order': False, 'shape': (2,)"
    ", }                                                            \n?\300\000\000"
    "\300\000\000\000";

constexpr char kNpyBigEndianInt64[] =
    "\223NUMPY\001\000v\000{'descr': '>i8', 'fortran_order': False, 'shape': (3,)"
    ", }                                                            \n\000\000\000"
    "\000\000\000\000\001\377\377\377\377\377\377\377\376\000\000\001\000\000\000"
    "\000\000";

constexpr char kNpyBigEndianFloat16[] =
    "\223NUMPY\001\000v\000{'descr': '>f2', 'fortran_order': False, 'shape': (2,)"
    ", }                                                            \n8\000\302\000";

constexpr char kNpyUInt16[] =
    "\223NUMPY\001\000v\000{'descr': '<u2', 'fortran_order': False, 'shape': (2,)"
    ", }                                                            \n\001\000\002"
    "\000";

constexpr char kNpyComplex[] =
    "\223NUMPY\001\000v\000{'descr': '<c8', 'fortran_order': False, 'shape': (1,)"
    ", }                                                            \n\000\000\200"
    "?\000\000\000@";

constexpr char kNpyStructured[] =
    "\223NUMPY\001\000v\000{'descr': [('a', '<i4'), ('b', '<f4')], 'fortran_order"
    "': False, 'shape': (2,), }                                     \n\000\000\000"
    "\000\000\000\000\000\000\000\000\000\000\000\000\000";

using test_data::Bytes;
using test_data::kNpzDeflated;
using test_data::kNpzStored;
using test_data::kNpzZip64;

template <typename T>
void Append(std::string* out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // the test hosts are little-endian, as the wire
  out->append(bytes, sizeof(T));
}

// A tensor of `dtype` and `shape` holding `values` (converted as a cast would).
HostTensor Make(DType dtype, std::vector<int64_t> shape, const std::vector<double>& values) {
  HostTensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  for (double v : values) {
    switch (dtype) {
      case DType::kFloat32:
        Append(&t.data, static_cast<float>(v));
        break;
      case DType::kFloat64:
        Append(&t.data, v);
        break;
      case DType::kFloat16:
        Append(&t.data, FloatToHalfBits(static_cast<float>(v)));
        break;
      case DType::kBFloat16:
        Append(&t.data, FloatToBFloat16Bits(static_cast<float>(v)));
        break;
      case DType::kInt64:
        Append(&t.data, static_cast<int64_t>(v));
        break;
      case DType::kInt32:
        Append(&t.data, static_cast<int32_t>(v));
        break;
      case DType::kInt16:
        Append(&t.data, static_cast<int16_t>(v));
        break;
      case DType::kInt8:
        Append(&t.data, static_cast<int8_t>(v));
        break;
      case DType::kUInt8:
        Append(&t.data, static_cast<uint8_t>(v));
        break;
      case DType::kBool:
        Append(&t.data, static_cast<uint8_t>(v != 0));
        break;
    }
  }
  return t;
}

std::vector<double> Iota(int n, double start = 0) {
  std::vector<double> values(n);
  for (int i = 0; i < n; ++i) values[i] = start + i;
  return values;
}

void ExpectSameTensor(const HostTensor& actual, const HostTensor& expected) {
  EXPECT_EQ(actual.dtype, expected.dtype);
  EXPECT_EQ(actual.shape, expected.shape);
  EXPECT_EQ(actual.data, expected.data);
}

// A header-level edit of a valid file: replaces the first `from` with `to` and fixes the
// header length field (version 1.0 files only).
std::string EditHeader(std::string npy, absl::string_view from, absl::string_view to) {
  const size_t pos = npy.find(std::string(from));
  EXPECT_NE(pos, std::string::npos) << from;
  npy.replace(pos, from.size(), std::string(to));
  const size_t header_len = npy.find('\n', 10) + 1 - 10;
  npy[8] = static_cast<char>(header_len & 0xff);
  npy[9] = static_cast<char>(header_len >> 8);
  return npy;
}

// A version 1.0 file with `header` verbatim and `data` after it.
std::string RawNpy(absl::string_view header, absl::string_view data) {
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  out.append(header.data(), header.size());
  out.append(data.data(), data.size());
  return out;
}

struct NumPyCase {
  const char* name;
  std::string npy;
  HostTensor tensor;
};

std::vector<NumPyCase> NumPyCases() {
  return {
      {"float32", Bytes(kNpyFloat32), Make(DType::kFloat32, {2, 3}, {-1, -0.5, 0, 0.5, 1, 1.5})},
      {"float64", Bytes(kNpyFloat64), Make(DType::kFloat64, {3}, {1.5, -2.25, 1e300})},
      {"float16", Bytes(kNpyFloat16), Make(DType::kFloat16, {2}, {0.5, -65504})},
      {"int64", Bytes(kNpyInt64), Make(DType::kInt64, {2, 2}, {1, -2, 3, 1099511627776.0})},
      {"int32", Bytes(kNpyInt32), Make(DType::kInt32, {3}, {7, -8, 2147483647})},
      {"int16", Bytes(kNpyInt16), Make(DType::kInt16, {2}, {-32768, 300})},
      {"int8", Bytes(kNpyInt8), Make(DType::kInt8, {4}, {-128, -1, 0, 127})},
      {"uint8", Bytes(kNpyUInt8), Make(DType::kUInt8, {3}, {0, 1, 255})},
      {"bool", Bytes(kNpyBool), Make(DType::kBool, {3}, {1, 0, 1})},
      {"scalar", Bytes(kNpyScalar), Make(DType::kFloat32, {}, {3.5})},
      {"empty", Bytes(kNpyEmpty), Make(DType::kFloat32, {0, 3}, {})},
      {"long first axis", Bytes(kNpyLongFirstAxis), Make(DType::kFloat32, {1000000, 0}, {})},
  };
}

TEST(NpyTest, SerializeMatchesNumPyByteForByte) {
  for (const NumPyCase& c : NumPyCases()) {
    absl::StatusOr<std::string> bytes = SerializeNpy(c.tensor);
    ASSERT_TRUE(bytes.ok()) << c.name << ": " << bytes.status();
    EXPECT_EQ(*bytes, c.npy) << c.name;
  }
}

TEST(NpyTest, ParsesEveryDTypeNumPyWrites) {
  for (const NumPyCase& c : NumPyCases()) {
    SCOPED_TRACE(c.name);
    absl::StatusOr<HostTensor> t = ParseNpy(c.npy);
    ASSERT_TRUE(t.ok()) << t.status();
    ExpectSameTensor(*t, c.tensor);
  }
}

TEST(NpyTest, ParsesVersion2And3Headers) {
  const HostTensor expected = Make(DType::kInt32, {3}, {1, 2, 3});
  for (const std::string& npy : {Bytes(kNpyVersion2), Bytes(kNpyVersion3)}) {
    absl::StatusOr<HostTensor> t = ParseNpy(npy);
    ASSERT_TRUE(t.ok()) << t.status();
    ExpectSameTensor(*t, expected);
  }
}

TEST(NpyTest, FortranOrderIsConvertedToCOrder) {
  absl::StatusOr<HostTensor> t = ParseNpy(Bytes(kNpyFortran2d));
  ASSERT_TRUE(t.ok()) << t.status();
  ExpectSameTensor(*t, Make(DType::kInt16, {2, 3}, Iota(6)));

  t = ParseNpy(Bytes(kNpyFortran3d));
  ASSERT_TRUE(t.ok()) << t.status();
  ExpectSameTensor(*t, Make(DType::kFloat32, {2, 3, 4}, Iota(24)));
}

TEST(NpyTest, BigEndianIsSwappedToLittleEndian) {
  absl::StatusOr<HostTensor> t = ParseNpy(Bytes(kNpyBigEndianFloat32));
  ASSERT_TRUE(t.ok()) << t.status();
  ExpectSameTensor(*t, Make(DType::kFloat32, {2}, {1.5, -2.0}));

  t = ParseNpy(Bytes(kNpyBigEndianInt64));
  ASSERT_TRUE(t.ok()) << t.status();
  ExpectSameTensor(*t, Make(DType::kInt64, {3}, {1, -2, 1099511627776.0}));

  t = ParseNpy(Bytes(kNpyBigEndianFloat16));
  ASSERT_TRUE(t.ok()) << t.status();
  ExpectSameTensor(*t, Make(DType::kFloat16, {2}, {0.5, -3.0}));
}

TEST(NpyTest, BigEndianFortranOrder) {
  // '>i4' data 0..5 of shape (2, 3) stored column by column.
  std::string data;
  for (int32_t v : {0, 3, 1, 4, 2, 5}) {
    for (int shift = 24; shift >= 0; shift -= 8) data.push_back(static_cast<char>(v >> shift));
  }
  absl::StatusOr<HostTensor> t =
      ParseNpy(RawNpy("{'descr': '>i4', 'fortran_order': True, 'shape': (2, 3)}\n", data));
  ASSERT_TRUE(t.ok()) << t.status();
  ExpectSameTensor(*t, Make(DType::kInt32, {2, 3}, Iota(6)));
}

TEST(NpyTest, AcceptsOlderAndHandWrittenHeaders) {
  std::string data;
  for (int32_t v : {1, 2, 3}) Append(&data, v);
  const HostTensor expected = Make(DType::kInt32, {3}, {1, 2, 3});
  for (absl::string_view header : {
           // NumPy 1.x: 16-byte alignment, no growth padding.
           absl::string_view("{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }    \n"),
           // Double quotes, other key order, no trailing comma, odd spacing.
           absl::string_view("{ \"shape\" : ( 3 , ) ,\"descr\":\"<i4\",'fortran_order':False}\n"),
           // Python 2 longs.
           absl::string_view("{'descr': '<i4', 'fortran_order': False, 'shape': (3L,), }\n"),
       }) {
    SCOPED_TRACE(header);
    absl::StatusOr<HostTensor> t = ParseNpy(RawNpy(header, data));
    ASSERT_TRUE(t.ok()) << t.status();
    ExpectSameTensor(*t, expected);
  }
}

TEST(NpyTest, BoolBytesAreNormalized) {
  absl::StatusOr<HostTensor> t =
      ParseNpy(RawNpy("{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }\n",
                      std::string("\x00\x02\xff", 3)));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->data, std::string("\x00\x01\x01", 3));
}

TEST(NpyTest, RoundTripsEveryDType) {
  const std::vector<double> values = {0, 1, -2, 3, 100, -7};
  for (DType dtype : {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kInt64,
                      DType::kInt32, DType::kInt16, DType::kInt8, DType::kUInt8, DType::kBool}) {
    HostTensor t = Make(dtype, {2, 1, 3}, values);
    if (dtype == DType::kUInt8) t = Make(dtype, {2, 1, 3}, {0, 1, 2, 3, 100, 255});
    absl::StatusOr<std::string> bytes = SerializeNpy(t);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    EXPECT_EQ(bytes->size() % 64, t.data.size() % 64);  // data starts 64-byte aligned
    absl::StatusOr<HostTensor> back = ParseNpy(*bytes);
    ASSERT_TRUE(back.ok()) << back.status();
    ExpectSameTensor(*back, t);
  }
}

TEST(NpyTest, BFloat16IsWrittenAsExactFloat32) {
  const HostTensor t = Make(DType::kBFloat16, {3}, {1.0, -0.1, 3e38});
  absl::StatusOr<std::string> bytes = SerializeNpy(t);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_THAT(*bytes, HasSubstr("'descr': '<f4'"));
  absl::StatusOr<HostTensor> back = ParseNpy(*bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  std::vector<double> widened;
  for (size_t i = 0; i < t.data.size(); i += 2) {
    uint16_t bits;
    std::memcpy(&bits, t.data.data() + i, 2);
    widened.push_back(BFloat16BitsToFloat(bits));
  }
  ExpectSameTensor(*back, Make(DType::kFloat32, {3}, widened));
}

TEST(NpyTest, HugeHeaderUsesVersion2) {
  // 30000 dimensions of size 1: the header is over 64 KiB, past what version 1.0 can hold.
  HostTensor t = Make(DType::kInt8, std::vector<int64_t>(30000, 1), {42});
  absl::StatusOr<std::string> bytes = SerializeNpy(t);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_EQ((*bytes)[6], 2);
  EXPECT_EQ((*bytes)[7], 0);
  EXPECT_EQ((bytes->size() - 1) % 64, 0u);
  absl::StatusOr<HostTensor> back = ParseNpy(*bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameTensor(*back, t);
}

TEST(NpyTest, SerializeRejectsByteCountMismatch) {
  HostTensor t = Make(DType::kFloat32, {3}, {1, 2});
  absl::StatusOr<std::string> bytes = SerializeNpy(t);
  EXPECT_EQ(bytes.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bytes.status().message(), HasSubstr("holds 8 bytes; its dtype needs 12"));
}

TEST(NpyTest, UnsupportedDTypesNameTheDType) {
  for (const auto& [npy, descr] : std::vector<std::pair<std::string, std::string>>{
           {Bytes(kNpyUInt16), "'<u2'"}, {Bytes(kNpyComplex), "'<c8'"}}) {
    absl::StatusOr<HostTensor> t = ParseNpy(npy, "x.npy");
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(t.status().message(), HasSubstr("x.npy: NumPy dtype " + descr));
    EXPECT_THAT(t.status().message(), HasSubstr("astype"));
  }
  absl::StatusOr<HostTensor> t = ParseNpy(Bytes(kNpyStructured), "x.npy");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("structured NumPy dtypes are not supported"));
}

struct CorruptCase {
  const char* name;
  std::string npy;
  const char* message;
};

TEST(NpyTest, CorruptInputsAreInvalidArgument) {
  const std::string good = Bytes(kNpyFloat32);
  std::string version4 = good;
  version4[6] = 4;
  std::string long_header = good;
  long_header[9] = 0x10;
  const std::vector<CorruptCase> cases = {
      {"empty", "", "not a .npy file"},
      {"bad magic", "\x93NUMPZ" + good.substr(6), "not a .npy file"},
      {"version 4", version4, ".npy format version 4.0 is not supported"},
      {"no header length", good.substr(0, 9), "truncated in the header length"},
      {"header past end", long_header, "truncated in the header (4214 bytes declared"},
      {"truncated header", good.substr(0, 60), "truncated in the header"},
      {"truncated data", good.substr(0, good.size() - 1),
       "truncated data: shape (2, 3) of '<f4' needs 24 bytes after the header but 23"},
      {"trailing data", good + "x", "trailing data"},
      {"missing key", EditHeader(good, "'fortran_order': False, ", ""),
       "the keys must be exactly 'descr', 'fortran_order' and 'shape'"},
      {"extra key", EditHeader(good, "}", "'x': 1}"), "unexpected key 'x'"},
      {"duplicate key", EditHeader(good, "'shape'", "'descr': '<f4', 'shape'"),
       "duplicate key 'descr'"},
      {"shape not a tuple", EditHeader(good, "(2, 3)", "[2, 3]"), "expected '('"},
      {"parenthesized int", EditHeader(good, "(2, 3)", "(6)"), "shape is not a tuple"},
      {"negative dimension", EditHeader(good, "(2, 3)", "(-2, 3)"),
       "expected a non-negative integer in shape"},
      {"leading zero", EditHeader(good, "(2, 3)", "(02, 3)"), "integer with a leading zero"},
      {"huge shape", EditHeader(good, "(2, 3)", "(999999999999, 999999999999)"), "is too large"},
      {"lowercase bool", EditHeader(good, "False", "false"), "expected True or False"},
      {"unterminated string", RawNpy("{'descr': '<f4", ""), "unterminated string"},
      {"missing brace", EditHeader(good, "{", ""), "expected '{'"},
      {"text after brace", EditHeader(good, "}", "} x"), "unexpected text after '}'"},
      {"missing comma", EditHeader(good, "'<f4', ", "'<f4' "), "expected ',' or '}'"},
      {"escape", EditHeader(good, "'<f4'", "'<f\\x34'"), "unsupported string escape"},
      {"bad descr", EditHeader(good, "'<f4'", "'f4'"), "NumPy dtype 'f4' is not supported"},
      {"unordered wide descr", EditHeader(good, "'<f4'", "'|f4'"),
       "NumPy dtype '|f4' is not supported"},
  };
  for (const CorruptCase& c : cases) {
    absl::StatusOr<HostTensor> t = ParseNpy(c.npy, "w.npy");
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(t.status().message(), HasSubstr("w.npy: ")) << c.name;
    EXPECT_THAT(t.status().message(), HasSubstr(c.message)) << c.name;
  }
}

TEST(NpyTest, FileRoundTrip) {
  const std::string path = ::testing::TempDir() + "/npy_test_round_trip.npy";
  const HostTensor t = Make(DType::kFloat64, {2, 2}, {1, 2, 3, 4});
  ASSERT_TRUE(WriteNpy(path, t).ok());
  absl::StatusOr<HostTensor> back = ReadNpy(path);
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameTensor(*back, t);
  std::remove(path.c_str());
}

TEST(NpyTest, MissingFileIsNotFoundAndNamesThePath) {
  const std::string path = ::testing::TempDir() + "/npy_test_does_not_exist.npy";
  absl::StatusOr<HostTensor> t = ReadNpy(path);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(t.status().message(), HasSubstr(path));
}

TEST(NpyTest, TruncatedFileNamesThePath) {
  const std::string path = ::testing::TempDir() + "/npy_test_truncated.npy";
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  const std::string bytes = Bytes(kNpyFloat64).substr(0, 130);
  std::fwrite(bytes.data(), 1, bytes.size(), f);
  std::fclose(f);
  absl::StatusOr<HostTensor> t = ReadNpy(path);
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr(path + ": truncated data"));
  std::remove(path.c_str());
}

TEST(NpyTest, WriteToMissingDirectoryFails) {
  const std::string path = ::testing::TempDir() + "/npy_test_no_such_dir/x.npy";
  absl::Status status = WriteNpy(path, Make(DType::kInt8, {1}, {1}));
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(), HasSubstr(path));
}

// ---------------------------------------------------------------------------------------
// .npz

TEST(NpzTest, ReadsNumPySavez) {
  // np.savez writes ZIP64 local headers (force_zip64=True) with stored members.
  for (const std::string& npz : {Bytes(kNpzStored), Bytes(kNpzDeflated)}) {
    absl::StatusOr<NamedTensors> tensors = ParseNpz(npz, "m.npz");
    ASSERT_TRUE(tensors.ok()) << tensors.status();
    ASSERT_EQ(tensors->size(), 2u);
    EXPECT_EQ((*tensors)[0].first, "weight");
    ExpectSameTensor((*tensors)[0].second, Make(DType::kFloat32, {2}, {1.5, -2.5}));
    EXPECT_EQ((*tensors)[1].first, "bias");
    ExpectSameTensor((*tensors)[1].second, Make(DType::kInt64, {3}, {0, 1, 2}));
  }
}

TEST(NpzTest, ReadsZip64CentralDirectory) {
  absl::StatusOr<NamedTensors> tensors = ParseNpz(Bytes(kNpzZip64));
  ASSERT_TRUE(tensors.ok()) << tensors.status();
  ASSERT_EQ(tensors->size(), 1u);
  EXPECT_EQ((*tensors)[0].first, "x");
  ExpectSameTensor((*tensors)[0].second, Make(DType::kInt8, {2}, {4, 5}));
}

NamedTensors SeveralTensors() {
  return {
      {"encoder.weight", Make(DType::kFloat32, {2, 3}, Iota(6, -3))},
      {"encoder.bias", Make(DType::kFloat64, {3}, {0.5, 1e-300, -7})},
      {"half", Make(DType::kFloat16, {2}, {0.25, 1024})},
      {"steps", Make(DType::kInt64, {}, {12345678901.0})},
      {"i32", Make(DType::kInt32, {2}, {-1, 2})},
      {"i16", Make(DType::kInt16, {1}, {-300})},
      {"i8", Make(DType::kInt8, {2}, {-5, 5})},
      {"u8", Make(DType::kUInt8, {2}, {0, 200})},
      {"mask", Make(DType::kBool, {2, 2}, {1, 0, 0, 1})},
      {"empty", Make(DType::kFloat32, {0, 4}, {})},
  };
}

TEST(NpzTest, RoundTripKeepsNamesOrderAndValues) {
  const NamedTensors tensors = SeveralTensors();
  absl::StatusOr<std::string> npz = SerializeNpz(tensors);
  ASSERT_TRUE(npz.ok()) << npz.status();
  absl::StatusOr<NamedTensors> back = ParseNpz(*npz);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ((*back)[i].first, tensors[i].first);
    ExpectSameTensor((*back)[i].second, tensors[i].second);
  }
}

TEST(NpzTest, MembersAreStoredNpyFiles) {
  const HostTensor t = Make(DType::kFloat32, {2, 3}, {-1, -0.5, 0, 0.5, 1, 1.5});
  absl::StatusOr<std::string> npz = SerializeNpz({{"w", t}});
  ASSERT_TRUE(npz.ok()) << npz.status();
  // Local header (30 bytes), "w.npy", then np.save's bytes unchanged.
  EXPECT_EQ(npz->substr(0, 4), "PK\x03\x04");
  EXPECT_EQ(npz->substr(30, 5), "w.npy");
  EXPECT_EQ(npz->substr(35, sizeof(kNpyFloat32) - 1), Bytes(kNpyFloat32));
}

TEST(NpzTest, FileRoundTrip) {
  const std::string path = ::testing::TempDir() + "/npz_test_round_trip.npz";
  const NamedTensors tensors = SeveralTensors();
  ASSERT_TRUE(WriteNpz(path, tensors).ok());
  absl::StatusOr<NamedTensors> back = ReadNpz(path);
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ((*back)[i].first, tensors[i].first);
    ExpectSameTensor((*back)[i].second, tensors[i].second);
  }
  std::remove(path.c_str());
}

TEST(NpzTest, SerializeRejectsBadNames) {
  const HostTensor t = Make(DType::kInt8, {1}, {1});
  absl::StatusOr<std::string> npz = SerializeNpz({{"a", t}, {"a", t}});
  EXPECT_EQ(npz.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(npz.status().message(), HasSubstr("'a' appears twice"));
  npz = SerializeNpz({{"", t}});
  EXPECT_EQ(npz.status().code(), absl::StatusCode::kInvalidArgument);
  HostTensor bad = t;
  bad.data.clear();
  npz = SerializeNpz({{"b", bad}});
  EXPECT_EQ(npz.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(npz.status().message(), HasSubstr("tensor 'b'"));
}

TEST(NpzTest, CorruptArchivesAreInvalidArgument) {
  const std::string stored = Bytes(kNpzStored);
  std::string flipped = stored;
  flipped[stored.find("\x93NUMPY") + 130] ^= 0x01;  // a data byte of 'weight'
  std::string encrypted = Bytes(kNpzStored);
  std::string method = Bytes(kNpzStored);
  const size_t central = stored.find("PK\x01\x02");
  encrypted[central + 8] |= 0x01;
  method[central + 10] = 12;  // bzip2
  std::string deflated = Bytes(kNpzDeflated);
  deflated[deflated.find("weight.npy") + 10 + 20 + 5] ^= 0x55;  // inside the deflate stream
  // 'weight.npy' with a broken magic and a CRC-32 that matches it.
  std::string not_npy = Bytes(kNpzStored);
  const size_t member = not_npy.find("\x93NUMPY");
  not_npy[member + 1] = 'X';
  const uint32_t crc = crc32(0, reinterpret_cast<const Bytef*>(not_npy.data() + member), 136);
  for (size_t field : {size_t{14}, not_npy.find("PK\x01\x02") + 16}) {
    for (int i = 0; i < 4; ++i) not_npy[field + i] = static_cast<char>(crc >> (8 * i));
  }
  const std::vector<CorruptCase> cases = {
      {"empty", "", "too short"},
      {"not a zip", std::string(100, 'x'), "no end of central directory record"},
      {"truncated", stored.substr(0, stored.size() / 2), "no end of central directory"},
      {"cut after the data", stored.substr(0, central) + stored.substr(stored.size() - 22),
       "central directory lies outside the archive"},
      {"crc", flipped, "member 'weight.npy': CRC-32 mismatch"},
      {"encrypted", encrypted, "encrypted members are not supported"},
      {"method", method, "compression method 12 is not supported"},
      {"deflate", deflated, "member 'weight.npy'"},
      {"member not npy", not_npy, "member 'weight.npy': not a .npy file"},
  };
  for (const CorruptCase& c : cases) {
    absl::StatusOr<NamedTensors> tensors = ParseNpz(c.npy, "m.npz");
    EXPECT_EQ(tensors.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(tensors.status().message(), HasSubstr("m.npz: ")) << c.name;
    EXPECT_THAT(tensors.status().message(), HasSubstr(c.message)) << c.name;
  }
}

TEST(NpzTest, DuplicateMemberNamesAreRejected) {
  const HostTensor t = Make(DType::kInt8, {1}, {1});
  absl::StatusOr<std::string> npz = SerializeNpz({{"a", t}, {"b", t}});
  ASSERT_TRUE(npz.ok());
  // Rename "b.npy" to "a.npy" in both the local and the central header.
  std::string renamed = *npz;
  for (size_t pos = renamed.find("b.npy"); pos != std::string::npos;
       pos = renamed.find("b.npy", pos)) {
    renamed[pos] = 'a';
  }
  absl::StatusOr<NamedTensors> tensors = ParseNpz(renamed, "m.npz");
  EXPECT_EQ(tensors.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(tensors.status().message(), HasSubstr("more than one member is named 'a'"));
}

}  // namespace
}  // namespace paramd::cli
