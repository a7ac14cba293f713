// The argument checks every backend makes before it runs an op, in one place so that the
// CPU and CUDA backends accept and refuse exactly the same calls with the same messages
// (tests/unit/kernels/backend_ops_test runs every backend present). Each Check* first asks
// the backend's Supports (UNIMPLEMENTED naming the op, dtype and backend), then checks
// ranks, shapes, dtypes, contiguity and options: INVALID_ARGUMENT naming the op otherwise.
// Internal to kernels/. Thread-safe: no state.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/backend.h"
#include "kernels/ops.h"
#include "base/dtype.h"

namespace paramd::kernels {

// float32, and the two 16-bit formats computed in float32 and rounded once at the end.
bool IsMathDType(DType dtype);

// What the built-in backends support: every op family in the math dtypes (embedding with
// int64 or int32 indices), and the copies (cat, convert) in every dtype.
bool SupportedByBuiltInBackends(const OpQuery& query);

// A view a kernel reads or writes densely: rank within kMaxRank, contiguous, and with data
// unless it is empty.
absl::Status RequireContiguous(const ConstTensorView& view, absl::string_view what);

absl::Status CheckGemm(const Backend& backend, const GemmArgs& args);
// The geometry of one group (channels = the weight's input channels).
absl::StatusOr<ConvGeometry> CheckConv2d(const Backend& backend, const Conv2dArgs& args);

// The planes a 2-D pooling runs over: every dimension but the last two flattened.
struct PoolPlanes {
  int64_t count, height, width, out_h, out_w;
};
absl::StatusOr<PoolPlanes> CheckMaxPool2d(const Backend& backend, const MaxPool2dArgs& args);
absl::StatusOr<PoolPlanes> CheckAvgPool2d(const Backend& backend, const AvgPool2dArgs& args);
absl::StatusOr<PoolPlanes> CheckAdaptiveAvgPool2d(const Backend& backend,
                                                  const AdaptiveAvgPool2dArgs& args);

absl::Status CheckBatchNorm(const Backend& backend, const BatchNormArgs& args);
absl::Status CheckLayerNorm(const Backend& backend, const LayerNormArgs& args);
absl::Status CheckUnary(const Backend& backend, const UnaryArgs& args);
absl::Status CheckBinary(const Backend& backend, const BinaryArgs& args);
absl::Status CheckSoftmax(const Backend& backend, const SoftmaxArgs& args);
// The indices' values are the kernel's to check (they may live on a device).
absl::Status CheckEmbedding(const Backend& backend, const EmbeddingArgs& args);
absl::Status CheckDropout(const Backend& backend, const DropoutArgs& args);
absl::Status CheckConvert(const Backend& backend, const ConvertArgs& args);
absl::Status CheckFill(const Backend& backend, const FillArgs& args);
absl::Status CheckCat(const Backend& backend, const CatArgs& args);
// Every non-empty tensor has its data and the state tensors its options use (the output of
// each, and the input unless SGD's buffer is being created).
absl::Status CheckOptimizerStep(const Backend& backend, const OptimizerStepArgs& args);

}  // namespace paramd::kernels
