// safetensors reading and writing, checked against the format rules and the reference
// implementation's behaviour (pytorch-semantics.md §7).
#include "server/io/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/io/mapped_file.h"
#include "tests/unit/io/test_util.h"

namespace paramd::io {
namespace {

using ::testing::HasSubstr;
using test_util::AsSpan;
using test_util::Bytes;
using test_util::Make;
using test_util::ReadFile;

class SafetensorsFileTest : public test_util::ScratchDirTest {};
using ::testing::StartsWith;

std::string Le64(uint64_t value) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((value >> (8 * i)) & 0xFF);
  return bytes;
}

std::string FileBytes(const std::string& header, const std::string& data) {
  return Le64(header.size()) + header + data;
}

absl::Status ParseError(const std::string& header, const std::string& data) {
  const std::string bytes = FileBytes(header, data);
  return ParseSafetensors(AsSpan(bytes), nullptr).status();
}

// --- round trips ---------------------------------------------------------------------

TEST_F(SafetensorsFileTest, RoundTripsEveryDtypeScalarsAndZeroSize_PytorchSemantics7) {
  NamedTensors tensors;
  for (DType dtype : kAllDTypes) {
    const std::string name(DTypeName(dtype));
    tensors.emplace_back(name + ".matrix", Make(dtype, {2, 3}, {0, 1, 0, 1, 1, 0}));
    tensors.emplace_back(name + ".scalar", Make(dtype, {}, {1}));
    tensors.emplace_back(name + ".empty", Make(dtype, {0, 3}, {}));
  }
  const SafetensorsMetadata metadata = {{"format", "pt"}, {"note", "ünïcode"}};
  const std::string path = PathOf("model.safetensors");
  ASSERT_TRUE(SaveSafetensors(path, tensors, metadata).ok());

  absl::StatusOr<SafetensorsFile> read = ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->metadata, metadata);
  ASSERT_EQ(read->entries.size(), tensors.size());
  std::map<std::string, core::Tensor> by_name;
  for (const SafetensorsEntry& entry : read->entries) by_name[entry.name] = entry.tensor;
  for (const auto& [name, tensor] : tensors) {
    ASSERT_TRUE(by_name.count(name)) << name;
    const core::Tensor& got = by_name[name];
    EXPECT_EQ(got.dtype(), tensor.dtype()) << name;
    EXPECT_EQ(got.shape(), tensor.shape()) << name;
    EXPECT_TRUE(got.is_contiguous()) << name;
    EXPECT_EQ(Bytes(got), Bytes(tensor)) << name;
  }
}

TEST_F(SafetensorsFileTest, WritesNonContiguousTensorsFromAContiguousCopy_PytorchSemantics7) {
  const core::Tensor base = Make(DType::kFloat32, {2, 3}, {0, 1, 2, 3, 4, 5});
  const core::Tensor transposed(base.storage(), 0, {3, 2}, {1, 3}, DType::kFloat32);
  ASSERT_FALSE(transposed.is_contiguous());
  absl::StatusOr<std::string> bytes = SerializeSafetensors({{"t", transposed}}, {});
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  absl::StatusOr<SafetensorsFile> read = ParseSafetensors(AsSpan(*bytes), nullptr);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->entries.size(), 1u);
  EXPECT_EQ(read->entries[0].tensor.shape(), (core::Shape{3, 2}));
  EXPECT_EQ(Bytes(read->entries[0].tensor), Bytes(transposed));
}

// --- writer layout -------------------------------------------------------------------

TEST(SafetensorsWriterTest, MatchesTheReferenceWritersBytes_PytorchSemantics7) {
  // The reference crate's own serialization test: "attn.0", F32, shape [1, 2, 3].
  absl::StatusOr<std::string> out = SerializeSafetensors(
      {{"attn.0", Make(DType::kFloat32, {1, 2, 3}, {0, 1, 2, 3, 4, 5})}}, {});
  ASSERT_TRUE(out.ok()) << out.status();
  const std::vector<uint8_t> expected = {
      64, 0,  0,   0,   0,   0,   0,   0,   123, 34,  97,  116, 116, 110, 46,  48,
      34, 58, 123, 34,  100, 116, 121, 112, 101, 34,  58,  34,  70,  51,  50,  34,
      44, 34, 115, 104, 97,  112, 101, 34,  58,  91,  49,  44,  50,  44,  51,  93,
      44, 34, 100, 97,  116, 97,  95,  111, 102, 102, 115, 101, 116, 115, 34,  58,
      91, 48, 44,  50,  52,  93,  125, 125, 0,   0,   0,   0,   0,   0,   128, 63,
      0,  0,  0,   64,  0,   0,   64,  64,  0,   0,   128, 64,  0,   0,   160, 64};
  EXPECT_EQ(std::vector<uint8_t>(out->begin(), out->end()), expected);

  absl::StatusOr<std::string> empty = SerializeSafetensors({}, {});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, Le64(8) + "{}      ");
  absl::StatusOr<std::string> only_metadata = SerializeSafetensors({}, {{"framework", "pt"}});
  ASSERT_TRUE(only_metadata.ok());
  EXPECT_EQ(*only_metadata, Le64(40) + "{\"__metadata__\":{\"framework\":\"pt\"}}     ");
}

TEST(SafetensorsWriterTest, OrdersByDtypeThenNameAndPadsTheHeader_PytorchSemantics7) {
  const NamedTensors tensors = {
      {"b", Make(DType::kFloat32, {2}, {1, 2})},
      {"c", Make(DType::kBool, {3}, {1, 0, 1})},
      {"a", Make(DType::kInt64, {1}, {7})},
      {"e", Make(DType::kFloat64, {1}, {0.5})},
      {"d", Make(DType::kFloat32, {1}, {3})},
      {"h", Make(DType::kFloat16, {1}, {1})},
      {"g", Make(DType::kBFloat16, {1}, {1})},
  };
  absl::StatusOr<std::string> out = SerializeSafetensors(tensors, {{"format", "pt"}});
  ASSERT_TRUE(out.ok()) << out.status();
  // The reference's dtype order, descending: I64 before F64, BF16 before F16, BOOL last.
  const std::string expected_header =
      "{\"__metadata__\":{\"format\":\"pt\"},"
      "\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]},"
      "\"e\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[8,16]},"
      "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]},"
      "\"d\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[24,28]},"
      "\"g\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[28,30]},"
      "\"h\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[30,32]},"
      "\"c\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[32,35]}}";
  const size_t padded = (expected_header.size() + 7) / 8 * 8;
  ASSERT_EQ(out->size(), 8 + padded + 35);
  EXPECT_EQ(out->substr(0, 8), Le64(padded));
  EXPECT_EQ(out->substr(8, padded),
            expected_header + std::string(padded - expected_header.size(), ' '));
  // Data in the same order: a's int64 7 first, c's bools last.
  EXPECT_EQ(out->substr(8 + padded, 8), std::string("\x07\0\0\0\0\0\0\0", 8));
  EXPECT_EQ(out->substr(8 + padded + 32), std::string("\x01\x00\x01", 3));
}

TEST(SafetensorsWriterTest, RefusesDuplicateNamesAndReservedNames_PytorchSemantics7) {
  const core::Tensor t = Make(DType::kFloat32, {1}, {1});
  absl::Status duplicate = SerializeSafetensors({{"w", t}, {"w", t}}, {}).status();
  EXPECT_EQ(duplicate.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(duplicate.message()), HasSubstr("tensor name 'w' appears twice"));
  EXPECT_THAT(std::string(SerializeSafetensors({{"__metadata__", t}}, {}).status().message()),
              HasSubstr("cannot be named '__metadata__'"));
  EXPECT_THAT(
      std::string(SerializeSafetensors({{"w", t}}, {{"k", "1"}, {"k", "2"}}).status().message()),
      HasSubstr("metadata key 'k' appears twice"));
  EXPECT_THAT(std::string(SerializeSafetensors({{"w", core::Tensor()}}, {}).status().message()),
              HasSubstr("undefined"));
  EXPECT_THAT(std::string(SerializeSafetensors({{"bad\xff", t}}, {}).status().message()),
              HasSubstr("not valid UTF-8"));
}

// --- reader ---------------------------------------------------------------------------

TEST(SafetensorsReaderTest, ReadsAnUnpaddedHeader_PytorchSemantics7) {
  // The reference crate's doc example: a 60-byte header, not a multiple of 8.
  const std::string header = R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}})";
  ASSERT_EQ(header.size(), 60u);
  std::string data;
  for (int32_t v : {1, 2, 3, -4}) data += std::string(reinterpret_cast<const char*>(&v), 4);
  auto bytes = std::make_shared<std::string>(FileBytes(header, data));
  absl::StatusOr<SafetensorsFile> read = ParseSafetensors(AsSpan(*bytes), bytes);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->entries.size(), 1u);
  EXPECT_EQ(read->entries[0].name, "test");
  EXPECT_EQ(read->entries[0].tensor.dtype(), DType::kInt32);
  EXPECT_EQ(read->entries[0].tensor.shape(), (core::Shape{2, 2}));
  EXPECT_EQ(*core::ToDoubles(read->entries[0].tensor), (std::vector<double>{1, 2, 3, -4}));
  EXPECT_TRUE(read->metadata.empty());
}

// Note [Bool bytes]: PyTorch reads any non-zero byte as True; a bool tensor holding other
// bytes is copied out of the file with them made 1, one of 0s and 1s is viewed in place.
TEST(SafetensorsReaderTest, BoolBytesOtherThanZeroAndOneReadAsTrue) {
  const std::string header = R"({"odd":{"dtype":"BOOL","shape":[4],"data_offsets":[0,4]},)"
                             R"("even":{"dtype":"BOOL","shape":[4],"data_offsets":[4,8]}})";
  auto bytes = std::make_shared<std::string>(
      FileBytes(header, std::string("\x00\x02\xff\x01\x00\x01\x01\x00", 8)));
  absl::StatusOr<SafetensorsFile> read = ParseSafetensors(AsSpan(*bytes), bytes);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->entries.size(), 2u);
  const auto* odd = static_cast<const uint8_t*>(read->entries[0].tensor.data());
  EXPECT_EQ(std::vector<uint8_t>(odd, odd + 4), (std::vector<uint8_t>{0, 1, 1, 1}));
  EXPECT_EQ(*core::ToDoubles(read->entries[0].tensor), (std::vector<double>{0, 1, 1, 1}));
  const auto* even = static_cast<const uint8_t*>(read->entries[1].tensor.data());
  EXPECT_EQ(reinterpret_cast<const char*>(even), bytes->data() + bytes->size() - 4);
}

TEST(SafetensorsReaderTest, AcceptsTrailingSpacePaddingAndEmptyFiles_PytorchSemantics7) {
  EXPECT_TRUE(ParseError("{}", "").ok());
  EXPECT_TRUE(ParseError("{}      ", "").ok());
  EXPECT_TRUE(ParseError(R"({"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]}}   )",
                         std::string(8, '\0'))
                  .ok());
  EXPECT_TRUE(ParseError(R"({"z":{"dtype":"F32","shape":[0,4],"data_offsets":[0,0]}})", "").ok());
}

TEST(SafetensorsReaderTest, EntriesComeInDataOffsetOrder_PytorchSemantics7) {
  const std::string header = R"({"z":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                             R"("a":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})";
  const std::string bytes = FileBytes(header, "xyz");
  absl::StatusOr<SafetensorsFile> read = ParseSafetensors(AsSpan(bytes), nullptr);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->entries.size(), 2u);
  EXPECT_EQ(read->entries[0].name, "z");
  EXPECT_EQ(read->entries[1].name, "a");
}

TEST_F(SafetensorsFileTest, AlignedTensorsReferenceTheMappingWithoutCopying_PytorchSemantics7) {
  const std::string path = PathOf("m.safetensors");
  ASSERT_TRUE(SaveSafetensors(path,
                               {{"w", Make(DType::kFloat32, {4}, {1, 2, 3, 4})},
                                {"b", Make(DType::kInt64, {2}, {5, 6})}},
                               {})
                  .ok());
  absl::StatusOr<std::shared_ptr<MappedFile>> mapped = MappedFile::Open(path);
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  std::weak_ptr<MappedFile> weak = *mapped;
  const uint8_t* begin = (*mapped)->data();
  const uint8_t* end = begin + (*mapped)->size();
  core::Tensor kept;
  {
    absl::StatusOr<SafetensorsFile> read = ParseSafetensors(*std::move(mapped));
    ASSERT_TRUE(read.ok()) << read.status();
    for (const SafetensorsEntry& entry : read->entries) {
      const auto* data = static_cast<const uint8_t*>(entry.tensor.data());
      EXPECT_GE(data, begin) << entry.name;
      EXPECT_LT(data, end) << entry.name;
    }
    kept = read->entries[0].tensor;
  }
  EXPECT_FALSE(weak.expired());  // the tensor holds the mapping
  EXPECT_EQ(*core::ToDoubles(kept), (std::vector<double>{5, 6}));
  kept = core::Tensor();
  EXPECT_TRUE(weak.expired());
}

TEST(SafetensorsReaderTest, MisalignedTensorsAreCopied_PytorchSemantics7) {
  // 8 + 61 header bytes put the F32 data at an odd address of an 8-aligned buffer.
  const std::string header =
      R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})" + std::string(7, ' ');
  ASSERT_EQ(header.size(), 61u);
  const float values[2] = {1.5f, -2.0f};
  const std::string file = FileBytes(header, std::string(reinterpret_cast<const char*>(values), 8));
  auto owned = std::make_shared<std::vector<uint8_t>>(file.begin(), file.end());
  ASSERT_EQ(reinterpret_cast<uintptr_t>(owned->data()) % 8, 0u);
  absl::StatusOr<SafetensorsFile> read = ParseSafetensors(absl::MakeConstSpan(*owned), owned);
  ASSERT_TRUE(read.ok()) << read.status();
  const auto* data = static_cast<const uint8_t*>(read->entries[0].tensor.data());
  EXPECT_TRUE(data < owned->data() || data >= owned->data() + owned->size());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(data) % 4, 0u);
  EXPECT_EQ(*core::ToDoubles(read->entries[0].tensor), (std::vector<double>{1.5, -2.0}));
}

// --- validation rules -----------------------------------------------------------------

void ExpectInvalid(const absl::Status& status, const std::string& fragment) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(fragment));
}

TEST(SafetensorsValidationTest, HeaderFraming_PytorchSemantics7) {
  const std::string five = "abcde";
  ExpectInvalid(ParseSafetensors(AsSpan(five), nullptr).status(),
                "safetensors header too small: the file has 5 bytes, at least 8 are needed");
  const std::string huge = Le64(100'000'001) + "{}";
  ExpectInvalid(ParseSafetensors(AsSpan(huge), nullptr).status(),
                "safetensors header of 100000001 bytes exceeds the 100000000-byte limit");
  const std::string max = Le64(~uint64_t{0});
  ExpectInvalid(ParseSafetensors(AsSpan(max), nullptr).status(), "HeaderTooLarge");
  const std::string short_file = Le64(100) + "{}";
  ExpectInvalid(ParseSafetensors(AsSpan(short_file), nullptr).status(),
                "header length 100 runs past the end of the file");
  ExpectInvalid(ParseError("{\"\xff\":1}", ""), "not valid UTF-8");
  ExpectInvalid(ParseError("{\"\xed\xa0\x80\":1}", ""), "not valid UTF-8");  // a surrogate
  ExpectInvalid(ParseError(" {}", ""), "must start with '{'");
  ExpectInvalid(ParseError("", ""), "must start with '{'");
  ExpectInvalid(ParseError("{\"a\":", ""), "not valid JSON");
  ExpectInvalid(ParseError("{} x", ""), "not valid JSON");
}

TEST(SafetensorsValidationTest, Metadata_PytorchSemantics7) {
  ExpectInvalid(ParseError(R"({"__metadata__":[]})", ""),
                "__metadata__ must be an object of strings");
  ExpectInvalid(ParseError(R"({"__metadata__":{"k":1}})", ""),
                "__metadata__ value for 'k' must be a string");
  const std::string ok = FileBytes(R"({"__metadata__":{"b":"1","a":"2"}})", "");
  absl::StatusOr<SafetensorsFile> read = ParseSafetensors(AsSpan(ok), nullptr);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->metadata, (SafetensorsMetadata{{"b", "1"}, {"a", "2"}}));
}

TEST(SafetensorsValidationTest, EntryFields_PytorchSemantics7) {
  ExpectInvalid(ParseError(R"({"t":1})", ""), "entry for tensor 't' must be an object");
  ExpectInvalid(ParseError(R"({"t":{"shape":[],"data_offsets":[0,4]}})", ""),
                "tensor 't' has no dtype");
  ExpectInvalid(ParseError(R"({"t":{"dtype":"F32","data_offsets":[0,4]}})", ""),
                "tensor 't' has no shape");
  ExpectInvalid(ParseError(R"({"t":{"dtype":"F32","shape":[]}})", ""),
                "tensor 't' has no data_offsets");
  ExpectInvalid(ParseError(R"({"t":{"dtype":4,"shape":[],"data_offsets":[0,4]}})", ""),
                "dtype of safetensors tensor 't' must be a string");
  ExpectInvalid(ParseError(R"({"t":{"dtype":"F32","shape":3,"data_offsets":[0,4]}})", ""),
                "shape of safetensors tensor 't' must be an array of non-negative integers");
  ExpectInvalid(ParseError(R"({"t":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", ""),
                "must be an array of non-negative integers");
  ExpectInvalid(ParseError(R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", ""),
                "shape of safetensors tensor 't' has a negative dimension -1");
  for (const char* offsets : {"[0]", "[0,4,8]", "[-1,4]", "[0,4.0]", "\"0,4\"", "[0,\"4\"]"}) {
    ExpectInvalid(
        ParseError(absl::StrCat(R"({"t":{"dtype":"F32","shape":[],"data_offsets":)", offsets, "}}"),
                   std::string(4, '\0')),
        "data_offsets of safetensors tensor 't' must be two non-negative integers");
  }
}

TEST(SafetensorsValidationTest, Dtypes_PytorchSemantics7) {
  const absl::Status unknown =
      ParseError(R"({"t":{"dtype":"F33","shape":[],"data_offsets":[0,4]}})", "");
  ExpectInvalid(unknown, "tensor 't' has unknown dtype 'F33'");
  ExpectInvalid(unknown, "BOOL, U8, I8, I16, F16, BF16, I32, F32, F64, I64");
  for (const char* dtype : {"U16", "U32", "U64", "F8_E4M3", "F8_E5M2", "C64"}) {
    ExpectInvalid(
        ParseError(
            absl::StrCat(R"({"t":{"dtype":")", dtype, R"(","shape":[],"data_offsets":[0,0]}})"),
            ""),
        absl::StrCat("dtype ", dtype, " of safetensors tensor 't' is not supported by paramd"));
  }
  // dtype names are case-sensitive, as in the reference.
  ExpectInvalid(
      ParseError(R"({"t":{"dtype":"f32","shape":[],"data_offsets":[0,4]}})", std::string(4, '\0')),
      "unknown dtype 'f32'");
}

TEST(SafetensorsValidationTest, OffsetsAndSizes_PytorchSemantics7) {
  // end before begin.
  ExpectInvalid(ParseError(R"({"t":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})", ""),
                "end is before its begin (InvalidOffset)");
  // The first tensor must begin at 0.
  ExpectInvalid(
      ParseError(R"({"t":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})", std::string(8, '\0')),
      "tensor 't' has data_offsets [4, 8] but should begin at 0");
  // A gap.
  ExpectInvalid(ParseError(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                           R"("b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})",
                           std::string(12, '\0')),
                "tensor 'b' has data_offsets [8, 12] but should begin at 4");
  // An overlap.
  ExpectInvalid(ParseError(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},)"
                           R"("b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}})",
                           std::string(12, '\0')),
                "tensor 'b' has data_offsets [4, 12] but should begin at 8");
  // Bytes that do not match dtype and shape.
  ExpectInvalid(
      ParseError(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", std::string(4, '\0')),
      "tensor 't' has 4 bytes (data_offsets [0, 4]) but dtype F32 and shape [2] need 8 "
      "(TensorInvalidInfo)");
  // A shape whose byte count overflows.
  ExpectInvalid(
      ParseError(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})",
                 ""),
      "ValidationOverflow");
  ExpectInvalid(ParseError(R"({"t":{"dtype":"U8","shape":[18446744073709551615],)"
                           R"("data_offsets":[0,0]}})",
                           ""),
                "ValidationOverflow");
  // The data must end exactly where the last tensor ends.
  ExpectInvalid(ParseError(R"({"t":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "abc"),
                "tensors cover 2 bytes but the file holds 3 bytes after the header");
  ExpectInvalid(ParseError(R"({"t":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", "a"),
                "MetadataIncompleteBuffer");
  ExpectInvalid(ParseError("{}", "x"), "MetadataIncompleteBuffer");
}

TEST(SafetensorsValidationTest, DuplicateKeysAreRejected_PytorchSemantics7) {
  ExpectInvalid(ParseError(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                           R"("t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})",
                           "a"),
                "safetensors header has the key 't' more than once");
  ExpectInvalid(ParseError(R"({"__metadata__":{},"__metadata__":{}})", ""),
                "has the key '__metadata__' more than once");
  ExpectInvalid(ParseError(R"({"t":{"dtype":"U8","dtype":"U8","shape":[1],)"
                           R"("data_offsets":[0,1]}})",
                           "a"),
                "repeats the key 'dtype'");
  ExpectInvalid(ParseError(R"({"__metadata__":{"k":"1","k":"2"}})", ""), "repeats the key 'k'");
  // The same key in two different objects is fine.
  EXPECT_TRUE(ParseError(R"({"__metadata__":{"a":"x"},"a":{"dtype":"U8","shape":[1],)"
                         R"("data_offsets":[0,1]}})",
                         "a")
                  .ok());
}

// Errors name the first bad entry in header order, not in name order.
TEST(SafetensorsValidationTest, ErrorsNameTheFirstBadEntryInHeaderOrder_PytorchSemantics7) {
  ExpectInvalid(ParseError(R"({"b":1,"a":1})", ""), "entry for tensor 'b' must be an object");
  ExpectInvalid(ParseError(R"({"__metadata__":{"z":1,"y":2}})", ""),
                "__metadata__ value for 'z' must be a string");
}

// A header with many names parses in time about linear in its size: 100k names took
// minutes while each key insert scanned every earlier key (a quadratic parse).
TEST(SafetensorsReaderTest, ManyTensorNamesParseInLinearTime_PytorchSemantics7) {
  constexpr int kTensors = 100'000;
  constexpr int kMetadata = 2'000;
  std::string header = "{\"__metadata__\":{";
  for (int i = kMetadata - 1; i >= 0; --i) {
    absl::StrAppend(&header, i == kMetadata - 1 ? "" : ",", "\"key", i, "\":\"", i, "\"");
  }
  header += "}";
  // Names in the header descend while their data offsets ascend.
  for (int i = 0; i < kTensors; ++i) {
    absl::StrAppend(&header, ",\"layers.", kTensors - 1 - i,
                    ".weight\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[", i, ",",
                    i + 1, "]}");
  }
  header += "}";
  const std::string bytes = FileBytes(header, std::string(kTensors, 'x'));

  // CPU time, which other work on a loaded machine hardly changes.
  const std::clock_t start = std::clock();
  absl::StatusOr<SafetensorsFile> read = ParseSafetensors(AsSpan(bytes), nullptr);
  const double seconds = static_cast<double>(std::clock() - start) / CLOCKS_PER_SEC;
  ASSERT_TRUE(read.ok()) << read.status();
  // Under a second of CPU; the quadratic parse took 33 s.
  EXPECT_LT(seconds, 5.0);

  ASSERT_EQ(read->entries.size(), static_cast<size_t>(kTensors));
  EXPECT_EQ(read->entries.front().name, absl::StrCat("layers.", kTensors - 1, ".weight"));
  EXPECT_EQ(read->entries.back().name, "layers.0.weight");
  ASSERT_EQ(read->metadata.size(), static_cast<size_t>(kMetadata));
  EXPECT_EQ(read->metadata.front(), (std::pair<std::string, std::string>{
                                        absl::StrCat("key", kMetadata - 1),
                                        absl::StrCat(kMetadata - 1)}));
  EXPECT_EQ(read->metadata.back(), (std::pair<std::string, std::string>{"key0", "0"}));
}

// --- files ----------------------------------------------------------------------------

TEST_F(SafetensorsFileTest, MappedFileErrorsNameThePath_PytorchSemantics7) {
  const std::string missing = PathOf("missing.safetensors");
  absl::Status status = MappedFile::Open(missing).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr(missing));
  status = MappedFile::Open(dir_.string()).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("is a directory"));

  const std::string empty = PathOf("empty.safetensors");
  std::ofstream(empty).close();
  absl::StatusOr<std::shared_ptr<MappedFile>> mapped = MappedFile::Open(empty);
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  EXPECT_EQ((*mapped)->size(), 0u);
  status = ReadSafetensors(empty).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()),
              StartsWith("'" + empty + "': safetensors header too small"));
}

TEST_F(SafetensorsFileTest, WriteIsAtomicAndReplacesTheOldFile_PytorchSemantics7) {
  const std::string path = PathOf("ckpt.safetensors");
  ASSERT_TRUE(SaveSafetensors(path, {{"v", Make(DType::kInt32, {1}, {1})}}, {}).ok());
  const std::string v1 = ReadFile(path);
  ASSERT_TRUE(
      SaveSafetensors(path, {{"v", Make(DType::kInt32, {2}, {2, 3})}}, {{"v", "2"}}).ok());
  EXPECT_NE(ReadFile(path), v1);
  absl::StatusOr<SafetensorsFile> read = ReadSafetensors(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*core::ToDoubles(read->entries[0].tensor), (std::vector<double>{2, 3}));
  EXPECT_EQ(read->metadata, (SafetensorsMetadata{{"v", "2"}}));
  EXPECT_EQ(Listing(), std::vector<std::string>{"ckpt.safetensors"});
  EXPECT_EQ(std::filesystem::status(path).permissions() & std::filesystem::perms::all,
            std::filesystem::perms(0644));

  // A refused tensor set leaves the old file as it was.
  const std::string v2 = ReadFile(path);
  const core::Tensor t = Make(DType::kInt32, {1}, {9});
  EXPECT_FALSE(SaveSafetensors(path, {{"x", t}, {"x", t}}, {}).ok());
  EXPECT_EQ(ReadFile(path), v2);
  EXPECT_EQ(Listing(), std::vector<std::string>{"ckpt.safetensors"});
}

TEST_F(SafetensorsFileTest, FailedWritesLeaveNoTemporaryFiles_PytorchSemantics7) {
  const core::Tensor t = Make(DType::kFloat32, {2}, {1, 2});
  // The directory does not exist.
  const std::string nowhere = PathOf("no/such/dir/ckpt.safetensors");
  absl::Status status = SaveSafetensors(nowhere, {{"t", t}}, {});
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr(nowhere));
  EXPECT_TRUE(Listing().empty());

  // The rename fails after the temporary file was written: the target is a directory.
  const std::string target = PathOf("taken");
  std::filesystem::create_directory(target);
  std::ofstream(target + "/inside").close();
  status = SaveSafetensors(target, {{"t", t}}, {});
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), HasSubstr("cannot rename"));
  EXPECT_EQ(Listing(), std::vector<std::string>{"taken"});
  EXPECT_TRUE(std::filesystem::exists(target + "/inside"));
}

}  // namespace
}  // namespace paramd::io
