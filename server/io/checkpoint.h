// Checkpoint: one model state_dict in a file, in either format paramd reads and writes
// (safetensors, PyTorch's torch.save zip), with what paramd adds when it writes the file:
// the model's spec (so the model can be recreated from the file alone) and its version.
//
// Sharing: tensors that share storage in the tree (tied parameters, shared modules) are
// stored once and come back sharing one storage. In a PyTorch file that is the pickle's
// storage keys (pytorch-semantics.md §5.2); safetensors cannot share, so the file holds the
// lexicographically first name and `__metadata__` maps each dropped name to it, as
// safetensors' own save_model does (§7, §9).
//
// Note [Reserved safetensors names]
// Every legal state_dict key round-trips, including a root buffer or parameter named
// `__metadata__` (register_buffer('__metadata__', t) is legal in PyTorch), which safetensors
// reserves for its metadata object. Such a tensor is stored under the name with a '.' in
// front (`.__metadata__`; no state_dict key starts with '.', so it collides with none) and
// the metadata records `"paramd.stored_name:__metadata__": ".__metadata__"`; the reader
// renames it back (after resolving aliases, whose targets name stored names). Other
// safetensors readers see the tensor as `.__metadata__`. A dropped alias named
// `__metadata__` needs nothing: it is a metadata key, as every alias is.
//
// Thread-safety: reentrant functions, no shared state.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/core/optim/optimizer.h"
#include "server/core/tensor.h"
#include "server/core/traversal.h"
#include "server/io/file_system.h"

namespace paramd::io {

enum class CheckpointFormat { kSafetensors, kTorch };

absl::string_view FormatName(CheckpointFormat format);
// The format a save writes when the request names none: safetensors for a name ending in
// `.safetensors`, PyTorch's otherwise (torch.save writes its format whatever the name:
// `mlp.params`, `pytorch_model.bin`).
CheckpointFormat FormatForSave(absl::string_view path);
// A file's format from its first bytes (`head`, at least 9 when the file has them) and its
// size: PyTorch's for a zip archive (or a legacy torch.save pickle), safetensors for a
// safetensors header (an 8-byte little-endian length that fits the file, then `{`); nullopt
// when the bytes are neither.
std::optional<CheckpointFormat> SniffFormat(absl::Span<const uint8_t> head, uint64_t file_size);
// SniffFormat of the file at `path`; nullopt when it cannot be read.
std::optional<CheckpointFormat> SniffFileFormat(const std::string& path);

struct CheckpointTensor {
  std::string name;
  core::Tensor tensor;  // on the CPU
  bool is_parameter = false;
  bool requires_grad = false;
  // Where it was saved ("cpu", "cuda:0"); safetensors files are always "cpu".
  std::string location = "cpu";
};

struct Checkpoint {
  CheckpointFormat format = CheckpointFormat::kSafetensors;
  // In the file's order: state_dict order for PyTorch files, by name for safetensors
  // (as safetensors' load_file returns them), aliases after the tensors they alias.
  std::vector<CheckpointTensor> entries;
  // state_dict._metadata (module prefix -> version), when the file has one.
  std::optional<std::vector<std::pair<std::string, int>>> module_versions;
  // What paramd recorded when it wrote the file.
  std::optional<std::string> spec_json;
  std::optional<uint64_t> version;
  // Other `paramd.*` entries of the file's metadata, in file order.
  std::vector<std::pair<std::string, std::string>> annotations;
  // A PyTorch training checkpoint's optimizer.state_dict() (torch_checkpoint.h); `entries`
  // are then its "model".
  std::optional<core::OptimizerStateDict> optimizer;
};

// Reads a checkpoint, recognising the format by its first bytes (SniffFormat), whatever its
// name; only a file that is neither is explained by the reader its suffix suggests. The
// tensors may reference the file's memory mapping (zero copy). INVALID_ARGUMENT for any
// malformed, hostile or unsupported file, or one whose paramd version is not a number
// below 2^63, with a message that says what to do.
absl::StatusOr<Checkpoint> ReadCheckpoint(const std::string& path);

struct SaveInput {
  core::StateDict state_dict;
  std::string spec_json;  // empty: none recorded
  uint64_t version = 0;   // 0: none recorded
  // PyTorch files: Parameters saved as torch.nn.Parameter (state_dict(keep_vars=True)).
  bool keep_vars = false;
  // Extra metadata; keys start with "paramd.". Safetensors files only.
  std::vector<std::pair<std::string, std::string>> annotations;
  // PyTorch files only: writes a training checkpoint, {"model": state_dict, "optimizer":
  // this}.
  std::optional<core::OptimizerStateDict> optimizer;
};

// Writes the file atomically (WriteFileAtomically). INVALID_ARGUMENT before anything is
// created when the state_dict cannot be written in `format`. `written`, when given,
// receives the file's size and SHA-256, hashed as it was written.
absl::Status SaveCheckpoint(const std::string& path, CheckpointFormat format,
                            const SaveInput& input, FileSystem& fs = FileSystem::Posix(),
                            WrittenFile* written = nullptr);

// The metadata keys paramd adds to the files it writes.
inline constexpr char kSpecKey[] = "paramd.spec";
inline constexpr char kVersionKey[] = "paramd.version";
// Note [Reserved safetensors names]: `<prefix><name>` -> the name the tensor is stored under.
inline constexpr char kStoredNameKeyPrefix[] = "paramd.stored_name:";
// The largest version a file may carry (2^63 - 1); ReadCheckpoint refuses a larger one with
// INVALID_ARGUMENT, so a loaded model can always be written again without its version
// wrapping.
inline constexpr uint64_t kMaxFileVersion = (uint64_t{1} << 63) - 1;

}  // namespace paramd::io
