#include "server/io/torch_checkpoint.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <unordered_map>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/zip/zip.h"
#include "server/common/status_macros.h"
#include "server/io/pickle.h"

namespace paramd::io {
namespace {

// caffe2/serialize/versions.h: the range torch reads, and what it writes for plain data.
constexpr int64_t kMinFormatVersion = 1;
constexpr int64_t kMaxFormatVersion = 10;
constexpr absl::string_view kProducedVersion = "3\n";

constexpr absl::string_view kLegacyMessage =
    "legacy torch.save format; load it in PyTorch and re-save it with a current torch.save";
constexpr absl::string_view kStateDictAdvice =
    "save model.state_dict() instead of the model or other Python objects";

template <typename... Args>
absl::Status Invalid(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(args...));
}

struct StorageClass {
  absl::string_view name;  // torch.<name>
  core::DType dtype;
};

constexpr StorageClass kStorageClasses[] = {
    {"DoubleStorage", core::DType::kFloat64}, {"FloatStorage", core::DType::kFloat32},
    {"HalfStorage", core::DType::kFloat16},   {"BFloat16Storage", core::DType::kBFloat16},
    {"LongStorage", core::DType::kInt64},     {"IntStorage", core::DType::kInt32},
    {"ShortStorage", core::DType::kInt16},    {"CharStorage", core::DType::kInt8},
    {"ByteStorage", core::DType::kUInt8},     {"BoolStorage", core::DType::kBool},
};

// Storage classes torch has and paramd does not, with their dtype.
constexpr std::pair<absl::string_view, absl::string_view> kUnsupportedStorageClasses[] = {
    {"ComplexDoubleStorage", "complex128"},
    {"ComplexFloatStorage", "complex64"},
    {"QInt8Storage", "qint8"},
    {"QUInt8Storage", "quint8"},
    {"QInt32Storage", "qint32"},
    {"QUInt4x2Storage", "quint4x2"},
    {"QUInt2x4Storage", "quint2x4"},
};

absl::string_view StorageClassName(core::DType dtype) {
  for (const StorageClass& storage_class : kStorageClasses) {
    if (storage_class.dtype == dtype) return storage_class.name;
  }
  return "FloatStorage";  // unreachable: every DType has a storage class
}

std::string SupportedDTypes() {
  std::vector<std::string> names;
  for (core::DType dtype : core::kAllDTypes) {
    names.push_back(absl::StrCat("torch.", core::DTypeName(dtype)));
  }
  return absl::StrJoin(names, ", ");
}

std::string DTypeRefusal(absl::string_view tensor_name, absl::string_view dtype_name) {
  return absl::StrCat("tensor '", tensor_name, "' has dtype torch.", dtype_name,
                      ", which paramd does not support; supported dtypes: ", SupportedDTypes());
}

bool IsUtf8(absl::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char lead = static_cast<unsigned char>(text[i]);
    size_t length = lead < 0x80             ? 1
                    : (lead & 0xE0) == 0xC0 ? 2
                    : (lead & 0xF0) == 0xE0 ? 3
                    : (lead & 0xF8) == 0xF0 ? 4
                                            : 0;
    if (length == 0 || text.size() - i < length) return false;
    uint32_t code_point = length == 1 ? lead : lead & (0x7F >> length);
    for (size_t k = 1; k < length; ++k) {
      const unsigned char next = static_cast<unsigned char>(text[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code_point = (code_point << 6) | (next & 0x3F);
    }
    const uint32_t smallest[] = {0, 0, 0x80, 0x800, 0x10000};
    if (code_point < smallest[length] || code_point > 0x10FFFF ||
        (code_point >= 0xD800 && code_point <= 0xDFFF)) {
      return false;
    }
    i += length;
  }
  return true;
}

// A view (offset, shape, strides in elements) must lie inside a storage of `numel` elements.
absl::Status CheckView(absl::string_view name, int64_t offset, const core::Shape& shape,
                       const core::Shape& strides, int64_t storage_numel) {
  if (shape.size() != strides.size()) {
    return Invalid("tensor '", name, "' has ", shape.size(), " sizes but ", strides.size(),
                   " strides");
  }
  if (offset < 0) return Invalid("tensor '", name, "' has a negative storage offset ", offset);
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0 || strides[i] < 0) {
      return Invalid("tensor '", name, "' has a negative size or stride: size ",
                     core::ShapeString(shape), ", stride ", core::ShapeString(strides));
    }
  }
  absl::StatusOr<int64_t> numel = core::CheckedNumel(shape);
  if (!numel.ok()) {
    return Invalid("tensor '", name, "' has size ", core::ShapeString(shape),
                   " whose element count overflows");
  }
  if (*numel == 0) return absl::OkStatus();  // as torch: an empty view needs no storage
  int64_t last = offset;
  for (size_t i = 0; i < shape.size(); ++i) {
    int64_t step;
    if (__builtin_mul_overflow(shape[i] - 1, strides[i], &step) ||
        __builtin_add_overflow(last, step, &last)) {
      return Invalid("tensor '", name, "' has size ", core::ShapeString(shape), " and stride ",
                     core::ShapeString(strides), " that overflow");
    }
  }
  if (last >= storage_numel) {
    return Invalid("tensor '", name, "' (offset ", offset, ", size ", core::ShapeString(shape),
                   ", stride ", core::ShapeString(strides), ") reaches element ", last,
                   " of a storage of ", storage_numel, " elements");
  }
  return absl::OkStatus();
}

// --- reading --------------------------------------------------------------------------

struct StorageSpec {
  std::string key;
  std::string location;
  core::DType dtype;
  uint64_t nbytes;
};

struct TensorSpec {
  StorageSpec storage;
  int64_t offset = 0;
  core::Shape shape;
  core::Shape strides;
  bool requires_grad = false;
};

bool IsText(const PickleValue* value) {
  return value->kind == PickleKind::kString || value->kind == PickleKind::kBytes;
}

absl::StatusOr<int64_t> IntArg(const PickleValue* value, absl::string_view name,
                               absl::string_view what) {
  if (value->kind != PickleKind::kInt) {
    return Invalid("tensor '", name, "': ", what, " is a ", PickleTypeName(*value), ", not an int");
  }
  return value->int_value;
}

absl::StatusOr<core::Shape> IntTuple(const PickleValue* value, absl::string_view name,
                                     absl::string_view what) {
  // Older files pickle sizes as torch.Size((...)).
  if (value->kind == PickleKind::kCall && value->items[0]->is_global("torch", "Size") &&
      value->items[1]->items.size() == 1) {
    value = value->items[1]->items[0];
  }
  if (value->kind != PickleKind::kTuple) {
    return Invalid("tensor '", name, "': ", what, " is a ", PickleTypeName(*value),
                   ", not a tuple of ints");
  }
  core::Shape out;
  for (const PickleValue* item : value->items) {
    PARAMD_ASSIGN_OR_RETURN(int64_t v, IntArg(item, name, what));
    out.push_back(v);
  }
  return out;
}

absl::StatusOr<core::DType> DTypeFromGlobal(const PickleValue* value, absl::string_view name) {
  if (value->kind != PickleKind::kGlobal || value->text != "torch") {
    return Invalid("tensor '", name, "': dtype argument is a ", PickleTypeName(*value),
                   ", not a torch dtype");
  }
  absl::StatusOr<core::DType> dtype = core::ParseDType(value->name);
  if (!dtype.ok()) return Invalid(DTypeRefusal(name, value->name));
  return *dtype;
}

// ('storage', storage class, key, location, numel): numel counts elements of a typed
// class, bytes of UntypedStorage (whose dtype then comes from _rebuild_tensor_v3).
absl::StatusOr<StorageSpec> ParseStorage(const PickleValue* value, absl::string_view name,
                                         std::optional<core::DType> v3_dtype) {
  if (value->kind != PickleKind::kPersistentId) {
    return Invalid("tensor '", name, "': its storage is a ", PickleTypeName(*value),
                   ", not a persistent storage reference");
  }
  const PickleValue* pid = value->items[0];
  if (pid->items.size() != 5 || !IsText(pid->items[2]) || !IsText(pid->items[3]) ||
      pid->items[4]->kind != PickleKind::kInt) {
    return Invalid("tensor '", name,
                   "': storage reference must be ('storage', class, key, "
                   "location, numel)");
  }
  const PickleValue* storage_class = pid->items[1];
  if (storage_class->kind != PickleKind::kGlobal) {
    return Invalid("tensor '", name, "': storage class is a ", PickleTypeName(*storage_class));
  }
  StorageSpec spec;
  spec.key = pid->items[2]->text;
  spec.location = pid->items[3]->text;
  const int64_t numel = pid->items[4]->int_value;
  if (numel < 0) return Invalid("tensor '", name, "': storage has a negative size ", numel);
  const std::string& class_name = storage_class->name;
  const bool untyped = class_name == "UntypedStorage";
  if (untyped) {
    if (!v3_dtype.has_value()) {
      return Invalid("tensor '", name, "': an UntypedStorage needs _rebuild_tensor_v3's dtype");
    }
    spec.dtype = *v3_dtype;
    spec.nbytes = static_cast<uint64_t>(numel);
    if (spec.nbytes % core::ElementSize(spec.dtype) != 0) {
      return Invalid("tensor '", name, "': storage of ", numel,
                     " bytes is not a whole number "
                     "of ",
                     core::DTypeName(spec.dtype), " elements");
    }
    return spec;
  }
  const StorageClass* found = nullptr;
  for (const StorageClass& candidate : kStorageClasses) {
    if (candidate.name == class_name) found = &candidate;
  }
  if (found == nullptr) {
    for (const auto& [unsupported, dtype_name] : kUnsupportedStorageClasses) {
      if (unsupported == class_name) return Invalid(DTypeRefusal(name, dtype_name));
    }
    return Invalid("tensor '", name, "': unknown storage class ", storage_class->text, ".",
                   class_name);
  }
  spec.dtype = found->dtype;
  if (v3_dtype.has_value() && *v3_dtype != spec.dtype) {
    return Invalid("tensor '", name, "': dtype torch.", core::DTypeName(*v3_dtype),
                   " disagrees with its storage class ", class_name);
  }
  const uint64_t element_size = core::ElementSize(spec.dtype);
  if (static_cast<uint64_t>(numel) > std::numeric_limits<uint64_t>::max() / element_size) {
    return Invalid("tensor '", name, "': storage size ", numel, " overflows");
  }
  spec.nbytes = static_cast<uint64_t>(numel) * element_size;
  return spec;
}

absl::StatusOr<TensorSpec> ParseTensor(const PickleValue* value, absl::string_view name) {
  if (value->kind != PickleKind::kCall) {
    return Invalid("state_dict entry '", name, "' is a ", PickleTypeName(*value),
                   ", not a tensor; paramd reads state_dicts of tensors: ", kStateDictAdvice);
  }
  const PickleValue* callable = value->items[0];
  const std::vector<const PickleValue*>& args = value->items[1]->items;
  if (callable->text != "torch._utils") {
    return Invalid("state_dict entry '", name, "' is a ", PickleTypeName(*value),
                   ", not a plain tensor; paramd does not support tensor subclasses or "
                   "tensors with Python attributes");
  }
  const std::string& function = callable->name;
  std::optional<core::DType> v3_dtype;
  size_t min_args, max_args;
  if (function == "_rebuild_tensor") {
    min_args = max_args = 4;
  } else if (function == "_rebuild_tensor_v2") {
    min_args = 6;
    max_args = 7;
  } else if (function == "_rebuild_tensor_v3") {
    min_args = 7;
    max_args = 8;
    if (args.size() >= 7) {
      PARAMD_ASSIGN_OR_RETURN(v3_dtype, DTypeFromGlobal(args[6], name));
    }
  } else {
    std::string kind = "an unsupported kind of tensor";
    if (function == "_rebuild_qtensor") kind = "a quantized tensor";
    if (function == "_rebuild_sparse_tensor") kind = "a sparse tensor";
    if (function == "_rebuild_meta_tensor_no_storage") kind = "a meta tensor (no data)";
    return Invalid("state_dict entry '", name, "' is ", kind, " (torch._utils.", function,
                   "), which paramd does not support");
  }
  if (args.size() < min_args || args.size() > max_args) {
    return Invalid("tensor '", name, "': torch._utils.", function, " called with ", args.size(),
                   " arguments");
  }
  TensorSpec spec;
  PARAMD_ASSIGN_OR_RETURN(spec.storage, ParseStorage(args[0], name, v3_dtype));
  PARAMD_ASSIGN_OR_RETURN(spec.offset, IntArg(args[1], name, "storage offset"));
  PARAMD_ASSIGN_OR_RETURN(spec.shape, IntTuple(args[2], name, "size"));
  PARAMD_ASSIGN_OR_RETURN(spec.strides, IntTuple(args[3], name, "stride"));
  if (args.size() > 4) {
    if (args[4]->kind != PickleKind::kBool) {
      return Invalid("tensor '", name, "': requires_grad is a ", PickleTypeName(*args[4]));
    }
    spec.requires_grad = args[4]->bool_value;
  }
  const size_t metadata_index = function == "_rebuild_tensor_v2" ? 6 : 7;
  if (args.size() > metadata_index) {
    const PickleValue* metadata = args[metadata_index];
    if (metadata->kind != PickleKind::kDict) {
      return Invalid("tensor '", name, "': metadata is a ", PickleTypeName(*metadata));
    }
    if (!metadata->entries.empty()) {
      return Invalid("tensor '", name,
                     "' carries conjugate/negative bits or other tensor "
                     "metadata, which paramd does not support; save it after .resolve_conj() "
                     "/ .resolve_neg()");
    }
  }
  return spec;
}

struct ParsedEntry {
  std::string name;
  TensorSpec tensor;
  bool is_parameter = false;
  bool requires_grad = false;
};

absl::StatusOr<ParsedEntry> ParseEntry(const PickleValue* key, const PickleValue* value,
                                       size_t index) {
  if (key->kind != PickleKind::kString) {
    return Invalid("state_dict key #", index, " is a ", PickleTypeName(*key), ", not a str; ",
                   kStateDictAdvice);
  }
  ParsedEntry entry;
  entry.name = key->text;
  if (value->kind == PickleKind::kCall && value->items[0]->text == "torch._utils" &&
      (value->items[0]->name == "_rebuild_parameter" ||
       value->items[0]->name == "_rebuild_parameter_with_state")) {
    const auto& args = value->items[1]->items;
    if (args.size() < 2 || args[1]->kind != PickleKind::kBool) {
      return Invalid("parameter '", entry.name, "': torch._utils.", value->items[0]->name,
                     " needs (data, requires_grad, ...)");
    }
    PARAMD_ASSIGN_OR_RETURN(entry.tensor, ParseTensor(args[0], entry.name));
    entry.is_parameter = true;
    entry.requires_grad = args[1]->bool_value;
    return entry;
  }
  PARAMD_ASSIGN_OR_RETURN(entry.tensor, ParseTensor(value, entry.name));
  entry.requires_grad = entry.tensor.requires_grad;
  return entry;
}

absl::StatusOr<TorchModuleMetadata> ParseMetadata(const PickleValue* state) {
  TorchModuleMetadata out;
  if (state->kind != PickleKind::kDict) {
    return Invalid("state_dict attributes are a ", PickleTypeName(*state), ", not a dict");
  }
  const PickleValue* metadata = nullptr;
  for (const auto& [key, value] : state->entries) {
    if (key->kind == PickleKind::kString && key->text == "_metadata") metadata = value;
  }
  if (metadata == nullptr) return out;
  if (metadata->kind != PickleKind::kDict) {
    return Invalid("state_dict _metadata is a ", PickleTypeName(*metadata), ", not a dict");
  }
  for (const auto& [prefix, local] : metadata->entries) {
    if (prefix->kind != PickleKind::kString || local->kind != PickleKind::kDict) {
      return Invalid("state_dict _metadata must map str prefixes to dicts, but holds a ",
                     PickleTypeName(*prefix), " -> ", PickleTypeName(*local));
    }
    std::optional<int64_t> version;
    for (const auto& [key, value] : local->entries) {
      if (key->kind != PickleKind::kString || key->text != "version") continue;
      if (value->kind == PickleKind::kInt) {
        version = value->int_value;
      } else if (value->kind != PickleKind::kNone) {
        return Invalid("state_dict _metadata['", prefix->text, "']['version'] is a ",
                       PickleTypeName(*value), ", not an int");
      }
    }
    out.emplace_back(prefix->text, version);
  }
  return out;
}

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

// Records torch writes or reads itself; anything else is an extra record.
bool IsTorchRecord(absl::string_view name) {
  return name == "data.pkl" || name == "byteorder" || name == "version" ||
         name == ".data/version" || name == ".data/serialization_id" || name == ".format_version" ||
         name == ".storage_alignment" || absl::StartsWith(name, "data/");
}

// --- writing --------------------------------------------------------------------------

struct PlannedStorage {
  const core::Storage* identity;
  std::shared_ptr<core::Storage> storage;
  core::DType dtype;
  int64_t numel;
};

struct Plan {
  std::string pickle;
  std::vector<PlannedStorage> storages;
};

std::string LocationOf(const core::Device& device) {
  if (device.is_cpu()) return "cpu";
  return absl::StrCat("cuda:", device.index < 0 ? 0 : device.index);
}

absl::Status CheckRecordName(absl::string_view name) {
  if (name.empty()) return Invalid("extra record name is empty");
  if (!IsUtf8(name) || name.find('\0') != absl::string_view::npos) {
    return Invalid("extra record name '", name, "' is not valid UTF-8 text");
  }
  if (name.front() == '/' || name.back() == '/') {
    return Invalid("extra record name '", name, "' must not start or end with '/'");
  }
  for (absl::string_view part : absl::StrSplit(name, '/')) {
    if (part.empty() || part == "." || part == "..") {
      return Invalid("extra record name '", name, "' has an empty, '.' or '..' component");
    }
  }
  if (IsTorchRecord(name) || name == "constants.pkl" || absl::StartsWith(name, ".data/") ||
      absl::StartsWith(name, "code/")) {
    return Invalid("extra record name '", name, "' is reserved by torch.save's format");
  }
  return absl::OkStatus();
}

absl::StatusOr<Plan> PlanCheckpoint(const std::vector<TorchCheckpointEntry>& entries,
                                    const TorchSaveOptions& options) {
  const std::string& archive = options.archive_name;
  if (archive.empty() || archive == "." || archive == ".." ||
      archive.find('/') != std::string::npos || archive.find('\\') != std::string::npos ||
      archive.find('\0') != std::string::npos || !IsUtf8(archive)) {
    return Invalid("archive name '", archive,
                   "' must be one non-empty path component (no '/', not '.' or '..')");
  }
  std::set<absl::string_view> record_names;
  for (const auto& [name, bytes] : options.extra_records) {
    PARAMD_RETURN_IF_ERROR(CheckRecordName(name));
    if (!record_names.insert(name).second) return Invalid("extra record '", name, "' twice");
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
    if (!IsUtf8(name)) return Invalid("tensor name '", name, "' is not valid UTF-8");
    if (!names.insert(name).second) {
      return Invalid("tensor name '", name, "' appears twice; state_dict keys are unique");
    }
    const core::Tensor& tensor = entry.tensor;
    if (!tensor.defined()) return Invalid("tensor '", name, "' is undefined and cannot be saved");
    const size_t element_size = core::ElementSize(tensor.dtype());
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
          "different types (tensor '",
          name, "' is ", core::DTypeName(tensor.dtype()), ", an earlier tensor on its storage is ",
          core::DTypeName(planned.dtype), ")");
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
      if (!IsUtf8(prefix)) return Invalid("_metadata prefix '", prefix, "' is not valid UTF-8");
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
    const size_t nbytes = static_cast<size_t>(storage.numel) * core::ElementSize(storage.dtype);
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

namespace {

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
      return Invalid("zip entry '", entry.name, "' is outside the archive folder '", archive_name,
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

// data.pkl as a state_dict: its entries in order, and its `_metadata` into `metadata`.
absl::StatusOr<std::vector<ParsedEntry>> ParseStateDictPickle(
    absl::Span<const uint8_t> pickle, std::optional<TorchModuleMetadata>& metadata) {
  PARAMD_ASSIGN_OR_RETURN(PickleGraph graph, Unpickle(pickle));
  const PickleValue* root = graph.root();
  if (root->kind != PickleKind::kDict) {
    return Invalid("data.pkl holds a ", PickleTypeName(*root),
                   ", not a state_dict (a dict of str -> tensor); ", kStateDictAdvice);
  }
  std::vector<ParsedEntry> parsed;
  parsed.reserve(root->entries.size());
  for (size_t i = 0; i < root->entries.size(); ++i) {
    PARAMD_ASSIGN_OR_RETURN(ParsedEntry entry,
                            ParseEntry(root->entries[i].first, root->entries[i].second, i));
    parsed.push_back(std::move(entry));
  }
  if (root->state != nullptr) {
    PARAMD_ASSIGN_OR_RETURN(metadata, ParseMetadata(root->state));
  }
  return parsed;
}

// One storage's bytes as a core::Storage: a view of `source` holding `owner` where it may be
// used in place (an owner, no byte swap, aligned for the dtype), else a copy.
absl::StatusOr<std::shared_ptr<core::Storage>> LoadStorage(
    absl::Span<const uint8_t> source, core::DType dtype, bool big_endian,
    const std::shared_ptr<const void>& owner) {
  const size_t element_size = core::ElementSize(dtype);
  const bool swap = big_endian && element_size > 1;
  if (owner != nullptr && !swap && reinterpret_cast<uintptr_t>(source.data()) % element_size == 0) {
    return core::Storage::Wrap(core::Device::Cpu(), const_cast<uint8_t*>(source.data()),
                               source.size(), [owner] {});
  }
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Storage> storage,
                          core::Storage::Allocate(core::Device::Cpu(), source.size()));
  if (!source.empty()) std::memcpy(storage->data(), source.data(), source.size());
  if (swap) SwapBytes(static_cast<uint8_t*>(storage->data()), source.size(), element_size);
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
    return Invalid("tensor '", entry.name, "' uses storage '", spec.key,
                   "' but the archive has no record '", prefix, record_name, "'");
  }
  if (data->size != spec.nbytes) {
    return Invalid("storage '", spec.key, "' (record '", prefix, record_name, "'): record size ",
                   data->size, " mismatch with dst size ", spec.nbytes);
  }
  return LoadStorage(archive.Data(*data), spec.dtype, big_endian, owner);
}

}  // namespace

absl::StatusOr<TorchCheckpoint> ParseTorchCheckpoint(absl::Span<const uint8_t> bytes,
                                                     std::shared_ptr<const void> owner,
                                                     const TorchReadOptions& options) {
  PARAMD_ASSIGN_OR_RETURN(zip::Reader archive, OpenArchive(bytes));
  TorchCheckpoint checkpoint;
  PARAMD_ASSIGN_OR_RETURN(Records records, FolderRecords(archive, checkpoint.archive_name));
  const std::string prefix = checkpoint.archive_name + "/";
  if (options.verify_crc) {
    for (const zip::Entry& entry : archive.entries()) {
      PARAMD_RETURN_IF_ERROR(archive.VerifyCrc(entry));
    }
  }
  PARAMD_ASSIGN_OR_RETURN(const bool big_endian,
                          ReadFormatRecords(archive, records, checkpoint.format_version));
  const zip::Entry* data_pkl = FindRecord(records, "data.pkl");
  if (data_pkl == nullptr) {
    return Invalid("the archive has no data.pkl record; it is not a torch.save checkpoint");
  }
  PARAMD_ASSIGN_OR_RETURN(std::vector<ParsedEntry> parsed,
                          ParseStateDictPickle(archive.Data(*data_pkl), checkpoint.metadata));

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
        return Invalid("storage '", spec.key, "' is used as ", core::DTypeName(first_spec.dtype),
                       " of ", first_spec.nbytes, " bytes and by tensor '", entry.name, "' as ",
                       core::DTypeName(spec.dtype), " of ", spec.nbytes,
                       " bytes; the file is corrupt");
      }
    } else {
      PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Storage> storage,
                              LoadRecord(archive, records, prefix, entry, big_endian, owner));
      it = storages.emplace(spec.key, Loaded{spec, std::move(storage)}).first;
    }
    const int64_t storage_numel = static_cast<int64_t>(spec.nbytes / core::ElementSize(spec.dtype));
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
  for (const auto& [name, entry] : records) {
    if (!IsTorchRecord(name)) {
      checkpoint.extra_records.emplace_back(name, RecordText(archive, *entry));
    }
  }
  return checkpoint;
}

absl::StatusOr<TorchCheckpoint> ReadTorchCheckpoint(std::shared_ptr<const MappedFile> file,
                                                    const TorchReadOptions& options) {
  if (file == nullptr) return Invalid("no torch checkpoint file to read");
  const absl::Span<const uint8_t> bytes = file->bytes();
  return ParseTorchCheckpoint(bytes, std::move(file), options);
}

absl::StatusOr<TorchCheckpoint> ReadTorchCheckpoint(const std::string& path,
                                                    const TorchReadOptions& options) {
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<MappedFile> file, MappedFile::Open(path));
  absl::StatusOr<TorchCheckpoint> read = ReadTorchCheckpoint(std::move(file), options);
  if (!read.ok()) {
    return absl::Status(read.status().code(),
                        absl::StrCat("'", path, "': ", read.status().message()));
  }
  return read;
}

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

absl::StatusOr<MapLocation> MapLocation::To(absl::string_view device) {
  absl::StatusOr<core::Device> parsed = core::ParseDevice(device);
  if (!parsed.ok()) {
    return Invalid("map_location '", device, "': ", parsed.status().message());
  }
  MapLocation map;
  map.all_ = *parsed;
  return map;
}

absl::StatusOr<MapLocation> MapLocation::Remap(
    std::vector<std::pair<std::string, std::string>> mapping) {
  MapLocation map;
  for (auto& [saved, target] : mapping) {
    absl::StatusOr<core::Device> parsed = core::ParseDevice(target);
    if (!parsed.ok()) {
      return Invalid("map_location maps '", saved, "' to '", target,
                     "': ", parsed.status().message());
    }
    map.mapping_.emplace_back(std::move(saved), *parsed);
  }
  return map;
}

absl::StatusOr<core::Device> MapLocation::Resolve(absl::string_view saved_location) const {
  if (all_.has_value()) return *all_;
  for (const auto& [saved, target] : mapping_) {
    if (saved == saved_location) return target;
  }
  absl::StatusOr<core::Device> parsed = core::ParseDevice(saved_location);
  if (!parsed.ok()) {
    return Invalid("storage saved at location '", saved_location,
                   "' is not on a device paramd supports; pass map_location (e.g. 'cpu') to "
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
