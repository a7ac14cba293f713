// Client::Impl, shared by the client's source files: the channel, the stubs and the call
// helpers that apply the deadlines. Private to client/cpp.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "client/cpp/src/frame_lender.h"
#include "client/cpp/src/wire.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/impl/rpc_method.h"
#include "grpcpp/support/sync_stream.h"
#include "paramd/client.h"
#include "paramd/v1/checkpoints.grpc.pb.h"
#include "paramd/v1/inference.grpc.pb.h"
#include "paramd/v1/models.grpc.pb.h"
#include "paramd/v1/parameters.grpc.pb.h"
#include "paramd/v1/training.grpc.pb.h"
#include "base/status_macros.h"

namespace paramd::client {

using internal::FromGrpcStatus;
using internal::OutgoingTensor;
using internal::TensorStreamReceiver;

// The client-streamed writes of v1::Parameters, registered on the channel as the generated
// stub registers them. Write calls them with ByteBuffer frames through gRPC's own
// ClientWriterFactory (the one the generated stub uses) instead of the stub's
// ClientWriter<v1::WriteFrame>, which would copy every chunk into a message and copy it
// again to serialize it; the server sees the same method and the same bytes.
struct WriteMethods {
  explicit WriteMethods(const std::shared_ptr<grpc::ChannelInterface>& channel);

  grpc::internal::RpcMethod set_tensor;
  grpc::internal::RpcMethod set_tensors;
  grpc::internal::RpcMethod register_parameter;
  grpc::internal::RpcMethod register_buffer;
  grpc::internal::RpcMethod load_state_dict;
};

// The server-streamed tensor reads of v1::Parameters, registered likewise: Read takes their
// frames as ByteBuffers and reads each chunk where gRPC received it, where the stub's
// ClientReader<v1::TensorFrame> would copy every chunk into a message first.
struct ReadMethods {
  explicit ReadMethods(const std::shared_ptr<grpc::ChannelInterface>& channel);

  grpc::internal::RpcMethod state_dict;
  grpc::internal::RpcMethod named_parameters;
  grpc::internal::RpcMethod named_buffers;
  grpc::internal::RpcMethod get_tensor;
};

struct Client::Impl {
  std::string address;
  ConnectOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Models::Stub> models;
  std::unique_ptr<v1::Parameters::Stub> parameters;
  std::unique_ptr<grpc::health::v1::Health::Stub> health;
  std::unique_ptr<v1::Checkpoints::Stub> checkpoints;
  std::unique_ptr<v1::Inference::Stub> inference;
  std::unique_ptr<v1::Training::Stub> training;
  std::unique_ptr<WriteMethods> writes;
  std::unique_ptr<ReadMethods> reads;

  // The bearer token (docs/wire.md "Authentication"), on every call.
  void Authorize(grpc::ClientContext* context) const {
    if (!options.token.empty()) context->AddMetadata("authorization", "Bearer " + options.token);
  }
  void PrepareUnary(grpc::ClientContext* context) const {
    Authorize(context);
    if (options.unary_deadline.count() > 0) {
      context->set_deadline(std::chrono::system_clock::now() + options.unary_deadline);
    }
  }
  void PrepareStream(grpc::ClientContext* context) const {
    Authorize(context);
    if (options.stream_deadline.count() > 0) {
      context->set_deadline(std::chrono::system_clock::now() + options.stream_deadline);
    }
  }

  // Runs a unary call `call(context)` under the unary deadline.
  template <typename Call>
  absl::Status Unary(Call&& call) const {
    grpc::ClientContext context;
    PrepareUnary(&context);
    return FromGrpcStatus(call(&context), context);
  }

  // Runs a server-streaming call opened by `open(context)` whose messages split one list
  // answer (docs/wire.md, "Pages and streamed lists"), handing each to `on_message`; under
  // the unary deadline when `unary_deadline` is set (a listing), else the stream deadline.
  template <typename Response, typename Open, typename OnMessage>
  absl::Status ReadMessages(bool unary_deadline, Open&& open, OnMessage&& on_message) const {
    grpc::ClientContext context;
    if (unary_deadline) {
      PrepareUnary(&context);
    } else {
      PrepareStream(&context);
    }
    std::unique_ptr<grpc::ClientReader<Response>> reader = open(&context);
    Response response;
    while (reader->Read(&response)) on_message(response);
    return FromGrpcStatus(reader->Finish(), context);
  }

  // Runs the server-streaming read `method` (one of `reads`) of `request`, feeding every
  // frame to `receiver`. A frame the receiver refuses cancels the call and is the error
  // returned; a failed call returns the server's status.
  template <typename Request>
  absl::Status Read(const grpc::internal::RpcMethod& method, const Request& request,
                    TensorStreamReceiver* receiver) const {
    grpc::ClientContext context;
    PrepareStream(&context);
    std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
        grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(channel.get(), method,
                                                                      &context, request));
    grpc::ByteBuffer frame;
    absl::Status local;
    while (reader->Read(&frame)) {
      local = receiver->Add(frame);
      if (!local.ok()) {
        context.TryCancel();
        while (reader->Read(&frame)) {
        }
        break;
      }
    }
    const grpc::Status status = reader->Finish();
    PARAMD_RETURN_IF_ERROR(local);
    PARAMD_RETURN_IF_ERROR(FromGrpcStatus(status, context));
    return receiver->Finish();
  }

  // Sends `options` and every tensor on `stream` (a ClientWriter or ClientReaderWriter of
  // ByteBuffers), lending the tensors' bytes through `lender`, then half-closes it.
  template <typename Stream>
  static void SendLent(Stream& stream, internal::FrameLender& lender,
                       const v1::WriteOptions& write_options,
                       const std::vector<OutgoingTensor>& tensors,
                       const ProgressCallback& progress) {
    // Options and headers are small and data follows: let gRPC coalesce them with it.
    internal::SendWriteFrames(
        write_options, tensors, progress, [&](const internal::EncodedFrame& frame) {
          return stream.Write(lender.Lend(frame), frame.is_chunk
                                                      ? grpc::WriteOptions()
                                                      : grpc::WriteOptions().set_buffer_hint());
        });
    stream.WritesDone();
  }

  // Runs the client-streaming write `method` (one of `writes`): `options`, then every
  // tensor, whose bytes go out without a copy (Note [Lent bytes] in frame_lender.h). Any
  // error the server reports (even one that cut the stream short) is the status returned.
  template <typename Response>
  absl::Status Write(const grpc::internal::RpcMethod& method, const v1::WriteOptions& write_options,
                     const std::vector<OutgoingTensor>& tensors, const ProgressCallback& progress,
                     Response* response) const {
    for (const OutgoingTensor& item : tensors) {
      PARAMD_RETURN_IF_ERROR(internal::CheckOutgoing(*item.name, *item.tensor));
    }
    internal::FrameLender lender;
    absl::Status status;
    {
      grpc::ClientContext context;
      PrepareStream(&context);
      std::unique_ptr<grpc::ClientWriter<grpc::ByteBuffer>> writer(
          grpc::internal::ClientWriterFactory<grpc::ByteBuffer>::Create(channel.get(), method,
                                                                        &context, response));
      // A failed Write means the call has ended; Finish then says why.
      SendLent(*writer, lender, write_options, tensors, progress);
      status = FromGrpcStatus(writer->Finish(), context);
    }
    // The call is released (the context owns it): only now can gRPC drop every slice.
    lender.WaitForReturns();
    return status;
  }

  // Runs a write whose answer is a stream (LoadStateDict, `method` one of `writes`):
  // `options` and every tensor, lent as Write lends them, then every answer message to
  // `on_message`. Any error the server reports (even one that cut the stream short) is the
  // status returned.
  template <typename Response, typename OnMessage>
  absl::Status WriteThenRead(const grpc::internal::RpcMethod& method,
                             const v1::WriteOptions& write_options,
                             const std::vector<OutgoingTensor>& tensors,
                             const ProgressCallback& progress, OnMessage&& on_message) const {
    for (const OutgoingTensor& item : tensors) {
      PARAMD_RETURN_IF_ERROR(internal::CheckOutgoing(*item.name, *item.tensor));
    }
    internal::FrameLender lender;
    absl::Status status;
    {
      grpc::ClientContext context;
      PrepareStream(&context);
      std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, Response>> stream(
          grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, Response>::Create(
              channel.get(), method, &context));
      // The server answers only after the whole write arrived, so writing first cannot
      // block on an unread answer; a failed Write means the call has ended and Finish says
      // why.
      SendLent(*stream, lender, write_options, tensors, progress);
      Response response;
      while (stream->Read(&response)) on_message(response);
      status = FromGrpcStatus(stream->Finish(), context);
    }
    lender.WaitForReturns();
    return status;
  }
};

// A write's options frame naming the model and the version it must still be at.
inline v1::WriteOptions BaseWriteOptions(const std::string& model, uint64_t if_version) {
  v1::WriteOptions options;
  options.set_model(model);
  options.set_if_version(if_version);
  return options;
}

// LoadStateDict's options frame before the reservation is added (the tensors' sizes).
inline v1::WriteOptions LoadWriteOptions(const std::string& model, const LoadOptions& options,
                                         uint64_t if_version) {
  v1::WriteOptions write_options;
  write_options.set_model(model);
  write_options.set_if_version(if_version);
  write_options.set_non_strict(!options.strict);
  write_options.set_assign(options.assign);
  if (options.metadata) {
    write_options.set_has_metadata(true);
    for (const auto& [path, module_version] : *options.metadata) {
      (*write_options.mutable_metadata())[path] = module_version;
    }
  }
  return write_options;
}

// A load's answer as it streams in (LoadStateDictResponse, LoadResponse): the key lists are
// the concatenation of the messages' lists, a refused load's text that of its pieces.
struct StreamedLoad {
  uint64_t version = 0;
  std::vector<std::string> missing_keys;
  std::vector<std::string> unexpected_keys;
  std::string error_text;

  template <typename Message>
  void Add(const Message& message) {
    version = message.version();
    missing_keys.insert(missing_keys.end(), message.missing_keys().begin(),
                        message.missing_keys().end());
    unexpected_keys.insert(unexpected_keys.end(), message.unexpected_keys().begin(),
                           message.unexpected_keys().end());
    error_text += message.error_text();
  }
  // The call's `status`, with the whole error text when the server sent it (the status
  // message itself is cut at 2 KiB).
  absl::Status Complete(const absl::Status& status) const {
    if (status.ok() || error_text.empty()) return status;
    return absl::Status(status.code(), error_text);
  }
};

}  // namespace paramd::client
