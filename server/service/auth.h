// Who may call what: bearer tokens from a token file (--auth-tokens), each with a role, and
// ONE table giving every RPC the role it needs (Note [Role table] in auth.cc). Every handler
// asks RefuseUnlessAllowed before it reads its first message; a call refused changes
// nothing. Without a token file every call in the table is allowed.
//
// Thread-safety: Authenticator is thread-safe; Check runs on gRPC's threads while Reload runs
// on the daemon's reload thread (a check sees the old or the new token set, never a mix).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/server_callback.h"
#include "grpcpp/support/status.h"

namespace paramd::service {

// What a call needs; each role includes the ones below it. kOpen: no token at all.
enum class Role { kOpen = 0, kRead = 1, kWrite = 2, kAdmin = 3 };

// "open", "read", "write", "admin".
absl::string_view RoleName(Role role);

struct MethodRole {
  absl::string_view method;  // the full method name, "/package.Service/Method"
  Role role;
};

// The role table: every RPC the daemon serves. A method missing from it is refused.
absl::Span<const MethodRole> MethodRoles();
// The role `method` needs; nullopt when it is not in the table.
std::optional<Role> RequiredRole(absl::string_view method);

struct Token {
  std::string name;
  Role role = Role::kRead;
  std::string sha256_hex;  // 64 lowercase hex digits of SHA-256(token)
};

// "sha256:" and the 64 lowercase hex digits of SHA-256(token), as paramctl hash-token prints.
std::string HashToken(absl::string_view token);

// Parses a token file: one `NAME ROLE sha256:HEX` line per token, `#` comments and blank
// lines allowed. INVALID_ARGUMENT naming `path` and the line for the first malformed line.
absl::StatusOr<std::vector<Token>> ParseTokenFile(absl::string_view text, absl::string_view path);

class Authenticator {
 public:
  // Reads and parses `path`. NOT_FOUND when it is missing; FAILED_PRECONDITION when it
  // cannot be read (a directory, no permission); INVALID_ARGUMENT when it is malformed or
  // lists no tokens. Every message names the file and --auth-tokens.
  static absl::StatusOr<std::unique_ptr<Authenticator>> Open(const std::string& path);

  // Reads the file again when it changed (inode, size or modification time) since the last
  // read, or always when `force` (SIGHUP). A file Open would refuse keeps the tokens in force,
  // logged as an error (a missing one only on SIGHUP: it may be mid-rename). Returns true when a
  // new token set took effect.
  bool Reload(bool force);

  // OK when the call's `authorization: Bearer TOKEN` names a token whose role is at least
  // `needed`; UNAUTHENTICATED without a known token, PERMISSION_DENIED for too weak a role.
  // The refusal says "`what` needs role ..." (`what` defaults to `method`) and offers
  // `instead`, when set, before the stronger token.
  grpc::Status Check(const grpc::ServerContextBase& context, absl::string_view method, Role needed,
                     absl::string_view what = {}, absl::string_view instead = {}) const;

  // The name of the token the call carries, for logs: "none" without one, "unknown" for
  // one the file does not hold. Never the token itself.
  std::string TokenName(const grpc::ServerContextBase& context) const;

  const std::string& path() const { return path_; }
  size_t size() const;

 private:
  struct Stamp {
    uint64_t device = 0, inode = 0, size = 0;
    int64_t mtime_ns = 0, ctime_ns = 0;
    bool operator==(const Stamp&) const = default;
  };
  explicit Authenticator(std::string path) : path_(std::move(path)) {}
  static std::optional<Stamp> StampOf(const std::string& path);
  absl::StatusOr<std::pair<std::vector<Token>, Stamp>> Read() const;
  // The token `bearer` is, or null; `tokens` keeps it alive.
  const Token* Find(absl::string_view bearer,
                    std::shared_ptr<const std::vector<Token>>& tokens) const;

  const std::string path_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const std::vector<Token>> tokens_ ABSL_GUARDED_BY(mu_);
  Stamp stamp_ ABSL_GUARDED_BY(mu_);
};

// OK when a call of `method` may go on: the method is in the table and, with `auth` set
// (null: no --auth-tokens), its credentials carry the role the table asks for. A refusal is
// logged with the method and the token's name, never the token.
grpc::Status Authorize(const Authenticator* auth, const grpc::ServerContextBase& context,
                       absl::string_view method);

// For what a call asks beyond its method's entry in the role table, once its request says
// it (Note [Forward role]): OK when `auth` is null or the call's token has `needed`; else
// Check's refusal, about `what`, offering `instead`.
grpc::Status AuthorizeRequest(const Authenticator* auth, const grpc::ServerContextBase& context,
                              absl::string_view method, Role needed, absl::string_view what,
                              absl::string_view instead);

// A streaming reactor that finishes at once with `status`, reading nothing.
template <typename Reactor>
class RefusedReactor final : public Reactor {
 public:
  explicit RefusedReactor(const grpc::Status& status) { this->Finish(status); }
  void OnDone() override { delete this; }
};

// The hook at the top of every handler: nullptr when the call may go on, else a reactor that
// has already finished it with the refusal (before any message of the call is read).
template <typename Reactor>
Reactor* RefuseUnlessAllowed(const Authenticator* auth, grpc::CallbackServerContext* context,
                             absl::string_view method) {
  grpc::Status allowed = Authorize(auth, *context, method);
  if (allowed.ok()) return nullptr;
  if constexpr (std::is_same_v<Reactor, grpc::ServerUnaryReactor>) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(allowed);
    return reactor;
  } else {
    return new RefusedReactor<Reactor>(allowed);
  }
}

}  // namespace paramd::service
