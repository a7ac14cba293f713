#include "server/main/metrics_endpoint.h"

#include <microhttpd.h>
#include <netdb.h>
#include <sys/socket.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace paramd::main {
namespace {

MHD_Result Send(MHD_Connection* connection, unsigned status, const std::string& body,
                const char* content_type) {
  MHD_Response* response = MHD_create_response_from_buffer(
      body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
  if (response == nullptr) return MHD_NO;
  MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
  const MHD_Result queued = MHD_queue_response(connection, status, response);
  MHD_destroy_response(response);
  return queued;
}

// GET (or HEAD) /metrics; anything else is answered 404 or 405 without reading a body.
MHD_Result Answer(void* cls, MHD_Connection* connection, const char* url, const char* method,
                  const char* /*version*/, const char* /*upload_data*/,
                  size_t* /*upload_data_size*/, void** /*state*/) {
  const auto* metrics = static_cast<const service::Metrics*>(cls);
  if (std::strcmp(url, "/metrics") != 0) {
    return Send(connection, MHD_HTTP_NOT_FOUND, "paramd serves /metrics only\n", "text/plain");
  }
  if (std::strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
      std::strcmp(method, MHD_HTTP_METHOD_HEAD) != 0) {
    return Send(connection, MHD_HTTP_METHOD_NOT_ALLOWED, "use GET\n", "text/plain");
  }
  return Send(connection, MHD_HTTP_OK, metrics->Render(), "text/plain; version=0.0.4");
}

}  // namespace

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
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const std::string port = listen.substr(colon + 1);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (const int error = getaddrinfo(host.c_str(), port.c_str(), &hints, &found); error != 0) {
    return refused(gai_strerror(error));
  }
  std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> addresses(found, freeaddrinfo);
  std::unique_ptr<MetricsEndpoint> endpoint(new MetricsEndpoint(metrics));
  const unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                         (found->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0);
  // One thread, a few connections and a short timeout: scrapes are cheap and rare, and a
  // stray client cannot hold the endpoint.
  endpoint->daemon_ = MHD_start_daemon(
      flags, 0, nullptr, nullptr, &Answer, const_cast<service::Metrics*>(&metrics),
      MHD_OPTION_SOCK_ADDR, found->ai_addr, MHD_OPTION_CONNECTION_LIMIT, 16u,
      MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
  if (endpoint->daemon_ == nullptr) return refused("the address cannot be bound");
  const MHD_DaemonInfo* info = MHD_get_daemon_info(endpoint->daemon_, MHD_DAEMON_INFO_BIND_PORT);
  if (info == nullptr || info->port == 0) return refused("nothing bound");
  endpoint->address_ = absl::StrCat(listen.substr(0, colon), ":", info->port);
  return endpoint;
}

MetricsEndpoint::~MetricsEndpoint() {
  if (daemon_ != nullptr) MHD_stop_daemon(daemon_);
}

}  // namespace paramd::main
