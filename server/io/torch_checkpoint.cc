// Reading torch.save checkpoints: the zip archive, its records and storages. data.pkl's
// objects are read in torch_checkpoint_pickle.cc; writing is torch_checkpoint_writer.cc.
#include "server/io/torch_checkpoint.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/text.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/zip/zip.h"
#include "base/status_macros.h"
#include "server/io/pickle.h"
#include "server/io/torch_checkpoint_internal.h"

namespace paramd::io {
namespace torch_internal {

absl::Status CheckView(absl::string_view name, int64_t offset, const core::Shape& shape,
                       const core::Shape& strides, int64_t storage_numel) {
  if (shape.size() != strides.size()) {
    return Invalid("tensor ", QuoteName(name), " has ", shape.size(), " sizes but ", strides.size(),
                   " strides");
  }
  if (offset < 0) return Invalid("tensor ", QuoteName(name), " has a negative storage offset ", offset);
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0 || strides[i] < 0) {
      return Invalid("tensor ", QuoteName(name), " has a negative size or stride: size ",
                     core::ShapeString(shape), ", stride ", core::ShapeString(strides));
    }
  }
  absl::StatusOr<int64_t> numel = core::CheckedNumel(shape);
  if (!numel.ok()) {
    return Invalid("tensor ", QuoteName(name), " has size ", core::ShapeString(shape),
                   " whose element count overflows");
  }
  if (*numel == 0) return absl::OkStatus();  // as torch: an empty view needs no storage
  int64_t last = offset;
  for (size_t i = 0; i < shape.size(); ++i) {
    int64_t step;
    if (__builtin_mul_overflow(shape[i] - 1, strides[i], &step) ||
        __builtin_add_overflow(last, step, &last)) {
      return Invalid("tensor ", QuoteName(name), " has size ", core::ShapeString(shape), " and stride ",
                     core::ShapeString(strides), " that overflow");
    }
  }
  if (last >= storage_numel) {
    return Invalid("tensor ", QuoteName(name), " (offset ", offset, ", size ", core::ShapeString(shape),
                   ", stride ", core::ShapeString(strides), ") reaches element ", last,
                   " of a storage of ", storage_numel, " elements");
  }
  return absl::OkStatus();
}

bool IsTorchRecord(absl::string_view name) {
  return name == "data.pkl" || name == "byteorder" || name == "version" ||
         name == ".data/version" || name == ".data/serialization_id" || name == ".format_version" ||
         name == ".storage_alignment" || absl::StartsWith(name, "data/");
}

}  // namespace torch_internal

namespace {

using namespace torch_internal;  // NOLINT(build/namespaces): the parts' shared pieces

constexpr absl::string_view kLegacyMessage =
    "legacy torch.save format; load it in PyTorch and re-save it with a current torch.save";

void SwapBytes(uint8_t* data, size_t nbytes, size_t element_size) {
  if (element_size == 1) return;
  for (size_t i = 0; i + element_size <= nbytes; i += element_size) {
    std::reverse(data + i, data + i + element_size);
  }
}

bool IsLegacyTorchFile(absl::Span<const uint8_t> bytes) {
  // A pickle (the legacy format starts with the pickled magic number), a tar archive, or
  // PyTorch's preview-release archive.
  if (!bytes.empty() && bytes[0] == 0x80) return true;
  if (bytes.size() >= 262 && std::memcmp(bytes.data() + 257, "ustar", 5) == 0) return true;
  return bytes.size() >= 8 && std::memcmp(bytes.data(), "PYTORCH1", 8) == 0;
}

absl::Status TorchScriptError() {
  return absl::InvalidArgumentError(
      "this is a TorchScript archive (torch.jit.save), not a torch.save checkpoint; load it "
      "with torch.jit.load and save its state_dict() with torch.save instead");
}

bool IsTorchScriptRecord(absl::string_view name_in_folder) {
  return name_in_folder == "constants.pkl" || absl::StartsWith(name_in_folder, "code/");
}

// The zip archive of a torch.save file, with stored records only: torch.save never
// compresses, and storages are used in place. A legacy file, an empty archive and a
// TorchScript archive (whose records torch.jit.save compresses) are named as such.
absl::StatusOr<zip::Reader> OpenArchive(absl::Span<const uint8_t> bytes) {
  if (bytes.size() < 4 || std::memcmp(bytes.data(), "PK\x03\x04", 4) != 0) {
    if (IsLegacyTorchFile(bytes)) return Invalid(kLegacyMessage);
    if (bytes.size() >= 4 && std::memcmp(bytes.data(), "PK\x05\x06", 4) == 0) {
      return Invalid("the zip archive does not contain any files; it is not a torch.save file");
    }
    return Invalid("not a torch.save file: it does not start with a zip header (PK\\x03\\x04)");
  }
  absl::StatusOr<zip::Reader> opened = zip::Reader::Open(bytes);
  absl::Status status = opened.status();
  for (size_t i = 0; status.ok() && i < opened->entries().size(); ++i) {
    const zip::Entry& entry = opened->entries()[i];
    if (entry.method != zip::Method::kStored) {
      status =
          Invalid("zip archive: central directory entry ", i, " ('", zip::PrintableName(entry.name),
                  "') is compressed (method ", static_cast<int>(entry.method),
                  entry.method == zip::Method::kDeflate ? ", deflate" : "",
                  "); paramd reads only stored (uncompressed) entries, as torch.save writes "
                  "them. Re-save the file with torch.save instead of re-zipping it");
    }
  }
  if (status.ok()) return opened;
  absl::StatusOr<std::vector<std::string>> names = zip::Reader::ListNames(bytes);
  if (names.ok()) {
    for (const std::string& name : *names) {
      const size_t slash = name.find('/');
      if (slash != std::string::npos &&
          IsTorchScriptRecord(absl::string_view(name).substr(slash + 1))) {
        return TorchScriptError();
      }
    }
  }
  return status;
}

using Records = std::map<std::string, const zip::Entry*>;

// The records by name under the one top folder that holds the first entry, whose name is
// stored in `archive_name`.
absl::StatusOr<Records> FolderRecords(const zip::Reader& archive, std::string& archive_name) {
  if (archive.entries().empty()) {
    return Invalid("the zip archive does not contain any files; it is not a torch.save file");
  }
  const std::string& first = archive.entries().front().name;
  const size_t slash = first.find('/');
  if (slash == std::string::npos || slash == 0) {
    return Invalid("file in archive is not in a subdirectory: ", first);
  }
  archive_name = first.substr(0, slash);
  const std::string prefix = archive_name + "/";
  Records records;
  for (const zip::Entry& entry : archive.entries()) {
    if (!absl::StartsWith(entry.name, prefix)) {
      return Invalid("zip entry ", QuoteName(entry.name), " is outside the archive folder '", archive_name,
                     "/' that holds the first entry");
    }
    records.emplace(entry.name.substr(prefix.size()), &entry);
  }
  for (const auto& [name, entry] : records) {
    if (IsTorchScriptRecord(name)) return TorchScriptError();
  }
  return records;
}

const zip::Entry* FindRecord(const Records& records, const std::string& name) {
  auto it = records.find(name);
  return it == records.end() ? nullptr : it->second;
}

std::string RecordText(const zip::Reader& archive, const zip::Entry& entry) {
  const absl::Span<const uint8_t> data = archive.Data(entry);
  return std::string(reinterpret_cast<const char*>(data.data()), data.size());
}

// Checks the `version` record (stored in `format_version`) and reads `byteorder`: true when
// the storages are big-endian.
absl::StatusOr<bool> ReadFormatRecords(const zip::Reader& archive, const Records& records,
                                       int64_t& format_version) {
  const zip::Entry* version = FindRecord(records, "version");
  if (version == nullptr) version = FindRecord(records, ".data/version");
  if (version == nullptr) {
    return Invalid("the archive has no 'version' record; it is not a torch.save checkpoint");
  }
  const std::string version_text = RecordText(archive, *version);
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(version_text), &format_version)) {
    return Invalid("the 'version' record holds '", version_text.substr(0, 40), "', not an integer");
  }
  if (format_version < kMinFormatVersion || format_version > kMaxFormatVersion) {
    return Invalid("Attempted to read a PyTorch file with version ", format_version,
                   ", but paramd reads versions ", kMinFormatVersion, " to ", kMaxFormatVersion);
  }
  const zip::Entry* byteorder = FindRecord(records, "byteorder");
  if (byteorder == nullptr) return false;
  const std::string order = RecordText(archive, *byteorder);
  if (order == "big") return true;
  if (order != "little") {
    return Invalid("the 'byteorder' record holds '", order.substr(0, 40),
                   "'; expected 'little' or 'big'");
  }
  return false;
}

// data.pkl's objects: a state_dict, or a training checkpoint's {"model": state_dict,
// "optimizer": optimizer.state_dict(), ...} (other keys, such as an epoch, are ignored).
struct ParsedPickle {
  // The state_dict's entries, then the optimizer's state tensors.
  std::vector<ParsedEntry> entries;
  size_t model_entries = 0;
  std::optional<ParsedOptimizer> optimizer;
};

// data.pkl as a state_dict: its entries in order, and its `_metadata` into `metadata`.
absl::StatusOr<ParsedPickle> ParseStateDictPickle(absl::Span<const uint8_t> pickle,
                                                  std::optional<TorchModuleMetadata>& metadata) {
  PARAMD_ASSIGN_OR_RETURN(PickleGraph graph, Unpickle(pickle));
  const PickleValue* root = graph.root();
  if (root->kind != PickleKind::kDict) {
    return Invalid("data.pkl holds a ", PickleTypeName(*root),
                   ", not a state_dict (a dict of str -> tensor); ", kStateDictAdvice);
  }
  // No state_dict value is a dict, so a dict under "model" makes a training checkpoint.
  const PickleValue* optimizer = nullptr;
  for (const auto& [key, value] : root->entries) {
    if (key->kind == PickleKind::kString && key->text == "model" &&
        value->kind == PickleKind::kDict) {
      for (const auto& [other, item] : root->entries) {
        if (other->kind == PickleKind::kString && other->text == "optimizer") optimizer = item;
      }
      root = value;
      break;
    }
  }
  ParsedPickle parsed;
  parsed.entries.reserve(root->entries.size());
  for (size_t i = 0; i < root->entries.size(); ++i) {
    PARAMD_ASSIGN_OR_RETURN(ParsedEntry entry,
                            ParseEntry(root->entries[i].first, root->entries[i].second, i));
    parsed.entries.push_back(std::move(entry));
  }
  parsed.model_entries = parsed.entries.size();
  if (root->state != nullptr) {
    PARAMD_ASSIGN_OR_RETURN(metadata, ParseMetadata(root->state));
  }
  if (optimizer != nullptr) {
    PARAMD_ASSIGN_OR_RETURN(parsed.optimizer, ParseOptimizerDict(optimizer, parsed.entries));
  }
  return parsed;
}

// One storage's bytes as a core::Storage: a view of `source` holding `owner` where it may be
// used in place (an owner, no byte swap, aligned for the dtype), else a copy.
absl::StatusOr<std::shared_ptr<core::Storage>> LoadStorage(
    absl::Span<const uint8_t> source, DType dtype, bool big_endian,
    const std::shared_ptr<const void>& owner) {
  const size_t element_size = ElementSize(dtype);
  const bool swap = big_endian && element_size > 1;
  // Note [Bool bytes]: a bool storage holding other bytes than 0 and 1 is copied.
  const bool canonical = dtype != DType::kBool || core::CanonicalBools(source);
  if (owner != nullptr && !swap && canonical &&
      reinterpret_cast<uintptr_t>(source.data()) % element_size == 0) {
    return core::Storage::Wrap(Device::Cpu(), const_cast<uint8_t*>(source.data()),
                               source.size(), [owner] {});
  }
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Storage> storage,
                          core::Storage::Allocate(Device::Cpu(), source.size()));
  if (!source.empty()) std::memcpy(storage->data(), source.data(), source.size());
  if (swap) SwapBytes(static_cast<uint8_t*>(storage->data()), source.size(), element_size);
  if (!canonical) {
    core::CanonicalizeBools(absl::MakeSpan(static_cast<uint8_t*>(storage->data()), source.size()));
  }
  return storage;
}

// The `data/<key>` record of `spec` as a storage, its size checked as torch checks it.
absl::StatusOr<std::shared_ptr<core::Storage>> LoadRecord(
    const zip::Reader& archive, const Records& records, const std::string& prefix,
    const ParsedEntry& entry, bool big_endian, const std::shared_ptr<const void>& owner) {
  const StorageSpec& spec = entry.tensor.storage;
  const std::string record_name = "data/" + spec.key;
  const zip::Entry* data = FindRecord(records, record_name);
  if (data == nullptr) {
    return Invalid("tensor ", QuoteName(entry.name), " uses storage ", QuoteName(spec.key),
                   " but the archive has no record '", prefix, record_name, "'");
  }
  if (data->size != spec.nbytes) {
    return Invalid("storage ", QuoteName(spec.key), " (record '", prefix, record_name, "'): record size ",
                   data->size, " mismatch with dst size ", spec.nbytes);
  }
  return LoadStorage(archive.Data(*data), spec.dtype, big_endian, owner);
}

// ParseTorchCheckpoint, where `mapped` (when not null) is the mapping `bytes` lie in.
absl::StatusOr<TorchCheckpoint> ParseArchive(absl::Span<const uint8_t> bytes,
                                             std::shared_ptr<const void> owner,
                                             const TorchReadOptions& options,
                                             const MappedFile* mapped) {
  std::optional<MappedFile::ScatteredReads> headers;
  if (mapped != nullptr) headers.emplace(*mapped);  // Note [Headers without read-around]
  PARAMD_ASSIGN_OR_RETURN(zip::Reader archive, OpenArchive(bytes));
  TorchCheckpoint checkpoint;
  PARAMD_ASSIGN_OR_RETURN(Records records, FolderRecords(archive, checkpoint.archive_name));
  const std::string prefix = checkpoint.archive_name + "/";
  if (options.verify_crc) {
    headers.reset();  // the CRC pass reads the file in order
    // Every core but capped: past a few readers the disk, not the CRC, sets the pace.
    const int threads = static_cast<int>(std::clamp(std::thread::hardware_concurrency(), 1u, 4u));
    PARAMD_RETURN_IF_ERROR(archive.VerifyCrcs(threads));
  }
  PARAMD_ASSIGN_OR_RETURN(const bool big_endian,
                          ReadFormatRecords(archive, records, checkpoint.format_version));
  const zip::Entry* data_pkl = FindRecord(records, "data.pkl");
  if (data_pkl == nullptr) {
    return Invalid("the archive has no data.pkl record; it is not a torch.save checkpoint");
  }
  PARAMD_ASSIGN_OR_RETURN(ParsedPickle pickled,
                          ParseStateDictPickle(archive.Data(*data_pkl), checkpoint.metadata));
  const std::vector<ParsedEntry>& parsed = pickled.entries;
  headers.reset();  // without a CRC pass, the small records were read as headers are

  // One core::Storage per key, so that tensors sharing a storage in the file share it here.
  struct Loaded {
    StorageSpec spec;
    std::shared_ptr<core::Storage> storage;
  };
  std::map<std::string, Loaded> storages;
  for (const ParsedEntry& entry : parsed) {
    const StorageSpec& spec = entry.tensor.storage;
    auto it = storages.find(spec.key);
    if (it != storages.end()) {
      const StorageSpec& first_spec = it->second.spec;
      if (first_spec.dtype != spec.dtype || first_spec.nbytes != spec.nbytes) {
        return Invalid("storage ", QuoteName(spec.key), " is used as ", DTypeName(first_spec.dtype),
                       " of ", first_spec.nbytes, " bytes and by tensor ", QuoteName(entry.name), " as ",
                       DTypeName(spec.dtype), " of ", spec.nbytes,
                       " bytes; the file is corrupt");
      }
    } else {
      PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Storage> storage,
                              LoadRecord(archive, records, prefix, entry, big_endian, owner));
      it = storages.emplace(spec.key, Loaded{spec, std::move(storage)}).first;
    }
    const int64_t storage_numel = static_cast<int64_t>(spec.nbytes / ElementSize(spec.dtype));
    PARAMD_RETURN_IF_ERROR(CheckView(entry.name, entry.tensor.offset, entry.tensor.shape,
                                     entry.tensor.strides, storage_numel));
    TorchCheckpointEntry out;
    out.name = entry.name;
    out.tensor = core::Tensor(it->second.storage, entry.tensor.offset, entry.tensor.shape,
                              entry.tensor.strides, spec.dtype);
    out.is_parameter = entry.is_parameter;
    out.requires_grad = entry.requires_grad;
    out.saved_location = spec.location;
    checkpoint.entries.push_back(std::move(out));
  }
  if (pickled.optimizer) {
    // The tensors after the state_dict's are the optimizer's, in its slots' order.
    for (size_t i = pickled.model_entries; i < checkpoint.entries.size(); ++i) {
      const ParsedOptimizer::Slot& slot = pickled.optimizer->slots[i - pickled.model_entries];
      pickled.optimizer->dict.state[slot.state].tensors[slot.tensor].second =
          std::move(checkpoint.entries[i].tensor);
    }
    checkpoint.entries.resize(pickled.model_entries);
    checkpoint.optimizer = std::move(pickled.optimizer->dict);
  }
  for (const auto& [name, entry] : records) {
    if (!IsTorchRecord(name)) {
      checkpoint.extra_records.emplace_back(name, RecordText(archive, *entry));
    }
  }
  return checkpoint;
}

}  // namespace

absl::StatusOr<TorchCheckpoint> ParseTorchCheckpoint(absl::Span<const uint8_t> bytes,
                                                     std::shared_ptr<const void> owner,
                                                     const TorchReadOptions& options) {
  return ParseArchive(bytes, std::move(owner), options, nullptr);
}

absl::StatusOr<TorchCheckpoint> ReadTorchCheckpoint(std::shared_ptr<const MappedFile> file,
                                                    const TorchReadOptions& options) {
  if (file == nullptr) return Invalid("no torch checkpoint file to read");
  const absl::Span<const uint8_t> bytes = file->bytes();
  const MappedFile* mapped = file.get();
  return ParseArchive(bytes, std::move(file), options, mapped);
}

absl::StatusOr<TorchCheckpoint> ReadTorchCheckpoint(const std::string& path,
                                                    const TorchReadOptions& options) {
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::Open(path));
  absl::StatusOr<TorchCheckpoint> read = ReadTorchCheckpoint(std::move(file), options);
  if (!read.ok()) {
    return absl::Status(read.status().code(),
                        absl::StrCat(QuoteName(path), ": ", read.status().message()));
  }
  return read;
}

absl::StatusOr<MapLocation> MapLocation::To(absl::string_view device) {
  absl::StatusOr<Device> parsed = ParseDevice(device);
  if (!parsed.ok()) {
    return Invalid("map_location ", QuoteName(device), ": ", parsed.status().message());
  }
  MapLocation map;
  map.all_ = *parsed;
  return map;
}

absl::StatusOr<MapLocation> MapLocation::Remap(
    std::vector<std::pair<std::string, std::string>> mapping) {
  MapLocation map;
  for (auto& [saved, target] : mapping) {
    absl::StatusOr<Device> parsed = ParseDevice(target);
    if (!parsed.ok()) {
      return Invalid("map_location maps ", QuoteName(saved), " to ", QuoteName(target),
                     ": ", parsed.status().message());
    }
    map.mapping_.emplace_back(std::move(saved), *parsed);
  }
  return map;
}

absl::StatusOr<Device> MapLocation::Resolve(absl::string_view saved_location) const {
  if (all_.has_value()) return *all_;
  for (const auto& [saved, target] : mapping_) {
    if (saved == saved_location) return target;
  }
  absl::StatusOr<Device> parsed = ParseDevice(saved_location);
  if (!parsed.ok()) {
    return Invalid("storage saved at location ", QuoteName(saved_location),
                   " is not on a device paramd supports; pass map_location (e.g. 'cpu') to "
                   "place it: ",
                   parsed.status().message());
  }
  return *parsed;
}

absl::Status CudaUnavailableForLoadError() {
  return absl::FailedPreconditionError(
      "Attempting to deserialize object on a CUDA device but torch.cuda.is_available() is "
      "False. If you are running on a CPU-only machine, please use torch.load with "
      "map_location=torch.device('cpu') to map your storages to the CPU.");
}

}  // namespace paramd::io
