// Tensor: a cheap value naming a strided view of a Storage: element offset, shape,
// strides (in elements) and dtype. It has no math; the functions below copy and convert.
//
// Ownership: a Tensor shares its storage. Copying a Tensor never copies bytes.
// Thread-safety: a Tensor value is safe to read from many threads. The functions that
// write (CopyConvert) must only target storages that no published model version reaches.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "base/device.h"
#include "base/dtype.h"
#include "server/core/storage.h"

namespace paramd::core {

using Shape = std::vector<int64_t>;

// Product of the dimensions; INVALID_ARGUMENT for a negative dimension or when the count
// (or its size in bytes at `element_size`) does not fit in 63 bits.
absl::StatusOr<int64_t> CheckedNumel(absl::Span<const int64_t> shape, size_t element_size = 1);

// "torch.Size([3, 4])", as PyTorch prints a shape in its messages.
std::string TorchSizeString(absl::Span<const int64_t> shape);
// "[3, 4]".
std::string ShapeString(absl::Span<const int64_t> shape);

// Row-major strides for `shape`.
Shape ContiguousStrides(absl::Span<const int64_t> shape);

class Tensor {
 public:
  Tensor() = default;  // undefined: no storage
  Tensor(std::shared_ptr<Storage> storage, int64_t offset, Shape shape, Shape strides, DType dtype);

  // A new contiguous tensor with uninitialised contents, out of `reservation` while it
  // lasts (Storage::Allocate).
  static absl::StatusOr<Tensor> Empty(DType dtype, Shape shape, const Device& device = Device{},
                                      MemoryReservation* reservation = nullptr);
  // A new contiguous tensor with every element set to `value` (converted as a cast would).
  static absl::StatusOr<Tensor> Full(DType dtype, Shape shape, double value,
                                     const Device& device = Device{});
  // A new contiguous CPU tensor holding `bytes`, which must be exactly numel * element size
  // little-endian C-order bytes; INVALID_ARGUMENT otherwise. Bool bytes are canonicalised
  // (Note [Bool bytes]).
  static absl::StatusOr<Tensor> FromBytes(DType dtype, Shape shape, absl::Span<const uint8_t> bytes);
  // A new contiguous CPU tensor from values converted to `dtype`.
  static absl::StatusOr<Tensor> FromDoubles(DType dtype, Shape shape,
                                            absl::Span<const double> values);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t offset() const { return offset_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  int64_t numel() const;
  size_t nbytes() const { return static_cast<size_t>(numel()) * ElementSize(dtype_); }
  const Device& device() const { return storage_->device(); }
  const std::shared_ptr<Storage>& storage() const { return storage_; }
  bool is_contiguous() const;

  // Address of element 0 (offset applied); host memory only for CPU tensors.
  const void* data() const;
  void* mutable_data() const;

  // `t[index]` along dimension 0: a view sharing the storage. INVALID_ARGUMENT if 0-dim or
  // out of range.
  absl::StatusOr<Tensor> Select(int64_t index) const;
  // `t[starts[0]:stops[0], starts[1]:stops[1], ...]`: a view; one (start, stop) per leading
  // dimension, bounds checked (no negative or open ends).
  absl::StatusOr<Tensor> Slice(absl::Span<const std::pair<int64_t, int64_t>> ranges) const;

 private:
  std::shared_ptr<Storage> storage_;
  int64_t offset_ = 0;
  Shape shape_;
  Shape strides_;
  DType dtype_ = DType::kFloat32;
};

// Copies `src` into `dst` element by element, converting dtype as `Tensor.copy_` does
// (float to int truncates toward zero; non-zero to bool is true; NaN to an integer is 0 and
// out-of-range floats saturate to int64 before narrowing). Shapes must be equal, or `src`
// must have one element (broadcast). Both must be CPU tensors. `dst` must not be reachable
// from a published model version.
absl::Status CopyConvert(const Tensor& src, const Tensor& dst);

// A new contiguous tensor on `device` with `dtype` holding `src`'s values. Either side may
// be off the host: bytes then cross through the backends' host copies, and any dtype or
// layout change happens on the host. FAILED_PRECONDITION for a device this process cannot
// use (no GPU, no CUDA build), with the backend's reason.
absl::StatusOr<Tensor> ConvertTo(const Tensor& src, DType dtype, const Device& device);
// A new contiguous copy with the same dtype and device.
absl::StatusOr<Tensor> Clone(const Tensor& src);

// Note [Bool bytes]
// A bool element is one byte, and bytes from outside (the wire, a checkpoint file) may hold
// any value. PyTorch reads every non-zero byte as True and its copies write 1 (a float
// copy_ of bytes [0, 2, 255, 1] gives [0, 1, 1, 1], and so does load_state_dict into a bool
// buffer). The CPU loops read bool elements as C++ bool, which may hold only 0 and 1, so
// every way in makes them so: the wire's assembled tensors, FromBytes, and the checkpoint
// readers, which copy a bool tensor out of the file instead of viewing it when it holds
// any other byte.
//
// Whether every byte is 0 or 1.
bool CanonicalBools(absl::Span<const uint8_t> bytes);
// Makes every non-zero byte 1.
void CanonicalizeBools(absl::Span<uint8_t> bytes);

// The elements in C order converted to double (for printing and tests).
absl::StatusOr<std::vector<double>> ToDoubles(const Tensor& tensor);
// The elements in C order as little-endian bytes of the tensor's dtype (copied to the host
// first when the tensor lives elsewhere).
absl::StatusOr<std::vector<uint8_t>> ToBytes(const Tensor& tensor);

}  // namespace paramd::core
