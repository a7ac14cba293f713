// Tensors on the wire, client side (proto/paramd/v1/tensor.proto): incoming TensorFrame
// streams checked and assembled into HostTensors, outgoing tensors cut into serialized
// WriteFrames whose chunks borrow the tensors' bytes.
// Internal to the client library; no gRPC calls here, so all of it is testable with plain
// messages.
//
// Thread-safety: a TensorStreamReceiver serves one stream at a time; the free functions
// are pure.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/status.h"
#include "paramd/client.h"
#include "paramd/tensor.h"
#include "paramd/v1/parameters.pb.h"
#include "paramd/v1/tensor.pb.h"

namespace paramd::client::internal {

// The gRPC status of a finished call as an absl::Status with the same code and message; an
// ABORTED one carries the server's `paramd-current-version` trailer, when `context` has it,
// as the payload CurrentVersionOf reads (base/version_conflict.h). gRPC's bare UNIMPLEMENTED
// (an unknown method, or a request the daemon could not parse) gets a message saying so.
absl::Status FromGrpcStatus(const grpc::Status& status, const grpc::ClientContext& context);

v1::DType ToProtoDType(DType dtype);
// nullopt for DTYPE_UNSPECIFIED or a value this client does not know.
std::optional<DType> FromProtoDType(v1::DType dtype);

void ToProtoRegion(const Region& region, v1::Region* out);

// Checks and assembles the frames of one TensorFrame stream: the start frame first, then
// per tensor a header and (unless the stream is metadata-only) its chunks, at consecutive
// offsets, exactly numel * element size bytes in all. Any breach is DATA_LOSS naming the
// tensor; a tensor too large to hold is RESOURCE_EXHAUSTED.
class TensorStreamReceiver {
 public:
  // `expect_data` false: headers only, and any chunk is an error. `progress` (optional) is
  // called after every chunk.
  TensorStreamReceiver(bool expect_data, ProgressCallback progress = {});

  // Tensors of an earlier read whose memory the incoming tensors of the same name reuse:
  // warm memory takes no page faults, which cost more than the copy into it.
  void Recycle(std::vector<NamedTensor> previous);
  // Hands the tensors to `consumer` (borrowed) chunk by chunk instead of assembling them in
  // entries(), which then stays empty. Before the first frame.
  void StreamTo(TensorConsumer* consumer) { consumer_ = consumer; }

  // Takes one frame; may move the bytes out of `frame`.
  absl::Status Add(v1::TensorFrame& frame);
  // Takes one frame as gRPC received it; a chunk's bytes are read in place.
  absl::Status Add(const grpc::ByteBuffer& frame);
  // The stream ended cleanly: checks that it began and that the last tensor is complete.
  absl::Status Finish();

  const v1::StreamStart& start() const { return start_; }
  std::vector<NamedTensor>& entries() { return entries_; }

 private:
  absl::Status OnHeader(const v1::TensorHeader& header);
  // A chunk of `size` bytes at `offset`, as `pieces`; `owned` (optional) is a string holding
  // exactly those bytes that may be taken instead of copied.
  absl::Status OnChunk(uint64_t offset, uint64_t size, absl::Span<const absl::string_view> pieces,
                       std::string* owned);
  // DATA_LOSS unless the tensor being received has all its bytes.
  absl::Status CheckComplete() const;

  const bool expect_data_;
  ProgressCallback progress_;
  TensorConsumer* consumer_ = nullptr;
  absl::flat_hash_map<std::string, std::string> recycled_;
  bool started_ = false;
  v1::StreamStart start_;
  std::vector<NamedTensor> entries_;
  // The tensor being received (entries_.back() unless streamed to consumer_).
  bool receiving_ = false;
  std::string current_name_;
  size_t expected_bytes_ = 0;
  size_t received_bytes_ = 0;
  uint64_t done_bytes_ = 0;
  uint64_t total_bytes_ = 0;
};

// One tensor to send in a write stream. Borrows `tensor` and `region`.
struct OutgoingTensor {
  const std::string* name = nullptr;
  const HostTensor* tensor = nullptr;
  const Region* region = nullptr;  // nullptr: the whole tensor
  bool is_parameter = false;
  bool requires_grad = false;
};

// INVALID_ARGUMENT when `tensor` cannot travel as it is (negative dimensions, or `data`
// not exactly numel * element size bytes), naming it `name`.
absl::Status CheckOutgoing(const std::string& name, const HostTensor& tensor);

// One serialized WriteFrame: the bytes `head` then `data`. A chunk frame's `head` is its
// hand-encoded prefix (base/chunk_frame.h) and its `data` borrows the tensor's bytes, so
// they are never copied here; any other frame is all `head`.
struct EncodedFrame {
  std::string head;
  absl::string_view data;
  bool is_chunk = false;
};

// A write stream's first frame, serialized: `options`, with reserve_bytes set from the
// tensors' `total` bytes (or the `largest` tensor's under commit_each_tensor) when unset.
std::string EncodeOptionsFrame(const v1::WriteOptions& options, uint64_t total, uint64_t largest);
// A tensor's header frame, serialized: `name`, `meta`'s dtype and shape, and `flags`' parameter
// flags and region (its name and tensor are not read).
std::string EncodeHeaderFrame(const std::string& name, const HostTensor& meta,
                              const OutgoingTensor& flags);

// Writes the frames of a write stream through `write` (which returns false once the
// stream is broken; sending then stops and false is returned): `options`, then per tensor
// its header and its bytes in kChunkBytes chunks. The frames borrow the tensors' bytes
// (see EncodedFrame). `progress` (optional) runs after every chunk with the total of all
// tensors' bytes.
bool SendWriteFrames(const v1::WriteOptions& options, const std::vector<OutgoingTensor>& tensors,
                     const ProgressCallback& progress,
                     const std::function<bool(const EncodedFrame&)>& write);

}  // namespace paramd::client::internal
