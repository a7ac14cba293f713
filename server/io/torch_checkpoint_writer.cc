// Writing torch.save checkpoints: storages planned (de-duplicated by identity, keyed in the
// order first met), the state_dict pickled at protocol 2, and the records laid out in torch's
// order in a zip archive with 64-byte aligned data.
#include <random>
#include <set>
#include <unordered_map>
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

// Builds data.pkl's objects as torch pickles them, planning each storage once, keyed in the
// order first met.
class Pickler {
 public:
  explicit Pickler(Plan& plan)
      : plan_(plan),
        storage_tag_(graph_.String("storage")),
        cpu_(graph_.String("cpu")),
        rebuild_tensor_(graph_.Global("torch._utils", "_rebuild_tensor_v2")),
        rebuild_parameter_(graph_.Global("torch._utils", "_rebuild_parameter")) {}

  PickleGraph& graph() { return graph_; }

  // The object torch pickles for `tensor` (a Parameter when `is_parameter`), sharing what
  // torch's objects share (see PickleProtocol2).
  absl::StatusOr<const PickleValue*> Tensor(const std::string& name, const core::Tensor& tensor,
                                            bool is_parameter, bool requires_grad) {
    if (!tensor.defined()) return Invalid("tensor ", QuoteName(name), " is undefined and cannot be saved");
    const size_t element_size = ElementSize(tensor.dtype());
    const std::shared_ptr<core::Storage>& storage = tensor.storage();
    auto [it, inserted] = storage_index_.emplace(storage.get(), plan_.storages.size());
    if (inserted) {
      plan_.storages.push_back(
          PlannedStorage{storage.get(), storage, tensor.dtype(),
                         static_cast<int64_t>(storage->nbytes() / element_size)});
      storage_keys_.push_back(graph_.String(absl::StrCat(plan_.storages.size() - 1)));
    }
    const PlannedStorage& planned = plan_.storages[it->second];
    if (planned.dtype != tensor.dtype()) {
      return Invalid(
          "Cannot save multiple tensors or storages that view the same data as "
          "different types (tensor ",
          QuoteName(name), " is ", DTypeName(tensor.dtype()), ", an earlier tensor on its storage is ",
          DTypeName(planned.dtype), ")");
    }
    PARAMD_RETURN_IF_ERROR(
        CheckView(name, tensor.offset(), tensor.shape(), tensor.strides(), planned.numel));
    const std::string location = LocationOf(storage->device());
    const PickleValue* location_node = location == "cpu" ? cpu_ : graph_.String(location);
    const PickleValue* pid =
        graph_.Tuple({storage_tag_, graph_.Global("torch", StorageClassName(tensor.dtype())),
                      storage_keys_[it->second], location_node, graph_.Int(planned.numel)});
    std::vector<const PickleValue*> sizes, strides;
    for (int64_t size : tensor.shape()) sizes.push_back(graph_.Int(size));
    for (int64_t stride : tensor.strides()) strides.push_back(graph_.Int(stride));
    const PickleValue* tensor_node = graph_.Call(
        rebuild_tensor_, graph_.Tuple({graph_.PersistentId(pid), graph_.Int(tensor.offset()),
                                       graph_.Tuple(std::move(sizes)),
                                       graph_.Tuple(std::move(strides)),
                                       graph_.Bool(is_parameter ? false : requires_grad),
                                       graph_.Dict(/*ordered=*/true)}));
    if (!is_parameter) return tensor_node;
    return graph_.Call(rebuild_parameter_, graph_.Tuple({tensor_node, graph_.Bool(requires_grad),
                                                         graph_.Dict(/*ordered=*/true)}));
  }

  const PickleValue* Hyper(const core::HyperValue& value) {
    switch (value.type) {
      case core::HyperValue::Type::kNone:
        return graph_.None();
      case core::HyperValue::Type::kBool:
        return graph_.Bool(value.number != 0);
      case core::HyperValue::Type::kInt:
        return graph_.Int(value.integer);
      case core::HyperValue::Type::kFloat:
        return graph_.Float(value.number);
      case core::HyperValue::Type::kTuple: {
        std::vector<const PickleValue*> items;
        for (double v : value.tuple) items.push_back(graph_.Float(v));
        return graph_.Tuple(std::move(items));
      }
    }
    return graph_.None();
  }

  // optimizer.state_dict() as torch pickles it: {"state": {index: {key: tensor}},
  // "param_groups": [{hyperparameters..., "params": [indices]}]}.
  absl::StatusOr<const PickleValue*> Optimizer(const core::OptimizerStateDict& dict) {
    PickleValue* state = graph_.Dict(/*ordered=*/false);
    for (const core::OptimizerStateDict::ParamState& param : dict.state) {
      PickleValue* entry = graph_.Dict(/*ordered=*/false);
      for (const auto& [key, tensor] : param.tensors) {
        PARAMD_ASSIGN_OR_RETURN(
            const PickleValue* node,
            Tensor(absl::StrCat("optimizer['state'][", param.index, "]['", key, "']"),
                   tensor, false, false));
        entry->entries.emplace_back(graph_.String(key), node);
      }
      state->entries.emplace_back(graph_.Int(param.index), entry);
    }
    PickleValue* groups = graph_.Add(PickleKind::kList);
    for (const core::OptimizerStateDict::Group& group : dict.param_groups) {
      PickleValue* out = graph_.Dict(/*ordered=*/false);
      for (const auto& [key, value] : group.hyperparameters) {
        out->entries.emplace_back(graph_.String(key), Hyper(value));
      }
      PickleValue* params = graph_.Add(PickleKind::kList);
      for (int64_t index : group.params) params->items.push_back(graph_.Int(index));
      out->entries.emplace_back(graph_.String("params"), params);
      groups->items.push_back(out);
    }
    PickleValue* optimizer = graph_.Dict(/*ordered=*/false);
    optimizer->entries.emplace_back(graph_.String("state"), state);
    optimizer->entries.emplace_back(graph_.String("param_groups"), groups);
    return optimizer;
  }

 private:
  Plan& plan_;
  PickleGraph graph_;
  std::unordered_map<const core::Storage*, size_t> storage_index_;
  std::vector<const PickleValue*> storage_keys_;
  const PickleValue* storage_tag_;
  const PickleValue* cpu_;
  const PickleValue* rebuild_tensor_;
  const PickleValue* rebuild_parameter_;
};

absl::Status CheckOptions(const TorchSaveOptions& options) {
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
  return absl::OkStatus();
}

absl::StatusOr<Plan> PlanCheckpoint(const std::vector<TorchCheckpointEntry>& entries,
                                    const TorchSaveOptions& options) {
  PARAMD_RETURN_IF_ERROR(CheckOptions(options));
  Plan plan;
  Pickler pickler(plan);
  PickleGraph& graph = pickler.graph();
  PickleValue* root = graph.Dict(/*ordered=*/true);
  std::set<absl::string_view> names;
  for (const TorchCheckpointEntry& entry : entries) {
    const std::string& name = entry.name;
    if (!IsUtf8(name)) return Invalid("tensor name ", QuoteName(name), " is not valid UTF-8");
    if (!names.insert(name).second) {
      return Invalid("tensor name ", QuoteName(name), " appears twice; state_dict keys are unique");
    }
    PARAMD_ASSIGN_OR_RETURN(const PickleValue* value,
                            pickler.Tensor(name, entry.tensor, entry.is_parameter,
                                           entry.requires_grad));
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
  const PickleValue* top = root;
  if (options.optimizer.has_value()) {
    PARAMD_ASSIGN_OR_RETURN(const PickleValue* optimizer, pickler.Optimizer(*options.optimizer));
    PickleValue* checkpoint = graph.Dict(/*ordered=*/false);
    checkpoint->entries.emplace_back(graph.String("model"), root);
    checkpoint->entries.emplace_back(graph.String("optimizer"), optimizer);
    top = checkpoint;
  }
  PARAMD_ASSIGN_OR_RETURN(plan.pickle, PickleProtocol2(*top));
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
