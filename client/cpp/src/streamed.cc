// RemoteModel's streamed transfers (client.h, "streamed transfers"): a state_dict or one
// tensor handed to a TensorConsumer chunk by chunk as it arrives, and a load or one tensor's
// write sent from a TensorProducer chunk by chunk, each chunk read into a pooled buffer that
// is lent to gRPC without a copy.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cpp/src/client_impl.h"
#include "base/chunk_frame.h"
#include "base/status_macros.h"

namespace paramd::client {
namespace {

// The producer's tensors checked as CheckOutgoing checks a HostTensor (and free of overflow,
// since no data backs their sizes yet), with their total and largest byte counts.
absl::Status CheckProduced(const std::vector<NamedTensor>& tensors, uint64_t* total,
                           uint64_t* largest) {
  *total = 0;
  *largest = 0;
  for (const NamedTensor& entry : tensors) {
    uint64_t bytes = ElementSize(entry.tensor.dtype);
    for (int64_t dim : entry.tensor.shape) {
      if (dim < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", entry.name, "' has negative dimension ", dim));
      }
      if (dim != 0 && bytes > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(dim)) {
        return absl::InvalidArgumentError(
            absl::StrCat("tensor '", entry.name, "' has a shape too large to send"));
      }
      bytes *= static_cast<uint64_t>(dim);
    }
    if (bytes > std::numeric_limits<uint64_t>::max() - *total) {
      return absl::InvalidArgumentError("the tensors are too large to send together");
    }
    *total += bytes;
    *largest = std::max(*largest, bytes);
  }
  return absl::OkStatus();
}

// Sends the options and every tensor of `producer` on `stream`, each chunk lent from the
// producer's memory through `lender`, or read into a buffer of `pool` and lent; `flags` gives
// each header its region and parameter flags, and its name when `flags.name` is set (a single
// tensor's write). Returns false when the stream broke (the call's status says why) or the
// producer failed (then `*produced` is its error).
template <typename Stream>
bool SendProduced(Stream& stream, internal::FrameLender& lender, internal::BufferPool& pool,
                  const v1::WriteOptions& options, TensorProducer& producer,
                  const internal::OutgoingTensor& flags,
                  uint64_t total, uint64_t largest, const ProgressCallback& progress,
                  absl::Status* produced) {
  // Options and headers are small and data follows: let gRPC coalesce them with it.
  const grpc::WriteOptions coalesce = grpc::WriteOptions().set_buffer_hint();
  if (!stream.Write(internal::FrameLender::Plain(internal::EncodeOptionsFrame(options, total,
                                                                              largest)),
                    coalesce)) {
    return false;
  }
  const std::vector<NamedTensor>& tensors = producer.tensors();
  uint64_t done = 0;
  for (size_t index = 0; index < tensors.size(); ++index) {
    const NamedTensor& entry = tensors[index];
    if (!stream.Write(
            internal::FrameLender::Plain(internal::EncodeHeaderFrame(
                flags.name != nullptr ? *flags.name : entry.name, entry.tensor, flags)),
            coalesce)) {
      return false;
    }
    const uint64_t bytes = static_cast<uint64_t>(entry.tensor.numel()) * ElementSize(entry.tensor.dtype);
    for (uint64_t offset = 0; offset < bytes; offset += kChunkBytes) {
      const size_t size = static_cast<size_t>(std::min<uint64_t>(kChunkBytes, bytes - offset));
      absl::StatusOr<const char*> held = producer.Lend(index, offset, size);
      if (!held.ok()) {
        *produced = held.status();
        return false;
      }
      grpc::ByteBuffer frame;
      if (*held != nullptr) {
        frame = lender.Lend(internal::EncodedFrame{wire::ChunkFramePrefix(offset, size),
                                                   absl::string_view(*held, size), true});
      } else {
        internal::BufferPool::Buffer* buffer = pool.Acquire();
        *produced = producer.Read(index, offset, absl::MakeSpan(buffer->bytes.get(), size));
        if (!produced->ok()) {
          pool.Release(buffer);
          return false;
        }
        frame = pool.Lend(wire::ChunkFramePrefix(offset, size), buffer, size);
      }
      if (!stream.Write(frame)) return false;
      done += size;
      if (progress) progress(done, total);
    }
  }
  if (progress && total == 0) progress(0, 0);
  return true;
}

// Runs a client-streamed write of `producer`'s tensors: `open(context)` prepares the context
// (deadline, token), starts the call and returns its stream, SendProduced sends on it, and
// `finish(stream, context)` reads the answer and returns the call's status. A producer
// error cancels the call instead of half-closing it, so the daemon sees a write that never
// ended (its last tensor short, too) and commits nothing; that error is then the result.
template <typename Open, typename Finish>
absl::Status WriteProduced(const v1::WriteOptions& options, TensorProducer& producer,
                           const internal::OutgoingTensor& flags,
                           const ProgressCallback& progress, Open&& open, Finish&& finish) {
  uint64_t total = 0, largest = 0;
  PARAMD_RETURN_IF_ERROR(CheckProduced(producer.tensors(), &total, &largest));
  // Declared before the call: gRPC may hold lent buffers until the call is released.
  internal::FrameLender lender;
  internal::BufferPool pool;
  absl::Status produced, status;
  {
    grpc::ClientContext context;
    auto stream = open(&context);
    const bool sent =
        SendProduced(*stream, lender, pool, options, producer, flags, total, largest, progress,
                     &produced);
    if (!produced.ok()) {
      context.TryCancel();
    } else if (sent) {
      stream->WritesDone();
    }
    status = finish(*stream, context);
  }
  lender.WaitForReturns();
  pool.WaitForReturns();
  PARAMD_RETURN_IF_ERROR(produced);
  return status;
}

}  // namespace

absl::StatusOr<uint64_t> RemoteModel::StateDictTo(TensorConsumer& consumer,
                                                  const StateDictOptions& options) const {
  const Client::Impl& impl = *client_->impl_;
  v1::StateDictRequest request;
  request.set_model(name_);
  request.set_prefix(options.prefix);
  request.set_wire_dtype(options.wire_dtype ? internal::ToProtoDType(*options.wire_dtype)
                                            : v1::DTYPE_UNSPECIFIED);
  TensorStreamReceiver receiver(/*expect_data=*/true, options.progress);
  receiver.StreamTo(&consumer);
  PARAMD_RETURN_IF_ERROR(impl.Read(impl.reads->state_dict, request, &receiver));
  return receiver.start().version();
}

absl::StatusOr<LoadResult> RemoteModel::LoadStateDictFrom(TensorProducer& producer,
                                                          const LoadOptions& options,
                                                          uint64_t if_version) const {
  const Client::Impl& impl = *client_->impl_;
  const internal::OutgoingTensor flags;  // loaded tensors: no region, plain flags
  StreamedLoad answer;
  const absl::Status status = WriteProduced(
      LoadWriteOptions(name_, options, if_version), producer, flags, options.progress,
      [&](grpc::ClientContext* context) {
        impl.PrepareStream(context);
        return std::unique_ptr<
            grpc::ClientReaderWriter<grpc::ByteBuffer, v1::LoadStateDictResponse>>(
            grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer,
                                                      v1::LoadStateDictResponse>::
                Create(impl.channel.get(), impl.writes->load_state_dict, context));
      },
      [&](auto& stream, const grpc::ClientContext& context) {
        v1::LoadStateDictResponse response;
        while (stream.Read(&response)) answer.Add(response);
        return answer.Complete(FromGrpcStatus(stream.Finish(), context));
      });
  PARAMD_RETURN_IF_ERROR(status);
  LoadResult result;
  result.version = answer.version;
  result.missing_keys = std::move(answer.missing_keys);
  result.unexpected_keys = std::move(answer.unexpected_keys);
  return result;
}

absl::StatusOr<uint64_t> RemoteModel::SetTensorFrom(const std::string& name,
                                                    TensorProducer& producer,
                                                    const std::optional<Region>& region,
                                                    uint64_t if_version,
                                                    const ProgressCallback& progress) const {
  const Client::Impl& impl = *client_->impl_;
  if (producer.tensors().size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("SetTensorFrom for '", name, "' needs one ",
                                                   "tensor from its producer, not ",
                                                   producer.tensors().size()));
  }
  // SetTensor's frames exactly: the header names `name` and carries the region.
  internal::OutgoingTensor flags;
  flags.name = &name;
  flags.region = region ? &*region : nullptr;
  v1::WriteResponse response;
  PARAMD_RETURN_IF_ERROR(WriteProduced(
      BaseWriteOptions(name_, if_version), producer, flags, progress,
      [&](grpc::ClientContext* context) {
        impl.PrepareStream(context);
        return std::unique_ptr<grpc::ClientWriter<grpc::ByteBuffer>>(
            grpc::internal::ClientWriterFactory<grpc::ByteBuffer>::Create(
                impl.channel.get(), impl.writes->set_tensor, context, &response));
      },
      [&](auto& stream, const grpc::ClientContext& context) {
        return FromGrpcStatus(stream.Finish(), context);
      }));
  return response.version();
}

}  // namespace paramd::client
