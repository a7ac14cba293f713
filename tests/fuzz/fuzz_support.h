// Shared pieces of the libFuzzer targets in tests/fuzz (docs/fuzzing.md).
//
// A target treats every error Status from a parser as a correct answer to bad input; only a
// sanitizer report, a leak, or a broken property checked with PARAMD_FUZZ_CHECK is a finding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/backend.h"
#include "base/device.h"
#include "server/core/tensor.h"
#include "server/io/file_system.h"

namespace paramd::fuzz {

// A property broke: print why and abort, so that libFuzzer saves the input as a crash.
[[noreturn]] inline void Fail(const char* file, int line, const char* condition,
                              const std::string& detail) {
  std::fprintf(stderr, "%s:%d: fuzz property failed: %s\n%s\n", file, line, condition,
               detail.c_str());
  std::abort();
}

#define PARAMD_FUZZ_CHECK(condition, detail)                                      \
  do {                                                                            \
    if (!(condition)) ::paramd::fuzz::Fail(__FILE__, __LINE__, #condition, (detail)); \
  } while (0)

// Host memory the targets may allocate through the CPU backend: a file that asks for more is
// refused with RESOURCE_EXHAUSTED, as the daemon refuses it under --max-memory, instead of
// reaching libFuzzer's -rss_limit_mb and being reported as a crash.
inline constexpr size_t kBackendMemoryLimit = size_t{256} << 20;

inline void LimitBackendMemory() {
  absl::StatusOr<kernels::Backend*> cpu = kernels::GetBackend(Device::Cpu());
  if (!cpu.ok()) Fail(__FILE__, __LINE__, "GetBackend(cpu)", std::string(cpu.status().message()));
  (*cpu)->SetMemoryLimit(kBackendMemoryLimit);
}

inline absl::Span<const uint8_t> AsBytes(const std::string& text) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

// The bytes of a storage, which a parsed CPU tensor views.
inline absl::Span<const uint8_t> StorageBytes(const core::Tensor& tensor) {
  return absl::MakeConstSpan(static_cast<const uint8_t*>(tensor.storage()->data()),
                             tensor.storage()->nbytes());
}

inline bool SameBytes(absl::Span<const uint8_t> a, absl::Span<const uint8_t> b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

// Owner for the zero-copy paths: a private copy of the input that the parsed tensors keep
// alive, as a MappedFile does for a real file.
inline std::shared_ptr<const std::string> CopyOfInput(const uint8_t* data, size_t size) {
  return std::make_shared<const std::string>(reinterpret_cast<const char*>(data), size);
}

}  // namespace paramd::fuzz
