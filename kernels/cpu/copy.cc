// The copy ops: cat and dtype conversion, both over strided inputs (a transpose, an
// expanded dimension), for every dtype.
#include <cstring>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/op_checks.h"
#include "base/status_macros.h"
#include "base/element.h"

namespace paramd::kernels {
namespace {

// Copies `src` (any strides) into `dst` (its own strides, same shape), converting dtype.
void StridedConvert(const ConstTensorView& src, void* dst, DType dst_dtype,
                    const int64_t* dst_strides) {
  VisitDType(src.dtype, [&](auto src_tag) {
    using Src = typename decltype(src_tag)::type;
    VisitDType(dst_dtype, [&](auto dst_tag) {
      using Dst = typename decltype(dst_tag)::type;
      const Src* in = static_cast<const Src*>(src.data);
      Dst* out = static_cast<Dst*>(dst);
      const int64_t* strides[2] = {src.strides, dst_strides};
      const int64_t s_in = src.rank ? src.strides[src.rank - 1] : 0;
      const int64_t s_out = src.rank ? dst_strides[src.rank - 1] : 0;
      cpu::ForEachRun<2>(src.rank, src.shape, strides, [&](const int64_t* offsets, int64_t count) {
        const Src* a = in + offsets[0];
        Dst* b = out + offsets[1];
        if constexpr (std::is_same_v<Src, Dst>) {
          if (s_in == 1 && s_out == 1) {
            std::memcpy(b, a, static_cast<size_t>(count) * sizeof(Src));
            return;
          }
        }
        for (int64_t i = 0; i < count; ++i) b[i * s_out] = CastElement<Dst>(a[i * s_in]);
      });
    });
  });
}

}  // namespace

absl::Status CpuBackend::Convert(const ConvertArgs& args) {
  PARAMD_RETURN_IF_ERROR(CheckConvert(*this, args));
  if (args.output.numel() == 0) return absl::OkStatus();
  StridedConvert(args.input, args.output.data, args.output.dtype, args.output.strides);
  return absl::OkStatus();
}

absl::Status CpuBackend::Fill(const FillArgs& args) {
  PARAMD_RETURN_IF_ERROR(CheckFill(*this, args));
  const uint64_t bits = FillBits(args.output.dtype, args.value);
  const size_t element = ElementSize(args.output.dtype);
  char* out = static_cast<char*>(args.output.data);
  for (int64_t i = 0, n = args.output.numel(); i < n; ++i) {
    std::memcpy(out + i * element, &bits, element);
  }
  return absl::OkStatus();
}

absl::Status CpuBackend::Cat(const CatArgs& args) {
  const TensorView& out = args.output;
  PARAMD_RETURN_IF_ERROR(CheckCat(*this, args));
  const size_t element = ElementSize(out.dtype);
  int64_t offset = 0;
  for (const ConstTensorView& in : args.inputs) {
    if (in.numel() == 0) continue;
    StridedConvert(in, static_cast<char*>(out.data) + offset * out.strides[args.dim] * element,
                   out.dtype, out.strides);
    offset += in.shape[args.dim];
  }
  return absl::OkStatus();
}

}  // namespace paramd::kernels
