// The HTTP endpoint that serves the daemon's metrics (--metrics-listen): GET /metrics answers
// Prometheus's text exposition format (docs/metrics.md). prometheus-cpp's Exposer serves it on
// threads of its own; a scrape reads the Metrics it was given.
//
// Thread-safety: Start and the destructor run on the main thread; scrapes on the endpoint's.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "prometheus/exposer.h"
#include "server/service/metrics.h"

namespace paramd::main {

class MetricsEndpoint {
 public:
  // Serves `metrics` (borrowed: it must outlive the endpoint) on `listen`, HOST:PORT (port 0
  // picks a free one); null when `listen` is empty (metrics off). UNAVAILABLE naming the
  // address when it cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(
      const std::string& listen, const service::Metrics& metrics);

  // HOST:PORT as bound, with the port chosen.
  const std::string& address() const { return address_; }

 private:
  MetricsEndpoint() = default;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::string address_;
};

}  // namespace paramd::main
