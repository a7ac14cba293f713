// safetensors: reading and writing the Hugging Face safetensors format (see
// pytorch-semantics.md section 7): a u64 little-endian header length N, N bytes of UTF-8
// JSON header, then the tensors' bytes, little-endian and in C order.
//
// Ownership: CPU tensors read from a file or an owned buffer reference those bytes without
// copying when they are aligned for their dtype; each such tensor's storage holds the
// owner (the MappedFile, say) alive. Tensors whose bytes are misaligned are copied. The
// referenced bytes are read-only: like every storage a published model can reach, they are
// never written (see Note [Snapshot publication] in model.h).
// Thread-safety: the functions are reentrant; they share no state.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "server/core/tensor.h"
#include "server/io/file_system.h"
#include "server/io/mapped_file.h"

namespace paramd::io {

// The header limit of the reference reader.
inline constexpr uint64_t kSafetensorsMaxHeaderSize = 100'000'000;

struct SafetensorsEntry {
  std::string name;
  core::Tensor tensor;  // contiguous CPU tensor
};

struct SafetensorsFile {
  // In file order: by data offsets (begin, end), ties by name.
  std::vector<SafetensorsEntry> entries;
  // `__metadata__` in header order; empty when the header has none.
  std::vector<std::pair<std::string, std::string>> metadata;
};

// Parses and validates a whole safetensors file held in `bytes`. When `owner` is non-null
// it must keep `bytes` alive and unchanged: aligned tensors then reference `bytes` and hold
// `owner`; when it is null every tensor is copied and `bytes` may go once this returns.
//
// Every rule of the reference reader is checked and a broken file is INVALID_ARGUMENT with
// a message naming the rule (and the tensor): header too small or too large, header length
// past the end of the file, header not UTF-8, not starting with '{', not JSON, not an
// object, duplicate keys, `__metadata__` not an object of strings, an entry without a
// string dtype / an array shape of non-negative integers / data_offsets of two
// non-negative integers, a dtype unknown or not supported by paramd, a shape whose size
// overflows, offsets with gaps or overlaps or end < begin (InvalidOffset), a byte count
// that does not match dtype and shape (TensorInvalidInfo), and a byte buffer whose length
// is not the last end (MetadataIncompleteBuffer). Header padding is allowed, not required.
absl::StatusOr<SafetensorsFile> ParseSafetensors(absl::Span<const uint8_t> bytes,
                                                 std::shared_ptr<const void> owner);
// ParseSafetensors over a mapping; aligned tensors keep `file` mapped.
absl::StatusOr<SafetensorsFile> ParseSafetensors(std::shared_ptr<const MappedFile> file);
// Maps `path` and parses it; errors from MappedFile::Open, or INVALID_ARGUMENT as above
// with the path in the message.
absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path);

using NamedTensors = std::vector<std::pair<std::string, core::Tensor>>;
using SafetensorsMetadata = std::vector<std::pair<std::string, std::string>>;

// The bytes of a safetensors file, laid out as the reference writer lays them out: tensors
// ordered by dtype, descending in the reference's dtype order (I64 F64 F32 I32 BF16 F16
// I16 I8 U8 BOOL for paramd's dtypes), then by name; a compact JSON header with
// `__metadata__` first (omitted when `metadata` is empty, keys in the given order) and each
// entry's fields in the order dtype, shape, data_offsets; the header padded with spaces to
// a multiple of 8 bytes. Tensors may be strided or on any device; they are written from a
// contiguous copy. Tensors sharing storage are written once per name: dropping ties is the
// caller's job. INVALID_ARGUMENT for duplicate names or metadata keys, the name
// "__metadata__", an undefined tensor, or a name or metadata string that is not UTF-8.
absl::StatusOr<std::string> SerializeSafetensors(const NamedTensors& tensors,
                                                 const SafetensorsMetadata& metadata);

// Streams SerializeSafetensors' bytes into `out` without building them in memory: the
// tensors' bytes go from their storages (or a contiguous copy of one tensor at a time).
absl::Status WriteSafetensors(WritableFile& out, const NamedTensors& tensors,
                              const SafetensorsMetadata& metadata);

// Writes the file at `path` atomically (see WriteFileAtomically): a failure at any step
// leaves an existing `path` as it was. Errors: INVALID_ARGUMENT as SerializeSafetensors,
// before anything is created; the failing file operation's status otherwise. `written`, when
// given, receives the file's size and SHA-256.
absl::Status SaveSafetensors(const std::string& path, const NamedTensors& tensors,
                             const SafetensorsMetadata& metadata,
                             FileSystem& fs = FileSystem::Posix(),
                             WrittenFile* written = nullptr);

}  // namespace paramd::io
