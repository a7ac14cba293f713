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
#include <mutex>

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

}  // namespace paramd::client::internal
