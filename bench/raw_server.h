// The raw gRPC service (bench/proto/paramd/bench/raw.proto: Pull, Push, Echo) the wire
// benchmarks compare paramd against: plain byte streams and a unary echo, no paramd logic.
#ifndef PARAMD_BENCH_RAW_SERVER_H_
#define PARAMD_BENCH_RAW_SERVER_H_

#include <sys/types.h>

namespace paramd::bench {

// Runs the service in a forked child pinned to CPU 1; returns its pid, or -1, and writes its
// port to `port`. Call before the process creates any gRPC state.
pid_t StartRawServer(int* port);

}  // namespace paramd::bench

#endif  // PARAMD_BENCH_RAW_SERVER_H_
