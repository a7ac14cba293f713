// NumPy's file formats for paramctl: `.npy` (one array; what np.save writes) and `.npz`
// (a ZIP archive of `.npy` members; what np.savez writes). Pure functions over bytes plus
// thin file wrappers; thread-safe. Values are returned, nothing is kept.
//
// Reading accepts .npy format versions 1.0, 2.0 and 3.0 with the dtypes HostTensor has:
//   '<f2' float16, '<f4' float32, '<f8' float64, '|i1' int8, '<i2' int16, '<i4' int32,
//   '<i8' int64, '|u1' uint8, '|b1' bool
// in either byte order ('>' data is swapped to little-endian), and Fortran-ordered data
// (converted to C order). Every other dtype (structured, unsigned wider than a byte,
// complex, strings, objects) is INVALID_ARGUMENT naming the dtype.
//
// Writing produces exactly np.save's bytes: version 1.0, or 2.0 when the header does not
// fit 1.0's 16-bit length, C order, little-endian, the header padded to 64 bytes. NumPy has
// no bfloat16, so a bfloat16 tensor is written as '<f4'; every bfloat16 value is exactly a
// float32 value, so nothing is rounded, but reading the file back gives float32.
//
// .npz archives are written with stored (uncompressed) members, as np.savez does; reading
// takes stored and deflated members (np.savez and np.savez_compressed) and ZIP64 fields.
// npz_stream.h and npy_stream.h write and read the same files a chunk at a time.
//
// Errors: malformed or truncated input is INVALID_ARGUMENT with a message that names the
// file (or member) and the problem; file-system failures map errno (NOT_FOUND,
// PERMISSION_DENIED, ...) and name the path.
#pragma once

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "paramd/tensor.h"

namespace paramd::cli {

using NamedTensors = std::vector<std::pair<std::string, paramd::client::HostTensor>>;

// A .npy file's header, parsed and checked: what its data holds and where the data starts.
struct NpyLayout {
  paramd::client::DType dtype = paramd::client::DType::kFloat32;
  std::vector<int64_t> shape;
  std::string descr;  // as the file spells it
  // The data's byte order is big-endian (NormalizeNpyData swaps it).
  bool big_endian = false;
  bool fortran_order = false;
  // Bytes of magic, version, header length and header: where the data begins.
  uint64_t data_offset = 0;
  // numel * element size, free of overflow.
  uint64_t data_bytes = 0;
};

// The ZIP member name of tensor `name` in an .npz ("<name>.npy"), after checking it as
// np.savez would need it: non-empty, no NUL, not already in `names` (where it is added),
// short enough for a ZIP member. INVALID_ARGUMENT otherwise.
absl::StatusOr<std::string> NpzMemberName(const std::string& name, std::set<std::string>& names);

// OK when `name`, the name of member `number` (counted from 1, in central directory order)
// of the .npz `source`, is UTF-8. Its key travels in a protobuf string field, which must be
// UTF-8, so another name is INVALID_ARGUMENT naming the member by number and bytes.
absl::Status CheckNpzMemberNameUtf8(absl::string_view name, size_t number,
                                    absl::string_view source);

// Parses the header at the start of `bytes` (which may hold the data after it, or only part
// of it, but all of the file when the file is shorter than its first 10 bytes: a start of
// the magic is then reported as a truncated file). Errors as ParseNpy's.
absl::StatusOr<NpyLayout> ParseNpyHeader(absl::string_view bytes,
                                         absl::string_view source = "npy data");

// Brings `size` bytes of a file's data, starting at an element boundary, to what HostTensor
// holds: big-endian elements swapped, bool bytes made 0 or 1. Fortran order is not undone.
void NormalizeNpyData(const NpyLayout& layout, char* data, size_t size);
// The file's data bytes are what HostTensor holds, as they are: C order, native byte order,
// nothing for NormalizeNpyData to change.
bool NpyDataIsAsHeld(const NpyLayout& layout);

// np.save's bytes before the data of a C-ordered tensor of `dtype` and `shape` (a bfloat16
// tensor's header says float32; see WidenBFloat16). `shape` must be valid.
std::string NpyHeader(paramd::client::DType dtype, const std::vector<int64_t>& shape);

// Appends `bfloat16` (whole little-endian bfloat16 elements) to `out` as float32, exactly.
void WidenBFloat16(absl::string_view bfloat16, std::string* out);

// WidenBFloat16 over a tensor's bytes arriving in pieces of any size (a stream's chunks): an
// element split between two pieces is carried over to the next. One tensor after another
// with Reset between; one thread.
class BFloat16Widener {
 public:
  void Reset() { carry_.clear(); }
  // The float32 bytes of the elements `bytes` completes; valid until the next call.
  absl::string_view Widen(absl::string_view bytes);
  // A byte of an element is waiting for its pair: the tensor ended mid-element.
  bool pending() const { return !carry_.empty(); }

 private:
  std::string carry_;
  std::string widened_;
};

// Decodes one .npy file held in `bytes`. `source` names it in error messages (a path, or
// "archive.npz: member 'w.npy'"). The result has dtype, shape and data set; the server
// fields (device, requires_grad, ...) keep their defaults.
absl::StatusOr<paramd::client::HostTensor> ParseNpy(absl::string_view bytes,
                                                    absl::string_view source = "npy data");

// Encodes `tensor` as np.save would. INVALID_ARGUMENT when `tensor.data` does not hold
// numel * element-size bytes or a dimension is negative.
absl::StatusOr<std::string> SerializeNpy(const paramd::client::HostTensor& tensor);

absl::StatusOr<paramd::client::HostTensor> ReadNpy(const std::string& path);
absl::Status WriteNpy(const std::string& path, const paramd::client::HostTensor& tensor);

// Decodes an .npz archive: one entry per `.npy` member in archive order, named without the
// ".npy" suffix (as np.load's NpzFile keys are). Directory entries are skipped; encrypted
// members, compression methods other than stored and deflate, CRC mismatches and duplicate
// names are INVALID_ARGUMENT.
absl::StatusOr<NamedTensors> ParseNpz(absl::string_view bytes,
                                      absl::string_view source = "npz data");

// Encodes `tensors` as np.savez(**dict(tensors)) would: members "<name>.npy", stored,
// in the given order. INVALID_ARGUMENT for an empty or duplicate name, a name holding a NUL,
// or an archive needing ZIP64 (a member or the archive at 4 GiB or more, or 65535 members);
// save such tensors as separate .npy files.
absl::StatusOr<std::string> SerializeNpz(const NamedTensors& tensors);

absl::StatusOr<NamedTensors> ReadNpz(const std::string& path);
absl::Status WriteNpz(const std::string& path, const NamedTensors& tensors);

}  // namespace paramd::cli
