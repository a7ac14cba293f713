#include "kernels/backend.h"

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cpu/cpu_backend.h"

namespace paramd::kernels {
namespace {

using ::testing::HasSubstr;

TEST(CpuBackendTest, AllocatesAlignedAndCountsBytes) {
  CpuBackend backend;
  auto data = backend.Allocate(100);
  ASSERT_TRUE(data.ok());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(*data) % 64, 0u);
  EXPECT_EQ(backend.bytes_in_use(), 100u);
  backend.Free(*data, 100);
  EXPECT_EQ(backend.bytes_in_use(), 0u);
  auto empty = backend.Allocate(0);
  ASSERT_TRUE(empty.ok());
  EXPECT_NE(*empty, nullptr);
  backend.Free(*empty, 0);
}

TEST(CpuBackendTest, MemoryLimitGivesResourceExhaustedNotACrash) {
  CpuBackend backend;
  backend.SetMemoryLimit(1000);
  auto first = backend.Allocate(600);
  ASSERT_TRUE(first.ok());
  auto second = backend.Allocate(600);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(second.status().message(), HasSubstr("--max-memory"));
  EXPECT_EQ(backend.bytes_in_use(), 600u);
  auto huge = CpuBackend().Allocate(~size_t{0} - 8);
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kResourceExhausted);
  backend.Free(*first, 600);
}

// The "THPeligible" line /proc/self/smaps gives for the mapping that holds `address`, or
// -1 when there is none (kernels before 5.x).
int ThpEligible(const void* address) {
  std::ifstream smaps("/proc/self/smaps");
  const auto target = reinterpret_cast<uintptr_t>(address);
  bool inside = false;
  for (std::string line; std::getline(smaps, line);) {
    uintptr_t begin = 0, end = 0;
    if (std::sscanf(line.c_str(), "%" SCNxPTR "-%" SCNxPTR " ", &begin, &end) == 2 &&
        line.find(':') > line.find(' ')) {
      inside = begin <= target && target < end;
    } else if (inside && line.rfind("THPeligible:", 0) == 0) {
      return std::atoi(line.c_str() + 12);
    }
  }
  return -1;
}

TEST(CpuBackendTest, LargeBlocksSitOnHugePages) {
  // Note [Huge pages for large blocks]: 2 MiB aligned and advised, small ones not.
  CpuBackend backend;
  constexpr size_t kBytes = (size_t{5} << 20) + 100;
  auto large = backend.Allocate(kBytes);
  ASSERT_TRUE(large.ok()) << large.status();
  EXPECT_EQ(reinterpret_cast<uintptr_t>(*large) % (size_t{2} << 20), 0u);
  std::memset(*large, 1, kBytes);  // every byte is usable, the tail past the last 2 MiB too
  auto small = backend.Allocate(size_t{1} << 20);
  ASSERT_TRUE(small.ok());
  std::ifstream mode_file("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string mode((std::istreambuf_iterator<char>(mode_file)), {});
  const int eligible = ThpEligible(*large);
  if (mode.empty() || mode.find("[never]") != std::string::npos || eligible < 0) {
    GTEST_SKIP() << "this system has no transparent huge pages to ask for";
  }
  EXPECT_EQ(eligible, 1);
  if (mode.find("[madvise]") != std::string::npos) {
    EXPECT_EQ(ThpEligible(*small), 0);
  }
  backend.Free(*small, size_t{1} << 20);
  backend.Free(*large, kBytes);
  backend.EmptyCache();
  EXPECT_EQ(ThpEligible(*large), -1) << "the block was not returned to the system";
}

TEST(GpuQueryTest, NoGpuIsFailedPreconditionNotACrash) {
  auto gpus = QueryGpus();
  if (gpus.ok()) {
    EXPECT_FALSE(gpus->empty());
    for (const GpuInfo& gpu : *gpus) EXPECT_GT(gpu.total_memory, 0u);
    GTEST_SKIP() << "a GPU is present: " << (*gpus)[0].name;
  }
  EXPECT_EQ(gpus.status().code(), absl::StatusCode::kFailedPrecondition);
  auto backend = GetBackend(Device::Cuda(0));
  EXPECT_EQ(backend.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(backend.status().message(), HasSubstr("use device 'cpu'"));
}

TEST(BackendRegistryTest, CpuBackendIsAlwaysThere) {
  auto backend = GetBackend(Device::Cpu());
  ASSERT_TRUE(backend.ok());
  EXPECT_TRUE((*backend)->device().is_cpu());
}

}  // namespace
}  // namespace paramd::kernels

namespace paramd::kernels {
namespace {

TEST(CpuBackendCacheTest, FreedLargeBlocksAreReusedAndSmallOnesAreNot) {
  CpuBackend backend;
  auto big = backend.Allocate(3 << 20);
  ASSERT_TRUE(big.ok());
  void* address = *big;
  backend.Free(address, 3 << 20);
  EXPECT_EQ(backend.bytes_in_use(), 0u);
  EXPECT_EQ(backend.bytes_cached(), size_t{3} << 20);
  auto again = backend.Allocate((3 << 20) - 100);  // same size class
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, address);
  EXPECT_EQ(backend.bytes_cached(), 0u);
  backend.Free(*again, (3 << 20) - 100);
  auto small = backend.Allocate(4096);
  backend.Free(*small, 4096);
  EXPECT_EQ(backend.bytes_cached(), size_t{3} << 20);
  backend.EmptyCache();
  EXPECT_EQ(backend.bytes_cached(), 0u);
}

TEST(CpuBackendCacheTest, CacheStaysUnderHalfTheLimitAndGivesWayToAllocations) {
  CpuBackend backend;
  backend.SetMemoryLimit(16 << 20);
  auto a = backend.Allocate(5 << 20);
  auto b = backend.Allocate(5 << 20);
  backend.Free(*a, 5 << 20);
  backend.Free(*b, 5 << 20);
  EXPECT_EQ(backend.bytes_cached(), size_t{5} << 20);  // the second would pass half of 16 MiB
  auto c = backend.Allocate(15 << 20);  // fits only once the cache is gone
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(backend.bytes_cached(), 0u);
  backend.Free(*c, 15 << 20);
}

TEST(CpuBackendCacheTest, ReservationsCountAgainstTheLimitAndTheCacheGivesWayToThem) {
  CpuBackend backend;
  backend.SetMemoryLimit(16 << 20);
  auto a = backend.Allocate(3 << 20);
  ASSERT_TRUE(a.ok());
  backend.Free(*a, 3 << 20);
  ASSERT_EQ(backend.bytes_cached(), size_t{3} << 20);
  // 14 MiB reserved: in use plus cached stays within 16, so only 2 MiB could stay cached and
  // the 3 MiB block goes.
  ASSERT_TRUE(backend.Reserve(14 << 20).ok());
  EXPECT_EQ(backend.bytes_in_use(), size_t{14} << 20);
  EXPECT_EQ(backend.bytes_cached(), 0u);
  // Nothing more fits, reserved or allocated.
  const absl::Status over = backend.Reserve(3 << 20);
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over.message(), HasSubstr("--max-memory"));
  EXPECT_EQ(backend.Allocate(3 << 20).status().code(), absl::StatusCode::kResourceExhausted);
  // Reserved bytes are allocated without counting them twice, and freed as usual.
  auto reserved = backend.AllocateReserved(10 << 20);
  ASSERT_TRUE(reserved.ok()) << reserved.status();
  EXPECT_EQ(backend.bytes_in_use(), size_t{14} << 20);
  backend.Unreserve(4 << 20);
  EXPECT_EQ(backend.bytes_in_use(), size_t{10} << 20);
  backend.Free(*reserved, 10 << 20);
  EXPECT_EQ(backend.bytes_in_use(), 0u);
  backend.EmptyCache();
}

TEST(CpuBackendCacheTest, IdleCachedBlocksAreReleased) {
  CpuBackend backend;
  auto a = backend.Allocate(3 << 20);
  ASSERT_TRUE(a.ok());
  backend.Free(*a, 3 << 20);
  backend.ReleaseIdleCache(int64_t{60} * 1000 * 1000 * 1000);  // freed just now: kept
  EXPECT_EQ(backend.bytes_cached(), size_t{3} << 20);
  backend.ReleaseIdleCache(0);
  EXPECT_EQ(backend.bytes_cached(), 0u);
}

}  // namespace
}  // namespace paramd::kernels
