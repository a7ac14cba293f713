// The daemon's transport credentials: plaintext, TLS (--tls-cert, --tls-key) or mutual TLS
// (--tls-client-ca: every client presents a certificate signed by that CA). The PEM files
// are watched by gRPC's FileWatcherCertificateProvider and re-read every
// kCertificateRefreshSeconds, so a renewed certificate (a Kubernetes Secret updated in place)
// takes effect for new connections without a restart or a signal.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"

namespace paramd::service {

inline constexpr unsigned kCertificateRefreshSeconds = 1;

struct TlsFiles {
  std::string cert;       // PEM certificate chain; empty: plaintext
  std::string key;        // PEM private key of `cert`
  std::string client_ca;  // PEM CA bundle; set: mutual TLS, client certificates required
  bool enabled() const { return !cert.empty(); }
};

// Checks the files (readable PEM, the key matching the certificate) and builds the
// credentials. INVALID_ARGUMENT naming the flag and the file for the first problem.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFor(
    const TlsFiles& files);

}  // namespace paramd::service
