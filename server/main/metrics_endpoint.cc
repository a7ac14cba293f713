#include "server/main/metrics_endpoint.h"

#include <exception>
#include <vector>

#include "absl/strings/str_cat.h"

namespace paramd::main {

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(
    const std::string& listen, const service::Metrics& metrics) {
  if (listen.empty()) return nullptr;
  const size_t colon = listen.rfind(':');
  auto refused = [&](absl::string_view why) {
    return absl::UnavailableError(absl::StrCat(
        "cannot serve metrics on '", listen, "' (", why,
        "); is it HOST:PORT with a free port? (--metrics-listen, port 0 picks one)"));
  };
  if (colon == std::string::npos || colon == 0 || colon + 1 == listen.size()) {
    return refused("not HOST:PORT");
  }
  std::unique_ptr<MetricsEndpoint> endpoint(new MetricsEndpoint());
  try {
    // One thread: a scrape is cheap, and one at a time bounds what scrapers can cost.
    endpoint->exposer_ = std::make_unique<prometheus::Exposer>(listen, 1);
  } catch (const std::exception& error) {
    return refused(error.what());
  }
  const std::vector<int> ports = endpoint->exposer_->GetListeningPorts();
  if (ports.empty()) return refused("nothing bound");
  endpoint->exposer_->RegisterCollectable(metrics.collectable());
  endpoint->address_ = absl::StrCat(listen.substr(0, colon), ":", ports.front());
  return endpoint;
}

}  // namespace paramd::main
