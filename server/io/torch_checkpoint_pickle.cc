// data.pkl's objects as state_dict entries (pytorch-semantics.md §5.2): storages by
// persistent id, tensors rebuilt by torch._utils._rebuild_tensor_v2/v3, Parameters, and the
// `_metadata` state. The archive side is torch_checkpoint.cc.
#include <string>
#include <utility>
#include <vector>

#include "base/text.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "server/io/torch_checkpoint_internal.h"

namespace paramd::io::torch_internal {
namespace {

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

std::string SupportedDTypes() {
  std::vector<std::string> names;
  for (DType dtype : kAllDTypes) {
    names.push_back(absl::StrCat("torch.", DTypeName(dtype)));
  }
  return absl::StrJoin(names, ", ");
}

std::string DTypeRefusal(absl::string_view tensor_name, absl::string_view dtype_name) {
  return absl::StrCat("tensor ", QuoteName(tensor_name), " has dtype torch.", dtype_name,
                      ", which paramd does not support; supported dtypes: ", SupportedDTypes());
}

bool IsText(const PickleValue* value) {
  return value->kind == PickleKind::kString || value->kind == PickleKind::kBytes;
}

absl::StatusOr<int64_t> IntArg(const PickleValue* value, absl::string_view name,
                               absl::string_view what) {
  if (value->kind != PickleKind::kInt) {
    return Invalid("tensor ", QuoteName(name), ": ", what, " is a ", PickleTypeName(*value), ", not an int");
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
    return Invalid("tensor ", QuoteName(name), ": ", what, " is a ", PickleTypeName(*value),
                   ", not a tuple of ints");
  }
  core::Shape out;
  for (const PickleValue* item : value->items) {
    PARAMD_ASSIGN_OR_RETURN(int64_t v, IntArg(item, name, what));
    out.push_back(v);
  }
  return out;
}

absl::StatusOr<DType> DTypeFromGlobal(const PickleValue* value, absl::string_view name) {
  if (value->kind != PickleKind::kGlobal || value->text != "torch") {
    return Invalid("tensor ", QuoteName(name), ": dtype argument is a ", PickleTypeName(*value),
                   ", not a torch dtype");
  }
  absl::StatusOr<DType> dtype = ParseDType(value->name);
  if (!dtype.ok()) return Invalid(DTypeRefusal(name, value->name));
  return *dtype;
}

// ('storage', storage class, key, location, numel): numel counts elements of a typed
// class, bytes of UntypedStorage (whose dtype then comes from _rebuild_tensor_v3).
absl::StatusOr<StorageSpec> ParseStorage(const PickleValue* value, absl::string_view name,
                                         std::optional<DType> v3_dtype) {
  if (value->kind != PickleKind::kPersistentId) {
    return Invalid("tensor ", QuoteName(name), ": its storage is a ", PickleTypeName(*value),
                   ", not a persistent storage reference");
  }
  const PickleValue* pid = value->items[0];
  if (pid->items.size() != 5 || !IsText(pid->items[2]) || !IsText(pid->items[3]) ||
      pid->items[4]->kind != PickleKind::kInt) {
    return Invalid("tensor ", QuoteName(name),
                   ": storage reference must be ('storage', class, key, "
                   "location, numel)");
  }
  const PickleValue* storage_class = pid->items[1];
  if (storage_class->kind != PickleKind::kGlobal) {
    return Invalid("tensor ", QuoteName(name), ": storage class is a ", PickleTypeName(*storage_class));
  }
  StorageSpec spec;
  spec.key = pid->items[2]->text;
  spec.location = pid->items[3]->text;
  const int64_t numel = pid->items[4]->int_value;
  if (numel < 0) return Invalid("tensor ", QuoteName(name), ": storage has a negative size ", numel);
  const std::string& class_name = storage_class->name;
  const bool untyped = class_name == "UntypedStorage";
  if (untyped) {
    if (!v3_dtype.has_value()) {
      return Invalid("tensor ", QuoteName(name), ": an UntypedStorage needs _rebuild_tensor_v3's dtype");
    }
    spec.dtype = *v3_dtype;
    spec.nbytes = static_cast<uint64_t>(numel);
    if (spec.nbytes % ElementSize(spec.dtype) != 0) {
      return Invalid("tensor ", QuoteName(name), ": storage of ", numel,
                     " bytes is not a whole number "
                     "of ",
                     DTypeName(spec.dtype), " elements");
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
    return Invalid("tensor ", QuoteName(name), ": unknown storage class ", storage_class->text, ".",
                   class_name);
  }
  spec.dtype = found->dtype;
  if (v3_dtype.has_value() && *v3_dtype != spec.dtype) {
    return Invalid("tensor ", QuoteName(name), ": dtype torch.", DTypeName(*v3_dtype),
                   " disagrees with its storage class ", class_name);
  }
  const uint64_t element_size = ElementSize(spec.dtype);
  if (static_cast<uint64_t>(numel) > std::numeric_limits<uint64_t>::max() / element_size) {
    return Invalid("tensor ", QuoteName(name), ": storage size ", numel, " overflows");
  }
  spec.nbytes = static_cast<uint64_t>(numel) * element_size;
  return spec;
}

absl::StatusOr<TensorSpec> ParseTensor(const PickleValue* value, absl::string_view name) {
  if (value->kind != PickleKind::kCall) {
    return Invalid("state_dict entry ", QuoteName(name), " is a ", PickleTypeName(*value),
                   ", not a tensor; paramd reads state_dicts of tensors: ", kStateDictAdvice);
  }
  const PickleValue* callable = value->items[0];
  const std::vector<const PickleValue*>& args = value->items[1]->items;
  if (callable->text != "torch._utils") {
    return Invalid("state_dict entry ", QuoteName(name), " is a ", PickleTypeName(*value),
                   ", not a plain tensor; paramd does not support tensor subclasses or "
                   "tensors with Python attributes");
  }
  const std::string& function = callable->name;
  std::optional<DType> v3_dtype;
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
    return Invalid("state_dict entry ", QuoteName(name), " is ", kind, " (torch._utils.", function,
                   "), which paramd does not support");
  }
  if (args.size() < min_args || args.size() > max_args) {
    return Invalid("tensor ", QuoteName(name), ": torch._utils.", function, " called with ", args.size(),
                   " arguments");
  }
  TensorSpec spec;
  PARAMD_ASSIGN_OR_RETURN(spec.storage, ParseStorage(args[0], name, v3_dtype));
  PARAMD_ASSIGN_OR_RETURN(spec.offset, IntArg(args[1], name, "storage offset"));
  PARAMD_ASSIGN_OR_RETURN(spec.shape, IntTuple(args[2], name, "size"));
  PARAMD_ASSIGN_OR_RETURN(spec.strides, IntTuple(args[3], name, "stride"));
  if (args.size() > 4) {
    if (args[4]->kind != PickleKind::kBool) {
      return Invalid("tensor ", QuoteName(name), ": requires_grad is a ", PickleTypeName(*args[4]));
    }
    spec.requires_grad = args[4]->bool_value;
  }
  const size_t metadata_index = function == "_rebuild_tensor_v2" ? 6 : 7;
  if (args.size() > metadata_index) {
    const PickleValue* metadata = args[metadata_index];
    if (metadata->kind != PickleKind::kDict) {
      return Invalid("tensor ", QuoteName(name), ": metadata is a ", PickleTypeName(*metadata));
    }
    if (!metadata->entries.empty()) {
      return Invalid("tensor ", QuoteName(name),
                     " carries conjugate/negative bits or other tensor "
                     "metadata, which paramd does not support; save it after .resolve_conj() "
                     "/ .resolve_neg()");
    }
  }
  return spec;
}

}  // namespace

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
      return Invalid("parameter ", QuoteName(entry.name), ": torch._utils.", value->items[0]->name,
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

absl::StatusOr<TensorSpec> ParseTensorValue(const PickleValue* value, absl::string_view name) {
  return ParseTensor(value, name);
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
        return Invalid("state_dict _metadata[", QuoteName(prefix->text), "]['version'] is a ",
                       PickleTypeName(*value), ", not an int");
      }
    }
    out.emplace_back(prefix->text, version);
  }
  return out;
}

}  // namespace paramd::io::torch_internal
