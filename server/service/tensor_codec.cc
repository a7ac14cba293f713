#include "server/service/tensor_codec.h"

#include <cstring>

#include "base/text.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace paramd::service {

v1::DType ToProtoDType(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return v1::FLOAT32;
    case DType::kFloat64:
      return v1::FLOAT64;
    case DType::kFloat16:
      return v1::FLOAT16;
    case DType::kBFloat16:
      return v1::BFLOAT16;
    case DType::kInt64:
      return v1::INT64;
    case DType::kInt32:
      return v1::INT32;
    case DType::kInt16:
      return v1::INT16;
    case DType::kInt8:
      return v1::INT8;
    case DType::kUInt8:
      return v1::UINT8;
    case DType::kBool:
      return v1::BOOL;
  }
  return v1::DTYPE_UNSPECIFIED;
}

absl::StatusOr<DType> FromProtoDType(v1::DType dtype) {
  for (DType candidate : kAllDTypes) {
    if (ToProtoDType(candidate) == dtype) return candidate;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("tensor dtype ", static_cast<int>(dtype),
                   " is not set or unknown; set TensorMeta.dtype to one of FLOAT32 ... BOOL"));
}

std::optional<core::Region> FromProtoRegion(const v1::Region& region) {
  if (region.ranges_size() == 0) return std::nullopt;
  core::Region out;
  for (const v1::Range& range : region.ranges()) out.emplace_back(range.start(), range.stop());
  return out;
}

void FillMeta(const core::Tensor& tensor, v1::TensorMeta* meta) {
  meta->set_dtype(ToProtoDType(tensor.dtype()));
  meta->mutable_shape()->Assign(tensor.shape().begin(), tensor.shape().end());
  meta->set_device(tensor.device().ToString());
}

absl::StatusOr<core::Tensor> PrepareForWire(const core::Tensor& tensor, v1::DType wire) {
  DType target = tensor.dtype();
  if (wire != v1::DTYPE_UNSPECIFIED && IsFloatingPoint(tensor.dtype())) {
    PARAMD_ASSIGN_OR_RETURN(target, FromProtoDType(wire));
    if (!IsFloatingPoint(target)) {
      return absl::InvalidArgumentError(
          absl::StrCat("wire dtype ", DTypeName(target),
                       " is not a floating-point dtype; only float tensors are cast on the wire"));
    }
  }
  if (target == tensor.dtype() && tensor.is_contiguous() && tensor.device().is_cpu()) {
    return tensor;
  }
  return core::ConvertTo(tensor, target, Device::Cpu());
}

absl::Status TensorAssembler::Begin(const v1::TensorHeader& header,
                                    core::MemoryReservation* reservation) {
  if (active_) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", QuoteName(header_.name()), " ended early: got ", received_, " of ",
                     tensor_.nbytes(), " bytes before the next header"));
  }
  PARAMD_ASSIGN_OR_RETURN(DType dtype, FromProtoDType(header.meta().dtype()));
  core::Shape shape(header.meta().shape().begin(), header.meta().shape().end());
  absl::StatusOr<int64_t> numel = core::CheckedNumel(shape, ElementSize(dtype));
  if (!numel.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", QuoteName(header.name()), ": ", numel.status().message()));
  }
  PARAMD_ASSIGN_OR_RETURN(tensor_,
                          core::Tensor::Empty(dtype, std::move(shape), Device{}, reservation));
  header_ = header;
  received_ = 0;
  active_ = true;
  return absl::OkStatus();
}

absl::StatusOr<char*> TensorAssembler::Claim(uint64_t offset, size_t size) {
  if (!active_) {
    return absl::InvalidArgumentError("a data chunk arrived with no tensor header before it");
  }
  if (offset != received_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", QuoteName(header_.name()), ": chunk at byte ", offset, " arrived where byte ", received_,
        " was expected; send chunks in order without gaps"));
  }
  if (size > tensor_.nbytes() - received_) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", QuoteName(header_.name()), ": ", received_ + size,
                     " bytes received but dtype and shape give ", tensor_.nbytes()));
  }
  char* destination = static_cast<char*>(tensor_.mutable_data()) + received_;
  received_ += size;
  return destination;
}

absl::Status TensorAssembler::Add(const v1::TensorChunk& chunk) {
  PARAMD_ASSIGN_OR_RETURN(char* destination, Claim(chunk.offset(), chunk.data().size()));
  if (!chunk.data().empty()) std::memcpy(destination, chunk.data().data(), chunk.data().size());
  return absl::OkStatus();
}

absl::StatusOr<core::Tensor> TensorAssembler::Finish() {
  if (!active_) return absl::InvalidArgumentError("no tensor header was sent");
  if (received_ != tensor_.nbytes()) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", QuoteName(header_.name()), " ended early: got ", received_, " of ",
                     tensor_.nbytes(), " bytes its dtype and shape need"));
  }
  active_ = false;
  if (tensor_.dtype() == DType::kBool) {  // Note [Bool bytes]
    core::CanonicalizeBools(
        absl::MakeSpan(static_cast<uint8_t*>(tensor_.mutable_data()), tensor_.nbytes()));
  }
  return std::move(tensor_);
}

}  // namespace paramd::service
