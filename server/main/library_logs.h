// The libraries' own log lines (protobuf's "[libprotobuf ERROR ...]", gRPC's gpr_log) routed
// through the daemon's log, so that with --log-format json every line on stderr is one JSON
// object: a client's malformed message makes protobuf log, and that line must not break a
// log shipper's parsing. Call once at start, before any thread logs.
#pragma once

namespace paramd::main {

void RouteLibraryLogs();

}  // namespace paramd::main
