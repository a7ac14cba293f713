// The protocol-2 pickle writer of pickle.h: the bytes CPython's pickler writes for the same
// object graph (memo, batching, Python 2 module names), as torch.save needs them.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "server/io/pickle.h"
#include "server/io/pickle_opcodes.h"
#include "server/io/utf8.h"

namespace paramd::io {
namespace {

using namespace pickle_internal;  // NOLINT(build/namespaces): the opcodes

class Pickler {
 public:
  explicit Pickler(int max_depth) : max_depth_(max_depth) {}

  absl::Status Save(const PickleValue& value, int depth);
  std::string Take() { return std::move(out_); }
  void Put(uint8_t op) { out_.push_back(static_cast<char>(op)); }

 private:
  void PutLittleEndian(uint64_t value, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
  }
  void Memoize(const PickleValue& value) {
    const uint64_t index = next_index_++;
    memo_.emplace(&value, index);
    if (index < 256) {
      Put(kBinPut);
      PutLittleEndian(index, 1);
    } else {
      Put(kLongBinPut);
      PutLittleEndian(index, 4);
    }
  }
  bool FetchMemo(const PickleValue& value) {
    auto it = memo_.find(&value);
    if (it == memo_.end()) return false;
    Get(it->second);
    return true;
  }
  void Get(uint64_t index) {
    if (index < 256) {
      Put(kBinGet);
      PutLittleEndian(index, 1);
    } else {
      Put(kLongBinGet);
      PutLittleEndian(index, 4);
    }
  }
  // None, bools, numbers and persistent ids, which CPython never memoizes; bytes and sets,
  // which are refused.
  absl::Status SaveUnmemoized(const PickleValue& value, int depth);
  void SaveInt(int64_t value);
  void SaveGlobal(const PickleValue& value);
  absl::Status SaveTuple(const PickleValue& value, int depth);
  absl::Status SaveList(const PickleValue& value, int depth);
  // An OrderedDict is `collections.OrderedDict()` (REDUCE) with its items set; a dict or
  // OrderedDict with `state` (torch's _metadata) ends in BUILD.
  absl::Status SaveDict(const PickleValue& value, int depth);
  absl::Status SaveDictItems(const PickleValue& dict, int depth);
  absl::Status SaveCall(const PickleValue& value, int depth);

  int max_depth_;
  std::string out_;
  std::unordered_map<const PickleValue*, uint64_t> memo_;
  uint64_t next_index_ = 0;
  // A global names one Python object, so every node naming it shares its memo entry.
  std::unordered_map<std::string, uint64_t> global_memo_;
};

void Pickler::SaveInt(int64_t value) {
  if (value >= 0 && value <= 0xFF) {
    Put(kBinInt1);
    PutLittleEndian(static_cast<uint64_t>(value), 1);
  } else if (value >= 0 && value <= 0xFFFF) {
    Put(kBinInt2);
    PutLittleEndian(static_cast<uint64_t>(value), 2);
  } else if (value >= INT32_MIN && value <= INT32_MAX) {
    Put(kBinInt);
    PutLittleEndian(static_cast<uint32_t>(static_cast<int32_t>(value)), 4);
  } else {
    // Two's complement, little-endian, in the fewest bytes that keep the sign (encode_long).
    std::string bytes;
    uint64_t raw = static_cast<uint64_t>(value);
    for (int i = 0; i < 8; ++i) bytes.push_back(static_cast<char>((raw >> (8 * i)) & 0xFF));
    while (bytes.size() > 1) {
      const uint8_t last = static_cast<uint8_t>(bytes.back());
      const uint8_t before = static_cast<uint8_t>(bytes[bytes.size() - 2]);
      if ((last == 0x00 && !(before & 0x80)) || (last == 0xFF && (before & 0x80))) {
        bytes.pop_back();
      } else {
        break;
      }
    }
    Put(kLong1);
    PutLittleEndian(bytes.size(), 1);
    out_ += bytes;
  }
}

void Pickler::SaveGlobal(const PickleValue& value) {
  // Protocol 2 writes Python 2 module names (pickle's fix_imports).
  absl::string_view module_name = value.text;
  if (module_name == "builtins") module_name = "__builtin__";
  if (module_name == "copyreg") module_name = "copy_reg";
  const std::string key = absl::StrCat(module_name, "\n", value.name);
  auto it = global_memo_.find(key);
  if (it != global_memo_.end()) {
    memo_.emplace(&value, it->second);
    Get(it->second);
    return;
  }
  Put(kGlobalOp);
  absl::StrAppend(&out_, module_name, "\n", value.name, "\n");
  global_memo_.emplace(key, next_index_);
  Memoize(value);
}

absl::Status Pickler::SaveDictItems(const PickleValue& dict, int depth) {
  const auto& entries = dict.entries;
  if (entries.empty()) return absl::OkStatus();
  if (dict.ordered) {
    // batch_dict: iterated items; a batch of one uses SETITEM.
    size_t i = 0;
    while (i < entries.size()) {
      const size_t n = std::min(kBatchSize, entries.size() - i);
      if (n == 1) {
        PARAMD_RETURN_IF_ERROR(Save(*entries[i].first, depth + 1));
        PARAMD_RETURN_IF_ERROR(Save(*entries[i].second, depth + 1));
        Put(kSetItem);
        break;
      }
      Put(kMark);
      for (size_t k = i; k < i + n; ++k) {
        PARAMD_RETURN_IF_ERROR(Save(*entries[k].first, depth + 1));
        PARAMD_RETURN_IF_ERROR(Save(*entries[k].second, depth + 1));
      }
      Put(kSetItems);
      i += n;
    }
    return absl::OkStatus();
  }
  // batch_dict_exact: one item uses SETITEM; otherwise batches, and a full last batch is
  // followed by an empty MARK SETITEMS, as CPython's C pickler writes.
  if (entries.size() == 1) {
    PARAMD_RETURN_IF_ERROR(Save(*entries[0].first, depth + 1));
    PARAMD_RETURN_IF_ERROR(Save(*entries[0].second, depth + 1));
    Put(kSetItem);
    return absl::OkStatus();
  }
  size_t i = 0;
  size_t n;
  do {
    n = std::min(kBatchSize, entries.size() - i);
    Put(kMark);
    for (size_t k = i; k < i + n; ++k) {
      PARAMD_RETURN_IF_ERROR(Save(*entries[k].first, depth + 1));
      PARAMD_RETURN_IF_ERROR(Save(*entries[k].second, depth + 1));
    }
    Put(kSetItems);
    i += n;
  } while (n == kBatchSize);
  return absl::OkStatus();
}

absl::Status Pickler::Save(const PickleValue& value, int depth) {
  if (depth > max_depth_) {
    return absl::InvalidArgumentError(
        absl::StrCat("pickle writer: objects nest deeper than ", max_depth_, " levels"));
  }
  switch (value.kind) {
    case PickleKind::kNone:
    case PickleKind::kBool:
    case PickleKind::kInt:
    case PickleKind::kFloat:
    case PickleKind::kBytes:
    case PickleKind::kSet:
    case PickleKind::kPersistentId:
      return SaveUnmemoized(value, depth);
    default:
      break;
  }
  if (FetchMemo(value)) return absl::OkStatus();
  switch (value.kind) {
    case PickleKind::kString:
      if (!IsUtf8(value.text)) {
        return absl::InvalidArgumentError("pickle writer: a str is not valid UTF-8");
      }
      Put(kBinUnicode);
      PutLittleEndian(value.text.size(), 4);
      out_ += value.text;
      Memoize(value);
      return absl::OkStatus();
    case PickleKind::kTuple:
      return SaveTuple(value, depth);
    case PickleKind::kList:
      return SaveList(value, depth);
    case PickleKind::kDict:
      return SaveDict(value, depth);
    case PickleKind::kGlobal:
      SaveGlobal(value);
      return absl::OkStatus();
    case PickleKind::kCall:
      return SaveCall(value, depth);
    default:
      return absl::InternalError("pickle writer: unhandled value kind");
  }
}

absl::Status Pickler::SaveUnmemoized(const PickleValue& value, int depth) {
  switch (value.kind) {
    case PickleKind::kNone:
      Put(kNoneOp);
      return absl::OkStatus();
    case PickleKind::kBool:
      Put(value.bool_value ? kNewTrue : kNewFalse);
      return absl::OkStatus();
    case PickleKind::kInt:
      SaveInt(value.int_value);
      return absl::OkStatus();
    case PickleKind::kFloat: {
      uint64_t raw;
      std::memcpy(&raw, &value.float_value, sizeof raw);
      Put(kBinFloat);
      for (int i = 7; i >= 0; --i) out_.push_back(static_cast<char>((raw >> (8 * i)) & 0xFF));
      return absl::OkStatus();
    }
    case PickleKind::kPersistentId:
      if (value.items.size() != 1) {
        return absl::InvalidArgumentError("pickle writer: persistent id without its pid");
      }
      // torch's persistent_id runs before the memo is consulted: never memoized.
      PARAMD_RETURN_IF_ERROR(Save(*value.items[0], depth + 1));
      Put(kBinPersId);
      return absl::OkStatus();
    default:  // bytes and sets
      return absl::InvalidArgumentError(absl::StrCat("pickle writer: ", PickleTypeName(value),
                                                     " values are not written (a torch "
                                                     "state_dict holds none)"));
  }
}

absl::Status Pickler::SaveTuple(const PickleValue& value, int depth) {
  const size_t n = value.items.size();
  if (n == 0) {
    Put(kEmptyTuple);
    return absl::OkStatus();
  }
  if (n > 3) Put(kMark);
  for (const PickleValue* item : value.items) {
    PARAMD_RETURN_IF_ERROR(Save(*item, depth + 1));
  }
  Put(n > 3 ? static_cast<uint8_t>(kTupleOp) : static_cast<uint8_t>(kTuple1 + n - 1));
  Memoize(value);
  return absl::OkStatus();
}

absl::Status Pickler::SaveList(const PickleValue& value, int depth) {
  Put(kEmptyList);
  Memoize(value);
  const size_t n = value.items.size();
  if (n == 1) {
    PARAMD_RETURN_IF_ERROR(Save(*value.items[0], depth + 1));
    Put(kAppend);
  } else if (n > 1) {
    for (size_t i = 0; i < n; i += kBatchSize) {
      Put(kMark);
      for (size_t k = i; k < std::min(n, i + kBatchSize); ++k) {
        PARAMD_RETURN_IF_ERROR(Save(*value.items[k], depth + 1));
      }
      Put(kAppends);
    }
  }
  return absl::OkStatus();
}

absl::Status Pickler::SaveDict(const PickleValue& value, int depth) {
  if (value.ordered) {
    PickleValue callable;
    callable.kind = PickleKind::kGlobal;
    callable.text = "collections";
    callable.name = "OrderedDict";
    SaveGlobal(callable);
    memo_.erase(&callable);
    Put(kEmptyTuple);
    Put(kReduce);
  } else {
    Put(kEmptyDict);
  }
  Memoize(value);
  PARAMD_RETURN_IF_ERROR(SaveDictItems(value, depth));
  if (value.state != nullptr) {
    PARAMD_RETURN_IF_ERROR(Save(*value.state, depth + 1));
    Put(kBuild);
  }
  return absl::OkStatus();
}

absl::Status Pickler::SaveCall(const PickleValue& value, int depth) {
  if (value.items.size() != 2 || value.items[0]->kind != PickleKind::kGlobal ||
      value.items[1]->kind != PickleKind::kTuple) {
    return absl::InvalidArgumentError(
        "pickle writer: a call needs a global and a tuple of arguments");
  }
  PARAMD_RETURN_IF_ERROR(Save(*value.items[0], depth + 1));
  PARAMD_RETURN_IF_ERROR(Save(*value.items[1], depth + 1));
  Put(value.newobj ? kNewObj : kReduce);
  Memoize(value);
  if (value.state != nullptr) {
    PARAMD_RETURN_IF_ERROR(Save(*value.state, depth + 1));
    Put(kBuild);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> PickleProtocol2(const PickleValue& root, int max_depth) {
  Pickler pickler(max_depth);
  pickler.Put(kProto);
  pickler.Put(2);
  PARAMD_RETURN_IF_ERROR(pickler.Save(root, 0));
  pickler.Put(kStop);
  return pickler.Take();
}

}  // namespace paramd::io
