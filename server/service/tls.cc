#include "server/service/tls.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace paramd::service {
namespace {

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* cert) const { X509_free(cert); }
};
struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};

absl::Status Problem(const char* flag, const std::string& path, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(flag, " '", path, "' ", what));
}

absl::StatusOr<std::unique_ptr<X509, X509Free>> ReadCertificate(const char* flag,
                                                                const std::string& path) {
  std::unique_ptr<BIO, BioFree> bio(BIO_new_file(path.c_str(), "r"));
  if (!bio) return Problem(flag, path, "cannot be read");
  std::unique_ptr<X509, X509Free> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) return Problem(flag, path, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
  return cert;
}

// The files as the start checks them; gRPC re-reads them later on its own.
absl::Status CheckFiles(const TlsFiles& files) {
  if (files.key.empty()) {
    return absl::InvalidArgumentError("--tls-cert needs --tls-key (the certificate's PEM key)");
  }
  auto cert = ReadCertificate("--tls-cert", files.cert);
  if (!cert.ok()) return cert.status();
  std::unique_ptr<BIO, BioFree> bio(BIO_new_file(files.key.c_str(), "r"));
  if (!bio) return Problem("--tls-key", files.key, "cannot be read");
  std::unique_ptr<EVP_PKEY, KeyFree> key(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (!key) return Problem("--tls-key", files.key, "holds no unencrypted PEM private key");
  if (X509_check_private_key(cert->get(), key.get()) != 1) {
    return Problem(
        "--tls-key", files.key,
        absl::StrCat("is not the key of the certificate in --tls-cert '", files.cert, "'"));
  }
  if (!files.client_ca.empty()) {
    auto ca = ReadCertificate("--tls-client-ca", files.client_ca);
    if (!ca.ok()) return ca.status();
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFor(
    const TlsFiles& files) {
  if (!files.enabled()) {
    if (!files.key.empty() || !files.client_ca.empty()) {
      return absl::InvalidArgumentError(
          "--tls-key and --tls-client-ca need --tls-cert (the server's PEM certificate)");
    }
    return grpc::InsecureServerCredentials();
  }
  if (absl::Status checked = CheckFiles(files); !checked.ok()) return checked;
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      files.key, files.cert, files.client_ca, kCertificateRefreshSeconds);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (!files.client_ca.empty()) {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

}  // namespace paramd::service
