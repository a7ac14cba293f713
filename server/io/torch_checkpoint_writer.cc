// Writing torch.save checkpoints: storages planned (de-duplicated by identity, keyed in the
// order first met), the state_dict pickled at protocol 2, and the records laid out in torch's
// order in a zip archive with 64-byte aligned data.
#include <random>
#include <set>
#include <string>
#include <vector>

#include "base/text.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/zip/zip.h"
#include "base/status_macros.h"
#include "server/io/torch_checkpoint.h"
#include "server/io/torch_checkpoint_internal.h"
#include "server/io/utf8.h"

namespace paramd::io {
namespace {

using namespace torch_internal;  // NOLINT(build/namespaces): the parts' shared pieces

absl::string_view StorageClassName(DType dtype) {
  for (const StorageClass& storage_class : kStorageClasses) {
    if (storage_class.dtype == dtype) return storage_class.name;
  }
  return "FloatStorage";  // unreachable: every DType has a storage class
}

struct PlannedStorage {
  const core::Storage* identity;
  std::shared_ptr<core::Storage> storage;
  DType dtype;
  int64_t numel;
};

struct Plan {
  std::string pickle;
  std::vector<PlannedStorage> storages;
};

std::string LocationOf(const Device& device) {
  if (device.is_cpu()) return "cpu";
  return absl::StrCat("cuda:", device.index < 0 ? 0 : device.index);
}

absl::Status CheckRecordName(absl::string_view name) {
  if (name.empty()) return Invalid("extra record name is empty");
  if (!IsUtf8(name) || name.find('\0') != absl::string_view::npos) {
    return Invalid("extra record name ", QuoteName(name), " is not valid UTF-8 text");
  }
  if (name.front() == '/' || name.back() == '/') {
    return Invalid("extra record name ", QuoteName(name), " must not start or end with '/'");
  }
  for (absl::string_view part : absl::StrSplit(name, '/')) {
    if (part.empty() || part == "." || part == "..") {
      return Invalid("extra record name ", QuoteName(name), " has an empty, '.' or '..' component");
    }
  }
  if (IsTorchRecord(name) || name == "constants.pkl" || absl::StartsWith(name, ".data/") ||
      absl::StartsWith(name, "code/")) {
    return Invalid("extra record name ", QuoteName(name), " is reserved by torch.save's format");
  }
  return absl::OkStatus();
}

absl::StatusOr<Plan> PlanCheckpoint(const std::vector<TorchCheckpointEntry>& entries,
                                    const TorchSaveOptions& options) {
  const std::string& archive = options.archive_name;
  if (archive.empty() || archive == "." || archive == ".." ||
      archive.find('/') != std::string::npos || archive.find('\\') != std::string::npos ||
      archive.find('\0') != std::string::npos || !IsUtf8(archive)) {
    return Invalid("archive name ", QuoteName(archive),
                   " must be one non-empty path component (no '/', not '.' or '..')");
  }
  std::set<absl::string_view> record_names;
  for (const auto& [name, bytes] : options.extra_records) {
    PARAMD_RETURN_IF_ERROR(CheckRecordName(name));
    if (!record_names.insert(name).second) return Invalid("extra record ", QuoteName(name), " twice");
  }

  Plan plan;
  PickleGraph graph;
  std::unordered_map<const core::Storage*, size_t> storage_index;
  std::vector<const PickleValue*> storage_keys;
  const PickleValue* storage_tag = graph.String("storage");
  const PickleValue* cpu = graph.String("cpu");
  const PickleValue* rebuild_tensor = graph.Global("torch._utils", "_rebuild_tensor_v2");
  const PickleValue* rebuild_parameter = graph.Global("torch._utils", "_rebuild_parameter");
  PickleValue* root = graph.Dict(/*ordered=*/true);
  std::set<absl::string_view> names;

  for (const TorchCheckpointEntry& entry : entries) {
    const std::string& name = entry.name;
    if (!IsUtf8(name)) return Invalid("tensor name ", QuoteName(name), " is not valid UTF-8");
    if (!names.insert(name).second) {
      return Invalid("tensor name ", QuoteName(name), " appears twice; state_dict keys are unique");
    }
    const core::Tensor& tensor = entry.tensor;
    if (!tensor.defined()) return Invalid("tensor ", QuoteName(name), " is undefined and cannot be saved");
    const size_t element_size = ElementSize(tensor.dtype());
    const std::shared_ptr<core::Storage>& storage = tensor.storage();
    auto [it, inserted] = storage_index.emplace(storage.get(), plan.storages.size());
    if (inserted) {
      plan.storages.push_back(
          PlannedStorage{storage.get(), storage, tensor.dtype(),
                         static_cast<int64_t>(storage->nbytes() / element_size)});
      storage_keys.push_back(graph.String(absl::StrCat(plan.storages.size() - 1)));
    }
    const PlannedStorage& planned = plan.storages[it->second];
    if (planned.dtype != tensor.dtype()) {
      return Invalid(
          "Cannot save multiple tensors or storages that view the same data as "
          "different types (tensor ",
          QuoteName(name), " is ", DTypeName(tensor.dtype()), ", an earlier tensor on its storage is ",
          DTypeName(planned.dtype), ")");
    }
    PARAMD_RETURN_IF_ERROR(
        CheckView(name, tensor.offset(), tensor.shape(), tensor.strides(), planned.numel));

    // The objects torch pickles, sharing what torch's objects share (see PickleProtocol2).
    const std::string location = LocationOf(storage->device());
    const PickleValue* location_node = location == "cpu" ? cpu : graph.String(location);
    const PickleValue* pid =
        graph.Tuple({storage_tag, graph.Global("torch", StorageClassName(tensor.dtype())),
                     storage_keys[it->second], location_node, graph.Int(planned.numel)});
    std::vector<const PickleValue*> sizes, strides;
    for (int64_t size : tensor.shape()) sizes.push_back(graph.Int(size));
    for (int64_t stride : tensor.strides()) strides.push_back(graph.Int(stride));
    const PickleValue* tensor_node = graph.Call(
        rebuild_tensor, graph.Tuple({graph.PersistentId(pid), graph.Int(tensor.offset()),
                                     graph.Tuple(std::move(sizes)), graph.Tuple(std::move(strides)),
                                     graph.Bool(entry.is_parameter ? false : entry.requires_grad),
                                     graph.Dict(/*ordered=*/true)}));
    const PickleValue* value = tensor_node;
    if (entry.is_parameter) {
      value =
          graph.Call(rebuild_parameter, graph.Tuple({tensor_node, graph.Bool(entry.requires_grad),
                                                     graph.Dict(/*ordered=*/true)}));
    }
    root->entries.emplace_back(graph.String(name), value);
  }

  if (options.metadata.has_value()) {
    PickleValue* state = graph.Dict(/*ordered=*/false);
    PickleValue* metadata = graph.Dict(/*ordered=*/true);
    const PickleValue* version_key = graph.String("version");
    for (const auto& [prefix, version] : *options.metadata) {
      if (!IsUtf8(prefix)) return Invalid("_metadata prefix ", QuoteName(prefix), " is not valid UTF-8");
      PickleValue* local = graph.Dict(/*ordered=*/false);
      local->entries.emplace_back(version_key,
                                  version.has_value() ? graph.Int(*version) : graph.None());
      metadata->entries.emplace_back(graph.String(prefix), local);
    }
    state->entries.emplace_back(graph.String("_metadata"), metadata);
    root->state = state;
  }
  PARAMD_ASSIGN_OR_RETURN(plan.pickle, PickleProtocol2(*root));
  return plan;
}

// The zip Writer's view of a WritableFile.
class FileSink final : public zip::Sink {
 public:
  explicit FileSink(WritableFile& file) : file_(file) {}
  absl::Status Append(absl::Span<const uint8_t> bytes) override { return file_.Append(bytes); }
  uint64_t size() const override { return file_.size(); }

 private:
  WritableFile& file_;
};

absl::Status WritePlan(WritableFile& out, const Plan& plan, const TorchSaveOptions& options) {
  FileSink sink(out);
  zip::Writer writer(sink);
  const std::string prefix = options.archive_name + "/";
  PARAMD_RETURN_IF_ERROR(writer.AddEntry(prefix + "data.pkl", plan.pickle));
  PARAMD_RETURN_IF_ERROR(writer.AddEntry(prefix + "byteorder", "little"));
  for (size_t i = 0; i < plan.storages.size(); ++i) {
    const PlannedStorage& storage = plan.storages[i];
    const size_t nbytes = static_cast<size_t>(storage.numel) * ElementSize(storage.dtype);
    const std::string name = absl::StrCat(prefix, "data/", i);
    if (storage.storage->device().is_cpu()) {
      PARAMD_RETURN_IF_ERROR(writer.AddEntry(
          name, absl::MakeConstSpan(static_cast<const uint8_t*>(storage.storage->data()), nbytes)));
    } else {
      const core::Tensor flat(storage.storage, 0, {storage.numel}, {1}, storage.dtype);
      PARAMD_ASSIGN_OR_RETURN(std::vector<uint8_t> host, core::ToBytes(flat));
      PARAMD_RETURN_IF_ERROR(writer.AddEntry(name, absl::MakeConstSpan(host)));
    }
  }
  PARAMD_RETURN_IF_ERROR(writer.AddEntry(prefix + "version", kProducedVersion));
  std::string id = options.serialization_id;
  if (id.empty()) {
    std::random_device random;
    const uint64_t high = (static_cast<uint64_t>(random()) << 32) | random();
    id = absl::StrCat(absl::Dec(high, absl::kZeroPad20),
                      absl::Dec(writer.combined_crc32(), absl::kZeroPad20));
  }
  PARAMD_RETURN_IF_ERROR(writer.AddEntry(prefix + ".data/serialization_id", id));
  for (const auto& [name, bytes] : options.extra_records) {
    PARAMD_RETURN_IF_ERROR(writer.AddEntry(prefix + name, bytes));
  }
  return writer.Finish();
}

}  // namespace

absl::Status WriteTorchCheckpoint(WritableFile& out,
                                  const std::vector<TorchCheckpointEntry>& entries,
                                  const TorchSaveOptions& options) {
  PARAMD_ASSIGN_OR_RETURN(Plan plan, PlanCheckpoint(entries, options));
  return WritePlan(out, plan, options);
}

absl::Status SaveTorchCheckpoint(const std::string& path,
                                 const std::vector<TorchCheckpointEntry>& entries,
                                 const TorchSaveOptions& options, FileSystem& fs,
                                 WrittenFile* written) {
  // Planned first, so that a refused save does not even create a temporary file.
  PARAMD_ASSIGN_OR_RETURN(Plan plan, PlanCheckpoint(entries, options));
  return WriteFileAtomically(
      fs, path, [&](WritableFile& out) { return WritePlan(out, plan, options); }, written);
}

}  // namespace paramd::io
