// Element-wise ops: unary activations, broadcasting binary arithmetic and training-mode
// dropout. Loops are plain so the compiler vectorises them; large tensors split across
// the threads.
#include <algorithm>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/op_checks.h"
#include "base/status_macros.h"

namespace paramd::kernels {
namespace {

// Rough per-element costs (ns) for ParallelFor.
constexpr int64_t kCheapCost = 1;
constexpr int64_t kTranscendentalCost = 10;

template <BinaryOp kOp>
inline float Apply(float a, float b) {
  if constexpr (kOp == BinaryOp::kAdd) return a + b;
  if constexpr (kOp == BinaryOp::kSub) return a - b;
  if constexpr (kOp == BinaryOp::kMul) return a * b;
  return a / b;
}

template <BinaryOp kOp>
void BinaryFloat(const BinaryArgs& args) {
  const float* a = static_cast<const float*>(args.a.data);
  const float* b = static_cast<const float*>(args.b.data);
  float* out = static_cast<float*>(args.output.data);
  const int64_t n = args.output.numel();
  if (args.a.is_contiguous() && args.b.is_contiguous()) {
    cpu::ParallelFor(n, kCheapCost, [&](int64_t begin, int64_t end) {
#pragma omp simd
      for (int64_t i = begin; i < end; ++i) out[i] = Apply<kOp>(a[i], b[i]);
    });
    return;
  }
  const int64_t* strides[3] = {args.a.strides, args.b.strides, args.output.strides};
  cpu::ForEachRun<3>(
      args.output.rank, args.output.shape, strides, [&](const int64_t* offsets, int64_t count) {
        const int64_t sa = args.output.rank ? args.a.strides[args.output.rank - 1] : 0;
        const int64_t sb = args.output.rank ? args.b.strides[args.output.rank - 1] : 0;
        const float* pa = a + offsets[0];
        const float* pb = b + offsets[1];
        float* po = out + offsets[2];
        if (sa == 1 && sb == 0) {
          const float vb = *pb;
#pragma omp simd
          for (int64_t i = 0; i < count; ++i) po[i] = Apply<kOp>(pa[i], vb);
        } else {
          for (int64_t i = 0; i < count; ++i) po[i] = Apply<kOp>(pa[i * sa], pb[i * sb]);
        }
      });
}

}  // namespace

absl::Status CpuBackend::Unary(const UnaryArgs& args) {
  PARAMD_RETURN_IF_ERROR(CheckUnary(*this, args));
  const int64_t n = args.input.numel();
  const DType dtype = args.input.dtype;
  const int64_t cost = args.op == UnaryOp::kReLU ? kCheapCost : kTranscendentalCost;
  if (dtype == DType::kFloat32) {
    const float* in = static_cast<const float*>(args.input.data);
    float* out = static_cast<float*>(args.output.data);
    cpu::ParallelFor(n, cost, [&](int64_t begin, int64_t end) {
      if (out != in) std::copy(in + begin, in + end, out + begin);
      cpu::ApplyUnaryInPlace(args.op, out + begin, end - begin);
    });
    return absl::OkStatus();
  }
  cpu::ParallelFor(n, cost, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      cpu::StoreFloat(args.output.data, dtype, i,
                      cpu::ApplyUnary(args.op, cpu::LoadFloat(args.input.data, dtype, i)));
    }
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::Binary(const BinaryArgs& args) {
  const DType dtype = args.output.dtype;
  PARAMD_RETURN_IF_ERROR(CheckBinary(*this, args));
  const int rank = args.output.rank;
  if (args.output.numel() == 0) return absl::OkStatus();
  if (dtype == DType::kFloat32) {
    switch (args.op) {
      case BinaryOp::kAdd:
        BinaryFloat<BinaryOp::kAdd>(args);
        break;
      case BinaryOp::kSub:
        BinaryFloat<BinaryOp::kSub>(args);
        break;
      case BinaryOp::kMul:
        BinaryFloat<BinaryOp::kMul>(args);
        break;
      case BinaryOp::kDiv:
        BinaryFloat<BinaryOp::kDiv>(args);
        break;
    }
    return absl::OkStatus();
  }
  const int64_t* strides[3] = {args.a.strides, args.b.strides, args.output.strides};
  const int64_t sa = rank ? args.a.strides[rank - 1] : 0;
  const int64_t sb = rank ? args.b.strides[rank - 1] : 0;
  cpu::ForEachRun<3>(rank, args.output.shape, strides, [&](const int64_t* offsets, int64_t count) {
    for (int64_t i = 0; i < count; ++i) {
      const float a = cpu::LoadFloat(args.a.data, dtype, offsets[0] + i * sa);
      const float b = cpu::LoadFloat(args.b.data, dtype, offsets[1] + i * sb);
      float r = 0.0f;
      switch (args.op) {
        case BinaryOp::kAdd:
          r = a + b;
          break;
        case BinaryOp::kSub:
          r = a - b;
          break;
        case BinaryOp::kMul:
          r = a * b;
          break;
        case BinaryOp::kDiv:
          r = a / b;
          break;
      }
      cpu::StoreFloat(args.output.data, dtype, offsets[2] + i, r);
    }
  });
  return absl::OkStatus();
}

absl::Status CpuBackend::Dropout(const DropoutArgs& args) {
  const DType dtype = args.input.dtype;
  PARAMD_RETURN_IF_ERROR(CheckDropout(*this, args));
  const int64_t n = args.input.numel();
  const float scale = args.p < 1.0 ? static_cast<float>(1.0 / (1.0 - args.p)) : 0.0f;
  cpu::ParallelFor(n, kTranscendentalCost, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const bool keep =
          args.p < 1.0 && DropoutUniform(args.seed, static_cast<uint64_t>(i)) >= args.p;
      const float x = cpu::LoadFloat(args.input.data, dtype, i);
      cpu::StoreFloat(args.output.data, dtype, i, keep ? x * scale : 0.0f);
    }
  });
  return absl::OkStatus();
}

}  // namespace paramd::kernels
