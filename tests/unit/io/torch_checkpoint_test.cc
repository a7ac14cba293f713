// torch.save checkpoints (pytorch-semantics.md §5, §6, §9): paramd's files are laid out as
// torch writes them, files torch writes are read, and everything else is refused with a
// message that says what to do. Inputs are assembled by hand here; real PyTorch interop is
// covered by the interop tests.
#include "server/io/torch_checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/zip/zip.h"
#include "server/io/mapped_file.h"
#include "tests/unit/io/test_util.h"

namespace paramd::io {
namespace {

using ::testing::HasSubstr;
using test_util::AsSpan;
using test_util::Bytes;
using test_util::Make;

class TorchCheckpointFileTest : public test_util::ScratchDirTest {};

TorchCheckpointEntry Entry(std::string name, core::Tensor tensor, bool is_parameter = false,
                           bool requires_grad = false) {
  TorchCheckpointEntry entry;
  entry.name = std::move(name);
  entry.tensor = std::move(tensor);
  entry.is_parameter = is_parameter;
  entry.requires_grad = requires_grad;
  return entry;
}

std::string Write(const std::vector<TorchCheckpointEntry>& entries,
                  const TorchSaveOptions& options = {}) {
  StringWritableFile file;
  absl::Status status = WriteTorchCheckpoint(file, entries, options);
  EXPECT_TRUE(status.ok()) << status;
  return file.data;
}

// The records of an archive, in order.
std::vector<std::pair<std::string, std::string>> Records(const std::string& bytes) {
  std::vector<std::pair<std::string, std::string>> out;
  absl::StatusOr<zip::Reader> zip = zip::Reader::Open(AsSpan(bytes));
  EXPECT_TRUE(zip.ok()) << zip.status();
  if (!zip.ok()) return out;
  for (const zip::Entry& entry : zip->entries()) {
    const absl::Span<const uint8_t> data = zip->Data(entry);
    out.emplace_back(entry.name,
                     std::string(reinterpret_cast<const char*>(data.data()), data.size()));
  }
  return out;
}

std::string Zip(const std::vector<std::pair<std::string, std::string>>& records,
                zip::WriterOptions options = {}) {
  zip::StringSink file;
  zip::Writer writer(file, options);
  for (const auto& [name, data] : records) EXPECT_TRUE(writer.AddEntry(name, data).ok());
  EXPECT_TRUE(writer.Finish().ok());
  return file.data;
}

absl::StatusOr<TorchCheckpoint> Parse(const std::string& bytes) {
  return ParseTorchCheckpoint(AsSpan(bytes), nullptr);
}

void ExpectInvalid(const absl::Status& status, const std::string& fragment) {
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(fragment));
}

// Pickle bytes assembled opcode by opcode; `protocol4` spells globals and strings with
// protocol 4's opcodes, as pickle_protocol=4 does.
class Asm {
 public:
  explicit Asm(bool protocol4 = false) : protocol4_(protocol4) {
    Op(0x80).Op(protocol4 ? 4 : 2);
    if (protocol4) Op(0x95).Le(0, 8);
  }
  Asm& Op(int op) {
    bytes.push_back(static_cast<char>(op));
    return *this;
  }
  Asm& Le(uint64_t value, int n) {
    for (int i = 0; i < n; ++i) bytes.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
    return *this;
  }
  Asm& Raw(const std::string& raw) {
    bytes += raw;
    return *this;
  }
  Asm& Str(const std::string& text) {
    if (protocol4_ && text.size() < 256) return Op(0x8c).Op(text.size()).Raw(text).Op(0x94);
    return Op('X').Le(text.size(), 4).Raw(text);
  }
  Asm& Global(const std::string& module_name, const std::string& name) {
    if (protocol4_) return Str(module_name).Str(name).Op(0x93).Op(0x94);
    return Op('c').Raw(module_name + "\n" + name + "\n");
  }
  Asm& Put(int index) { return Op('q').Op(index); }
  Asm& Get(int index) { return Op('h').Op(index); }
  Asm& K(int value) { return Op('K').Op(value); }
  Asm& Ints(const std::vector<int>& values) {
    Op('(');
    for (int v : values) K(v);
    return Op('t');
  }
  Asm& OrderedDict() { return Global("collections", "OrderedDict").Op(')').Op('R'); }
  // _rebuild_tensor_v2(('storage', torch.<storage_class>, key, 'cpu', numel), offset,
  // size, stride, False, OrderedDict())
  Asm& Tensor(const std::string& storage_class, const std::string& key, int numel,
              std::vector<int> size, std::vector<int> stride, int offset = 0) {
    Global("torch._utils", "_rebuild_tensor_v2").Op('(');
    Op('(').Str("storage").Global("torch", storage_class).Str(key).Str("cpu").K(numel);
    Op('t').Op('Q');
    K(offset).Ints(size).Ints(stride).Op(0x89).OrderedDict();
    return Op('t').Op('R');
  }
  std::string bytes;

 private:
  bool protocol4_;
};

// A state_dict pickle of one float tensor `w` over storage '0'.
std::string OneTensorPickle(const std::string& storage_class, int numel, std::vector<int> size,
                            std::vector<int> stride, bool protocol4 = false) {
  Asm a(protocol4);
  a.OrderedDict().Str("w").Tensor(storage_class, "0", numel, size, stride).Op('s').Op('.');
  return a.bytes;
}

std::string Floats(std::vector<float> values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4);
}

std::string HandBuilt(const std::string& pickle, const std::string& data0,
                      const std::string& folder = "archive") {
  return Zip({{folder + "/data.pkl", pickle},
              {folder + "/byteorder", "little"},
              {folder + "/data/0", data0},
              {folder + "/version", "3\n"}});
}

// --- writing as torch writes ------------------------------------------------------------

TEST(TorchCheckpointWriterTest, WritesTheReferencePickleForLinearByteForByte_PytorchSemantics5_3) {
  // nn.Linear(2, 1).state_dict(), with _metadata {'': {'version': 1}}.
  TorchSaveOptions options;
  options.metadata = TorchModuleMetadata{{"", 1}};
  options.serialization_id = "1234567890123456789012345678901234567890";
  const std::string bytes = Write({Entry("weight", Make(DType::kFloat32, {1, 2}, {0.5, -1})),
                                   Entry("bias", Make(DType::kFloat32, {1}, {0.25}))},
                                  options);

  // The §5.3 disassembly with the BINPUTs it omits.
  Asm e;
  e.Global("collections", "OrderedDict").Put(0).Op(')').Op('R').Put(1).Op('(');
  e.Str("weight").Put(2).Global("torch._utils", "_rebuild_tensor_v2").Put(3).Op('(');
  e.Op('(').Str("storage").Put(4).Global("torch", "FloatStorage").Put(5).Str("0").Put(6);
  e.Str("cpu").Put(7).K(2).Op('t').Put(8).Op('Q');
  e.K(0).K(1).K(2).Op(0x86).Put(9).K(2).K(1).Op(0x86).Put(10).Op(0x89);
  e.Get(0).Op(')').Op('R').Put(11).Op('t').Put(12).Op('R').Put(13);
  e.Str("bias").Put(14).Get(3).Op('(');
  e.Op('(').Get(4).Get(5).Str("1").Put(15).Get(7).K(1).Op('t').Put(16).Op('Q');
  e.K(0).K(1).Op(0x85).Put(17).K(1).Op(0x85).Put(18).Op(0x89);
  e.Get(0).Op(')').Op('R').Put(19).Op('t').Put(20).Op('R').Put(21);
  e.Op('u');
  e.Op('}').Put(22).Str("_metadata").Put(23).Get(0).Op(')').Op('R').Put(24);
  e.Str("").Put(25).Op('}').Put(26).Str("version").Put(27).K(1);
  e.Op('s').Op('s').Op('s').Op('b').Op('.');

  const auto records = Records(bytes);
  ASSERT_EQ(records.size(), 6u);
  EXPECT_EQ(records[0].first, "archive/data.pkl");
  EXPECT_EQ(records[0].second, e.bytes);
  EXPECT_EQ(records[1], (std::pair<std::string, std::string>{"archive/byteorder", "little"}));
  EXPECT_EQ(records[2], (std::pair<std::string, std::string>{"archive/data/0", Floats({0.5, -1})}));
  EXPECT_EQ(records[3], (std::pair<std::string, std::string>{"archive/data/1", Floats({0.25})}));
  EXPECT_EQ(records[4], (std::pair<std::string, std::string>{"archive/version", "3\n"}));
  EXPECT_EQ(records[5], (std::pair<std::string, std::string>{"archive/.data/serialization_id",
                                                             options.serialization_id}));
  absl::StatusOr<zip::Reader> zip = zip::Reader::Open(AsSpan(bytes));
  ASSERT_TRUE(zip.ok());
  for (const zip::Entry& entry : zip->entries()) {
    EXPECT_EQ(entry.data_offset % 64, 0u) << entry.name;
  }
}

TEST(TorchCheckpointWriterTest, GeneratesA40DigitSerializationId_PytorchSemantics5) {
  const auto first = Records(Write({Entry("w", Make(DType::kInt64, {1}, {1}))}));
  const auto second = Records(Write({Entry("w", Make(DType::kInt64, {1}, {1}))}));
  ASSERT_EQ(first.size(), 5u);
  const std::string& id = first.back().second;
  EXPECT_EQ(first.back().first, "archive/.data/serialization_id");
  EXPECT_EQ(id.size(), 40u);
  EXPECT_EQ(id.find_first_not_of("0123456789"), std::string::npos);
  EXPECT_NE(id, second.back().second);
}

// --- round trips --------------------------------------------------------------------------

TEST_F(TorchCheckpointFileTest, RoundTripsEveryDtypeScalarsAndEmptyTensors_PytorchSemantics5) {
  std::vector<TorchCheckpointEntry> entries;
  for (DType dtype : kAllDTypes) {
    const std::string name(DTypeName(dtype));
    entries.push_back(Entry(name + ".matrix", Make(dtype, {2, 3}, {0, 1, 0, 1, 1, 0})));
    entries.push_back(Entry(name + ".scalar", Make(dtype, {}, {1})));
    entries.push_back(Entry(name + ".empty", Make(dtype, {0, 3}, {})));
  }
  const std::string path = PathOf("model.pt");
  ASSERT_TRUE(SaveTorchCheckpoint(path, entries).ok());
  absl::StatusOr<TorchCheckpoint> read = ReadTorchCheckpoint(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->archive_name, "archive");
  EXPECT_EQ(read->format_version, 3);
  EXPECT_FALSE(read->metadata.has_value());
  EXPECT_TRUE(read->extra_records.empty());
  ASSERT_EQ(read->entries.size(), entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    const TorchCheckpointEntry& got = read->entries[i];
    EXPECT_EQ(got.name, entries[i].name);
    EXPECT_EQ(got.tensor.dtype(), entries[i].tensor.dtype()) << got.name;
    EXPECT_EQ(got.tensor.shape(), entries[i].tensor.shape()) << got.name;
    EXPECT_EQ(got.tensor.strides(), entries[i].tensor.strides()) << got.name;
    EXPECT_EQ(Bytes(got.tensor), Bytes(entries[i].tensor)) << got.name;
    EXPECT_FALSE(got.is_parameter);
    EXPECT_FALSE(got.requires_grad);
    EXPECT_EQ(got.saved_location, "cpu");
    EXPECT_TRUE(got.tensor.device().is_cpu());
  }
}

TEST(TorchCheckpointTest, TiedTensorsAreWrittenOnceAndReadBackSharingAStorage_PytorchSemantics9) {
  const core::Tensor embed = Make(DType::kFloat32, {10, 4}, std::vector<double>(40, 0.5));
  const std::string bytes = Write({Entry("embed.weight", embed), Entry("lm_head.weight", embed),
                                   Entry("other", Make(DType::kFloat32, {1}, {1}))});
  std::vector<std::string> names;
  for (const auto& [name, data] : Records(bytes)) names.push_back(name);
  EXPECT_EQ(names, (std::vector<std::string>{"archive/data.pkl", "archive/byteorder",
                                             "archive/data/0", "archive/data/1", "archive/version",
                                             "archive/.data/serialization_id"}));
  // The second tensor fetches the storage key '0' from the memo, as torch's pickler does.
  const std::string pickle = Records(bytes)[0].second;
  EXPECT_EQ(pickle.find(std::string("X\x01\0\0\0"
                                    "0",
                                    6)),
            pickle.rfind(std::string("X\x01\0\0\0"
                                     "0",
                                     6)));

  absl::StatusOr<TorchCheckpoint> read = Parse(bytes);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->entries.size(), 3u);
  EXPECT_EQ(read->entries[0].tensor.storage(), read->entries[1].tensor.storage());
  EXPECT_NE(read->entries[0].tensor.storage(), read->entries[2].tensor.storage());
  EXPECT_EQ(Bytes(read->entries[1].tensor), Bytes(embed));
}

TEST(TorchCheckpointTest, ViewsKeepOffsetsAndStridesAndTheWholeStorageIsWritten_PytorchSemantics5) {
  std::vector<double> values(12);
  for (int i = 0; i < 12; ++i) values[i] = i;
  const core::Tensor base = Make(DType::kFloat64, {3, 4}, values);
  const core::Tensor transposed(base.storage(), 0, {4, 3}, {1, 4}, DType::kFloat64);
  const core::Tensor strided(base.storage(), 5, {3}, {2}, DType::kFloat64);
  const std::string bytes = Write({Entry("t", transposed), Entry("s", strided)});
  const auto records = Records(bytes);
  ASSERT_EQ(records[2].first, "archive/data/0");
  EXPECT_EQ(records[2].second.size(), 12u * 8);
  EXPECT_EQ(records[3].first, "archive/version");

  absl::StatusOr<TorchCheckpoint> read = Parse(bytes);
  ASSERT_TRUE(read.ok()) << read.status();
  const core::Tensor& t = read->entries[0].tensor;
  const core::Tensor& s = read->entries[1].tensor;
  EXPECT_EQ(t.storage(), s.storage());
  EXPECT_EQ(t.storage()->nbytes(), 96u);
  EXPECT_EQ(t.offset(), 0);
  EXPECT_EQ(t.strides(), (core::Shape{1, 4}));
  EXPECT_EQ(s.offset(), 5);
  EXPECT_EQ(s.shape(), (core::Shape{3}));
  EXPECT_EQ(s.strides(), (core::Shape{2}));
  EXPECT_EQ(*core::ToDoubles(t), *core::ToDoubles(transposed));
  EXPECT_EQ(*core::ToDoubles(s), (std::vector<double>{5, 7, 9}));
}

TEST(TorchCheckpointTest, ParametersRoundTripWithTheirRequiresGrad_PytorchSemantics5) {
  const std::string bytes =
      Write({Entry("p", Make(DType::kFloat32, {2}, {1, 2}), true, true),
             Entry("frozen", Make(DType::kFloat32, {1}, {3}), true, false),
             Entry("buffer", Make(DType::kInt64, {1}, {4}))});
  const std::string pickle = Records(bytes)[0].second;
  EXPECT_NE(pickle.find("torch._utils\n_rebuild_parameter\n"), std::string::npos);
  absl::StatusOr<TorchCheckpoint> read = Parse(bytes);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->entries.size(), 3u);
  EXPECT_TRUE(read->entries[0].is_parameter);
  EXPECT_TRUE(read->entries[0].requires_grad);
  EXPECT_TRUE(read->entries[1].is_parameter);
  EXPECT_FALSE(read->entries[1].requires_grad);
  EXPECT_FALSE(read->entries[2].is_parameter);
  EXPECT_EQ(*core::ToDoubles(read->entries[0].tensor), (std::vector<double>{1, 2}));
}

TEST(TorchCheckpointTest, MetadataAndExtraRecordsRoundTrip_PytorchSemantics2) {
  TorchSaveOptions options;
  options.archive_name = "my_model";
  options.metadata = TorchModuleMetadata{{"", 1}, {"linear1", 1}, {"bn", 2}, {"odd", std::nullopt}};
  options.extra_records = {{"paramd/spec.json", "{\"type\":\"MLP\"}"}, {"notes", ""}};
  const std::string bytes = Write({Entry("w", Make(DType::kFloat32, {1}, {1}))}, options);
  const auto records = Records(bytes);
  EXPECT_EQ(records[records.size() - 2].first, "my_model/paramd/spec.json");
  absl::StatusOr<TorchCheckpoint> read = Parse(bytes);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->archive_name, "my_model");
  ASSERT_TRUE(read->metadata.has_value());
  EXPECT_EQ(*read->metadata, *options.metadata);
  std::map<std::string, std::string> extra(read->extra_records.begin(), read->extra_records.end());
  EXPECT_EQ(extra, (std::map<std::string, std::string>{{"paramd/spec.json", "{\"type\":\"MLP\"}"},
                                                       {"notes", ""}}));
}

TEST_F(TorchCheckpointFileTest, AlignedRecordsAreUsedInPlaceFromTheMapping_PytorchSemantics5) {
  const std::string path = PathOf("m.pt");
  ASSERT_TRUE(SaveTorchCheckpoint(path, {Entry("w", Make(DType::kFloat32, {4}, {1, 2, 3, 4})),
                                         Entry("b", Make(DType::kInt64, {2}, {5, 6}))})
                  .ok());
  absl::StatusOr<std::shared_ptr<MappedFile>> mapped = MappedFile::Open(path);
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  std::weak_ptr<MappedFile> weak = *mapped;
  const uint8_t* begin = (*mapped)->data();
  const uint8_t* end = begin + (*mapped)->size();
  core::Tensor kept;
  {
    absl::StatusOr<TorchCheckpoint> read = ReadTorchCheckpoint(*std::move(mapped));
    ASSERT_TRUE(read.ok()) << read.status();
    for (const TorchCheckpointEntry& entry : read->entries) {
      const auto* data = static_cast<const uint8_t*>(entry.tensor.data());
      EXPECT_GE(data, begin) << entry.name;
      EXPECT_LT(data, end) << entry.name;
    }
    kept = read->entries[1].tensor;
  }
  EXPECT_FALSE(weak.expired());
  EXPECT_EQ(*core::ToDoubles(kept), (std::vector<double>{5, 6}));
  kept = core::Tensor();
  EXPECT_TRUE(weak.expired());
}

TEST(TorchCheckpointTest, ReadsZip64Archives_PytorchSemantics5) {
  const core::Tensor w = Make(DType::kBFloat16, {3}, {1, 2, 3});
  const std::string zip64 =
      Zip(Records(Write({Entry("w", w)})), zip::WriterOptions{.force_zip64 = true});
  ASSERT_NE(zip64.find(std::string("PK\x06\x06", 4)), std::string::npos);
  absl::StatusOr<TorchCheckpoint> read = Parse(zip64);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(Bytes(read->entries[0].tensor), Bytes(w));
}

TEST(TorchCheckpointTest, ByteSwapsBigEndianFiles_PytorchSemantics5) {
  std::string big = Floats({1.5f, -2.0f});
  for (size_t i = 0; i < big.size(); i += 4) std::reverse(big.begin() + i, big.begin() + i + 4);
  const std::string bytes = Zip({{"archive/data.pkl", OneTensorPickle("FloatStorage", 2, {2}, {1})},
                                 {"archive/byteorder", "big"},
                                 {"archive/data/0", big},
                                 {"archive/version", "3\n"}});
  absl::StatusOr<TorchCheckpoint> read =
      ParseTorchCheckpoint(AsSpan(bytes), std::make_shared<std::string>(bytes));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*core::ToDoubles(read->entries[0].tensor), (std::vector<double>{1.5, -2.0}));

  const std::string odd = Zip({{"archive/data.pkl", OneTensorPickle("FloatStorage", 2, {2}, {1})},
                               {"archive/byteorder", "middle"},
                               {"archive/data/0", big},
                               {"archive/version", "3\n"}});
  ExpectInvalid(Parse(odd).status(), "expected 'little' or 'big'");
}

TEST(TorchCheckpointTest, ReadsProtocol4PicklesAndAnyFolderName_PytorchSemantics5) {
  const std::string bytes = HandBuilt(OneTensorPickle("HalfStorage", 2, {2}, {1}, true),
                                      std::string("\x00\x3c\x00\xc0", 4), "checkpoint_7");
  absl::StatusOr<TorchCheckpoint> read = Parse(bytes);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->archive_name, "checkpoint_7");
  EXPECT_EQ(read->entries[0].tensor.dtype(), DType::kFloat16);
  EXPECT_EQ(*core::ToDoubles(read->entries[0].tensor), (std::vector<double>{1, -2}));
}

TEST(TorchCheckpointTest, ReadsTensorV3WithUntypedStorage_PytorchSemantics5) {
  Asm a;
  a.OrderedDict().Str("w").Global("torch._utils", "_rebuild_tensor_v3").Op('(');
  a.Op('(').Str("storage").Global("torch", "UntypedStorage").Str("0").Str("cuda:1").K(8);
  a.Op('t').Op('Q').K(0).Ints({2}).Ints({1}).Op(0x89).OrderedDict().Global("torch", "int32");
  a.Op('t').Op('R').Op('s').Op('.');
  absl::StatusOr<TorchCheckpoint> read =
      Parse(HandBuilt(a.bytes, std::string("\x07\0\0\0\xff\xff\xff\xff", 8)));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->entries[0].tensor.dtype(), DType::kInt32);
  EXPECT_EQ(read->entries[0].saved_location, "cuda:1");
  EXPECT_EQ(*core::ToDoubles(read->entries[0].tensor), (std::vector<double>{7, -1}));
}

// --- refusals -----------------------------------------------------------------------------

TEST(TorchCheckpointRefusalTest, LegacyFormatsSayToResave_PytorchSemantics6) {
  const std::string legacy(
      "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19\x2e"
      "\x80\x02\x4d\xe9\x03\x2e",
      21);
  ExpectInvalid(Parse(legacy).status(),
                "legacy torch.save format; load it in PyTorch and re-save it with a current "
                "torch.save");
  std::string tar(1024, '\0');
  tar.replace(0, 8, "storages");
  tar.replace(257, 5, "ustar");
  ExpectInvalid(Parse(tar).status(), "legacy torch.save format");
  ExpectInvalid(Parse("PYTORCH1 preview").status(), "legacy torch.save format");
  ExpectInvalid(Parse("hello world").status(), "not a torch.save file");
  ExpectInvalid(Parse("").status(), "not a torch.save file");
}

TEST(TorchCheckpointRefusalTest, TorchScriptArchivesSayToUseJitLoad_PytorchSemantics5) {
  const std::string bytes = Zip({{"model/data.pkl", OneTensorPickle("FloatStorage", 1, {1}, {1})},
                                 {"model/code/__torch__.py", "def forward(self): ..."},
                                 {"model/constants.pkl", "\x80\x02)."},
                                 {"model/version", "3\n"}});
  ExpectInvalid(Parse(bytes).status(), "TorchScript archive (torch.jit.save)");
  ExpectInvalid(Parse(bytes).status(), "torch.jit.load");
}

TEST(TorchCheckpointRefusalTest, CompressedEntriesAreRefused_PytorchSemantics5) {
  std::string bytes = HandBuilt(OneTensorPickle("FloatStorage", 1, {1}, {1}), Floats({1}));
  // Mark every entry deflated (method 8) in its local and central headers.
  for (const std::string& signature :
       {std::string("PK\x03\x04", 4), std::string("PK\x01\x02", 4)}) {
    const size_t method_at = signature[2] == 3 ? 8 : 10;
    for (size_t pos = bytes.find(signature); pos != std::string::npos;
         pos = bytes.find(signature, pos + 1)) {
      bytes[pos + method_at] = 8;
    }
  }
  // The zip library reads deflate (for .npz); torch.save files must be stored, to be used in
  // place.
  ExpectInvalid(Parse(bytes).status(),
                "is compressed (method 8, deflate); paramd reads only stored");
}

TEST(TorchCheckpointRefusalTest, EveryTruncationIsRefused_PytorchSemantics5) {
  const std::string bytes = Write({Entry("w", Make(DType::kFloat32, {3}, {1, 2, 3}))});
  for (size_t length = 0; length < bytes.size(); ++length) {
    const std::vector<uint8_t> prefix(bytes.begin(), bytes.begin() + length);
    absl::Status status = ParseTorchCheckpoint(absl::MakeConstSpan(prefix), nullptr).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << length << ": " << status;
  }
}

TEST(TorchCheckpointRefusalTest, CorruptedBytesFailTheCrcCheck_PytorchSemantics5) {
  std::string bytes = Write({Entry("w", Make(DType::kFloat32, {3}, {1, 2, 3}))});
  const zip::Entry data0 = *zip::Reader::Open(AsSpan(bytes))->Find("archive/data/0");
  bytes[data0.data_offset] ^= 1;
  ExpectInvalid(Parse(bytes).status(), "'archive/data/0' fails its CRC-32 check");
  EXPECT_TRUE(
      ParseTorchCheckpoint(AsSpan(bytes), nullptr, TorchReadOptions{.verify_crc = false}).ok());
}

TEST(TorchCheckpointRefusalTest, ARecordOfTheWrongSizeIsRefused_PytorchSemantics5) {
  ExpectInvalid(
      Parse(HandBuilt(OneTensorPickle("FloatStorage", 3, {3}, {1}), Floats({1, 2}))).status(),
      "record size 8 mismatch with dst size 12");
  ExpectInvalid(Parse(Zip({{"archive/data.pkl", OneTensorPickle("FloatStorage", 1, {1}, {1})},
                           {"archive/version", "3\n"}}))
                    .status(),
                "has no record 'archive/data/0'");
}

TEST(TorchCheckpointRefusalTest, PicklesThatAreNotStateDictsAreRefused_PytorchSemantics5) {
  Asm list;
  list.Op(']').Op('.');
  ExpectInvalid(Parse(HandBuilt(list.bytes, "")).status(),
                "data.pkl holds a list, not a state_dict");
  ExpectInvalid(Parse(HandBuilt(list.bytes, "")).status(), "save model.state_dict() instead");

  // torch.save(model): the module's class is a GLOBAL outside the allow-list.
  Asm module;
  module.Global("torch.nn.modules.linear", "Linear").Put(0).Op(')').Op(0x81).Op('.');
  ExpectInvalid(Parse(HandBuilt(module.bytes, "")).status(),
                "Unsupported global: GLOBAL torch.nn.modules.linear.Linear");

  Asm system;
  system.Global("posix", "system").Str("echo pwned").Op(0x85).Op('R').Op('.');
  ExpectInvalid(Parse(HandBuilt(system.bytes, "")).status(), "GLOBAL posix.system");

  Asm number;
  number.Op('}').Str("step").K(7).Op('s').Op('.');
  ExpectInvalid(Parse(HandBuilt(number.bytes, "")).status(),
                "state_dict entry 'step' is a int, not a tensor");

  Asm int_key;
  int_key.Op('}').K(1).Tensor("FloatStorage", "0", 1, {1}, {1}).Op('s').Op('.');
  ExpectInvalid(Parse(HandBuilt(int_key.bytes, Floats({1}))).status(),
                "state_dict key #0 is a int, not a str");

  Asm unknown_opcode;
  unknown_opcode.Op('}').Op('i').Op('.');
  ExpectInvalid(Parse(HandBuilt(unknown_opcode.bytes, "")).status(), "Unsupported operand 105");
}

TEST(TorchCheckpointRefusalTest, UnsupportedDtypesAreNamed_PytorchSemantics5) {
  ExpectInvalid(
      Parse(HandBuilt(OneTensorPickle("ComplexFloatStorage", 1, {1}, {1}), std::string(8, '\0')))
          .status(),
      "tensor 'w' has dtype torch.complex64, which paramd does not support");
  Asm a;
  a.OrderedDict().Str("w").Global("torch._utils", "_rebuild_tensor_v3").Op('(');
  a.Op('(').Str("storage").Global("torch", "UntypedStorage").Str("0").Str("cpu").K(1);
  a.Op('t').Op('Q').K(0).Ints({1}).Ints({1}).Op(0x89).OrderedDict();
  a.Global("torch", "float8_e4m3fn").Op('t').Op('R').Op('s').Op('.');
  ExpectInvalid(Parse(HandBuilt(a.bytes, std::string(1, '\0'))).status(),
                "has dtype torch.float8_e4m3fn, which paramd does not support");
}

TEST(TorchCheckpointRefusalTest, InconsistentStoragesAndViewsAreRefused_PytorchSemantics5) {
  ExpectInvalid(
      Parse(HandBuilt(OneTensorPickle("FloatStorage", 2, {2, 2}, {2, 1}), Floats({1, 2}))).status(),
      "reaches element 3 of a storage of 2 elements");
  Asm two_dtypes;
  two_dtypes.OrderedDict().Op('(').Str("a").Tensor("FloatStorage", "0", 1, {1}, {1});
  two_dtypes.Str("b").Tensor("IntStorage", "0", 1, {1}, {1}).Op('u').Op('.');
  ExpectInvalid(Parse(HandBuilt(two_dtypes.bytes, Floats({1}))).status(),
                "storage '0' is used as float32");
}

TEST(TorchCheckpointRefusalTest, ArchiveStructureIsChecked_PytorchSemantics5) {
  const std::string pickle = OneTensorPickle("FloatStorage", 1, {1}, {1});
  ExpectInvalid(Parse(Zip({{"data.pkl", pickle}})).status(),
                "file in archive is not in a subdirectory: data.pkl");
  ExpectInvalid(Parse(Zip({{"a/data.pkl", pickle}, {"b/version", "3\n"}})).status(),
                "'b/version' is outside the archive folder 'a/'");
  ExpectInvalid(Parse(Zip({{"a/data.pkl", pickle}, {"a/data/0", Floats({1})}})).status(),
                "no 'version' record");
  ExpectInvalid(
      Parse(Zip({{"a/data.pkl", pickle}, {"a/data/0", Floats({1})}, {"a/version", "99\n"}}))
          .status(),
      "PyTorch file with version 99");
  ExpectInvalid(Parse(Zip({{"a/version", "3\n"}})).status(), "no data.pkl");
  ExpectInvalid(Parse(Zip({})).status(), "does not contain any files");
  // `.data/version` is accepted in place of `version`, as torch does.
  EXPECT_TRUE(
      Parse(Zip({{"a/data.pkl", pickle}, {"a/data/0", Floats({1})}, {"a/.data/version", "3\n"}}))
          .ok());
}

TEST_F(TorchCheckpointFileTest, RefusedSavesWriteNothing_PytorchSemantics5) {
  const core::Tensor t = Make(DType::kFloat32, {2}, {1, 2});
  const std::string path = PathOf("x.pt");
  ExpectInvalid(SaveTorchCheckpoint(path, {Entry("w", t), Entry("w", t)}), "appears twice");
  ExpectInvalid(SaveTorchCheckpoint(path, {Entry("w", core::Tensor())}), "undefined");
  const core::Tensor as_int(t.storage(), 0, {2}, {1}, DType::kInt32);
  ExpectInvalid(SaveTorchCheckpoint(path, {Entry("f", t), Entry("i", as_int)}),
                "Cannot save multiple tensors or storages that view the same data as "
                "different types");
  const core::Tensor outside(t.storage(), 1, {2}, {1}, DType::kFloat32);
  ExpectInvalid(SaveTorchCheckpoint(path, {Entry("o", outside)}), "reaches element 2");
  TorchSaveOptions bad_archive;
  bad_archive.archive_name = "a/b";
  ExpectInvalid(SaveTorchCheckpoint(path, {Entry("w", t)}, bad_archive), "archive name 'a/b'");
  for (const std::string reserved : {"data.pkl", "data/0", "version", ".data/x", "../up", "/abs"}) {
    TorchSaveOptions extra;
    extra.extra_records = {{reserved, "x"}};
    EXPECT_EQ(SaveTorchCheckpoint(path, {Entry("w", t)}, extra).code(),
              absl::StatusCode::kInvalidArgument)
        << reserved;
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_TRUE(std::filesystem::is_empty(dir_));

  ASSERT_TRUE(SaveTorchCheckpoint(path, {Entry("w", t)}).ok());
  absl::StatusOr<TorchCheckpoint> read = ReadTorchCheckpoint(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*core::ToDoubles(read->entries[0].tensor), (std::vector<double>{1, 2}));
  const absl::Status missing = ReadTorchCheckpoint(PathOf("missing.pt")).status();
  EXPECT_EQ(missing.code(), absl::StatusCode::kNotFound);
}

// --- map_location -------------------------------------------------------------------------

TEST(MapLocationTest, ResolvesAsTorchLoadsMapLocation_PytorchSemantics5_5) {
  const MapLocation keep;
  EXPECT_EQ(*keep.Resolve("cpu"), Device::Cpu());
  EXPECT_EQ(*keep.Resolve("cuda:1"), Device::Cuda(1));
  ExpectInvalid(keep.Resolve("mps").status(), "pass map_location");

  absl::StatusOr<MapLocation> all = MapLocation::To("cpu");
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(*all->Resolve("cuda:3"), Device::Cpu());
  EXPECT_EQ(*all->Resolve("mps"), Device::Cpu());

  absl::StatusOr<MapLocation> remap = MapLocation::Remap({{"cuda:1", "cuda:0"}, {"mps", "cpu"}});
  ASSERT_TRUE(remap.ok()) << remap.status();
  EXPECT_EQ(*remap->Resolve("cuda:1"), Device::Cuda(0));
  EXPECT_EQ(*remap->Resolve("mps"), Device::Cpu());
  EXPECT_EQ(*remap->Resolve("cuda:2"), Device::Cuda(2));  // unmapped: kept

  ExpectInvalid(MapLocation::To("gpu").status(), "map_location 'gpu'");
  ExpectInvalid(MapLocation::Remap({{"cuda:0", "cuda:-1"}}).status(), "maps 'cuda:0'");

  const absl::Status no_cuda = CudaUnavailableForLoadError();
  EXPECT_EQ(no_cuda.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(no_cuda.message(),
            "Attempting to deserialize object on a CUDA device but torch.cuda.is_available() "
            "is False. If you are running on a CPU-only machine, please use torch.load with "
            "map_location=torch.device('cpu') to map your storages to the CPU.");
}

}  // namespace
}  // namespace paramd::io
