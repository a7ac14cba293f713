#include "server/core/tensor.h"

#include <cstring>

#include "base/checked_math.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/backend.h"
#include "base/status_macros.h"
#include "base/element.h"

namespace paramd::core {
namespace {

absl::Status RequireCpu(const Tensor& tensor, absl::string_view what) {
  if (!tensor.defined()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": tensor is undefined"));
  }
  if (!tensor.device().is_cpu()) {
    return absl::UnimplementedError(
        absl::StrCat(what, " on device ", tensor.device().ToString(), " is not supported yet"));
  }
  return absl::OkStatus();
}

// Calls fn(element_offset) for every element of (shape, strides) in C order.
template <typename Fn>
void ForEachOffset(const Shape& shape, const Shape& strides, int64_t base, Fn&& fn) {
  const size_t rank = shape.size();
  for (int64_t extent : shape) {
    if (extent == 0) return;
  }
  std::vector<int64_t> index(rank, 0);
  int64_t offset = base;
  while (true) {
    fn(offset);
    size_t d = rank;
    while (d > 0) {
      --d;
      if (++index[d] < shape[d]) {
        offset += strides[d];
        break;
      }
      offset -= strides[d] * (shape[d] - 1);
      index[d] = 0;
      if (d == 0) return;
    }
    if (rank == 0) return;
  }
}

}  // namespace

absl::StatusOr<int64_t> CheckedNumel(absl::Span<const int64_t> shape, size_t element_size) {
  Shape at_least_one;  // what the contiguous strides multiply
  at_least_one.reserve(shape.size());
  for (int64_t extent : shape) {
    if (extent < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape ", ShapeString(shape), " has a negative dimension"));
    }
    at_least_one.push_back(std::max<int64_t>(extent, 1));
  }
  const std::optional<int64_t> numel = CheckedProduct(shape);
  if (!numel) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape ", ShapeString(shape), " has too many elements"));
  }
  if (!CheckedProduct(at_least_one)) {
    // An empty shape whose other dimensions multiply past 63 bits: PyTorch's text.
    return absl::InvalidArgumentError(
        absl::StrCat("Stride calculation overflowed for shape ", ShapeString(shape)));
  }
  if (!CheckedMul(*numel, static_cast<int64_t>(element_size))) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape ", ShapeString(shape), " is too large in bytes"));
  }
  return *numel;
}

std::string ShapeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string TorchSizeString(absl::Span<const int64_t> shape) {
  return absl::StrCat("torch.Size(", ShapeString(shape), ")");
}

Shape ContiguousStrides(absl::Span<const int64_t> shape) {
  Shape strides(shape.size());
  int64_t stride = 1;
  for (size_t d = shape.size(); d > 0; --d) {
    strides[d - 1] = stride;
    stride *= std::max<int64_t>(shape[d - 1], 1);
  }
  return strides;
}

Tensor::Tensor(std::shared_ptr<Storage> storage, int64_t offset, Shape shape, Shape strides,
               DType dtype)
    : storage_(std::move(storage)),
      offset_(offset),
      shape_(std::move(shape)),
      strides_(std::move(strides)),
      dtype_(dtype) {}

absl::StatusOr<Tensor> Tensor::Empty(DType dtype, Shape shape, const Device& device,
                                     MemoryReservation* reservation) {
  PARAMD_ASSIGN_OR_RETURN(int64_t numel, CheckedNumel(shape, ElementSize(dtype)));
  PARAMD_ASSIGN_OR_RETURN(
      auto storage,
      Storage::Allocate(device, static_cast<size_t>(numel) * ElementSize(dtype), reservation));
  Shape strides = ContiguousStrides(shape);
  return Tensor(std::move(storage), 0, std::move(shape), std::move(strides), dtype);
}

absl::StatusOr<Tensor> Tensor::Full(DType dtype, Shape shape, double value, const Device& device) {
  if (!device.is_cpu()) {
    // Filled where it lives (a GPU's Fill is one kernel taking the value as its argument):
    // no host buffer and no copy, which an optimizer's zero state and kept-as-zero
    // gradients would otherwise pay on every step. A backend without Fill takes the copy.
    PARAMD_ASSIGN_OR_RETURN(kernels::Backend * backend, kernels::GetBackend(device));
    if (backend->Supports({.kind = kernels::OpKind::kFill, .dtype = dtype}).ok()) {
      PARAMD_ASSIGN_OR_RETURN(Tensor tensor, Empty(dtype, shape, device));
      kernels::TensorView view;
      view.data = tensor.mutable_data();
      view.dtype = dtype;
      view.rank = 1;
      view.shape[0] = tensor.numel();
      view.strides[0] = 1;
      const absl::Status filled = backend->Fill({.output = view, .value = value});
      if (filled.ok()) return tensor;
      if (filled.code() != absl::StatusCode::kUnimplemented) return filled;
    }
  }
  PARAMD_ASSIGN_OR_RETURN(Tensor tensor, Empty(dtype, std::move(shape), Device{}));
  VisitDType(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T element = CastElement<T>(value);
    T* data = static_cast<T*>(tensor.mutable_data());
    std::fill(data, data + tensor.numel(), element);
  });
  if (device.is_cpu()) return tensor;
  return ConvertTo(tensor, dtype, device);
}

absl::StatusOr<Tensor> Tensor::FromBytes(DType dtype, Shape shape,
                                         absl::Span<const uint8_t> bytes) {
  PARAMD_ASSIGN_OR_RETURN(int64_t numel, CheckedNumel(shape, ElementSize(dtype)));
  const size_t expected = static_cast<size_t>(numel) * ElementSize(dtype);
  if (bytes.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a ", DTypeName(dtype), " tensor of shape ", ShapeString(shape), " needs ", expected,
        " bytes, got ", bytes.size()));
  }
  PARAMD_ASSIGN_OR_RETURN(Tensor tensor, Empty(dtype, std::move(shape)));
  if (expected) std::memcpy(tensor.mutable_data(), bytes.data(), expected);
  if (dtype == DType::kBool) {
    CanonicalizeBools(absl::MakeSpan(static_cast<uint8_t*>(tensor.mutable_data()), expected));
  }
  return tensor;
}

bool CanonicalBools(absl::Span<const uint8_t> bytes) {
  uint8_t seen = 0;
  for (const uint8_t byte : bytes) seen |= byte;
  return (seen & ~uint8_t{1}) == 0;
}

void CanonicalizeBools(absl::Span<uint8_t> bytes) {
  for (uint8_t& byte : bytes) byte = byte != 0;
}

absl::StatusOr<Tensor> Tensor::FromDoubles(DType dtype, Shape shape,
                                           absl::Span<const double> values) {
  PARAMD_ASSIGN_OR_RETURN(int64_t numel, CheckedNumel(shape, ElementSize(dtype)));
  if (static_cast<size_t>(numel) != values.size()) {
    return absl::InvalidArgumentError(absl::StrCat("shape ", ShapeString(shape), " holds ", numel,
                                                   " elements, got ", values.size(), " values"));
  }
  PARAMD_ASSIGN_OR_RETURN(Tensor tensor, Empty(dtype, std::move(shape)));
  VisitDType(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* data = static_cast<T*>(tensor.mutable_data());
    for (size_t i = 0; i < values.size(); ++i) data[i] = CastElement<T>(values[i]);
  });
  return tensor;
}

int64_t Tensor::numel() const {
  int64_t numel = 1;
  for (int64_t extent : shape_) numel *= extent;
  return numel;
}

bool Tensor::is_contiguous() const {
  int64_t expected = 1;
  for (size_t d = shape_.size(); d > 0; --d) {
    if (shape_[d - 1] == 1) continue;
    if (shape_[d - 1] == 0) return true;
    if (strides_[d - 1] != expected) return false;
    expected *= shape_[d - 1];
  }
  return true;
}

const void* Tensor::data() const {
  return static_cast<const uint8_t*>(storage_->data()) + offset_ * ElementSize(dtype_);
}

void* Tensor::mutable_data() const {
  return static_cast<uint8_t*>(storage_->data()) + offset_ * ElementSize(dtype_);
}

absl::StatusOr<Tensor> Tensor::Select(int64_t index) const {
  if (shape_.empty()) {
    return absl::InvalidArgumentError("cannot index a 0-dim tensor; it has no dimension 0");
  }
  if (index < 0 || index >= shape_[0]) {
    return absl::InvalidArgumentError(absl::StrCat("index ", index,
                                                   " is out of bounds for dimension 0 with size ",
                                                   shape_[0]));
  }
  return Tensor(storage_, offset_ + index * strides_[0], Shape(shape_.begin() + 1, shape_.end()),
                Shape(strides_.begin() + 1, strides_.end()), dtype_);
}

absl::StatusOr<Tensor> Tensor::Slice(absl::Span<const std::pair<int64_t, int64_t>> ranges) const {
  if (ranges.size() > shape_.size()) {
    return absl::InvalidArgumentError(absl::StrCat("region has ", ranges.size(),
                                                   " dimensions but the tensor has ", dim()));
  }
  int64_t offset = offset_;
  Shape shape = shape_;
  for (size_t d = 0; d < ranges.size(); ++d) {
    const auto [start, stop] = ranges[d];
    if (start < 0 || stop < start || stop > shape_[d]) {
      return absl::InvalidArgumentError(
          absl::StrCat("region ", start, ":", stop, " is out of bounds for dimension ", d,
                       " with size ", shape_[d]));
    }
    offset += start * strides_[d];
    shape[d] = stop - start;
  }
  return Tensor(storage_, offset, std::move(shape), strides_, dtype_);
}

absl::Status CopyConvert(const Tensor& src, const Tensor& dst) {
  PARAMD_RETURN_IF_ERROR(RequireCpu(src, "copy source"));
  PARAMD_RETURN_IF_ERROR(RequireCpu(dst, "copy destination"));
  const bool broadcast = src.numel() == 1 && src.shape() != dst.shape();
  if (!broadcast && src.shape() != dst.shape()) {
    return absl::InvalidArgumentError(absl::StrCat("cannot copy a tensor of shape ",
                                                   ShapeString(src.shape()), " into shape ",
                                                   ShapeString(dst.shape())));
  }
  if (!broadcast && src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
    if (src.nbytes()) std::memmove(dst.mutable_data(), src.data(), src.nbytes());
    return absl::OkStatus();
  }
  VisitDType(dst.dtype(), [&](auto dst_tag) {
    using D = typename decltype(dst_tag)::type;
    VisitDType(src.dtype(), [&](auto src_tag) {
      using S = typename decltype(src_tag)::type;
      const S* src_base = static_cast<const S*>(src.storage()->data());
      D* dst_base = static_cast<D*>(dst.storage()->data());
      if (broadcast) {
        const D value = CastElement<D>(src_base[src.offset()]);
        ForEachOffset(dst.shape(), dst.strides(), dst.offset(),
                      [&](int64_t o) { dst_base[o] = value; });
        return;
      }
      std::vector<int64_t> src_offsets;
      src_offsets.reserve(static_cast<size_t>(src.numel()));
      ForEachOffset(src.shape(), src.strides(), src.offset(),
                    [&](int64_t o) { src_offsets.push_back(o); });
      size_t i = 0;
      ForEachOffset(dst.shape(), dst.strides(), dst.offset(),
                    [&](int64_t o) { dst_base[o] = CastElement<D>(src_base[src_offsets[i++]]); });
    });
  });
  return absl::OkStatus();
}

namespace {

// Elements of `tensor`'s storage it reaches, counted from its offset.
int64_t Extent(const Tensor& tensor) {
  if (tensor.numel() == 0) return 0;
  int64_t last = 0;
  for (int64_t d = 0; d < tensor.dim(); ++d) {
    last += (tensor.shape()[d] - 1) * tensor.strides()[d];
  }
  return last + 1;
}

// `src` itself when it is on the host; otherwise the same view of a host copy of the part
// of its storage it reaches (one device-to-host copy, whatever its strides).
absl::StatusOr<Tensor> OnHost(const Tensor& src) {
  if (src.device().is_cpu()) return src;
  PARAMD_ASSIGN_OR_RETURN(kernels::Backend * backend, kernels::GetBackend(src.device()));
  const size_t nbytes = static_cast<size_t>(Extent(src)) * ElementSize(src.dtype());
  PARAMD_ASSIGN_OR_RETURN(auto storage, Storage::Allocate(Device::Cpu(), nbytes));
  if (nbytes > 0) PARAMD_RETURN_IF_ERROR(backend->CopyToHost(storage->data(), src.data(), nbytes));
  return Tensor(std::move(storage), 0, src.shape(), src.strides(), src.dtype());
}

}  // namespace

absl::StatusOr<Tensor> ConvertTo(const Tensor& src, DType dtype, const Device& device) {
  if (!src.defined()) return absl::InvalidArgumentError("conversion: tensor is undefined");
  // Off the host, bytes only move through the backends' copies: conversions and layout
  // changes happen on the host, on one side of the transfer.
  PARAMD_ASSIGN_OR_RETURN(Tensor host, OnHost(src));
  if (device.is_cpu()) {
    if (host.storage() != src.storage() && host.dtype() == dtype && host.is_contiguous()) {
      return host;  // already a private contiguous copy
    }
    PARAMD_ASSIGN_OR_RETURN(Tensor out, Tensor::Empty(dtype, src.shape(), device));
    PARAMD_RETURN_IF_ERROR(CopyConvert(host, out));
    return out;
  }
  // Fails with the device's own reason (no GPU, no CUDA build) before any copying.
  PARAMD_ASSIGN_OR_RETURN(kernels::Backend * target, kernels::GetBackend(device));
  Tensor staged = host;
  if (host.dtype() != dtype || !host.is_contiguous()) {
    PARAMD_ASSIGN_OR_RETURN(staged, ConvertTo(host, dtype, Device::Cpu()));
  }
  PARAMD_ASSIGN_OR_RETURN(Tensor out, Tensor::Empty(dtype, src.shape(), device));
  if (out.nbytes() > 0) {
    PARAMD_RETURN_IF_ERROR(target->CopyFromHost(out.mutable_data(), staged.data(), out.nbytes()));
  }
  return out;
}

absl::StatusOr<Tensor> Clone(const Tensor& src) {
  if (!src.defined()) return absl::InvalidArgumentError("cannot clone an undefined tensor");
  return ConvertTo(src, src.dtype(), src.device());
}

absl::StatusOr<std::vector<double>> ToDoubles(const Tensor& tensor) {
  PARAMD_ASSIGN_OR_RETURN(Tensor wide, ConvertTo(tensor, DType::kFloat64, Device{}));
  const double* data = static_cast<const double*>(wide.data());
  return std::vector<double>(data, data + wide.numel());
}

absl::StatusOr<std::vector<uint8_t>> ToBytes(const Tensor& tensor) {
  if (!tensor.defined()) return absl::InvalidArgumentError("reading bytes: tensor is undefined");
  Tensor contiguous = tensor;
  if (!tensor.is_contiguous() || !tensor.device().is_cpu()) {
    PARAMD_ASSIGN_OR_RETURN(contiguous, ConvertTo(tensor, tensor.dtype(), Device::Cpu()));
  }
  const uint8_t* data = static_cast<const uint8_t*>(contiguous.data());
  return std::vector<uint8_t>(data, data + contiguous.nbytes());
}

}  // namespace paramd::core
