#include "client/cpp/src/frame_lender.h"

#include "grpcpp/support/slice.h"

namespace paramd::client::internal {

FrameLender::~FrameLender() { WaitForReturns(); }

grpc::ByteBuffer FrameLender::Lend(const EncodedFrame& frame) {
  grpc::Slice head(frame.head);
  if (frame.data.empty()) return grpc::ByteBuffer(&head, 1);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++lent_;
  }
  // gRPC only reads a slice it sends; the cast is for its constructor's signature.
  grpc::Slice slices[2] = {std::move(head),
                           grpc::Slice(const_cast<char*>(frame.data.data()), frame.data.size(),
                                       &FrameLender::Return, this)};
  return grpc::ByteBuffer(slices, 2);
}

void FrameLender::Return(void* lender) {
  FrameLender* self = static_cast<FrameLender*>(lender);
  std::lock_guard<std::mutex> lock(self->mu_);
  // Under the lock: once the waiter sees 0 it may destroy the lender.
  if (--self->lent_ == 0) self->returned_.notify_all();
}

void FrameLender::WaitForReturns() {
  std::unique_lock<std::mutex> lock(mu_);
  returned_.wait(lock, [this] { return lent_ == 0; });
}

}  // namespace paramd::client::internal
