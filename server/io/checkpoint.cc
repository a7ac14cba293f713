#include "server/io/checkpoint.h"

#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <tuple>

#include "base/text.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/io/mapped_file.h"
#include "server/io/safetensors.h"
#include "server/io/torch_checkpoint.h"
#include "server/core/parameter.h"

namespace paramd::io {
namespace {

// Two state_dict entries are one stored tensor when they view the same bytes the same way.
using TensorIdentity =
    std::tuple<const core::Storage*, int64_t, core::Shape, core::Shape, DType>;

TensorIdentity IdentityOf(const core::Tensor& tensor) {
  return {tensor.storage().get(), tensor.offset(), tensor.shape(), tensor.strides(),
          tensor.dtype()};
}

// paramd's own records in the PyTorch files it writes, under the archive's top folder;
// torch.load reads only the records it knows and ignores these.
constexpr char kSpecRecord[] = "paramd/spec.json";
constexpr char kVersionRecord[] = "paramd/version";

// A version paramd recorded in a file: a decimal number below 2^63 (versions grow by one per
// write and must never wrap; a larger one is a damaged or forged file).
absl::StatusOr<uint64_t> ParseFileVersion(absl::string_view text) {
  uint64_t version = 0;
  if (!absl::SimpleAtoi(text, &version) || version > kMaxFileVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the file's paramd version '", text.substr(0, 40), "' is not a number below 2^63 (",
        kMaxFileVersion + 1, "); rewrite the file without it (a PyTorch state_dict loads as ",
        "a new model history) or fix the number"));
  }
  return version;
}

// The name a state_dict entry is stored under in a safetensors file: its own, except for the
// one name the format reserves (Note [Reserved safetensors names] in checkpoint.h).
std::string StoredName(const std::string& name) {
  return name == "__metadata__" ? absl::StrCat(".", name) : name;
}

absl::StatusOr<Checkpoint> ReadTorch(const std::shared_ptr<MappedFile>& file) {
  PARAMD_ASSIGN_OR_RETURN(TorchCheckpoint torch, ReadTorchCheckpoint(file));
  Checkpoint checkpoint;
  checkpoint.format = CheckpointFormat::kTorch;
  checkpoint.entries.reserve(torch.entries.size());
  for (TorchCheckpointEntry& entry : torch.entries) {
    CheckpointTensor tensor;
    tensor.name = std::move(entry.name);
    tensor.tensor = std::move(entry.tensor);
    tensor.is_parameter = entry.is_parameter;
    tensor.requires_grad = entry.requires_grad;
    tensor.location = std::move(entry.saved_location);
    checkpoint.entries.push_back(std::move(tensor));
  }
  if (torch.metadata) {
    // A module whose metadata has no version counts as version None: left out, as
    // local_metadata.get("version") is then None for it.
    std::vector<std::pair<std::string, int>> versions;
    for (const auto& [prefix, version] : *torch.metadata) {
      if (version) versions.emplace_back(prefix, static_cast<int>(*version));
    }
    checkpoint.module_versions = std::move(versions);
  }
  checkpoint.optimizer = std::move(torch.optimizer);
  for (const auto& [name, bytes] : torch.extra_records) {
    if (name == kSpecRecord) {
      checkpoint.spec_json = bytes;
    } else if (name == kVersionRecord) {
      PARAMD_ASSIGN_OR_RETURN(checkpoint.version, ParseFileVersion(bytes));
    }
  }
  return checkpoint;
}

absl::Status SaveTorch(const std::string& path, const SaveInput& input, FileSystem& fs,
                       WrittenFile* written) {
  std::vector<TorchCheckpointEntry> entries;
  entries.reserve(input.state_dict.entries.size());
  for (const core::StateDictEntry& entry : input.state_dict.entries) {
    TorchCheckpointEntry out;
    out.name = entry.name;
    out.tensor = entry.tensor;
    // state_dict() holds plain tensors; state_dict(keep_vars=True) the Parameters.
    if (input.keep_vars && entry.is_parameter) {
      out.is_parameter = true;
      const auto* parameter = dynamic_cast<const core::Parameter*>(entry.slot.get());
      out.requires_grad = parameter != nullptr && parameter->requires_grad();
    }
    entries.push_back(std::move(out));
  }
  TorchSaveOptions options;
  // torch.save names the top folder after the file's stem.
  std::string stem = path.substr(path.find_last_of('/') + 1);
  stem = stem.substr(0, stem.find_last_of('.'));
  if (!stem.empty() && stem != "." && stem != "..") options.archive_name = stem;
  TorchModuleMetadata metadata;
  for (const auto& [prefix, version] : input.state_dict.metadata) {
    metadata.emplace_back(prefix, version);
  }
  options.metadata = std::move(metadata);
  options.optimizer = input.optimizer;
  if (!input.spec_json.empty()) options.extra_records.emplace_back(kSpecRecord, input.spec_json);
  if (input.version != 0) {
    options.extra_records.emplace_back(kVersionRecord, absl::StrCat(input.version));
  }
  return SaveTorchCheckpoint(path, entries, options, fs, written);
}

absl::StatusOr<Checkpoint> FromSafetensors(SafetensorsFile file) {
  Checkpoint checkpoint;
  checkpoint.format = CheckpointFormat::kSafetensors;
  std::sort(file.entries.begin(), file.entries.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  absl::flat_hash_map<std::string, size_t> index;
  for (SafetensorsEntry& entry : file.entries) {
    index.emplace(entry.name, checkpoint.entries.size());
    CheckpointTensor tensor;
    tensor.name = std::move(entry.name);
    tensor.tensor = std::move(entry.tensor);
    checkpoint.entries.push_back(std::move(tensor));
  }
  std::vector<std::pair<std::string, std::string>> renames;  // stored name -> name
  for (const auto& [key, value] : file.metadata) {
    if (key == kSpecKey) {
      checkpoint.spec_json = value;
    } else if (key == kVersionKey) {
      PARAMD_ASSIGN_OR_RETURN(checkpoint.version, ParseFileVersion(value));
    } else if (absl::StartsWith(key, kStoredNameKeyPrefix)) {
      renames.emplace_back(value, key.substr(strlen(kStoredNameKeyPrefix)));
    } else if (absl::StartsWith(key, "paramd.")) {
      checkpoint.annotations.emplace_back(key, value);
    } else if (auto kept = index.find(value); kept != index.end() && !index.contains(key)) {
      // save_model's record of a dropped duplicate: the name comes back sharing the kept
      // tensor's storage.
      CheckpointTensor alias = checkpoint.entries[kept->second];
      alias.name = key;
      checkpoint.entries.push_back(std::move(alias));
    }
  }
  // After the aliases, which name the stored names.
  for (const auto& [stored, name] : renames) {
    auto it = index.find(stored);
    if (it == index.end() || index.contains(name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the file's metadata renames tensor '", stored, "' to '", name,
          "', but the file has no such tensor or already has that name; the file is damaged"));
    }
    checkpoint.entries[it->second].name = name;
  }
  return checkpoint;
}

absl::Status SaveSafetensorsCheckpoint(const std::string& path, const SaveInput& input,
                                       FileSystem& fs, WrittenFile* written) {
  // save_model: of each group of names for one stored tensor, the lexicographically first
  // is written and the others recorded as aliases of it.
  std::map<TensorIdentity, std::vector<const core::StateDictEntry*>> groups;
  for (const core::StateDictEntry& entry : input.state_dict.entries) {
    groups[IdentityOf(entry.tensor)].push_back(&entry);
  }
  absl::flat_hash_map<std::string, std::string> alias_of;
  for (auto& [identity, names] : groups) {
    std::sort(names.begin(), names.end(),
              [](const auto* a, const auto* b) { return a->name < b->name; });
    for (size_t i = 1; i < names.size(); ++i) alias_of[names[i]->name] = names[0]->name;
  }
  // No state_dict key starts with '.', so a stored name never collides with another key.
  NamedTensors tensors;
  SafetensorsMetadata metadata = {{"format", "pt"}};
  for (const core::StateDictEntry& entry : input.state_dict.entries) {
    if (auto it = alias_of.find(entry.name); it != alias_of.end()) {
      metadata.emplace_back(entry.name, StoredName(it->second));
    } else if (const std::string stored = StoredName(entry.name); stored != entry.name) {
      metadata.emplace_back(absl::StrCat(kStoredNameKeyPrefix, entry.name), stored);
      tensors.emplace_back(stored, entry.tensor);
    } else {
      tensors.emplace_back(entry.name, entry.tensor);
    }
  }
  if (!input.spec_json.empty()) metadata.emplace_back(kSpecKey, input.spec_json);
  if (input.version != 0) metadata.emplace_back(kVersionKey, absl::StrCat(input.version));
  for (const auto& annotation : input.annotations) metadata.push_back(annotation);
  return SaveSafetensors(path, tensors, metadata, fs, written);
}

}  // namespace

absl::string_view FormatName(CheckpointFormat format) {
  return format == CheckpointFormat::kSafetensors ? "safetensors" : "torch";
}

CheckpointFormat FormatForSave(absl::string_view path) {
  return absl::EndsWith(path, ".safetensors") ? CheckpointFormat::kSafetensors
                                               : CheckpointFormat::kTorch;
}

std::optional<CheckpointFormat> SniffFormat(absl::Span<const uint8_t> head, uint64_t file_size) {
  if (head.size() >= 4 && head[0] == 'P' && head[1] == 'K' &&
      ((head[2] == 3 && head[3] == 4) || (head[2] == 5 && head[3] == 6))) {
    return CheckpointFormat::kTorch;
  }
  // Before the legacy pickle's 0x80: a safetensors header length may start with that byte.
  if (head.size() >= 9 && file_size >= 9 && head[8] == '{') {
    uint64_t header_size = 0;
    for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | head[i];
    if (header_size <= file_size - 8) return CheckpointFormat::kSafetensors;
  }
  if (!head.empty() && head[0] == 0x80) return CheckpointFormat::kTorch;  // legacy torch.save
  return std::nullopt;
}

std::optional<CheckpointFormat> SniffFileFormat(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  uint8_t head[16];
  const ssize_t got = ::pread(fd, head, sizeof(head), 0);
  struct stat st;
  const bool stated = ::fstat(fd, &st) == 0;
  ::close(fd);
  if (got < 0 || !stated) return std::nullopt;
  return SniffFormat(absl::MakeConstSpan(head, static_cast<size_t>(got)),
                     static_cast<uint64_t>(st.st_size));
}

absl::StatusOr<Checkpoint> ReadCheckpoint(const std::string& path) {
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::Open(path));
  std::optional<CheckpointFormat> format = SniffFormat(file->bytes(), file->size());
  if (!format) {
    // Neither format: the reader the name suggests says what is wrong with the file.
    format = absl::EndsWith(path, ".pt") || absl::EndsWith(path, ".pth")
                 ? CheckpointFormat::kTorch
                 : CheckpointFormat::kSafetensors;
  }
  absl::StatusOr<Checkpoint> checkpoint = *format == CheckpointFormat::kTorch
                                              ? ReadTorch(file)
                                              : [&]() -> absl::StatusOr<Checkpoint> {
    PARAMD_ASSIGN_OR_RETURN(SafetensorsFile parsed, ParseSafetensors(file));
    return FromSafetensors(std::move(parsed));
  }();
  if (!checkpoint.ok()) {
    return absl::Status(checkpoint.status().code(),
                        absl::StrCat(QuoteName(path), ": ", checkpoint.status().message()));
  }
  return checkpoint;
}

absl::Status SaveCheckpoint(const std::string& path, CheckpointFormat format,
                            const SaveInput& input, FileSystem& fs, WrittenFile* written) {
  if (format == CheckpointFormat::kSafetensors) {
    if (input.keep_vars) {
      return absl::InvalidArgumentError(
          "safetensors files hold plain tensors; keep_vars applies to PyTorch files only");
    }
    if (input.optimizer) {
      return absl::InvalidArgumentError(
          "a training checkpoint (model and optimizer) is a PyTorch file, as torch.save "
          "writes it; save it to a .pt path (or with the torch format)");
    }
    return SaveSafetensorsCheckpoint(path, input, fs, written);
  }
  return SaveTorch(path, input, fs, written);
}

}  // namespace paramd::io
