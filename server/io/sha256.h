// SHA-256 through OpenSSL, as lowercase hex (what `sha256sum` prints): of a byte span at
// once, or incrementally for bytes that arrive in pieces (a file as it is written or
// received). Thread-safety: Sha256Hex is thread-safe; one Sha256 from one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/types/span.h"

struct evp_md_ctx_st;

namespace paramd::io {

std::string Sha256Hex(absl::Span<const uint8_t> bytes);

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;

  void Update(absl::Span<const uint8_t> bytes);
  // The digest of everything given so far; the hasher may go on taking bytes.
  std::string HexDigest() const;

 private:
  struct Free {
    void operator()(evp_md_ctx_st* context) const;
  };
  std::unique_ptr<evp_md_ctx_st, Free> context_;
};

}  // namespace paramd::io
