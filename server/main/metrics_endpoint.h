// The HTTP endpoint that serves the daemon's metrics (--metrics-listen): GET /metrics answers
// Prometheus's text exposition format (docs/metrics.md), rendered by prometheus-cpp's
// TextSerializer from the Metrics it was given, over libmicrohttpd.
//
// Note [Metrics endpoint threads]: prometheus-cpp's own Exposer serves through civetweb,
// whose Debian build starts every thread with a fixed 100 KiB stack. glibc refuses such a
// thread (EINVAL) once the process's static TLS is larger, and the CUDA build's cuBLASLt and
// OpenBLAS alone take about 160 KiB of it, so the Exposer could not start in the CUDA build.
// libmicrohttpd's one polling thread takes the default stack.
//
// Thread-safety: Start and the destructor run on the main thread; scrapes on the endpoint's.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "server/service/metrics.h"

struct MHD_Daemon;

namespace paramd::main {

class MetricsEndpoint {
 public:
  // Serves `metrics` (borrowed: it must outlive the endpoint) on `listen`, HOST:PORT (port 0
  // picks a free one); null when `listen` is empty (metrics off). UNAVAILABLE naming the
  // address when it cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      const std::string& listen, const service::Metrics& metrics);
  ~MetricsEndpoint();

  // HOST:PORT as bound, with the port chosen.
  const std::string& address() const { return address_; }

 private:
  explicit MetricsEndpoint(const service::Metrics& metrics) : metrics_(metrics) {}

  const service::Metrics& metrics_;
  MHD_Daemon* daemon_ = nullptr;
  std::string address_;
};

}  // namespace paramd::main
