// 32-bit index arithmetic for kernels over fewer than 2^31 elements, as PyTorch's
// IntDivider: a division by a fixed divisor becomes a multiply-high, an add and a shift
// (Granlund and Montgomery), where 64-bit `/` and `%` are emulated on the GPU with dozens of
// instructions. Host and device code alike, so the CPU build tests the magic numbers.
// Stateless values; thread-safe.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define PARAMD_INDEX_MATH_FN __host__ __device__ __forceinline__
#else
#define PARAMD_INDEX_MATH_FN inline
#endif

namespace paramd::kernels::cuda {

// Division of any n in [0, 2^31) by a divisor d in [1, 2^31).
struct FastDivider {
  uint32_t divisor = 1;
  uint32_t multiplier = 0;
  uint32_t shift = 0;

  FastDivider() = default;
  explicit FastDivider(uint32_t d) : divisor(d) {
    while (shift < 32 && (uint64_t{1} << shift) < d) ++shift;
    // m = floor(2^32 * (2^shift - d) / d) + 1, which fits 32 bits for d < 2^31.
    multiplier = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - d)) / d + 1);
  }

  PARAMD_INDEX_MATH_FN uint32_t Div(uint32_t n) const {
#ifdef __CUDA_ARCH__
    const uint32_t high = __umulhi(n, multiplier);
#else
    const uint32_t high = static_cast<uint32_t>((static_cast<uint64_t>(n) * multiplier) >> 32);
#endif
    return (high + n) >> shift;
  }
  // n / divisor, and n % divisor in `remainder`.
  PARAMD_INDEX_MATH_FN uint32_t DivMod(uint32_t n, uint32_t* remainder) const {
    const uint32_t q = Div(n);
    *remainder = n - q * divisor;
    return q;
  }
};

// Whether a kernel over `n` elements may index in 32 bits.
inline bool FitsInt32(int64_t n) { return n >= 0 && n < (int64_t{1} << 31); }

}  // namespace paramd::kernels::cuda
