#include "server/io/pickle.h"

#include <cstdint>
#include <cstring>
#include <set>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "server/io/pickle_opcodes.h"
#include "server/io/utf8.h"

namespace paramd::io {
namespace {

using namespace pickle_internal;  // NOLINT(build/namespaces): the opcodes

// Modules torch never lets a pickle name (torch/_weights_only_unpickler.py).
constexpr absl::string_view kBlockedModules[] = {"sys", "os", "posix", "nt"};

constexpr absl::string_view kAllowedGlobals[] = {
    "collections.OrderedDict",
    "collections.Counter",
    "torch.nn.parameter.Parameter",
    "torch.serialization._get_layout",
    "torch.Size",
    "torch.Tensor",
    "torch.device",
    "_codecs.encode",
    "builtins.bytearray",
    "builtins.set",
    "builtins.complex",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor",
    "torch._utils._rebuild_meta_tensor_no_storage",
    "torch._utils._rebuild_wrapper_subclass",
    "torch._utils._rebuild_device_tensor_from_numpy",
    "torch._utils._rebuild_device_tensor_from_cpu_tensor",
    "torch._tensor._rebuild_from_type_v2",
    "torch.storage.UntypedStorage",
    "torch.storage.TypedStorage",
    "torch.UntypedStorage",
    "torch.TypedStorage",
    "torch.per_tensor_affine",
    "torch.per_tensor_symmetric",
    "torch.per_channel_affine",
    "torch.per_channel_symmetric",
    "torch.per_channel_affine_float_qparams",
};

// `torch.<X>Storage` and `torch.cuda.<X>Storage`, and `torch.<X>Tensor`.
constexpr absl::string_view kStorageAndTensorPrefixes[] = {
    "Double", "Float",  "Half",   "BFloat16", "Long",          "Int",
    "Short",  "Char",   "Byte",   "Bool",     "ComplexDouble", "ComplexFloat",
    "QInt8",  "QUInt8", "QInt32", "QUInt4x2", "QUInt2x4",
};

// `torch.<dtype>`: every dtype, supported by paramd or not, so that the torch layer can
// name an unsupported one.
constexpr absl::string_view kDTypeNames[] = {
    "float32",
    "float",
    "float64",
    "double",
    "float16",
    "half",
    "bfloat16",
    "int64",
    "long",
    "int32",
    "int",
    "int16",
    "short",
    "int8",
    "uint8",
    "bool",
    "complex32",
    "chalf",
    "complex64",
    "cfloat",
    "complex128",
    "cdouble",
    "uint16",
    "uint32",
    "uint64",
    "uint1",
    "uint2",
    "uint3",
    "uint4",
    "uint5",
    "uint6",
    "uint7",
    "int1",
    "int2",
    "int3",
    "int4",
    "int5",
    "int6",
    "int7",
    "qint8",
    "quint8",
    "qint32",
    "quint4x2",
    "quint2x4",
    "float8_e4m3fn",
    "float8_e5m2",
    "float8_e4m3fnuz",
    "float8_e5m2fnuz",
    "float8_e8m0fnu",
    "float4_e2m1fn_x2",
    "bits8",
    "bits16",
    "bits1x8",
    "bits2x4",
    "bits4x2",
};

bool IsAllowedGlobal(absl::string_view module_name, absl::string_view name) {
  const std::string full = absl::StrCat(module_name, ".", name);
  for (absl::string_view allowed : kAllowedGlobals) {
    if (allowed == full) return true;
  }
  if (module_name == "torch" || module_name == "torch.cuda") {
    for (absl::string_view prefix : kStorageAndTensorPrefixes) {
      if (name == absl::StrCat(prefix, "Storage")) return true;
      if (module_name == "torch" && name == absl::StrCat(prefix, "Tensor")) return true;
    }
  }
  if (module_name == "torch") {
    for (absl::string_view dtype : kDTypeNames) {
      if (name == dtype) return true;
    }
  }
  return false;
}

// Decodes UTF-8 into code points; the text was checked by IsUtf8.
std::vector<uint32_t> CodePoints(absl::string_view text) {
  std::vector<uint32_t> out;
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char lead = static_cast<unsigned char>(text[i]);
    size_t length = lead < 0x80 ? 1 : (lead & 0xE0) == 0xC0 ? 2 : (lead & 0xF0) == 0xE0 ? 3 : 4;
    uint32_t value = length == 1   ? lead
                     : length == 2 ? lead & 0x1F
                     : length == 3 ? lead & 0x0F
                                   : lead & 0x07;
    for (size_t k = 1; k < length; ++k) {
      value = (value << 6) | (static_cast<unsigned char>(text[i + k]) & 0x3F);
    }
    out.push_back(value);
    i += length;
  }
  return out;
}

class Unpickler {
 public:
  Unpickler(absl::Span<const uint8_t> data, const UnpickleLimits& limits)
      : data_(data), limits_(limits) {}

  absl::StatusOr<PickleGraph> Run();

 private:
  template <typename... Args>
  absl::Status Error(const Args&... args) const {
    return absl::InvalidArgumentError(
        absl::StrCat("pickle: ", args..., " (opcode at byte ", op_pos_, ")"));
  }

  absl::StatusOr<absl::Span<const uint8_t>> Read(uint64_t n) {
    if (n > data_.size() - pos_) {
      return Error("truncated: needs ", n, " more bytes but ", data_.size() - pos_, " are left");
    }
    absl::Span<const uint8_t> out = data_.subspan(pos_, n);
    pos_ += n;
    return out;
  }
  absl::StatusOr<uint64_t> ReadLittleEndian(int n) {
    PARAMD_ASSIGN_OR_RETURN(absl::Span<const uint8_t> bytes, Read(n));
    uint64_t value = 0;
    for (int i = n - 1; i >= 0; --i) value = (value << 8) | bytes[i];
    return value;
  }
  absl::StatusOr<std::string> ReadLine() {
    const uint8_t* begin = data_.data() + pos_;
    const void* newline = std::memchr(begin, '\n', data_.size() - pos_);
    if (newline == nullptr) return Error("truncated: GLOBAL has no end of line");
    const size_t length = static_cast<const uint8_t*>(newline) - begin;
    pos_ += length + 1;
    return std::string(reinterpret_cast<const char*>(begin), length);
  }

  absl::StatusOr<PickleValue*> NewNode(PickleKind kind) {
    if (graph_.size() >= limits_.max_nodes) {
      return Error("more than ", limits_.max_nodes, " objects");
    }
    return graph_.Add(kind);
  }
  absl::Status Push(PickleValue* value) {
    if (stack_.size() >= limits_.max_nodes) {
      return Error("more than ", limits_.max_nodes, " values on the stack");
    }
    stack_.push_back(value);
    return absl::OkStatus();
  }
  absl::StatusOr<PickleValue*> Pop(const char* op) {
    if (stack_.size() <= Floor()) return Error(op, " on an empty stack");
    PickleValue* value = stack_.back();
    stack_.pop_back();
    return value;
  }
  absl::StatusOr<PickleValue*> Top(const char* op) {
    if (stack_.size() <= Floor()) return Error(op, " on an empty stack");
    return stack_.back();
  }
  size_t Floor() const { return marks_.empty() ? 0 : marks_.back(); }
  absl::StatusOr<std::vector<PickleValue*>> PopMark(const char* op) {
    if (marks_.empty()) return Error(op, " without a MARK");
    const size_t mark = marks_.back();
    marks_.pop_back();
    std::vector<PickleValue*> items(stack_.begin() + mark, stack_.end());
    stack_.resize(mark);
    return items;
  }

  // Makes `child` part of `parent`: the child is sealed (never changed again) and the
  // parent's depth grows to cover it. Sealing first also refuses a container added to itself.
  absl::Status Adopt(PickleValue* parent, PickleValue* child) {
    child->sealed = true;
    if (child->depth + 1 > parent->depth) parent->depth = child->depth + 1;
    if (parent->depth > limits_.max_depth) {
      return Error("objects nest deeper than ", limits_.max_depth, " levels");
    }
    return absl::OkStatus();
  }
  absl::Status CheckChangeable(const PickleValue* target, const char* op) {
    if (target->sealed) {
      return Error(op, " changes a ", PickleTypeName(*target),
                   " after it was used inside another object (a reference cycle?); "
                   "torch.save never writes that");
    }
    return absl::OkStatus();
  }

  absl::Status PushString(absl::Span<const uint8_t> bytes, PickleKind kind) {
    const absl::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    if (kind == PickleKind::kString && !IsUtf8(text)) return Error("string is not valid UTF-8");
    PARAMD_ASSIGN_OR_RETURN(PickleValue * node, NewNode(kind));
    node->text = std::string(text);
    return Push(node);
  }
  absl::Status PushTuple(std::vector<PickleValue*> items) {
    PARAMD_ASSIGN_OR_RETURN(PickleValue * node, NewNode(PickleKind::kTuple));
    for (PickleValue* item : items) {
      PARAMD_RETURN_IF_ERROR(Adopt(node, item));
      node->items.push_back(item);
    }
    return Push(node);
  }
  absl::Status PushGlobal(std::string module_name, std::string name);
  absl::Status SetItems(PickleValue* dict, const std::vector<PickleValue*>& pairs, const char* op);
  absl::Status AppendItems(PickleValue* list, const std::vector<PickleValue*>& items,
                           const char* op);
  absl::Status Call(bool newobj);
  absl::Status Step(uint8_t op, bool& stop);

  absl::Span<const uint8_t> data_;
  UnpickleLimits limits_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  PickleGraph graph_;
  std::vector<PickleValue*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PickleValue*> memo_;
  // Per dict: position of each str key, so that a repeated key replaces its value.
  std::unordered_map<const PickleValue*, std::unordered_map<std::string, size_t>> dict_keys_;
};

absl::Status Unpickler::PushGlobal(std::string module_name, std::string name) {
  // Protocol 2 writes Python 2 module names (pickle's fix_imports).
  if (module_name == "__builtin__") module_name = "builtins";
  if (module_name == "copy_reg") module_name = "copyreg";
  if (!IsUtf8(module_name) || !IsUtf8(name)) return Error("GLOBAL name is not valid UTF-8");
  std::string full_path = absl::StrCat(module_name, ".", name);
  for (absl::string_view blocked : kBlockedModules) {
    if (module_name == blocked) {
      return Error("Trying to load unsupported GLOBAL ", full_path, " whose module ", module_name,
                   " is blocked.");
    }
  }
  if (!IsAllowedGlobal(module_name, name)) {
    // torch prints builtins without their module.
    if (absl::string_view(full_path).substr(0, 9) == "builtins.") full_path = full_path.substr(9);
    return Error("Unsupported global: GLOBAL ", full_path,
                 " was not an allowed global by default. paramd reads only state_dicts of "
                 "tensors: save model.state_dict() rather than a model or other Python objects");
  }
  PARAMD_ASSIGN_OR_RETURN(PickleValue * node, NewNode(PickleKind::kGlobal));
  node->text = std::move(module_name);
  node->name = std::move(name);
  return Push(node);
}

absl::Status Unpickler::SetItems(PickleValue* dict, const std::vector<PickleValue*>& pairs,
                                 const char* op) {
  if (dict->kind != PickleKind::kDict) {
    return Error("Can only ", op, " for dict, collections.OrderedDict, but got ",
                 PickleTypeName(*dict));
  }
  if (pairs.size() % 2 != 0) return Error(op, " with an odd number of values");
  // Sealed before the check, so that a dict set into itself is caught.
  for (PickleValue* value : pairs) value->sealed = true;
  PARAMD_RETURN_IF_ERROR(CheckChangeable(dict, op));
  for (size_t i = 0; i < pairs.size(); i += 2) {
    PickleValue* key = pairs[i];
    PickleValue* value = pairs[i + 1];
    if (key->kind == PickleKind::kList || key->kind == PickleKind::kDict ||
        key->kind == PickleKind::kSet) {
      return Error(op, " with an unhashable key of type ", PickleTypeName(*key));
    }
    PARAMD_RETURN_IF_ERROR(Adopt(dict, key));
    PARAMD_RETURN_IF_ERROR(Adopt(dict, value));
    if (key->kind == PickleKind::kString) {
      auto& positions = dict_keys_[dict];
      auto [it, inserted] = positions.emplace(key->text, dict->entries.size());
      if (!inserted) {
        dict->entries[it->second].second = value;
        continue;
      }
    }
    dict->entries.emplace_back(key, value);
  }
  return absl::OkStatus();
}

absl::Status Unpickler::AppendItems(PickleValue* list, const std::vector<PickleValue*>& items,
                                    const char* op) {
  if (list->kind != PickleKind::kList) {
    return Error("Can only append to lists, but got ", PickleTypeName(*list), " (", op, ")");
  }
  for (PickleValue* item : items) item->sealed = true;
  PARAMD_RETURN_IF_ERROR(CheckChangeable(list, op));
  for (PickleValue* item : items) {
    PARAMD_RETURN_IF_ERROR(Adopt(list, item));
    list->items.push_back(item);
  }
  return absl::OkStatus();
}

absl::Status Unpickler::Call(bool newobj) {
  const char* op = newobj ? "NEWOBJ" : "REDUCE";
  PARAMD_ASSIGN_OR_RETURN(PickleValue * args, Pop(op));
  PARAMD_ASSIGN_OR_RETURN(PickleValue * callable, Pop(op));
  if (callable->kind != PickleKind::kGlobal) {
    return Error(op, " of a ", PickleTypeName(*callable), "; only allowed globals can be called");
  }
  if (args->kind != PickleKind::kTuple) {
    return Error(op, " of ", callable->text, ".", callable->name, " with ", PickleTypeName(*args),
                 " arguments; they must be a tuple");
  }
  if (!newobj && callable->is_global("collections", "OrderedDict")) {
    if (!args->items.empty()) {
      return Error(
          "collections.OrderedDict called with arguments; torch.save writes "
          "OrderedDict() and then its items");
    }
    PARAMD_ASSIGN_OR_RETURN(PickleValue * dict, NewNode(PickleKind::kDict));
    dict->ordered = true;
    return Push(dict);
  }
  if (!newobj && callable->is_global("_codecs", "encode")) {
    // Protocol 2 writes bytes b as _codecs.encode(b.decode('latin1'), 'latin1').
    if (args->items.size() != 2 || args->items[0]->kind != PickleKind::kString ||
        args->items[1]->kind != PickleKind::kString ||
        (args->items[1]->text != "latin1" && args->items[1]->text != "latin-1")) {
      return Error(
          "_codecs.encode is only accepted as (str, 'latin1'), as protocol 2 writes "
          "bytes");
    }
    std::string bytes;
    for (uint32_t code_point : CodePoints(args->items[0]->text)) {
      if (code_point > 0xFF) return Error("_codecs.encode: text is not latin1");
      bytes.push_back(static_cast<char>(code_point));
    }
    PARAMD_ASSIGN_OR_RETURN(PickleValue * node, NewNode(PickleKind::kBytes));
    node->text = std::move(bytes);
    return Push(node);
  }
  PARAMD_ASSIGN_OR_RETURN(PickleValue * node, NewNode(PickleKind::kCall));
  node->newobj = newobj;
  PARAMD_RETURN_IF_ERROR(Adopt(node, callable));
  PARAMD_RETURN_IF_ERROR(Adopt(node, args));
  node->items = {callable, args};
  return Push(node);
}

absl::Status Unpickler::Step(uint8_t op, bool& stop) {
  switch (op) {
    case kProto: {
      PARAMD_ASSIGN_OR_RETURN(uint64_t version, ReadLittleEndian(1));
      if (version > 5) return Error("unsupported pickle protocol ", version);
      return absl::OkStatus();
    }
    case kFrame: {
      PARAMD_ASSIGN_OR_RETURN(uint64_t length, ReadLittleEndian(8));
      if (length > data_.size() - pos_) {
        return Error("FRAME of ", length, " bytes runs past the end of the pickle");
      }
      return absl::OkStatus();
    }
    case kStop: {
      if (!marks_.empty()) return Error("STOP with an open MARK");
      if (stack_.size() != 1) {
        return Error("STOP with ", stack_.size(), " values on the stack instead of one");
      }
      graph_.set_root(stack_.back());
      stop = true;
      return absl::OkStatus();
    }
    case kMark:
      marks_.push_back(stack_.size());
      if (marks_.size() > limits_.max_nodes) return Error("too many open MARKs");
      return absl::OkStatus();
    case kNoneOp: {
      PARAMD_ASSIGN_OR_RETURN(PickleValue * node, NewNode(PickleKind::kNone));
      return Push(node);
    }
    case kNewTrue:
    case kNewFalse: {
      PARAMD_ASSIGN_OR_RETURN(PickleValue * node, NewNode(PickleKind::kBool));
      node->bool_value = op == kNewTrue;
      return Push(node);
    }
    case kBinInt1:
    case kBinInt2:
    case kBinInt: {
      const int width = op == kBinInt1 ? 1 : op == kBinInt2 ? 2 : 4;
      PARAMD_ASSIGN_OR_RETURN(uint64_t raw, ReadLittleEndian(width));
      PARAMD_ASSIGN_OR_RETURN(PickleValue * node, NewNode(PickleKind::kInt));
      node->int_value = op == kBinInt ? static_cast<int32_t>(static_cast<uint32_t>(raw))
                                      : static_cast<int64_t>(raw);
      return Push(node);
    }
    case kLong1: {
      PARAMD_ASSIGN_OR_RETURN(uint64_t length, ReadLittleEndian(1));
      if (length > 8) return Error("LONG1 integer of ", length, " bytes does not fit 64 bits");
      PARAMD_ASSIGN_OR_RETURN(absl::Span<const uint8_t> bytes, Read(length));
      uint64_t raw = 0;
      for (size_t i = length; i-- > 0;) raw = (raw << 8) | bytes[i];
      if (length > 0 && length < 8 && (bytes[length - 1] & 0x80)) {
        raw |= ~uint64_t{0} << (8 * length);  // sign-extend
      }
      PARAMD_ASSIGN_OR_RETURN(PickleValue * node, NewNode(PickleKind::kInt));
      node->int_value = static_cast<int64_t>(raw);
      return Push(node);
    }
    case kBinFloat: {
      PARAMD_ASSIGN_OR_RETURN(absl::Span<const uint8_t> bytes, Read(8));
      uint64_t raw = 0;
      for (uint8_t byte : bytes) raw = (raw << 8) | byte;  // big-endian
      PARAMD_ASSIGN_OR_RETURN(PickleValue * node, NewNode(PickleKind::kFloat));
      std::memcpy(&node->float_value, &raw, sizeof raw);
      return Push(node);
    }
    case kBinUnicode:
    case kShortBinUnicode:
    case kBinUnicode8:
    case kShortBinString:
    case kBinBytes:
    case kShortBinBytes: {
      const int width = (op == kShortBinUnicode || op == kShortBinString || op == kShortBinBytes)
                            ? 1
                        : op == kBinUnicode8 ? 8
                                             : 4;
      PARAMD_ASSIGN_OR_RETURN(uint64_t length, ReadLittleEndian(width));
      PARAMD_ASSIGN_OR_RETURN(absl::Span<const uint8_t> bytes, Read(length));
      // torch.load decodes Python 2 strings as UTF-8.
      const bool is_bytes = op == kBinBytes || op == kShortBinBytes;
      return PushString(bytes, is_bytes ? PickleKind::kBytes : PickleKind::kString);
    }
    case kEmptyTuple:
      return PushTuple({});
    case kTuple1:
    case kTuple2:
    case kTuple3: {
      const size_t n = op - kTuple1 + 1;
      if (stack_.size() < Floor() + n) return Error("TUPLE", n, " with too few values");
      std::vector<PickleValue*> items(stack_.end() - n, stack_.end());
      stack_.resize(stack_.size() - n);
      return PushTuple(std::move(items));
    }
    case kTupleOp: {
      PARAMD_ASSIGN_OR_RETURN(std::vector<PickleValue*> items, PopMark("TUPLE"));
      return PushTuple(std::move(items));
    }
    case kEmptyList:
    case kEmptyDict:
    case kEmptySet: {
      PARAMD_ASSIGN_OR_RETURN(PickleValue * node, NewNode(op == kEmptyList   ? PickleKind::kList
                                                          : op == kEmptyDict ? PickleKind::kDict
                                                                             : PickleKind::kSet));
      return Push(node);
    }
    case kAppend: {
      PARAMD_ASSIGN_OR_RETURN(PickleValue * item, Pop("APPEND"));
      PARAMD_ASSIGN_OR_RETURN(PickleValue * list, Top("APPEND"));
      return AppendItems(list, {item}, "APPEND");
    }
    case kAppends: {
      PARAMD_ASSIGN_OR_RETURN(std::vector<PickleValue*> items, PopMark("APPENDS"));
      PARAMD_ASSIGN_OR_RETURN(PickleValue * list, Top("APPENDS"));
      return AppendItems(list, items, "APPENDS");
    }
    case kSetItem: {
      PARAMD_ASSIGN_OR_RETURN(PickleValue * value, Pop("SETITEM"));
      PARAMD_ASSIGN_OR_RETURN(PickleValue * key, Pop("SETITEM"));
      PARAMD_ASSIGN_OR_RETURN(PickleValue * dict, Top("SETITEM"));
      return SetItems(dict, {key, value}, "SETITEM");
    }
    case kSetItems: {
      PARAMD_ASSIGN_OR_RETURN(std::vector<PickleValue*> pairs, PopMark("SETITEMS"));
      PARAMD_ASSIGN_OR_RETURN(PickleValue * dict, Top("SETITEMS"));
      return SetItems(dict, pairs, "SETITEMS");
    }
    case kGlobalOp: {
      PARAMD_ASSIGN_OR_RETURN(std::string module_name, ReadLine());
      PARAMD_ASSIGN_OR_RETURN(std::string name, ReadLine());
      return PushGlobal(std::move(module_name), std::move(name));
    }
    case kStackGlobal: {
      PARAMD_ASSIGN_OR_RETURN(PickleValue * name, Pop("STACK_GLOBAL"));
      PARAMD_ASSIGN_OR_RETURN(PickleValue * module_name, Pop("STACK_GLOBAL"));
      if (name->kind != PickleKind::kString || module_name->kind != PickleKind::kString) {
        return Error("STACK_GLOBAL needs two str values");
      }
      return PushGlobal(module_name->text, name->text);
    }
    case kReduce:
      return Call(/*newobj=*/false);
    case kNewObj:
      return Call(/*newobj=*/true);
    case kBuild: {
      PARAMD_ASSIGN_OR_RETURN(PickleValue * state, Pop("BUILD"));
      PARAMD_ASSIGN_OR_RETURN(PickleValue * target, Top("BUILD"));
      const bool buildable = (target->kind == PickleKind::kDict && target->ordered) ||
                             target->kind == PickleKind::kCall;
      if (!buildable) {
        return Error("Can only build Tensor, Parameter, OrderedDict, but got ",
                     PickleTypeName(*target));
      }
      state->sealed = true;
      PARAMD_RETURN_IF_ERROR(CheckChangeable(target, "BUILD"));
      if (target->state != nullptr) return Error("BUILD applied twice to one object");
      PARAMD_RETURN_IF_ERROR(Adopt(target, state));
      target->state = state;
      return absl::OkStatus();
    }
    case kBinPersId: {
      PARAMD_ASSIGN_OR_RETURN(PickleValue * pid, Pop("BINPERSID"));
      if (pid->kind != PickleKind::kTuple || pid->items.empty()) {
        return Error("persistent_load id must be a non-empty tuple, but got ",
                     PickleTypeName(*pid));
      }
      const PickleValue* tag = pid->items[0];
      if ((tag->kind != PickleKind::kString && tag->kind != PickleKind::kBytes) ||
          tag->text != "storage") {
        return Error("Only persistent_load of storage is allowed, but got ", PickleTypeName(*tag));
      }
      PARAMD_ASSIGN_OR_RETURN(PickleValue * node, NewNode(PickleKind::kPersistentId));
      PARAMD_RETURN_IF_ERROR(Adopt(node, pid));
      node->items = {pid};
      return Push(node);
    }
    case kBinGet:
    case kLongBinGet: {
      PARAMD_ASSIGN_OR_RETURN(uint64_t index, ReadLittleEndian(op == kBinGet ? 1 : 4));
      auto it = memo_.find(index);
      if (it == memo_.end()) return Error("memo entry ", index, " is fetched but was never put");
      return Push(it->second);
    }
    case kBinPut:
    case kLongBinPut:
    case kMemoize: {
      uint64_t index = memo_.size();
      if (op != kMemoize) {
        PARAMD_ASSIGN_OR_RETURN(index, ReadLittleEndian(op == kBinPut ? 1 : 4));
      }
      PARAMD_ASSIGN_OR_RETURN(PickleValue * top, Top("memo put"));
      if (memo_.size() >= limits_.max_nodes)
        return Error("more than ", memo_.size(), " memo entries");
      memo_[index] = top;
      return absl::OkStatus();
    }
    default:
      return Error("Unsupported operand ", static_cast<int>(op));
  }
}

absl::StatusOr<PickleGraph> Unpickler::Run() {
  bool stop = false;
  while (!stop) {
    op_pos_ = pos_;
    if (pos_ >= data_.size()) return Error("truncated: no STOP opcode");
    const uint8_t op = data_[pos_++];
    PARAMD_RETURN_IF_ERROR(Step(op, stop));
  }
  if (pos_ != data_.size()) {
    op_pos_ = pos_;
    return Error(data_.size() - pos_, " bytes follow the STOP opcode");
  }
  return std::move(graph_);
}

}  // namespace

absl::StatusOr<PickleGraph> Unpickle(absl::Span<const uint8_t> data, const UnpickleLimits& limits) {
  return Unpickler(data, limits).Run();
}

}  // namespace paramd::io
