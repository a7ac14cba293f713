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

grpc::ByteBuffer FrameLender::Plain(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
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

BufferPool::~BufferPool() { WaitForReturns(); }

BufferPool::Buffer* BufferPool::Acquire() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!free_.empty()) {
    Buffer* buffer = free_.back();
    free_.pop_back();
    return buffer;
  }
  all_.push_back(std::make_unique<Buffer>(
      Buffer{this, std::unique_ptr<char[]>(new char[kChunkBytes])}));
  return all_.back().get();
}

grpc::ByteBuffer BufferPool::Lend(const std::string& head, Buffer* buffer, size_t size) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++lent_;
  }
  grpc::Slice slices[2] = {grpc::Slice(head),
                           grpc::Slice(buffer->bytes.get(), size, &BufferPool::Return, buffer)};
  return grpc::ByteBuffer(slices, 2);
}

void BufferPool::Release(Buffer* buffer) {
  std::lock_guard<std::mutex> lock(mu_);
  free_.push_back(buffer);
}

void BufferPool::Return(void* opaque) {
  Buffer* buffer = static_cast<Buffer*>(opaque);
  BufferPool* self = buffer->pool;
  std::lock_guard<std::mutex> lock(self->mu_);
  self->free_.push_back(buffer);
  // Under the lock: once the waiter sees 0 it may destroy the pool.
  if (--self->lent_ == 0) self->returned_.notify_all();
}

void BufferPool::WaitForReturns() {
  std::unique_lock<std::mutex> lock(mu_);
  returned_.wait(lock, [this] { return lent_ == 0; });
}

size_t BufferPool::size() {
  std::lock_guard<std::mutex> lock(mu_);
  return all_.size();
}

}  // namespace paramd::client::internal
