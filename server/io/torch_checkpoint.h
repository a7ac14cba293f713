// PyTorch checkpoints: reading and writing the files `torch.save(model.state_dict(), f)`
// writes (pytorch-semantics.md §5, §6, §9), so that `torch.load(f, weights_only=True)` reads
// paramd's files and paramd reads torch's.
//
// A checkpoint is a ZIP archive (base/zip/zip.h) with one top folder holding `data.pkl` (the
// state_dict pickled at protocol 2, read by the restricted unpickler in pickle.h: nothing in
// a file is ever executed), `byteorder`, one `data/<key>` record per storage, `version` and
// `.data/serialization_id`. Tensors that share a storage in the file share one
// core::Storage after reading, keeping their offsets and strides, and are written once.
//
// Ownership: tensors read from a mapping reference its bytes without copying where a
// record is aligned for its dtype (torch aligns records to 64 bytes); each such storage
// holds the MappedFile (or other owner) alive. The bytes are read-only, like every storage
// a published model can reach. Everything else is copied.
// Thread-safety: the functions are reentrant and share no state; MapLocation is a value.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "base/device.h"
#include "server/core/optim/optimizer.h"
#include "server/core/tensor.h"
#include "server/io/file_system.h"
#include "server/io/mapped_file.h"

namespace paramd::io {

struct TorchCheckpointEntry {
  std::string name;
  // Read: a CPU tensor (a view of its storage). Written: any device; bytes are copied to
  // the host when not on the CPU.
  core::Tensor tensor;
  // A torch.nn.Parameter (as state_dict(keep_vars=True) holds them) rather than a plain
  // tensor (as state_dict() holds them).
  bool is_parameter = false;
  // The Parameter's flag, or the plain tensor's (false in a state_dict()).
  bool requires_grad = false;
  // Read: the location the storage was saved from ("cpu", "cuda:0"); see MapLocation.
  // Ignored when writing: the location is the tensor's device.
  std::string saved_location;
};

// `_metadata` of a state_dict: module prefix -> `version` of its local metadata, in order
// ("" is the root module). nullopt where the version is None or absent.
using TorchModuleMetadata = std::vector<std::pair<std::string, std::optional<int64_t>>>;

struct TorchCheckpoint {
  std::vector<TorchCheckpointEntry> entries;    // in state_dict order
  std::optional<TorchModuleMetadata> metadata;  // nullopt when the dict carries none
  std::string archive_name;                     // the top folder: "archive", the file stem, ...
  int64_t format_version = 0;                   // the `version` record
  // Records other than the ones torch writes (name under the top folder -> bytes), such as
  // those WriteTorchCheckpoint's `extra_records` adds.
  std::vector<std::pair<std::string, std::string>> extra_records;
  // A training checkpoint, torch.save({"model": model.state_dict(), "optimizer":
  // optimizer.state_dict()}): `entries` are the model's, this the optimizer's state_dict
  // (unset when the file has no "optimizer"). Its tensors are CPU tensors as `entries`'.
  std::optional<core::OptimizerStateDict> optimizer;
};

struct TorchReadOptions {
  // Check every record's CRC-32, as torch.load does without mmap. Reads every byte.
  bool verify_crc = true;
};

// Reads a torch.save zip file held in `bytes`; `owner` as in ParseSafetensors (non-null:
// aligned storages reference `bytes` and hold `owner`; null: everything is copied).
// INVALID_ARGUMENT with a message saying what is wrong and what to do for: a legacy
// (pre-1.6 or tar) file ("legacy torch.save format; load it in PyTorch and re-save it with a
// current torch.save"), a TorchScript archive (use torch.jit.load and save the state_dict),
// a broken zip (see zip::Reader), compressed records (torch.save stores them), records
// outside one top folder, a missing or unsupported `version`, an unknown `byteorder`, a
// pickle the restricted reader refuses, a top-level
// object that is not a dict of str -> tensor ("save model.state_dict() instead"), tensor
// kinds or dtypes paramd lacks (named), storage keys used with two dtypes or sizes, a
// missing `data/<key>` record, a record whose size is not the storage's ("record size N
// mismatch with dst size M"), and views that reach outside their storage. Big-endian files
// are byte-swapped into new storages.
absl::StatusOr<TorchCheckpoint> ParseTorchCheckpoint(absl::Span<const uint8_t> bytes,
                                                     std::shared_ptr<const void> owner,
                                                     const TorchReadOptions& options = {});
absl::StatusOr<TorchCheckpoint> ReadTorchCheckpoint(std::shared_ptr<const MappedFile> file,
                                                    const TorchReadOptions& options = {});
// Maps `path` and reads it; errors carry the path.
absl::StatusOr<TorchCheckpoint> ReadTorchCheckpoint(const std::string& path,
                                                    const TorchReadOptions& options = {});

struct TorchSaveOptions {
  // The top folder of every record; torch uses "archive" for buffers and the file stem for
  // paths. One path component: no '/', not empty, not "." or "..".
  std::string archive_name = "archive";
  // Written as the state_dict's `_metadata` attribute when set.
  std::optional<TorchModuleMetadata> metadata;
  // More records, written after torch's (torch.load ignores records it does not know).
  // Names are relative to the top folder and must not clash with torch's records.
  std::vector<std::pair<std::string, std::string>> extra_records;
  // `.data/serialization_id`; empty: 40 decimal digits made from a random number and the
  // records' CRC, like torch's.
  std::string serialization_id;
  // When set, the file is a training checkpoint: data.pkl holds {"model": the state_dict,
  // "optimizer": this optimizer.state_dict()}, as torch.save writes that dict (the
  // optimizer's storages after the model's). `param_names` are left out, as torch leaves
  // them out of an optimizer made from model.parameters().
  std::optional<core::OptimizerStateDict> optimizer;
};

// Writes `entries` as torch.save writes a state_dict: an OrderedDict of tensors rebuilt by
// torch._utils._rebuild_tensor_v2 (Parameters wrapped in _rebuild_parameter), storages
// de-duplicated by core::Storage identity and keyed '0', '1', ... in the order first met,
// each written whole once as `data/<key>`; views keep their offsets and strides. Records in
// torch's order: data.pkl, byteorder ("little"), data/0, data/1, ..., version ("3\n"),
// .data/serialization_id, then the extra records. INVALID_ARGUMENT, before anything is
// written, for duplicate or non-UTF-8 names, an undefined tensor, one storage viewed with
// two dtypes ("Cannot save multiple tensors or storages that view the same data as
// different types"), a view outside its storage, or bad options.
absl::Status WriteTorchCheckpoint(WritableFile& out,
                                  const std::vector<TorchCheckpointEntry>& entries,
                                  const TorchSaveOptions& options = {});

// Writes `path` atomically (see WriteFileAtomically): a refused or failed save leaves an
// existing file as it was, and a refused one creates nothing. `written`, when given,
// receives the file's size and SHA-256.
absl::Status SaveTorchCheckpoint(const std::string& path,
                                 const std::vector<TorchCheckpointEntry>& entries,
                                 const TorchSaveOptions& options = {},
                                 FileSystem& fs = FileSystem::Posix(),
                                 WrittenFile* written = nullptr);

// torch.load's map_location for paramd: where each saved storage should go. It only
// computes devices; moving tensors is the caller's job (storages are read on the CPU).
class MapLocation {
 public:
  // Keep the saved location (map_location=None).
  MapLocation() = default;
  // Every storage to `device` (map_location='cuda:1' or torch.device(...)); INVALID_ARGUMENT
  // when it does not parse as a device.
  static absl::StatusOr<MapLocation> To(absl::string_view device);
  // Saved location -> new location (map_location={'cuda:1': 'cuda:0'}); unmapped locations
  // are kept. INVALID_ARGUMENT when a target does not parse.
  static absl::StatusOr<MapLocation> Remap(
      std::vector<std::pair<std::string, std::string>> mapping);

  // The device for a storage saved at `saved_location`; INVALID_ARGUMENT when the resulting
  // location is not a device paramd knows (an unmapped "mps", say).
  absl::StatusOr<Device> Resolve(absl::string_view saved_location) const;

 private:
  std::optional<Device> all_;
  std::vector<std::pair<std::string, Device>> mapping_;
};

// FAILED_PRECONDITION with torch.load's text for a CUDA location on a machine without CUDA
// ("Attempting to deserialize object on a CUDA device but torch.cuda.is_available() is
// False. ..."), for callers whose resolved device is CUDA when none is present.
absl::Status CudaUnavailableForLoadError();

}  // namespace paramd::io
