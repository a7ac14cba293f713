// What the parts of the torch.save reader and writer share (torch_checkpoint.cc: the archive
// and its records; torch_checkpoint_pickle.cc: data.pkl's objects as state_dict entries;
// torch_checkpoint_writer.cc: planning and writing a checkpoint). Internal to server/io.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "base/dtype.h"
#include "server/core/optim/optimizer.h"
#include "server/core/tensor.h"
#include "server/io/pickle.h"
#include "server/io/torch_checkpoint.h"

namespace paramd::io::torch_internal {

// caffe2/serialize/versions.h: the range torch reads, and what it writes for plain data.
inline constexpr int64_t kMinFormatVersion = 1;
inline constexpr int64_t kMaxFormatVersion = 10;
inline constexpr absl::string_view kProducedVersion = "3\n";

inline constexpr absl::string_view kStateDictAdvice =
    "save model.state_dict() instead of the model or other Python objects";

template <typename... Args>
absl::Status Invalid(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(args...));
}

struct StorageClass {
  absl::string_view name;  // torch.<name>
  DType dtype;
};

inline constexpr StorageClass kStorageClasses[] = {
    {"DoubleStorage", DType::kFloat64}, {"FloatStorage", DType::kFloat32},
    {"HalfStorage", DType::kFloat16},   {"BFloat16Storage", DType::kBFloat16},
    {"LongStorage", DType::kInt64},     {"IntStorage", DType::kInt32},
    {"ShortStorage", DType::kInt16},    {"CharStorage", DType::kInt8},
    {"ByteStorage", DType::kUInt8},     {"BoolStorage", DType::kBool},
};

// A view (offset, shape, strides in elements) must lie inside a storage of `numel` elements.
absl::Status CheckView(absl::string_view name, int64_t offset, const core::Shape& shape,
                       const core::Shape& strides, int64_t storage_numel);

// Records torch writes or reads itself; anything else is an extra record.
bool IsTorchRecord(absl::string_view name);

struct StorageSpec {
  std::string key;
  std::string location;
  DType dtype;
  uint64_t nbytes;
};

struct TensorSpec {
  StorageSpec storage;
  int64_t offset = 0;
  core::Shape shape;
  core::Shape strides;
  bool requires_grad = false;
};

struct ParsedEntry {
  std::string name;
  TensorSpec tensor;
  bool is_parameter = false;
  bool requires_grad = false;
};

// One state_dict item of data.pkl (the `index`th): a str key and a tensor, or a Parameter
// wrapping one. INVALID_ARGUMENT naming the entry for anything else.
absl::StatusOr<ParsedEntry> ParseEntry(const PickleValue* key, const PickleValue* value,
                                       size_t index);
// The state_dict's `_metadata` (its BUILD state).
absl::StatusOr<TorchModuleMetadata> ParseMetadata(const PickleValue* state);

// A tensor of data.pkl (a _rebuild_tensor call); `name` is for messages.
absl::StatusOr<TensorSpec> ParseTensorValue(const PickleValue* value, absl::string_view name);

// The `optimizer` of a training checkpoint, torch.save({"model": model.state_dict(),
// "optimizer": optimizer.state_dict()}) (torch_optimizer_pickle.cc). Its state tensors are
// appended to `tensors` (named as Python would index them, for messages) and `slots` says,
// for each in order, which state entry and which of its tensors it is; a `step` saved as a
// Python number (older torch) is made a 0-dim float32 tensor at once.
struct ParsedOptimizer {
  core::OptimizerStateDict dict;
  struct Slot {
    size_t state;
    size_t tensor;
  };
  std::vector<Slot> slots;
};
absl::StatusOr<ParsedOptimizer> ParseOptimizerDict(const PickleValue* value,
                                                   std::vector<ParsedEntry>& tensors);

}  // namespace paramd::io::torch_internal
