#include "server/main/security.h"

#include <arpa/inet.h>
#include <signal.h>

#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/common/log.h"

namespace paramd::main {

using common::Log;

namespace {

// A SIGHUP that reached a thread which does not block it (one started before main blocked it).
std::atomic<bool> sighup_caught{false};
static_assert(std::atomic<bool>::is_always_lock_free);

void CatchSighup(int) { sighup_caught.store(true); }

}  // namespace

bool IsLoopback(const std::string& listen) {
  if (absl::StartsWith(listen, "unix:") || absl::StartsWith(listen, "unix-abstract:")) return true;
  std::string address = listen;
  for (const char* scheme : {"ipv4:", "ipv6:", "dns:///", "dns:"}) {
    if (absl::StartsWith(address, scheme)) address = address.substr(strlen(scheme));
  }
  std::string host;
  if (absl::StartsWith(address, "[")) {
    const size_t close = address.find(']');
    if (close == std::string::npos) return false;
    host = address.substr(1, close - 1);
  } else {
    const size_t colon = address.rfind(':');
    host = colon == std::string::npos ? address : address.substr(0, colon);
  }
  if (absl::EqualsIgnoreCase(host, "localhost")) return true;
  in_addr v4{};
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) {
    if (IN6_IS_ADDR_LOOPBACK(&v6)) return true;
    return IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127;
  }
  return false;  // a name, an empty host (every interface) or 0.0.0.0 / ::
}

void PrepareReloadSignal() {
  struct sigaction action {};
  action.sa_handler = CatchSighup;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGHUP, &action, nullptr);
  sigset_t reload;
  sigemptyset(&reload);
  sigaddset(&reload, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &reload, nullptr);
}

std::string ConfigureSecurity(const SecurityFlags& flags, service::ServerOptions& options,
                              std::unique_ptr<service::Authenticator>& auth) {
  options.tls = {.cert = flags.tls_cert, .key = flags.tls_key, .client_ca = flags.tls_client_ca};
  if (!flags.auth_tokens.empty()) {
    auto opened = service::Authenticator::Open(flags.auth_tokens);
    if (!opened.ok()) return std::string(opened.status().message());
    auth = *std::move(opened);
    options.auth = auth.get();
  }
  const bool tls = options.tls.enabled();
  const bool loopback = IsLoopback(options.listen);
  if (!loopback && !(tls && auth) && !flags.allow_insecure) {
    return absl::StrCat("refusing to listen on '", options.listen, "', beyond loopback, without ",
                        tls ? "" : "TLS (--tls-cert, --tls-key)", !tls && !auth ? " and " : "",
                        auth ? "" : "bearer tokens (--auth-tokens)",
                        ": anyone who reaches the port could read and change every model. "
                        "Add them, listen on 127.0.0.1, or pass --allow-insecure");
  }
  if (!loopback && !(tls && auth)) {
    Log("warning",
        "INSECURE: serving beyond loopback without TLS and bearer tokens (--allow-insecure); "
        "anyone who reaches the port can read and change every model",
        {{"address", options.listen},
         {"tls", tls ? "on" : "off"},
         {"auth_tokens", auth ? "on" : "off"}});
  }
  Log("info", "security",
      {{"tls", !tls                            ? "off"
               : options.tls.client_ca.empty() ? "on"
                                               : "mutual"},
       {"auth_tokens", auth ? std::to_string(auth->size()) : "off"}});
  return "";
}

Reloader::Reloader(service::Authenticator* auth, bool tls)
    : auth_(auth), tls_(tls), thread_([this] { Run(); }) {}

Reloader::~Reloader() {
  stop_ = true;
  thread_.join();
}

void Reloader::Run() {
  sigset_t reload;
  sigemptyset(&reload);
  sigaddset(&reload, SIGHUP);
  while (!stop_) {
    timespec second{1, 0};
    int signal_number = sigtimedwait(&reload, nullptr, &second);
    if (stop_) break;
    if (sighup_caught.exchange(false)) signal_number = SIGHUP;
    if (signal_number == SIGHUP) {
      Log("info", "SIGHUP: reloading",
          {{"auth_tokens", auth_ ? auth_->path() : "off"},
           {"certificates", tls_ ? "re-read every second when they change" : "off"}});
    }
    if (auth_ != nullptr) auth_->Reload(/*force=*/signal_number == SIGHUP);
  }
}

}  // namespace paramd::main
