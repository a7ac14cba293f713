// Tensors on the wire (proto/paramd/v1/tensor.proto): core tensors out as a header and 1 MiB
// chunks, and headers and chunks in, checked and assembled into core tensors.
//
// Thread-safety: TensorAssembler is used by one RPC at a time; the free functions are pure.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "paramd/v1/tensor.pb.h"
#include "server/core/model.h"
#include "server/core/tensor.h"

namespace paramd::service {

// Bytes per TensorChunk; LIMITS.md measured 1 MiB as the best gRPC stream chunk here.
inline constexpr size_t kChunkBytes = size_t{1} << 20;

v1::DType ToProtoDType(DType dtype);
// INVALID_ARGUMENT for DTYPE_UNSPECIFIED or an unknown value.
absl::StatusOr<DType> FromProtoDType(v1::DType dtype);

// The region of a header (no ranges: nullopt, the whole tensor).
std::optional<core::Region> FromProtoRegion(const v1::Region& region);

// Fills `meta` from a tensor's dtype, shape and device.
void FillMeta(const core::Tensor& tensor, v1::TensorMeta* meta);

// Casts a floating tensor to `wire` (unset or integral tensors go as they are) and makes it
// contiguous, ready to stream.
absl::StatusOr<core::Tensor> PrepareForWire(const core::Tensor& tensor, v1::DType wire);

// Assembles incoming tensors: Begin with a header, Add each chunk, then Finish.
class TensorAssembler {
 public:
  // INVALID_ARGUMENT for a bad dtype or shape, or while a tensor is still incomplete;
  // RESOURCE_EXHAUSTED when the tensor does not fit in memory. Its storage comes out of
  // `reservation` while that lasts (borrowed; may be null).
  absl::Status Begin(const v1::TensorHeader& header,
                     core::MemoryReservation* reservation = nullptr);
  // INVALID_ARGUMENT for a chunk out of order, past the end, or with no header before it.
  absl::Status Add(const v1::TensorChunk& chunk);
  // The same checks for `size` bytes at `offset`; returns where they go in the tensor, so
  // the caller can copy them there straight from gRPC's buffers.
  absl::StatusOr<char*> Claim(uint64_t offset, size_t size);
  bool active() const { return active_; }
  // Active, with every byte of its tensor received.
  bool complete() const { return active_ && received_ == tensor_.nbytes(); }
  // The finished tensor; INVALID_ARGUMENT if bytes are missing.
  absl::StatusOr<core::Tensor> Finish();
  const v1::TensorHeader& header() const { return header_; }

 private:
  bool active_ = false;
  v1::TensorHeader header_;
  core::Tensor tensor_;
  size_t received_ = 0;
};

}  // namespace paramd::service
