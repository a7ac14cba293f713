// paramd's security settings: the TLS and token flags turned into server options, the rule
// that refuses to serve beyond loopback without TLS and tokens (unless --allow-insecure),
// and the thread that reloads the token file when it changes or on SIGHUP.
// Thread-safety: main's thread configures; the Reloader runs one thread of its own.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "server/service/auth.h"
#include "server/service/server.h"

namespace paramd::main {

struct SecurityFlags {
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  std::string auth_tokens;
  bool allow_insecure = false;
};

// True for addresses only this machine reaches: 127.0.0.0/8, ::1, localhost, unix sockets.
bool IsLoopback(const std::string& listen);

// Makes SIGHUP a reload request instead of the end of the process: blocks it in the calling
// thread and the threads it starts (the Reloader waits for it), and catches it in any thread
// started before (the Reloader sees the request within a second).
void PrepareReloadSignal();

// Fills `options.tls` and `options.auth` (opening the token file into `auth`), and applies
// the loopback rule. The start-up error for the first problem, or "".
std::string ConfigureSecurity(const SecurityFlags& flags, service::ServerOptions& options,
                              std::unique_ptr<service::Authenticator>& auth);

// Re-reads the token file each second when it changed, and at once on SIGHUP; logs that
// certificates reload on their own. Stops (within a second) when destroyed.
class Reloader {
 public:
  Reloader(service::Authenticator* auth, bool tls);
  ~Reloader();
  Reloader(const Reloader&) = delete;
  Reloader& operator=(const Reloader&) = delete;

 private:
  void Run();
  service::Authenticator* const auth_;  // may be null
  const bool tls_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace paramd::main
