// Serialized WriteFrames (wire.h's EncodedFrame) as gRPC ByteBuffers that lend the caller's
// tensor bytes to gRPC instead of copying them: a chunk frame is a slice of its few prefix
// bytes and a slice that points into the HostTensor. Private to client/cpp.
//
// Note [Lent bytes]: gRPC may still hold a message's slices after the Write that sent it has
// returned (HTTP/2 completes a write while up to its write buffer of bytes still waits for
// the socket, and a cancelled call's queued bytes leave only when the socket takes them), and
// even after Finish. So the bytes must outlive every slice, not just the call: a FrameLender
// counts the slices it lent and WaitForReturns blocks until gRPC has dropped them all. A
// write call releases the call (its ClientContext) and only then waits, since the call
// itself holds its last messages; it returns after that, so its caller may free or change
// its tensors as soon as it returns, as with a copying call. On a healthy connection the
// slices come back as the call is released; bytes that the connection has already queued
// for a peer that stopped reading altogether (a frozen daemon) may come back only when gRPC
// drops that connection, and the write returns only then, even past its deadline.
//
// Thread-safety: Lend and WaitForReturns from the calling thread; gRPC drops the slices from
// any thread.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "client/cpp/src/wire.h"
#include "grpcpp/support/byte_buffer.h"

namespace paramd::client::internal {

class FrameLender {
 public:
  FrameLender() = default;
  FrameLender(const FrameLender&) = delete;
  FrameLender& operator=(const FrameLender&) = delete;
  // Waits for the returns (the bytes must not go while gRPC holds them).
  ~FrameLender();

  // `frame` as one message: its head copied, its data lent until gRPC drops the slice.
  grpc::ByteBuffer Lend(const EncodedFrame& frame);
  // `bytes` copied into one message, nothing lent.
  static grpc::ByteBuffer Plain(const std::string& bytes);
  // Blocks until gRPC has dropped every slice this lender lent.
  void WaitForReturns();

 private:
  static void Return(void* lender);

  // std::mutex (not absl::Mutex): POSIX lets the waiter destroy it the moment it returns,
  // while the returning thread's unlock may still be finishing.
  std::mutex mu_;
  std::condition_variable returned_;
  int lent_ = 0;  // guarded by mu_
};

// Chunk buffers that a producer's bytes are read into and lent to gRPC as chunk frames'
// data, each taken back for reuse when gRPC drops its slice (Note [Lent bytes]). Acquire
// makes a buffer when none is free rather than wait, so a stream cannot stall on gRPC
// holding its last slices, and the pool grows only to the chunks gRPC keeps in flight at
// once: a few.
//
// Thread-safety: Acquire, Lend and WaitForReturns from the calling thread; gRPC returns the
// buffers from any thread.
class BufferPool {
 public:
  struct Buffer {
    BufferPool* pool;
    std::unique_ptr<char[]> bytes;  // kChunkBytes
  };

  BufferPool() = default;
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;
  // Waits for the returns, as FrameLender's does.
  ~BufferPool();

  // A buffer of kChunkBytes, not lent.
  Buffer* Acquire();
  // `head` and then the first `size` bytes of `buffer` as one message; the buffer comes back
  // to the pool when gRPC drops the slice.
  grpc::ByteBuffer Lend(const std::string& head, Buffer* buffer, size_t size);
  // Puts back a buffer that was acquired but not lent.
  void Release(Buffer* buffer);
  void WaitForReturns();
  // Buffers made so far: the most that were in use at once.
  size_t size();

 private:
  static void Return(void* buffer);

  std::mutex mu_;
  std::condition_variable returned_;
  std::vector<std::unique_ptr<Buffer>> all_;  // guarded by mu_
  std::vector<Buffer*> free_;                 // guarded by mu_
  int lent_ = 0;                              // guarded by mu_
};

}  // namespace paramd::client::internal
