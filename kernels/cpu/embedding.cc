// embedding: a row gather. Every index is checked before the first row is written, so a
// bad index leaves the output untouched.
#include <cstring>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/op_checks.h"
#include "base/status_macros.h"

namespace paramd::kernels {

absl::Status CpuBackend::Embedding(const EmbeddingArgs& args) {
  const ConstTensorView& w = args.weight;
  PARAMD_RETURN_IF_ERROR(CheckEmbedding(*this, args));
  const int64_t rows = w.shape[0], dim = w.shape[1];
  const int64_t count = args.indices.numel();
  std::vector<int64_t> index(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    index[i] = args.indices.dtype == DType::kInt64
                   ? static_cast<const int64_t*>(args.indices.data)[i]
                   : static_cast<const int32_t*>(args.indices.data)[i];
    if (index[i] < 0 || index[i] >= rows) {
      return absl::InvalidArgumentError("index out of range in self");
    }
  }
  const size_t row_bytes = static_cast<size_t>(dim) * ElementSize(w.dtype);
  const char* src = static_cast<const char*>(w.data);
  char* dst = static_cast<char*>(args.output.data);
  cpu::ParallelFor(count, dim / 4 + 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (row_bytes > 0) std::memcpy(dst + i * row_bytes, src + index[i] * row_bytes, row_bytes);
    }
  });
  return absl::OkStatus();
}

}  // namespace paramd::kernels
