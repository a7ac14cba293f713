// The CUDA backend's host-side logic, which runs without a GPU: the GEMM plan key (with the
// bias's alignment and the output type), the split of an epilogue between cuBLASLt and the
// element-wise pass, the plan cache's record of cuBLASLt misses, the GPU memory budget with
// its trim-and-retry policy, each thread's stream and index-flag bookkeeping, the launch
// shape of softmax over a non-last dimension, and the batched GEMMs of a grouped convolution.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kernels/cuda/conv_plan.h"
#include "kernels/cuda/gemm_plan.h"
#include "kernels/cuda/index_math.h"
#include "kernels/cuda/memory_budget.h"
#include "kernels/cuda/softmax_plan.h"
#include "kernels/cuda/thread_state.h"

namespace paramd::kernels::cuda {
namespace {

using ::testing::HasSubstr;

alignas(256) char g_buffer[4096];
constexpr DType kBf16 = DType::kBFloat16;

GemmArgs Linear(const void* bias) {
  return {.dtype = DType::kBFloat16,
          .m = 8,
          .n = 16,
          .k = 32,
          .a = g_buffer,
          .lda = 32,
          .trans_a = false,
          .b = g_buffer + 1024,
          .ldb = 32,
          .trans_b = true,
          .bias = bias,
          .c = g_buffer + 2048,
          .ldc = 16};
}

TEST(GemmPlanKeyTest, PointerAlignmentIsTheLargestPowerOfTwoUpTo256) {
  EXPECT_EQ(PointerAlignment(g_buffer), 256u);
  EXPECT_EQ(PointerAlignment(g_buffer + 2), 2u);
  EXPECT_EQ(PointerAlignment(g_buffer + 48), 16u);
  EXPECT_EQ(PointerAlignment(g_buffer, /*batch_stride_bytes=*/6), 2u);
}

TEST(GemmPlanKeyTest, TheBiasAlignmentIsPartOfTheKey) {
  // The same product with an aligned bias and with a bias view at an odd bfloat16 offset
  // must not share a plan: one chosen for the aligned bias would fault on the other.
  const GemmPlanKey aligned =
      MakeGemmPlanKey(0, Linear(g_buffer + 3072), 1, 0, 0, 0, 2, true, kBf16);
  const GemmPlanKey odd = MakeGemmPlanKey(0, Linear(g_buffer + 3074), 1, 0, 0, 0, 2, true, kBf16);
  EXPECT_EQ(aligned.align_bias, 256u);
  EXPECT_EQ(odd.align_bias, 2u);
  EXPECT_FALSE(aligned == odd);
  EXPECT_TRUE(aligned < odd || odd < aligned);
  // Without a fused bias its pointer does not matter.
  EXPECT_EQ(MakeGemmPlanKey(0, Linear(g_buffer + 3072), 1, 0, 0, 0, 0, false, kBf16),
            MakeGemmPlanKey(0, Linear(g_buffer + 3074), 1, 0, 0, 0, 0, false, kBf16));
}

TEST(GemmPlanKeyTest, OperandAlignmentsAndBatchStridesAreInTheKey) {
  GemmArgs offset = Linear(nullptr);
  offset.a = g_buffer + 2;  // an offset view of A
  const GemmPlanKey base = MakeGemmPlanKey(0, Linear(nullptr), 1, 0, 0, 0, 0, false, kBf16);
  const GemmPlanKey moved = MakeGemmPlanKey(0, offset, 1, 0, 0, 0, 0, false, kBf16);
  EXPECT_EQ(base.align_b, 256u);  // cuBLASLt's B is our A
  EXPECT_EQ(moved.align_b, 2u);
  EXPECT_FALSE(base == moved);
  // A batch stride of an odd number of elements lowers the alignment of every batch entry.
  const GemmPlanKey batched =
      MakeGemmPlanKey(0, Linear(nullptr), 4, 0, 257, 8 * 16, 0, false, kBf16);
  EXPECT_EQ(batched.align_a, 2u);
  EXPECT_EQ(batched.stride_b, 257);
  // Strides of an unbatched product do not split the cache.
  EXPECT_EQ(MakeGemmPlanKey(0, Linear(nullptr), 1, 5, 7, 9, 0, false, kBf16), base);
}

TEST(GemmPlanKeyTest, TheOutputTypeIsPartOfTheKey) {
  // A bfloat16 product staged in float32 (Note [16-bit epilogues round once]) and the same
  // product written in bfloat16 must not share a plan: the algorithm writes D in one type.
  const GemmPlanKey bf16 = MakeGemmPlanKey(0, Linear(nullptr), 1, 0, 0, 0, 0, false, kBf16);
  const GemmPlanKey f32 =
      MakeGemmPlanKey(0, Linear(nullptr), 1, 0, 0, 0, 0, false, DType::kFloat32);
  EXPECT_EQ(bf16.out_dtype, static_cast<int>(kBf16));
  EXPECT_EQ(f32.out_dtype, static_cast<int>(DType::kFloat32));
  EXPECT_EQ(f32.dtype, static_cast<int>(kBf16));
  EXPECT_FALSE(bf16 == f32);
  EXPECT_TRUE(bf16 < f32 || f32 < bf16);
  // A batch stride counts in the output's elements: 6 float32 elements are 24 bytes (8-byte
  // aligned), 6 bfloat16 elements 12 bytes (4-byte aligned).
  EXPECT_EQ(MakeGemmPlanKey(0, Linear(nullptr), 2, 0, 0, 6, 0, false, DType::kFloat32).align_c,
            8u);
  EXPECT_EQ(MakeGemmPlanKey(0, Linear(nullptr), 2, 0, 0, 6, 0, false, kBf16).align_c, 4u);
}

TEST(GemmEpiloguePlanTest, Float32FusesBiasAndGeluTanhAndPassesTheRestInPlace) {
  const DType f32 = DType::kFloat32;
  GemmEpiloguePlan p = PlanGemmEpilogue(f32, UnaryOp::kIdentity, true, true, true);
  EXPECT_EQ(p.fused, LtEpilogue::kBias);
  EXPECT_FALSE(p.has_pass());
  p = PlanGemmEpilogue(f32, UnaryOp::kGELUTanh, true, true, true);
  EXPECT_EQ(p.fused, LtEpilogue::kGeluBias);
  EXPECT_FALSE(p.has_pass());
  p = PlanGemmEpilogue(f32, UnaryOp::kGELUTanh, false, false, true);
  EXPECT_EQ(p.fused, LtEpilogue::kGelu);
  EXPECT_FALSE(p.has_pass());
  // Exact GELU after a bias-fused product: one in-place pass, no staging.
  p = PlanGemmEpilogue(f32, UnaryOp::kGELU, true, true, true);
  EXPECT_EQ(p.fused, LtEpilogue::kBias);
  EXPECT_FALSE(p.float32_output);
  EXPECT_FALSE(p.pass_bias);
  EXPECT_EQ(p.pass_activation, UnaryOp::kGELU);
  // A misaligned bias takes GELU-tanh with it into the pass: gelu(x) + bias is wrong.
  p = PlanGemmEpilogue(f32, UnaryOp::kGELUTanh, true, false, true);
  EXPECT_EQ(p.fused, LtEpilogue::kDefault);
  EXPECT_TRUE(p.pass_bias);
  EXPECT_EQ(p.pass_activation, UnaryOp::kGELUTanh);
  EXPECT_FALSE(p.float32_output);
  // Nothing fused (forced, or after a cuBLASLt miss): the pass does it all, in place.
  p = PlanGemmEpilogue(f32, UnaryOp::kSiLU, true, true, false);
  EXPECT_EQ(p.fused, LtEpilogue::kDefault);
  EXPECT_TRUE(p.pass_bias);
  EXPECT_EQ(p.pass_activation, UnaryOp::kSiLU);
  EXPECT_FALSE(p.float32_output);
  p = PlanGemmEpilogue(f32, UnaryOp::kIdentity, false, false, false);
  EXPECT_FALSE(p.has_pass());
}

// Note [16-bit epilogues round once]: a 16-bit product is either finished by cuBLASLt alone
// or staged in float32 with the whole epilogue in the pass; never a pass over 16-bit values.
TEST(GemmEpiloguePlanTest, SixteenBitProductsNeedingAPassAreStagedInFloat32) {
  for (const DType dtype : {DType::kFloat16, DType::kBFloat16}) {
    for (const UnaryOp act : {UnaryOp::kIdentity, UnaryOp::kReLU, UnaryOp::kGELU,
                              UnaryOp::kGELUTanh, UnaryOp::kSiLU, UnaryOp::kSigmoid,
                              UnaryOp::kTanh}) {
      for (const bool has_bias : {false, true}) {
        for (const bool fusable : {false, true}) {
          for (const bool fuse : {false, true}) {
            const GemmEpiloguePlan p =
                PlanGemmEpilogue(dtype, act, has_bias, has_bias && fusable, fuse);
            const std::string where =
                absl::StrCat(DTypeName(dtype), " ", UnaryOpName(act), has_bias ? " bias" : "",
                             fusable ? " fusable" : "", fuse ? " fuse" : "");
            if (p.has_pass()) {
              EXPECT_TRUE(p.float32_output) << where;
              EXPECT_EQ(p.fused, LtEpilogue::kDefault) << where;
              EXPECT_EQ(p.pass_bias, has_bias) << where;
              EXPECT_EQ(p.pass_activation, act) << where;
            }
            // Fused only what cuBLASLt does in float32 before its one rounding.
            const bool fully_fused = fuse && (act == UnaryOp::kIdentity ||
                                              act == UnaryOp::kGELUTanh) &&
                                     (!has_bias || fusable);
            EXPECT_EQ(p.has_pass(), !fully_fused && (has_bias || act != UnaryOp::kIdentity))
                << where;
          }
        }
      }
    }
  }
}

TEST(GemmPlanKeyTest, OnlyA16ByteAlignedBiasIsFused) {
  EXPECT_TRUE(CanFuseBias(g_buffer + 16));
  EXPECT_FALSE(CanFuseBias(g_buffer + 2));
  EXPECT_FALSE(CanFuseBias(g_buffer + 8));
  EXPECT_FALSE(CanFuseBias(nullptr));
}

TEST(PlanCacheTest, RemembersAlgorithmsAndMisses) {
  PlanCache<int> cache(/*capacity=*/3);
  const GemmPlanKey hit = MakeGemmPlanKey(0, Linear(nullptr), 1, 0, 0, 0, 0, false, kBf16);
  const GemmPlanKey miss = MakeGemmPlanKey(0, Linear(g_buffer + 3074), 1, 0, 0, 0, 2, true, kBf16);
  int algo = 0;
  EXPECT_EQ(cache.Find(hit, &algo), PlanLookup::kUnknown);
  cache.Insert(hit, 42);
  cache.InsertMiss(miss);
  EXPECT_EQ(cache.Find(hit, &algo), PlanLookup::kFound);
  EXPECT_EQ(algo, 42);
  // A fused epilogue cuBLASLt has no algorithm for is not asked about again.
  EXPECT_EQ(cache.Find(miss, &algo), PlanLookup::kNoAlgorithm);
  // Bounded: past its capacity the cache starts again.
  for (int64_t m = 100; m < 103; ++m) {
    GemmArgs other = Linear(nullptr);
    other.m = m;
    cache.Insert(MakeGemmPlanKey(0, other, 1, 0, 0, 0, 0, false, kBf16), 1);
  }
  EXPECT_LE(cache.size(), 3u);
}

// Device memory as the budget sees it: a pool with cached bytes, which may run out.
class FakeDeviceMemory final : public DeviceMemory {
 public:
  size_t CachedBytes() override { return cached; }
  absl::StatusOr<void*> Allocate(size_t bytes) override {
    ++allocations;
    if (fail_next > 0) {
      --fail_next;
      return absl::ResourceExhaustedError("cudaErrorMemoryAllocation (out of memory)");
    }
    if (broken) return absl::InternalError("cudaErrorInvalidValue");
    return static_cast<void*>(g_buffer);
  }
  void Trim() override {
    ++trims;
    cached = 0;
  }

  size_t cached = 0;
  int fail_next = 0;
  bool broken = false;
  int allocations = 0;
  int trims = 0;
};

TEST(GpuMemoryBudgetTest, ScratchAndWorkspaceCountInWhatIsHeld) {
  GpuMemoryBudget budget;
  FakeDeviceMemory memory;
  ASSERT_TRUE(budget.TryReserve(32 << 20, MemoryKind::kWorkspace));
  ASSERT_TRUE(AllocateCounted(budget, memory, 1000, MemoryKind::kTensor, "cuda:0").ok());
  ASSERT_TRUE(AllocateCounted(budget, memory, 500, MemoryKind::kScratch, "cuda:0").ok());
  EXPECT_EQ(budget.held(), (32u << 20) + 1500);
  EXPECT_EQ(budget.held(MemoryKind::kScratch), 500u);
  budget.Release(500, MemoryKind::kScratch);
  EXPECT_EQ(budget.held(MemoryKind::kScratch), 0u);
  EXPECT_EQ(budget.held(), (32u << 20) + 1000);
}

TEST(GpuMemoryBudgetTest, TheCeilingRefusesWithoutChangingTheAccounting) {
  GpuMemoryBudget budget;
  FakeDeviceMemory memory;
  budget.set_limit(1000);
  ASSERT_TRUE(AllocateCounted(budget, memory, 600, MemoryKind::kTensor, "cuda:0").ok());
  // Scratch is under the same ceiling as tensors.
  const absl::StatusOr<void*> second =
      AllocateCounted(budget, memory, 600, MemoryKind::kScratch, "cuda:0");
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(second.status().message(),
              HasSubstr("allocating 600 bytes on cuda:0 would exceed the GPU memory limit of 1000 "
                        "bytes (600 in use); free models or raise --max-gpu-memory"));
  EXPECT_EQ(budget.held(), 600u);
  EXPECT_EQ(memory.allocations, 1);
}

TEST(GpuMemoryBudgetTest, CachedPoolBlocksPastTheCeilingAreTrimmed) {
  GpuMemoryBudget budget;
  FakeDeviceMemory memory;
  budget.set_limit(1000);
  memory.cached = 300;
  ASSERT_TRUE(AllocateCounted(budget, memory, 600, MemoryKind::kTensor, "cuda:0").ok());
  EXPECT_EQ(memory.trims, 0);  // 600 + 300 fits
  memory.cached = 500;
  ASSERT_TRUE(AllocateCounted(budget, memory, 100, MemoryKind::kScratch, "cuda:0").ok());
  EXPECT_EQ(memory.trims, 1);  // 700 held + 500 cached would not
  EXPECT_EQ(memory.cached, 0u);
}

TEST(GpuMemoryBudgetTest, AnOutOfMemoryDeviceIsTrimmedAndRetriedOnce) {
  GpuMemoryBudget budget;
  FakeDeviceMemory memory;
  memory.fail_next = 1;
  ASSERT_TRUE(AllocateCounted(budget, memory, 256, MemoryKind::kScratch, "cuda:0").ok());
  EXPECT_EQ(memory.trims, 1);
  EXPECT_EQ(memory.allocations, 2);
  EXPECT_EQ(budget.held(), 256u);

  memory.fail_next = 2;
  const absl::StatusOr<void*> failed =
      AllocateCounted(budget, memory, 128, MemoryKind::kScratch, "cuda:0");
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(failed.status().message(), HasSubstr("allocating 128 bytes on cuda:0 failed: "));
  EXPECT_EQ(memory.trims, 2);
  EXPECT_EQ(budget.held(), 256u);  // the failed reservation is given back
}

TEST(GpuMemoryBudgetTest, OtherDeviceErrorsAreNotRetried) {
  GpuMemoryBudget budget;
  FakeDeviceMemory memory;
  memory.broken = true;
  const absl::StatusOr<void*> failed =
      AllocateCounted(budget, memory, 64, MemoryKind::kTensor, "cuda:1");
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(memory.trims, 0);
  EXPECT_EQ(budget.held(), 0u);
}

TEST(GpuMemoryBudgetTest, RacingReservationsNeverPassTheCeiling) {
  GpuMemoryBudget budget;
  budget.set_limit(1000 * 64);
  std::vector<std::thread> threads;
  std::atomic<int> granted{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        if (budget.TryReserve(64, MemoryKind::kTensor)) granted.fetch_add(1);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(granted.load(), 1000);
  EXPECT_EQ(budget.held(), 1000u * 64);
}

// Note [Softmax over columns] in softmax.cu: many columns get one thread each (the CPU's
// summation order) in blocks of 8 tiles, few long ones up to 32 threads in a block of one
// tile; the grid never passes 65,536 blocks.
TEST(SoftmaxColumnsPlanTest, ThreadsPerColumnGrowOnlyWhenColumnsAreFewAndLong) {
  SoftmaxColumnsLaunch wide = PlanSoftmaxColumns(/*columns=*/70000 * 32, /*size=*/3);
  EXPECT_EQ(wide.tiles, 70000);
  EXPECT_EQ(wide.threads_y, 1);
  EXPECT_EQ(wide.tiles_per_block, 8);
  EXPECT_EQ(wide.blocks, 8750u);
  // gpu_trigger_test's SoftmaxAlongNonLastDimensions: past 65,536 blocks, the grid strides.
  wide = PlanSoftmaxColumns(int64_t{530000} * 32, 1);
  EXPECT_EQ(wide.blocks, 65536u);
  wide = PlanSoftmaxColumns(int64_t{1} << 22, 1000);  // 131,072 tiles: enough warps
  EXPECT_EQ(wide.threads_y, 1);
  const SoftmaxColumnsLaunch tall = PlanSoftmaxColumns(/*columns=*/7, /*size=*/100000);
  EXPECT_EQ(tall.tiles, 1);
  EXPECT_EQ(tall.threads_y, 32);
  EXPECT_EQ(tall.tiles_per_block, 1);
  EXPECT_EQ(tall.blocks, 1u);
  // Short columns stay one thread each, however few.
  EXPECT_EQ(PlanSoftmaxColumns(7, 15).threads_y, 1);
  EXPECT_EQ(PlanSoftmaxColumns(7, 16).threads_y, 2);
  EXPECT_EQ(PlanSoftmaxColumns(33, 64).threads_y, 8);  // 8 elements each
  EXPECT_EQ(PlanSoftmaxColumns(33, 64).tiles, 2);
  for (int64_t columns : {1, 31, 32, 33, 1000, 1 << 20}) {
    for (int64_t size : {1, 2, 100, 5000}) {
      const SoftmaxColumnsLaunch p = PlanSoftmaxColumns(columns, size);
      EXPECT_GE(p.tiles * 32, columns);
      EXPECT_LT((p.tiles - 1) * 32, columns);
      EXPECT_GE(p.threads_y, 1);
      EXPECT_LE(p.threads_y, 32);
      EXPECT_TRUE(p.threads_y == 1 || p.tiles_per_block == 1);
      EXPECT_LE(32 * p.threads_y * p.tiles_per_block, 1024);
      EXPECT_GE(p.blocks, 1u);
      EXPECT_LE(static_cast<int64_t>(p.blocks), std::min<int64_t>(p.tiles, 65536));
    }
  }
}

// Note [Grouped conv as batched GEMMs] in cuda_backend.cc: conv as the CUDA backend runs it
// (the output filled with the bias, im2col of a chunk of images with every group's rows, the
// ConvGemmAt products accumulated into the output, or the input itself as the columns of a
// 1×1 kernel), in plain loops, against a direct convolution. Checks every stride and offset.
struct ConvCase {
  int64_t n, c, hw, o, kernel, groups, chunk;
};

std::vector<double> ConvAsTheGpuRunsIt(const ConvCase& s, const std::vector<double>& x,
                                       const std::vector<double>& w,
                                       const std::vector<double>& bias) {
  const int64_t pad = s.kernel / 2, plane = s.hw * s.hw, kk = s.kernel * s.kernel;
  const int64_t group_in = s.c / s.groups, group_out = s.o / s.groups;
  const int64_t patch = group_in * kk, image_columns = s.c * kk * plane;
  const bool direct = s.kernel == 1;
  std::vector<double> y(static_cast<size_t>(s.n * s.o * plane));
  for (size_t i = 0; i < y.size(); ++i) y[i] = bias[(i / plane) % s.o];
  std::vector<double> columns(static_cast<size_t>(s.chunk * image_columns));
  for (int64_t n0 = 0; n0 < s.n; n0 += s.chunk) {
    const int64_t images = std::min(s.chunk, s.n - n0);
    const double* image = x.data() + n0 * s.c * plane;
    if (!direct) {  // as conv.cu's Im2ColKernel: [image][c, i, j][oh, ow]
      for (int64_t index = 0; index < images * image_columns; ++index) {
        const int64_t ow = index % s.hw, oh = (index / s.hw) % s.hw;
        const int64_t row = (index / plane) % (s.c * kk), im = index / (plane * s.c * kk);
        const int64_t j = row % s.kernel, i = (row / s.kernel) % s.kernel, c = row / kk;
        const int64_t ih = oh - pad + i, iw = ow - pad + j;
        const bool inside = ih >= 0 && ih < s.hw && iw >= 0 && iw < s.hw;
        columns[index] = inside ? image[((im * s.c + c) * s.hw + ih) * s.hw + iw] : 0.0;
      }
    }
    const double* source = direct ? image : columns.data();
    double* out = y.data() + n0 * s.o * plane;
    const ConvChunk sizes{.images = images,
                          .groups = s.groups,
                          .group_out = group_out,
                          .patch = patch,
                          .out_plane = plane,
                          .image_columns = image_columns,
                          .out_channels = s.o};
    EXPECT_EQ(ConvGemmCount(sizes), std::min(s.groups, images));
    for (int64_t l = 0; l < ConvGemmCount(sizes); ++l) {
      const ConvGemm g = ConvGemmAt(sizes, l);
      for (int64_t b = 0; b < g.batch; ++b) {  // C += A · B, row-major, ld = k and n
        const double* a = w.data() + g.a_offset + b * g.stride_a;
        const double* bm = source + g.b_offset + b * g.stride_b;
        double* c = out + g.c_offset + b * g.stride_c;
        for (int64_t r = 0; r < group_out; ++r) {
          for (int64_t col = 0; col < plane; ++col) {
            for (int64_t p = 0; p < patch; ++p) {
              c[r * plane + col] += a[r * patch + p] * bm[p * plane + col];
            }
          }
        }
      }
    }
  }
  return y;
}

TEST(ConvGemmPlanTest, BatchedGemmsOverGroupsOrImagesGiveTheConvolution) {
  for (const ConvCase s : {ConvCase{3, 8, 5, 8, 3, 8, 3}, ConvCase{5, 6, 4, 12, 3, 6, 2},
                           ConvCase{7, 4, 5, 6, 3, 2, 7}, ConvCase{7, 4, 5, 6, 3, 2, 3},
                           ConvCase{1, 6, 4, 4, 3, 2, 1}, ConvCase{4, 6, 3, 9, 1, 3, 4},
                           ConvCase{2, 6, 3, 9, 1, 3, 2}, ConvCase{3, 5, 4, 5, 1, 5, 3},
                           ConvCase{4, 3, 4, 2, 3, 1, 2}}) {
    const int64_t plane = s.hw * s.hw, kk = s.kernel * s.kernel, pad = s.kernel / 2;
    const int64_t group_in = s.c / s.groups, group_out = s.o / s.groups;
    std::vector<double> x(static_cast<size_t>(s.n * s.c * plane)), w(s.o * group_in * kk),
        bias(s.o);
    for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.7 * static_cast<double>(i) + 1);
    for (size_t i = 0; i < w.size(); ++i) w[i] = std::cos(1.3 * static_cast<double>(i));
    for (size_t i = 0; i < bias.size(); ++i) bias[i] = 0.5 * static_cast<double>(i) - 1;
    const std::vector<double> got = ConvAsTheGpuRunsIt(s, x, w, bias);
    for (int64_t n = 0; n < s.n; ++n) {
      for (int64_t o = 0; o < s.o; ++o) {
        const int64_t g = o / group_out;
        for (int64_t oh = 0; oh < s.hw; ++oh) {
          for (int64_t ow = 0; ow < s.hw; ++ow) {
            double want = bias[o];
            for (int64_t ci = 0; ci < group_in; ++ci) {
              for (int64_t i = 0; i < s.kernel; ++i) {
                for (int64_t j = 0; j < s.kernel; ++j) {
                  const int64_t ih = oh - pad + i, iw = ow - pad + j;
                  if (ih < 0 || ih >= s.hw || iw < 0 || iw >= s.hw) continue;
                  want += x[((n * s.c + g * group_in + ci) * s.hw + ih) * s.hw + iw] *
                          w[((o * group_in + ci) * s.kernel + i) * s.kernel + j];
                }
              }
            }
            const double have = got[((n * s.o + o) * s.hw + oh) * s.hw + ow];
            ASSERT_NEAR(have, want, 1e-9)
                << "n " << n << " o " << o << " at " << oh << "," << ow << " of images " << s.n
                << " channels " << s.c << " kernel " << s.kernel << " groups " << s.groups
                << " chunk " << s.chunk;
          }
        }
      }
    }
  }
}

// The 32-bit divider of the element-wise kernels gives exactly `/` and `%` for every
// divisor and dividend below 2^31: small values, powers of two and their neighbours, and
// the extremes.
TEST(FastDividerTest, MatchesIntegerDivisionBelow2e31) {
  std::vector<uint32_t> values = {1, 2, 3, 5, 7, 10, 255, 256, 257, 1000, 4095, 4096, 4097,
                                  65535, 65536, 65537, 1000003, 0x7FFFFFFEu, 0x7FFFFFFFu};
  for (uint32_t p = 1; p < 31; ++p) {
    values.push_back((1u << p) - 1);
    values.push_back((1u << p) + 1);
  }
  std::vector<uint32_t> dividends = values;
  dividends.push_back(0);
  for (uint32_t x = 0; x < 5000; ++x) dividends.push_back(x * 429497u % 0x80000000u);
  for (uint32_t d : values) {
    const FastDivider divider(d);
    for (uint32_t n : dividends) {
      uint32_t remainder = 0;
      const uint32_t q = divider.DivMod(n, &remainder);
      ASSERT_EQ(q, n / d) << n << " / " << d;
      ASSERT_EQ(remainder, n % d) << n << " % " << d;
    }
  }
  EXPECT_TRUE(FitsInt32((int64_t{1} << 31) - 1));
  EXPECT_FALSE(FitsInt32(int64_t{1} << 31));
}

// Threads take the pool's streams in turn, so N threads on N streams each get their own.
TEST(StreamRoundRobinTest, HandsOutEveryStreamInTurn) {
  StreamRoundRobin round_robin(4);
  std::vector<int> got;
  for (int i = 0; i < 9; ++i) got.push_back(round_robin.Next());
  EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 3, 0, 1, 2, 3, 0}));

  StreamRoundRobin shared(16);
  std::vector<int> counts(16, 0);
  std::vector<std::thread> threads;
  std::vector<int> first(16, -1);
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] { first[t] = shared.Next(); });
  }
  for (std::thread& thread : threads) thread.join();
  for (int stream : first) {
    ASSERT_GE(stream, 0);
    ASSERT_LT(stream, 16);
    ++counts[stream];
  }
  EXPECT_EQ(counts, std::vector<int>(16, 1));
}

// The state is the calling thread's own: what one thread records is invisible to another,
// and each device has its own.
TEST(ThreadDeviceStateTest, EachThreadAndDeviceHasItsOwn) {
  ThreadDeviceState& mine = ThisThreadState(0);
  mine.stream = 5;
  EXPECT_EQ(&ThisThreadState(0), &mine);
  EXPECT_NE(&ThisThreadState(1), &mine);
  EXPECT_EQ(ThisThreadState(1).stream, -1);
  int other = 0;
  std::thread([&] { other = ThisThreadState(0).stream; }).join();
  EXPECT_EQ(other, -1);
  EXPECT_EQ(ThisThreadState(0).stream, 5);
  mine.stream = -1;
}

TEST(FlagSlotsTest, QuiescentSlotsAreReusedAndOthersNever) {
  FlagSlots slots;
  EXPECT_EQ(slots.Acquire(), 0);
  EXPECT_EQ(slots.Acquire(), 1);
  EXPECT_EQ(slots.Acquire(), 2);
  slots.Release(1, /*quiescent=*/true);
  slots.Release(2, /*quiescent=*/false);  // writes may still land in it: leaked
  EXPECT_EQ(slots.Acquire(), 1);
  EXPECT_EQ(slots.Acquire(), 3);
  EXPECT_EQ(slots.size(), 4);
}

// A thread's slot goes back when the thread exits: reused when nothing was left queued,
// never when the thread exited with an embedding it did not synchronize after.
TEST(FlagSlotsTest, AnExitingThreadGivesItsSlotBackOnlyWhenQuiescent) {
  FlagSlots slots;
  auto run_thread = [&](bool synchronized) {
    int slot = -1;
    std::thread([&] {
      ThreadDeviceState& state = ThisThreadState(7);
      state.flag_slot = slot = slots.Acquire();
      state.slots = &slots;
      state.flag.GatherQueued();
      if (synchronized) {
        EXPECT_TRUE(state.flag.TakeArmed());
        state.flag.Synchronized();
      }
    }).join();
    return slot;
  };
  const int first = run_thread(/*synchronized=*/true);
  EXPECT_EQ(run_thread(/*synchronized=*/false), first);  // reused, then leaked
  const int third = run_thread(/*synchronized=*/true);
  EXPECT_NE(third, first);
  EXPECT_EQ(slots.size(), 2);
}

TEST(IndexFlagStateTest, ArmedUntilReadAndPendingUntilSynchronized) {
  IndexFlagState flag;
  EXPECT_FALSE(flag.armed());
  EXPECT_TRUE(flag.quiescent());
  EXPECT_FALSE(flag.TakeArmed());  // nothing to read: a synchronization queues no copy
  flag.GatherQueued();
  EXPECT_TRUE(flag.armed());
  EXPECT_FALSE(flag.quiescent());
  EXPECT_TRUE(flag.TakeArmed());  // the read and clear are queued once
  EXPECT_FALSE(flag.TakeArmed());
  EXPECT_FALSE(flag.quiescent());  // until the stream is seen to finish them
  flag.Synchronized();
  EXPECT_TRUE(flag.quiescent());
  // A discarded flag (a new request) queues only its clear: still pending until a sync.
  flag.GatherQueued();
  EXPECT_TRUE(flag.TakeArmed());
  EXPECT_FALSE(flag.armed());
  EXPECT_FALSE(flag.quiescent());
}

}  // namespace
}  // namespace paramd::kernels::cuda
