#include "kernels/cpu/cpu_backend.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace paramd::kernels {
namespace {
constexpr size_t kAlignment = 64;
}  // namespace

absl::StatusOr<void*> CpuBackend::Allocate(size_t nbytes) {
  const size_t limit = limit_.load();
  size_t before = in_use_.fetch_add(nbytes);
  if (limit != 0 && (before + nbytes > limit || before + nbytes < before)) {
    in_use_.fetch_sub(nbytes);
    return absl::ResourceExhaustedError(absl::StrCat(
        "allocating ", nbytes, " bytes on cpu would exceed the memory limit of ", limit,
        " bytes (", before, " in use); free models or raise --max-memory"));
  }
  // aligned_alloc needs a size that is a multiple of the alignment, and a non-zero one so
  // every storage has a distinct address.
  const size_t rounded = (nbytes + kAlignment - 1) / kAlignment * kAlignment;
  void* data = rounded < nbytes ? nullptr : std::aligned_alloc(kAlignment, rounded ? rounded : kAlignment);
  if (data == nullptr) {
    in_use_.fetch_sub(nbytes);
    return absl::ResourceExhaustedError(
        absl::StrCat("out of host memory allocating ", nbytes, " bytes"));
  }
  return data;
}

void CpuBackend::Free(void* data, size_t nbytes) {
  std::free(data);
  in_use_.fetch_sub(nbytes);
}

absl::Status CpuBackend::CopyFromHost(void* dst, const void* src, size_t nbytes) {
  if (nbytes) std::memcpy(dst, src, nbytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyToHost(void* dst, const void* src, size_t nbytes) {
  if (nbytes) std::memcpy(dst, src, nbytes);
  return absl::OkStatus();
}

absl::Status CpuBackend::CopyWithinDevice(void* dst, const void* src, size_t nbytes) {
  if (nbytes) std::memmove(dst, src, nbytes);
  return absl::OkStatus();
}

}  // namespace paramd::kernels
