// conv2d on cuDNN, where the build found it (PARAMD_WITH_CUDNN): PyTorch's own path for
// convolutions on the GPU, in place of im2col and a GEMM. Internal to kernels/cuda.
//
// Note [cuDNN convolution]
// - The algorithm is cuDNN's heuristic choice (cudnnGetConvolutionForwardAlgorithm_v7, what
//   PyTorch uses with torch.backends.cudnn.benchmark off), the first that is deterministic,
//   fits kMaxWorkspaceBytes and, in float32, uses FMA math: paramd's float32 convolution is
//   full float32, as its GEMM is and as the CPU backend is, where PyTorch's default
//   (torch.backends.cudnn.allow_tf32) lets cuDNN round inputs to TF32. float16 and bfloat16
//   compute in float32 (cuDNN's "pseudo-half" configuration) and may use tensor cores.
// - The bias: the output is first filled with the bias broadcast over each channel (exact:
//   the bias is a value of the output's dtype) and cuDNN blends the product into it with
//   beta = 1, forming product + bias in float32 and rounding once, as the im2col path and
//   the CPU backend's sgemm do (Note [Conv bias]); adding it afterwards would round a 16-bit
//   result twice.
// - Sizes cuDNN's int descriptors cannot hold, or a tensor of 2^31 elements or more, take
//   the im2col path instead (Plan returns nullopt), as does every conv while
//   ForceIm2ColConvForTesting is set.
// - The legacy (non-graph) API is used: it is what these single-op convolutions need, and
//   it is still in cuDNN 9 (deprecated, warning only where CUDNN_WARN_DEPRECATED is set).
//
// Thread-safety: handles come from a per-device pool, one per caller at a time (a handle's
// stream is per handle); the plan cache has its own lock.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <optional>

#include "absl/status/statusor.h"
#include "kernels/cuda/launch.h"
#include "kernels/ops.h"

namespace paramd::kernels::cuda {

// What one convolution runs with: cuDNN's algorithm and the workspace it needs.
struct CudnnConvPlan {
  int algorithm = 0;
  int math = 0;
  size_t workspace_bytes = 0;
};

// Whether this build links cuDNN and it could start (a cuDNN that fails to create its first
// handle, a sub-library missing, leaves conv2d to im2col for the life of the process).
bool CudnnAvailable();

// The plan for `args` on `device` (cached per shape), or nullopt when cuDNN does not take
// this convolution (see the Note) and the caller runs im2col. `g` comes from CheckConv2d.
absl::StatusOr<std::optional<CudnnConvPlan>> PlanCudnnConv(int device, const Conv2dArgs& args,
                                                           const ConvGeometry& g);

// Queues the convolution on `stream`, with `workspace` of plan.workspace_bytes; the bias
// is applied as the Note says. The caller has entered the device.
absl::Status RunCudnnConv(int device, cudaStream_t stream, const Conv2dArgs& args,
                          const ConvGeometry& g, const CudnnConvPlan& plan, void* workspace);

// While set, every conv2d takes the im2col path, so tests compare both with the CPU.
// Process-wide.
void ForceIm2ColConvForTesting(bool force);

}  // namespace paramd::kernels::cuda
