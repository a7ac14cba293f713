// paramctl's security: the connection flags (--token / PARAMD_TOKEN, --tls-ca, --tls-cert,
// --tls-key) and `hash-token`, which prints the hash a token file lists for a token.
#include <openssl/evp.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "client/cli/command.h"

namespace paramd::cli {
namespace {

absl::StatusOr<std::string> ReadPem(const Args& args, const std::string& flag) {
  const std::optional<std::string> path = args.Get(flag);
  if (!path) return std::string();
  std::ifstream file(*path);
  std::stringstream text;
  if (file) text << file.rdbuf();
  if (!file || text.str().find("-----BEGIN") == std::string::npos) {
    return UsageError(absl::StrCat("--", flag, " '", *path, "' is not a readable PEM file"));
  }
  return text.str();
}

}  // namespace

absl::Status ApplyConnectionFlags(Context& ctx, const Args& args) {
  if (const std::optional<std::string> token = args.Get("token")) {
    ctx.connect_options.token = *token;
  } else if (const char* env = std::getenv("PARAMD_TOKEN"); env != nullptr) {
    ctx.connect_options.token = env;
  }
  ctx.connect_options.token = std::string(absl::StripAsciiWhitespace(ctx.connect_options.token));
  client::ConnectOptions& options = ctx.connect_options;
  for (auto [flag, pem] :
       {std::pair{"tls-ca", &options.tls_root_ca_pem}, std::pair{"tls-cert", &options.tls_cert_pem},
        std::pair{"tls-key", &options.tls_key_pem}}) {
    absl::StatusOr<std::string> text = ReadPem(args, flag);
    if (!text.ok()) return text.status();
    *pem = *std::move(text);
  }
  if (options.tls_cert_pem.empty() != options.tls_key_pem.empty()) {
    return UsageError("--tls-cert and --tls-key go together (mutual TLS)");
  }
  options.tls =
      args.Has("tls") || !options.tls_root_ca_pem.empty() || !options.tls_cert_pem.empty();
  return absl::OkStatus();
}

absl::Status RunHashToken(Context&, const Args& args) {
  std::string token;
  if (!args.positional.empty()) {
    token = args.positional[0];
  } else {
    std::getline(std::cin, token);
  }
  token = std::string(absl::StripAsciiWhitespace(token));
  if (token.empty()) {
    return UsageError("no token: give it as the argument or on stdin");
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(token.data(), token.size(), digest, &length, EVP_sha256(), nullptr) != 1) {
    return absl::InternalError("SHA-256 failed");
  }
  std::cout << "sha256:"
            << absl::BytesToHexString(
                   absl::string_view(reinterpret_cast<const char*>(digest), length))
            << "\n";
  return absl::OkStatus();
}

}  // namespace paramd::cli
