#include "server/io/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <limits>
#include <set>
#include <tuple>

#include "base/text.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "base/status_macros.h"
#include "server/io/utf8.h"

namespace paramd::io {
namespace {

// Objects are std::maps, so a header with n names parses in O(n log n); ordered_json's
// objects are vectors searched on every insert (quadratic: a 100k-name header took most of
// a minute). The two orders that show (see Header) are recorded while parsing.
using Json = nlohmann::json;

struct DTypeCode {
  absl::string_view name;
  DType dtype;
  // Position in the reference's dtype enum (BOOL U8 I8 F8_E5M2 F8_E4M3 I16 U16 F16 BF16 I32
  // U32 F32 F64 I64 U64); the writer orders tensors by it, descending.
  int rank;
};

constexpr DTypeCode kSupportedDTypes[] = {
    {"BOOL", DType::kBool, 0},    {"U8", DType::kUInt8, 1},
    {"I8", DType::kInt8, 2},      {"I16", DType::kInt16, 5},
    {"F16", DType::kFloat16, 7},  {"BF16", DType::kBFloat16, 8},
    {"I32", DType::kInt32, 9},    {"F32", DType::kFloat32, 11},
    {"F64", DType::kFloat64, 12}, {"I64", DType::kInt64, 13},
};

// Valid safetensors dtypes that no paramd dtype holds.
constexpr absl::string_view kUnsupportedDTypes[] = {
    "U16",         "U32",         "U64", "F8_E5M2", "F8_E4M3", "F8_E8M0",
    "F8_E4M3FNUZ", "F8_E5M2FNUZ", "C64", "F4",      "F6_E2M3", "F6_E3M2"};

std::string SupportedDTypeList() {
  std::vector<absl::string_view> names;
  for (const DTypeCode& code : kSupportedDTypes) names.push_back(code.name);
  return absl::StrJoin(names, ", ");
}

const DTypeCode* FindCode(absl::string_view name) {
  for (const DTypeCode& code : kSupportedDTypes) {
    if (code.name == name) return &code;
  }
  return nullptr;
}

const DTypeCode& CodeFor(DType dtype) {
  for (const DTypeCode& code : kSupportedDTypes) {
    if (code.dtype == dtype) return code;
  }
  return kSupportedDTypes[0];  // unreachable: every DType has a code
}


// A JSON string literal, as serde_json writes one (UTF-8 kept, controls escaped).
std::string Quote(absl::string_view text) {
  return Json(std::string(text)).dump(-1, ' ', false, Json::error_handler_t::replace);
}

uint64_t LoadLittleEndian64(const uint8_t* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

std::string StoreLittleEndian64(uint64_t value) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((value >> (8 * i)) & 0xFF);
  return bytes;
}

template <typename... Args>
absl::Status Invalid(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(args...));
}

// One header entry, checked for types but not yet against the other entries.
struct HeaderEntry {
  std::string name;
  const DTypeCode* code;
  core::Shape shape;
  uint64_t begin;
  uint64_t end;
};

absl::StatusOr<HeaderEntry> ParseEntry(const std::string& name, const Json& value) {
  if (!value.is_object()) {
    return Invalid("safetensors entry for tensor ", QuoteName(name),
                   " must be an object with dtype, shape and data_offsets, not a ",
                   value.type_name());
  }
  HeaderEntry entry{name, nullptr, {}, 0, 0};

  const auto dtype = value.find("dtype");
  if (dtype == value.end()) return Invalid("safetensors tensor ", QuoteName(name), " has no dtype");
  if (!dtype->is_string()) {
    return Invalid("dtype of safetensors tensor ", QuoteName(name), " must be a string, not a ",
                   dtype->type_name());
  }
  const std::string& dtype_name = dtype->get_ref<const std::string&>();
  entry.code = FindCode(dtype_name);
  if (entry.code == nullptr) {
    for (absl::string_view unsupported : kUnsupportedDTypes) {
      if (unsupported == dtype_name) {
        return Invalid("dtype ", dtype_name, " of safetensors tensor ", QuoteName(name),
                       " is not supported by paramd; supported dtypes: ", SupportedDTypeList());
      }
    }
    return Invalid("safetensors tensor ", QuoteName(name), " has unknown dtype ", QuoteName(dtype_name),
                   "; paramd supports ", SupportedDTypeList());
  }

  const auto shape = value.find("shape");
  if (shape == value.end()) return Invalid("safetensors tensor ", QuoteName(name), " has no shape");
  if (!shape->is_array()) {
    return Invalid("shape of safetensors tensor ", QuoteName(name),
                   " must be an array of non-negative integers, not a ", shape->type_name());
  }
  for (const Json& extent : *shape) {
    if (extent.is_number_integer() && !extent.is_number_unsigned()) {
      return Invalid("shape of safetensors tensor ", QuoteName(name), " has a negative dimension ",
                     extent.get<int64_t>());
    }
    if (!extent.is_number_unsigned()) {
      return Invalid("shape of safetensors tensor ", QuoteName(name),
                     " must be an array of non-negative integers; it holds a ",
                     extent.type_name());
    }
    const uint64_t size = extent.get<uint64_t>();
    if (size > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Invalid("shape of safetensors tensor ", QuoteName(name), " has dimension ", size,
                     ", too large to count (ValidationOverflow)");
    }
    entry.shape.push_back(static_cast<int64_t>(size));
  }

  const auto offsets = value.find("data_offsets");
  if (offsets == value.end()) {
    return Invalid("safetensors tensor ", QuoteName(name), " has no data_offsets");
  }
  if (!offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
      !(*offsets)[1].is_number_unsigned()) {
    return Invalid("data_offsets of safetensors tensor ", QuoteName(name),
                   " must be two non-negative integers [begin, end], not ", offsets->dump());
  }
  entry.begin = (*offsets)[0].get<uint64_t>();
  entry.end = (*offsets)[1].get<uint64_t>();
  return entry;
}

// The parsed header and the key orders the file has, for the two places order shows:
// `__metadata__` keeps its header order, and errors name the first bad entry in header
// order. Tensor order does not depend on the header: entries come in data-offset order.
struct Header {
  Json root;                               // an object
  std::vector<std::string> keys;           // root's keys in header order
  std::vector<std::string> metadata_keys;  // `__metadata__`'s keys in header order
};

// Builds a Header from nlohmann's SAX events, noting the first duplicate key. Each event
// costs O(log n) at most. (nlohmann's parse callbacks cannot be used here: after every
// object they scan the enclosing object for discarded values, quadratic in its size.)
class HeaderBuilder {
 public:
  explicit HeaderBuilder(Header& header) : header_(header) {}

  bool null() { return Put(nullptr); }
  bool boolean(bool value) { return Put(value); }
  bool number_integer(Json::number_integer_t value) { return Put(value); }
  bool number_unsigned(Json::number_unsigned_t value) { return Put(value); }
  bool number_float(Json::number_float_t value, const Json::string_t& /*text*/) {
    return Put(value);
  }
  bool string(Json::string_t& value) { return Put(std::move(value)); }
  bool binary(Json::binary_t& value) { return Put(Json::binary(std::move(value))); }
  bool start_object(std::size_t /*size*/) { return Open(Json::object()); }
  bool start_array(std::size_t /*size*/) { return Open(Json::array()); }
  bool end_object() { return Close(); }
  bool end_array() { return Close(); }
  bool key(Json::string_t& key) {
    Json& object = *open_.back();
    if (duplicate_depth_ == 0 && object.contains(key)) {
      duplicate_ = key;
      duplicate_depth_ = open_.size();
    }
    // open_.size() counts the open containers: 1 for the root's keys, 2 for the keys of
    // an object that is a root value.
    if (open_.size() == 1) {
      header_.keys.push_back(key);
    } else if (open_.size() == 2 && !header_.keys.empty() &&
               header_.keys.back() == "__metadata__") {
      header_.metadata_keys.push_back(key);
    }
    slot_ = &object[key];  // a duplicate's later value replaces the earlier one
    return true;
  }
  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                   const Json::exception& /*error*/) {
    return false;
  }

  // The first repeated key and the depth of its object (1: the root); depth 0 if none.
  const std::string& duplicate() const { return duplicate_; }
  size_t duplicate_depth() const { return duplicate_depth_; }

 private:
  // Stores `value` where the parse stands: the root, the slot of the last key, or the end
  // of the innermost array. Returns where it went.
  Json* Place(Json value) {
    if (open_.empty()) {
      header_.root = std::move(value);
      return &header_.root;
    }
    Json& container = *open_.back();
    if (container.is_array()) {
      container.push_back(std::move(value));
      return &container.back();
    }
    *slot_ = std::move(value);
    return slot_;
  }
  bool Put(Json value) {
    Place(std::move(value));
    return true;
  }
  bool Open(Json container) {
    open_.push_back(Place(std::move(container)));
    return true;
  }
  bool Close() {
    open_.pop_back();
    return true;
  }

  Header& header_;
  std::vector<Json*> open_;  // the open containers, innermost last
  Json* slot_ = nullptr;     // the value slot of the innermost object's last key
  std::string duplicate_;
  size_t duplicate_depth_ = 0;
};

// Reads the header JSON, refusing duplicate keys at any depth (nlohmann keeps the last
// one silently; the format disallows them).
absl::StatusOr<Header> ParseHeaderJson(absl::string_view header) {
  Header parsed;
  HeaderBuilder builder(parsed);
  if (!Json::sax_parse(header.begin(), header.end(), &builder)) {
    return Invalid("safetensors header is not valid JSON (InvalidHeaderDeserialization)");
  }
  if (builder.duplicate_depth() == 1) {
    return Invalid("safetensors header has the key ", QuoteName(builder.duplicate()),
                   " more than once; each tensor name may appear once");
  }
  if (builder.duplicate_depth() > 1) {
    return Invalid("safetensors header repeats the key ", QuoteName(builder.duplicate()),
                   " inside an object; duplicate keys are not allowed");
  }
  if (!parsed.root.is_object()) {
    return Invalid("safetensors header must be a JSON object, not a ", parsed.root.type_name());
  }
  return parsed;
}

// A tensor's bytes in C order, handed to `sink` without a copy when it is a contiguous
// CPU tensor.
absl::Status EmitTensorBytes(const core::Tensor& tensor,
                             const std::function<absl::Status(const uint8_t*, size_t)>& sink) {
  if (tensor.numel() == 0) return absl::OkStatus();
  if (tensor.device().is_cpu() && tensor.is_contiguous()) {
    return sink(static_cast<const uint8_t*>(tensor.data()), tensor.nbytes());
  }
  PARAMD_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, core::ToBytes(tensor));
  return sink(bytes.data(), bytes.size());
}

struct Layout {
  std::string prefix_and_header;  // the 8-byte length then the padded header
  std::vector<const std::pair<std::string, core::Tensor>*> order;
  uint64_t data_size = 0;
};

absl::StatusOr<Layout> PlanLayout(const NamedTensors& tensors,
                                  const SafetensorsMetadata& metadata) {
  std::set<absl::string_view> names;
  for (const auto& [name, tensor] : tensors) {
    if (!IsUtf8(name)) return Invalid("tensor name ", QuoteName(name), " is not valid UTF-8");
    if (name == "__metadata__") {
      return Invalid("a tensor cannot be named '__metadata__' in a safetensors file");
    }
    if (!tensor.defined()) return Invalid("tensor ", QuoteName(name), " is undefined and cannot be saved");
    if (!names.insert(name).second) {
      return Invalid("tensor name ", QuoteName(name), " appears twice; safetensors names are unique");
    }
  }
  std::set<absl::string_view> keys;
  for (const auto& [key, value] : metadata) {
    if (!IsUtf8(key) || !IsUtf8(value)) {
      return Invalid("safetensors metadata entry ", QuoteName(key), " is not valid UTF-8");
    }
    if (!keys.insert(key).second) {
      return Invalid("safetensors metadata key ", QuoteName(key), " appears twice");
    }
  }

  Layout layout;
  for (const auto& named : tensors) layout.order.push_back(&named);
  std::sort(layout.order.begin(), layout.order.end(), [](const auto* a, const auto* b) {
    const int rank_a = CodeFor(a->second.dtype()).rank;
    const int rank_b = CodeFor(b->second.dtype()).rank;
    if (rank_a != rank_b) return rank_a > rank_b;
    return a->first < b->first;
  });

  std::vector<std::string> fields;
  if (!metadata.empty()) {
    std::vector<std::string> pairs;
    for (const auto& [key, value] : metadata) pairs.push_back(Quote(key) + ":" + Quote(value));
    fields.push_back(absl::StrCat("\"__metadata__\":{", absl::StrJoin(pairs, ","), "}"));
  }
  for (const auto* named : layout.order) {
    const core::Tensor& tensor = named->second;
    const uint64_t begin = layout.data_size;
    layout.data_size += tensor.nbytes();
    fields.push_back(absl::StrCat(Quote(named->first), ":{\"dtype\":\"",
                                  CodeFor(tensor.dtype()).name, "\",\"shape\":[",
                                  absl::StrJoin(tensor.shape(), ","), "],\"data_offsets\":[", begin,
                                  ",", layout.data_size, "]}"));
  }
  std::string header = absl::StrCat("{", absl::StrJoin(fields, ","), "}");
  header.append((8 - header.size() % 8) % 8, ' ');  // aligns the data for every dtype
  layout.prefix_and_header = StoreLittleEndian64(header.size()) + header;
  return layout;
}

absl::Status WriteLayout(WritableFile& out, const Layout& layout) {
  const std::string& head = layout.prefix_and_header;
  PARAMD_RETURN_IF_ERROR(out.Append(head.data(), head.size()));
  for (const auto* named : layout.order) {
    PARAMD_RETURN_IF_ERROR(EmitTensorBytes(named->second, [&out](const uint8_t* data, size_t size) {
      return out.Append(data, size);
    }));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<SafetensorsFile> ParseSafetensors(absl::Span<const uint8_t> bytes,
                                                 std::shared_ptr<const void> owner) {
  const uint64_t size = bytes.size();
  if (size < 8) {
    return Invalid("safetensors header too small: the file has ", size,
                   " bytes, at least 8 are needed (HeaderTooSmall)");
  }
  const uint64_t header_size = LoadLittleEndian64(bytes.data());
  if (header_size > kSafetensorsMaxHeaderSize) {
    return Invalid("safetensors header of ", header_size, " bytes exceeds the ",
                   kSafetensorsMaxHeaderSize, "-byte limit (HeaderTooLarge)");
  }
  if (8 + header_size > size) {
    return Invalid("safetensors header length ", header_size,
                   " runs past the end of the file: the file has ", size,
                   " bytes (InvalidHeaderLength)");
  }
  const absl::string_view header(reinterpret_cast<const char*>(bytes.data()) + 8, header_size);
  if (!IsUtf8(header)) return Invalid("safetensors header is not valid UTF-8 (InvalidHeader)");
  if (header.empty() || header.front() != '{') {
    return Invalid("safetensors header must start with '{' (InvalidHeaderStart)");
  }
  PARAMD_ASSIGN_OR_RETURN(const Header parsed, ParseHeaderJson(header));

  SafetensorsFile file;
  std::vector<HeaderEntry> entries;
  entries.reserve(parsed.keys.size());
  for (const std::string& key : parsed.keys) {
    const Json& value = *parsed.root.find(key);
    if (key == "__metadata__") {
      if (!value.is_object()) {
        return Invalid("safetensors __metadata__ must be an object of strings, not a ",
                       value.type_name());
      }
      for (const std::string& meta_key : parsed.metadata_keys) {
        const Json& meta = *value.find(meta_key);
        if (!meta.is_string()) {
          return Invalid("safetensors __metadata__ value for ", QuoteName(meta_key),
                         " must be a string, not a ", meta.type_name());
        }
        file.metadata.emplace_back(meta_key, meta.get_ref<const std::string&>());
      }
      continue;
    }
    PARAMD_ASSIGN_OR_RETURN(HeaderEntry entry, ParseEntry(key, value));
    entries.push_back(std::move(entry));
  }

  // As the reference reader: sorted by offsets, the tensors must tile the data exactly.
  std::sort(entries.begin(), entries.end(), [](const HeaderEntry& a, const HeaderEntry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  uint64_t covered = 0;
  for (const HeaderEntry& entry : entries) {
    if (entry.end < entry.begin) {
      return Invalid("safetensors tensor ", QuoteName(entry.name), " has data_offsets [", entry.begin, ", ",
                     entry.end, "] whose end is before its begin (InvalidOffset)");
    }
    if (entry.begin != covered) {
      return Invalid(
          "safetensors tensor ", QuoteName(entry.name), " has data_offsets [", entry.begin, ", ", entry.end,
          "] but should begin at ", covered,
          covered == 0 ? " (the first tensor starts the data)" : " (the previous tensor's end)",
          "; tensors must cover the data without gaps or overlaps (InvalidOffset)");
    }
    covered = entry.end;
    const size_t element_size = ElementSize(entry.code->dtype);
    absl::StatusOr<int64_t> numel = core::CheckedNumel(entry.shape, element_size);
    if (!numel.ok()) {
      return Invalid("shape ", core::ShapeString(entry.shape), " of safetensors tensor ",
                     QuoteName(entry.name), " overflows when counting its bytes (ValidationOverflow)");
    }
    const uint64_t expected = static_cast<uint64_t>(*numel) * element_size;
    if (entry.end - entry.begin != expected) {
      return Invalid("safetensors tensor ", QuoteName(entry.name), " has ", entry.end - entry.begin,
                     " bytes (data_offsets [", entry.begin, ", ", entry.end, "]) but dtype ",
                     entry.code->name, " and shape ", core::ShapeString(entry.shape), " need ",
                     expected, " (TensorInvalidInfo)");
    }
  }
  const uint64_t data_size = size - 8 - header_size;
  if (covered != data_size) {
    return Invalid("safetensors tensors cover ", covered, " bytes but the file holds ", data_size,
                   " bytes after the header; the last data offset must be the end of the file "
                   "(MetadataIncompleteBuffer)");
  }

  const uint8_t* data = bytes.data() + 8 + header_size;
  file.entries.reserve(entries.size());
  for (HeaderEntry& entry : entries) {
    const DType dtype = entry.code->dtype;
    const uint8_t* begin = data + entry.begin;
    const size_t nbytes = entry.end - entry.begin;
    core::Tensor tensor;
    // Note [Bool bytes]: a bool tensor holding other bytes than 0 and 1 is copied.
    if (owner != nullptr && reinterpret_cast<uintptr_t>(begin) % ElementSize(dtype) == 0 &&
        (dtype != DType::kBool || core::CanonicalBools(absl::MakeConstSpan(begin, nbytes)))) {
      // Zero copy: the storage views the owner's bytes and keeps the owner alive.
      auto storage =
          core::Storage::Wrap(Device::Cpu(), const_cast<uint8_t*>(begin), nbytes, [owner] {});
      core::Shape strides = core::ContiguousStrides(entry.shape);
      tensor =
          core::Tensor(std::move(storage), 0, std::move(entry.shape), std::move(strides), dtype);
    } else {
      PARAMD_ASSIGN_OR_RETURN(tensor, core::Tensor::FromBytes(dtype, std::move(entry.shape),
                                                              absl::MakeConstSpan(begin, nbytes)));
    }
    file.entries.push_back(SafetensorsEntry{std::move(entry.name), std::move(tensor)});
  }
  return file;
}

absl::StatusOr<SafetensorsFile> ParseSafetensors(std::shared_ptr<const MappedFile> file) {
  if (file == nullptr) return absl::InvalidArgumentError("no safetensors file to parse");
  const absl::Span<const uint8_t> bytes = file->bytes();
  return ParseSafetensors(bytes, std::move(file));
}

absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path) {
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::Open(path));
  absl::StatusOr<SafetensorsFile> parsed = ParseSafetensors(std::move(file));
  if (!parsed.ok()) {
    return absl::Status(parsed.status().code(),
                        absl::StrCat(QuoteName(path), ": ", parsed.status().message()));
  }
  return parsed;
}

absl::StatusOr<std::string> SerializeSafetensors(const NamedTensors& tensors,
                                                 const SafetensorsMetadata& metadata) {
  PARAMD_ASSIGN_OR_RETURN(Layout layout, PlanLayout(tensors, metadata));
  std::string out = std::move(layout.prefix_and_header);
  out.reserve(out.size() + layout.data_size);
  for (const auto* named : layout.order) {
    PARAMD_RETURN_IF_ERROR(EmitTensorBytes(named->second, [&out](const uint8_t* data, size_t size) {
      out.append(reinterpret_cast<const char*>(data), size);
      return absl::OkStatus();
    }));
  }
  return out;
}

absl::Status WriteSafetensors(WritableFile& out, const NamedTensors& tensors,
                              const SafetensorsMetadata& metadata) {
  PARAMD_ASSIGN_OR_RETURN(Layout layout, PlanLayout(tensors, metadata));
  return WriteLayout(out, layout);
}

absl::Status SaveSafetensors(const std::string& path, const NamedTensors& tensors,
                             const SafetensorsMetadata& metadata, FileSystem& fs,
                             WrittenFile* written) {
  // Planned first, so that a refused save does not even create a temporary file.
  PARAMD_ASSIGN_OR_RETURN(Layout layout, PlanLayout(tensors, metadata));
  return WriteFileAtomically(
      fs, path, [&layout](WritableFile& out) { return WriteLayout(out, layout); }, written);
}

}  // namespace paramd::io
