#include "server/service/auth.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/text.h"
#include "server/common/log.h"
#include "server/io/sha256.h"

namespace paramd::service {
namespace {

// Note [Role table]: the one place that says which role each RPC needs. Every handler asks
// RefuseUnlessAllowed with its own full method name before it reads a message, and a method
// missing here is refused (PERMISSION_DENIED), never open by accident. The auth integration
// test enumerates every method of the served services from the descriptor pool and fails
// when one is missing here. Reads need `read`, changes to tensors and modes `write`, and
// what creates, deletes, moves or writes whole models and files `admin`. Health and both
// reflection versions are open (gRPC's own handlers serve them; they reveal no model data).
//
// Note [Forward role]: Forward is here as kRead, what an eval-mode forward needs. A
// training-mode forward commits BatchNorm's running statistics as a new version, a write, so
// it needs kWrite as well. Its mode is known only from the request (FORWARD_MODE_TRAIN) or,
// when the request leaves it unset, from the model's own flag in the version the forward
// pins; so the inference service asks AuthorizeRequest from inside RunForward, on that
// version, before anything runs (a SetMode between a check and the pin cannot slip a
// training forward past it). A `read` token is refused with PERMISSION_DENIED and must ask
// for FORWARD_MODE_EVAL; it is not run in eval mode behind its back, since its answer would
// not be the one the model's mode promises (dropout, batch statistics). Every training-mode
// forward needs kWrite, with or without BatchNorm in the model: the role follows from the
// request, not from what the model holds.
//
// Optimizer RPCs to come: PushGradients, Step, ZeroGrad, SetHyperparameters: kWrite;
// CreateOptimizer, DeleteOptimizer, LoadOptimizerState: kAdmin; GetOptimizerState,
// ListOptimizers: kRead.
constexpr MethodRole kMethodRoles[] = {
    {"/paramd.v1.Models/CreateModel", Role::kAdmin},
    {"/paramd.v1.Models/DeleteModel", Role::kAdmin},
    {"/paramd.v1.Models/ListModels", Role::kRead},
    {"/paramd.v1.Models/DescribeModel", Role::kRead},
    {"/paramd.v1.Models/GetRepr", Role::kRead},
    {"/paramd.v1.Models/GetSpec", Role::kRead},
    {"/paramd.v1.Models/SetMode", Role::kWrite},
    {"/paramd.v1.Models/MoveModel", Role::kAdmin},
    {"/paramd.v1.Parameters/StateDict", Role::kRead},
    {"/paramd.v1.Parameters/NamedParameters", Role::kRead},
    {"/paramd.v1.Parameters/NamedBuffers", Role::kRead},
    {"/paramd.v1.Parameters/NamedModules", Role::kRead},
    {"/paramd.v1.Parameters/GetTensor", Role::kRead},
    {"/paramd.v1.Parameters/SetTensor", Role::kWrite},
    {"/paramd.v1.Parameters/SetTensors", Role::kWrite},
    {"/paramd.v1.Parameters/RegisterParameter", Role::kWrite},
    {"/paramd.v1.Parameters/RegisterBuffer", Role::kWrite},
    {"/paramd.v1.Parameters/TieParameters", Role::kWrite},
    {"/paramd.v1.Parameters/LoadStateDict", Role::kWrite},
    {"/paramd.v1.Checkpoints/Save", Role::kAdmin},
    {"/paramd.v1.Checkpoints/Load", Role::kAdmin},
    {"/paramd.v1.Checkpoints/List", Role::kRead},
    {"/paramd.v1.Checkpoints/Upload", Role::kAdmin},
    {"/paramd.v1.Checkpoints/UploadStatus", Role::kRead},
    {"/paramd.v1.Checkpoints/Download", Role::kRead},
    {"/paramd.v1.Checkpoints/Snapshot", Role::kAdmin},
    {"/paramd.v1.Inference/Forward", Role::kRead},  // kWrite in training mode: Note [Forward role]
    {"/paramd.v1.Training/CreateOptimizer", Role::kAdmin},
    {"/paramd.v1.Training/PushGradients", Role::kWrite},
    {"/paramd.v1.Training/Step", Role::kWrite},
    {"/paramd.v1.Training/ZeroGrad", Role::kWrite},
    {"/paramd.v1.Training/GetOptimizerState", Role::kRead},
    {"/paramd.v1.Training/LoadOptimizerState", Role::kAdmin},
    {"/paramd.v1.Training/SetHyperparameters", Role::kWrite},
    {"/paramd.v1.Training/DeleteOptimizer", Role::kAdmin},
    {"/paramd.v1.Training/ListOptimizers", Role::kRead},
    {"/grpc.health.v1.Health/Check", Role::kOpen},
    {"/grpc.health.v1.Health/Watch", Role::kOpen},
    {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Role::kOpen},
    {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Role::kOpen},
};

std::optional<Role> ParseRole(absl::string_view text) {
  if (text == "read") return Role::kRead;
  if (text == "write") return Role::kWrite;
  if (text == "admin") return Role::kAdmin;
  return std::nullopt;
}

bool IsLowerHex(absl::string_view text) {
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// The token of `authorization: Bearer TOKEN`; nullopt without that header.
std::optional<std::string> BearerToken(const grpc::ServerContextBase& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return std::nullopt;
  const absl::string_view value(it->second.data(), it->second.size());
  constexpr absl::string_view kBearer = "Bearer ";
  if (!absl::StartsWithIgnoreCase(value, kBearer)) return std::string();
  return std::string(absl::StripAsciiWhitespace(value.substr(kBearer.size())));
}

grpc::Status Refuse(absl::string_view method, absl::string_view who, grpc::StatusCode code,
                    std::string message) {
  common::Log("warning", "call refused",
              {{"method", std::string(method)},
               {"token", std::string(who)},
               {"status", code == grpc::StatusCode::UNAUTHENTICATED ? "UNAUTHENTICATED"
                                                                    : "PERMISSION_DENIED"}});
  return grpc::Status(code, std::move(message));
}

}  // namespace

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kOpen:
      return "open";
    case Role::kRead:
      return "read";
    case Role::kWrite:
      return "write";
    case Role::kAdmin:
      return "admin";
  }
  return "unknown";
}

absl::Span<const MethodRole> MethodRoles() { return kMethodRoles; }

std::optional<Role> RequiredRole(absl::string_view method) {
  for (const MethodRole& entry : kMethodRoles) {
    if (entry.method == method) return entry.role;
  }
  return std::nullopt;
}

std::string HashToken(absl::string_view token) {
  return absl::StrCat("sha256:",
                      io::Sha256Hex(absl::Span<const uint8_t>(
                          reinterpret_cast<const uint8_t*>(token.data()), token.size())));
}

absl::StatusOr<std::vector<Token>> ParseTokenFile(absl::string_view text, absl::string_view path) {
  std::vector<Token> tokens;
  std::vector<int> lines;  // tokens[i] is on line lines[i]
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    const absl::string_view content = absl::StripAsciiWhitespace(line);
    if (content.empty() || content[0] == '#') continue;
    const std::vector<absl::string_view> fields =
        absl::StrSplit(content, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    auto malformed = [&](absl::string_view why) {
      return absl::InvalidArgumentError(
          absl::StrCat("token file '", path, "' line ", number, ": ", why,
                       "; each line is NAME ROLE sha256:HEX (ROLE read, write or admin; paramctl "
                       "hash-token prints the hash)"));
    };
    if (fields.size() != 3) {
      return malformed(absl::StrCat("expected 3 fields, found ", fields.size()));
    }
    Token token;
    token.name = std::string(fields[0]);
    const std::optional<Role> role = ParseRole(fields[1]);
    if (!role) return malformed(absl::StrCat("unknown role ", QuoteName(fields[1])));
    token.role = *role;
    const absl::string_view hash = fields[2];
    constexpr absl::string_view kPrefix = "sha256:";
    if (!absl::StartsWith(hash, kPrefix) || hash.size() != kPrefix.size() + 64 ||
        !IsLowerHex(absl::AsciiStrToLower(hash.substr(kPrefix.size())))) {
      return malformed("the hash is not sha256: and 64 hex digits");
    }
    token.sha256_hex = absl::AsciiStrToLower(hash.substr(kPrefix.size()));
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i].name == token.name) {
        return malformed(absl::StrCat("token name ", QuoteName(token.name),
                                      " is used twice, first on line ", lines[i]));
      }
      // One token must have one role: with its hash on two lines the role would depend on
      // which line the lookup kept.
      if (tokens[i].sha256_hex == token.sha256_hex) {
        return malformed(absl::StrCat("token ", QuoteName(token.name),
                                      " has the same hash as token ", QuoteName(tokens[i].name),
                                      " on line ", lines[i],
                                      "; give each name its own token, or drop one of the lines"));
      }
    }
    tokens.push_back(std::move(token));
    lines.push_back(number);
  }
  return tokens;
}

std::optional<Authenticator::Stamp> Authenticator::StampOf(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) return std::nullopt;
  return Stamp{static_cast<uint64_t>(info.st_dev), static_cast<uint64_t>(info.st_ino),
               static_cast<uint64_t>(info.st_size),
               int64_t{info.st_mtim.tv_sec} * 1000000000 + info.st_mtim.tv_nsec,
               int64_t{info.st_ctim.tv_sec} * 1000000000 + info.st_ctim.tv_nsec};
}

absl::StatusOr<std::pair<std::vector<Token>, Authenticator::Stamp>> Authenticator::Read() const {
  const std::string named = absl::StrCat("the token file '", path_, "' (--auth-tokens)");
  // The stamp first: a file replaced after it is read again at the next poll.
  const std::optional<Stamp> stamp = StampOf(path_);
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (!stamp || fd < 0) {
    const int error = errno;
    // NOT_FOUND only for a missing file: Reload takes it for one being replaced by rename.
    if (error == ENOENT) return absl::NotFoundError(absl::StrCat(named, " does not exist"));
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read ", named, ": ", std::strerror(error)));
  }
  std::string text;
  char buffer[4096];
  ssize_t n = 0;
  // A directory opens, and fails only here (EISDIR).
  while ((n = ::read(fd, buffer, sizeof buffer)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) text.append(buffer, static_cast<size_t>(n));
  }
  const int error = errno;
  ::close(fd);
  if (n < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read ", named, ": ", std::strerror(error),
                     error == EISDIR ? "; --auth-tokens names the token file itself" : ""));
  }
  absl::StatusOr<std::vector<Token>> tokens = ParseTokenFile(text, path_);
  if (!tokens.ok()) return tokens.status();
  // With no token every call but health and reflection is refused: surely not what was meant.
  if (tokens->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(named,
                     " lists no tokens, so nobody could call anything; add a line NAME ROLE "
                     "sha256:HEX per token (paramctl hash-token prints the hash)"));
  }
  return std::make_pair(*std::move(tokens), *stamp);
}

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Open(const std::string& path) {
  std::unique_ptr<Authenticator> auth(new Authenticator(path));
  auto read = auth->Read();
  if (!read.ok()) return read.status();
  absl::MutexLock lock(&auth->mu_);
  auth->tokens_ = std::make_shared<const std::vector<Token>>(std::move(read->first));
  auth->stamp_ = read->second;
  return auth;
}

bool Authenticator::Reload(bool force) {
  const std::optional<Stamp> now = StampOf(path_);
  if (!force && now) {
    absl::MutexLock lock(&mu_);
    if (*now == stamp_) return false;
  }
  auto read = Read();
  if (!read.ok()) {
    // A file missing for a moment (replaced by rename) is only reported on SIGHUP.
    if (force || read.status().code() != absl::StatusCode::kNotFound) {
      common::Log("error",
                  "TOKEN FILE NOT RELOADED: the tokens read before stay in force; fix the file",
                  {{"path", path_}, {"error", std::string(read.status().message())}});
    }
    // The broken file's stamp is remembered, so that it is reported once, not every poll.
    if (now) {
      absl::MutexLock lock(&mu_);
      stamp_ = *now;
    }
    return false;
  }
  const size_t count = read->first.size();
  {
    absl::MutexLock lock(&mu_);
    tokens_ = std::make_shared<const std::vector<Token>>(std::move(read->first));
    stamp_ = read->second;
  }
  common::Log("info", "token file reloaded", {{"path", path_}, {"tokens", std::to_string(count)}});
  return true;
}

size_t Authenticator::size() const {
  absl::MutexLock lock(&mu_);
  return tokens_->size();
}

const Token* Authenticator::Find(absl::string_view bearer,
                                 std::shared_ptr<const std::vector<Token>>& tokens) const {
  {
    absl::MutexLock lock(&mu_);
    tokens = tokens_;
  }
  const std::string hash = HashToken(bearer).substr(7);
  // Every entry is compared, in constant time, whether or not one matched already.
  const Token* found = nullptr;
  for (const Token& token : *tokens) {
    if (CRYPTO_memcmp(token.sha256_hex.data(), hash.data(), hash.size()) == 0) found = &token;
  }
  return found;
}

std::string Authenticator::TokenName(const grpc::ServerContextBase& context) const {
  const std::optional<std::string> bearer = BearerToken(context);
  if (!bearer || bearer->empty()) return "none";
  std::shared_ptr<const std::vector<Token>> tokens;
  const Token* found = Find(*bearer, tokens);
  return found == nullptr ? "unknown" : found->name;
}

grpc::Status Authenticator::Check(const grpc::ServerContextBase& context, absl::string_view method,
                                  Role needed, absl::string_view what,
                                  absl::string_view instead) const {
  const std::optional<std::string> bearer = BearerToken(context);
  if (!bearer || bearer->empty()) {
    return Refuse(method, "none", grpc::StatusCode::UNAUTHENTICATED,
                  absl::StrCat("this paramd requires a bearer token for ", method,
                               ": send the metadata 'authorization: Bearer TOKEN' (paramctl "
                               "--token or PARAMD_TOKEN; paramd.connect(token=...))"));
  }
  std::shared_ptr<const std::vector<Token>> tokens;
  const Token* found = Find(*bearer, tokens);
  if (found == nullptr) {
    return Refuse(method, "unknown", grpc::StatusCode::UNAUTHENTICATED,
                  "the bearer token is not one this paramd accepts (--auth-tokens); check the "
                  "token, or ask the operator for one");
  }
  if (found->role < needed) {
    return Refuse(
        method, found->name, grpc::StatusCode::PERMISSION_DENIED,
        absl::StrCat(what.empty() ? method : what, " needs role '", RoleName(needed), "'; token ",
                     QuoteName(found->name), " has role '", RoleName(found->role), "'; ", instead,
                     instead.empty() ? "" : ", or ", "use a token with role '", RoleName(needed),
                     "' or above"));
  }
  return grpc::Status::OK;
}

grpc::Status Authorize(const Authenticator* auth, const grpc::ServerContextBase& context,
                       absl::string_view method) {
  const std::optional<Role> needed = RequiredRole(method);
  if (!needed) {
    return Refuse(method, "-", grpc::StatusCode::PERMISSION_DENIED,
                  absl::StrCat(method,
                               " has no entry in paramd's role table and is refused; "
                               "this is a paramd bug (server/service/auth.cc)"));
  }
  if (*needed == Role::kOpen || auth == nullptr) return grpc::Status::OK;
  return auth->Check(context, method, *needed);
}

grpc::Status AuthorizeRequest(const Authenticator* auth, const grpc::ServerContextBase& context,
                              absl::string_view method, Role needed, absl::string_view what,
                              absl::string_view instead) {
  if (auth == nullptr) return grpc::Status::OK;
  return auth->Check(context, method, needed, what, instead);
}

}  // namespace paramd::service
