// The ops a forward pass needs, as argument structs that every Backend takes. One struct
// (and one Backend method) per op family. Arguments are raw device pointers of the backend
// that runs the op, with shapes, strides (in elements) and dtypes; kernels know nothing of
// modules, parameter names or PyTorch's argument checks. The caller (server/core/forward)
// validates shapes with PyTorch's messages and computes every output shape, so a backend
// only checks what it needs not to crash (and returns INVALID_ARGUMENT or INTERNAL then).
//
// Conventions shared by every family:
//  - A data operand is a ConstTensorView (input) or TensorView (output) holding the
//    pointer, dtype, rank (at most kMaxRank), shape and strides.
//  - Unless a struct says otherwise, views must be contiguous (row-major), all data operands
//    of one op share one dtype, and outputs are fully overwritten (never read).
//  - Optional operands are null pointers.
//  - An op issued from one thread is ordered after every earlier op and copy issued from
//    that thread on the same backend; a device backend may run it asynchronously, and
//    CopyToHost / Synchronize wait for it. Ops of different threads are not ordered (Note
//    [Work across threads] in kernels/backend.h).
//  - A backend that cannot run an op answers UNIMPLEMENTED from the op, and says so in
//    advance through Backend::Supports(OpQuery).
//
// Pure data and inline functions; thread-safe. C++17, so that CUDA sources can include it.
#pragma once

#include <cstdint>
#include <type_traits>
#include <vector>

#include "absl/strings/string_view.h"
#include "base/dtype.h"

#if defined(__CUDACC__)
#define PARAMD_HOST_DEVICE __host__ __device__
#else
#define PARAMD_HOST_DEVICE
#endif

namespace paramd::kernels {

inline constexpr int kMaxRank = 8;

// A strided view of device memory. `Pointer` is `const void*` for inputs, `void*` for
// outputs; an output view converts to an input view.
template <typename Pointer>
struct BasicTensorView {
  Pointer data = nullptr;
  DType dtype = DType::kFloat32;
  int rank = 0;
  int64_t shape[kMaxRank] = {};
  int64_t strides[kMaxRank] = {};  // in elements; 0 repeats an element (broadcast)

  int64_t numel() const {
    int64_t n = 1;
    for (int d = 0; d < rank; ++d) n *= shape[d];
    return n;
  }
  // Row-major with no gaps (size-1 dimensions may have any stride).
  bool is_contiguous() const {
    int64_t expected = 1;
    for (int d = rank - 1; d >= 0; --d) {
      if (shape[d] != 1 && strides[d] != expected) return false;
      expected *= shape[d];
    }
    return true;
  }

  template <typename P = Pointer, typename = std::enable_if_t<std::is_same_v<P, void*>>>
  operator BasicTensorView<const void*>() const {
    BasicTensorView<const void*> view;
    view.data = data;
    view.dtype = dtype;
    view.rank = rank;
    for (int d = 0; d < rank; ++d) {
      view.shape[d] = shape[d];
      view.strides[d] = strides[d];
    }
    return view;
  }
};

using ConstTensorView = BasicTensorView<const void*>;
using TensorView = BasicTensorView<void*>;

enum class OpKind : uint8_t {
  kGemm,
  kConv2d,
  kMaxPool2d,
  kAvgPool2d,
  kAdaptiveAvgPool2d,
  kBatchNorm,
  kLayerNorm,
  kUnary,
  kBinary,
  kSoftmax,
  kEmbedding,
  kDropout,
  kCat,
  kConvert,
  kOptimizerStep,
  kFill,
};

// Element-wise functions, with PyTorch's definitions: kGELU is the exact erf form
// (approximate='none'), kGELUTanh the tanh approximation (approximate='tanh').
enum class UnaryOp : uint8_t { kIdentity, kReLU, kGELU, kGELUTanh, kSiLU, kSigmoid, kTanh };

enum class BinaryOp : uint8_t { kAdd, kSub, kMul, kDiv };

// "gemm", "conv2d", ...; "relu", "gelu", ...; "add", "mul", ... (for messages).
absl::string_view OpKindName(OpKind kind);
absl::string_view UnaryOpName(UnaryOp op);
absl::string_view BinaryOpName(BinaryOp op);

// What Backend::Supports is asked: the op family, the dtype of its data operands, and the
// details that a backend may support only in part.
struct OpQuery {
  OpKind kind = OpKind::kGemm;
  DType dtype = DType::kFloat32;
  // kConvert: the output dtype (`dtype` is the input's).
  DType out_dtype = DType::kFloat32;
  // kEmbedding: the dtype of the indices (int64 or int32).
  DType index_dtype = DType::kInt64;
  // kUnary: the function. kGemm: the fused epilogue.
  UnaryOp unary = UnaryOp::kIdentity;
  // kBinary: the function.
  BinaryOp binary = BinaryOp::kAdd;
};

// C = epilogue(op(A) · op(B) + bias), row-major, where op(A) is m×k and op(B) is k×n.
// A is stored m×k (k×m when trans_a) with leading dimension lda; B is stored k×n (n×k when
// trans_b) with leading dimension ldb; C is m×n with leading dimension ldc. A Linear layer
// is A = input [m, in], B = weight [out, in] with trans_b = true. `bias` (n values) is added
// to every row. `epilogue` is kIdentity, kReLU, kGELU or kGELUTanh; a backend says through
// Supports which it fuses. k == 0 gives epilogue(bias) (zeros without a bias).
struct GemmArgs {
  DType dtype = DType::kFloat32;
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  const void* a = nullptr;
  int64_t lda = 0;
  bool trans_a = false;
  const void* b = nullptr;
  int64_t ldb = 0;
  bool trans_b = false;
  const void* bias = nullptr;
  void* c = nullptr;
  int64_t ldc = 0;
  UnaryOp epilogue = UnaryOp::kIdentity;
};

// 2-D cross-correlation as torch.nn.functional.conv2d with zero padding.
// input [N, C, H, W], weight [O, C / groups, KH, KW], bias [O] or null, output
// [N, O, OH, OW]. `padding` is the padding before the first row and column; the padding
// after is whatever the output size implies, so asymmetric padding ('same' with an even
// effective kernel) needs nothing else. Output position (oh, ow) reads input rows
// oh * stride[0] - padding[0] + i * dilation[0] (and likewise columns); rows and columns
// outside the input read zero.
struct Conv2dArgs {
  ConstTensorView input;
  ConstTensorView weight;
  const void* bias = nullptr;
  TensorView output;
  int64_t stride[2] = {1, 1};
  int64_t padding[2] = {0, 0};
  int64_t dilation[2] = {1, 1};
  int64_t groups = 1;
};

// The sizes of one convolution as im2col sees them; `channels` is one group's input
// channels unless a backend says otherwise. Plain data, for host and device code alike.
struct ConvGeometry {
  int64_t channels, height, width;
  int64_t kernel_h, kernel_w, out_h, out_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
};

// max_pool2d over input [N, C, H, W] (or any leading dims flattened into N * C) into
// output [N, C, OH, OW]. Windows start at o * stride - padding, span (kernel - 1) * dilation
// + 1, and see only input positions (padding is -inf). ceil_mode only changes the output
// size, which the caller computes. NaN propagates as in PyTorch.
struct MaxPool2dArgs {
  ConstTensorView input;
  TensorView output;
  int64_t kernel[2] = {1, 1};
  int64_t stride[2] = {1, 1};
  int64_t padding[2] = {0, 0};
  int64_t dilation[2] = {1, 1};
};

// avg_pool2d as ATen computes it: the window [o * stride - padding, ... + kernel) is first
// clipped to the padded input (at most input + padding), giving the count_include_pad
// divisor, then to the input, giving the other divisor. divisor_override (0: none)
// replaces both.
struct AvgPool2dArgs {
  ConstTensorView input;
  TensorView output;
  int64_t kernel[2] = {1, 1};
  int64_t stride[2] = {1, 1};
  int64_t padding[2] = {0, 0};
  bool count_include_pad = true;
  int64_t divisor_override = 0;
};

// adaptive_avg_pool2d: output cell o along a dimension of input size I and output size O
// averages input [floor(o * I / O), ceil((o + 1) * I / O)). Shapes as MaxPool2dArgs.
struct AdaptiveAvgPool2dArgs {
  ConstTensorView input;
  TensorView output;
};

// batch_norm over input [N, C, *] (channels in dimension 1). With use_batch_stats the
// statistics are the batch's over every dimension but 1 (biased variance for normalising);
// otherwise running_mean / running_var are used. weight, bias, running_* are [C] or null,
// in the input's dtype.
// When new_running_mean / new_running_var are set (training with tracked statistics), they
// receive (1 - momentum) * running + momentum * batch, with the batch variance unbiased
// (n / (n - 1)), as PyTorch updates its buffers; `momentum` is already the effective factor
// (1 / num_batches_tracked for momentum=None). The old running values are never written.
struct BatchNormArgs {
  ConstTensorView input;
  TensorView output;
  const void* weight = nullptr;
  const void* bias = nullptr;
  const void* running_mean = nullptr;
  const void* running_var = nullptr;
  bool use_batch_stats = false;
  double momentum = 0.1;
  double eps = 1e-5;
  void* new_running_mean = nullptr;
  void* new_running_var = nullptr;
  // _BatchNorm's batch count, counted where the data lives (no host round trip on a GPU):
  // with both set (training), new_num_batches_tracked receives num_batches_tracked + 1, and
  // with cumulative_average (momentum=None) the averaging factor is 1 / that count instead
  // of `momentum`. One int64 each.
  const int64_t* num_batches_tracked = nullptr;
  int64_t* new_num_batches_tracked = nullptr;
  bool cumulative_average = false;
};

// layer_norm over the trailing `normalized_size` elements of each row of input (biased
// variance); weight and bias hold normalized_size values or are null.
struct LayerNormArgs {
  ConstTensorView input;
  TensorView output;
  int64_t normalized_size = 1;
  const void* weight = nullptr;
  const void* bias = nullptr;
  double eps = 1e-5;
};

// output = op(input), same shape; output may be the input's memory (in place).
struct UnaryArgs {
  UnaryOp op = UnaryOp::kIdentity;
  ConstTensorView input;
  TensorView output;
};

// output = a op b. `a` and `b` have the output's rank and shape with any strides (stride 0
// on a broadcast dimension); output is contiguous and may alias a contiguous `a` or `b`.
struct BinaryArgs {
  BinaryOp op = BinaryOp::kAdd;
  ConstTensorView a;
  ConstTensorView b;
  TensorView output;
};

// softmax (or log_softmax) along dimension `dim` (0 <= dim < rank), computed stably
// (max subtracted first). Same shapes.
struct SoftmaxArgs {
  ConstTensorView input;
  TensorView output;
  int dim = 0;
  bool log = false;
};

// output[i..., :] = weight[indices[i...], :]. weight [V, D]; indices int64 or int32 of any
// shape; output [*indices.shape, D]. An index outside [0, V) is INVALID_ARGUMENT
// ("index out of range in self", PyTorch's text): from the op itself on the CPU, which then
// leaves the output untouched; a device backend may report it from the thread's next
// Synchronize or CopyToHost instead, the output then holding unspecified values.
// padding_idx plays no part in forward.
struct EmbeddingArgs {
  ConstTensorView weight;
  ConstTensorView indices;
  TensorView output;
};

// Training-mode dropout: element i is kept, scaled by 1 / (1 - p), when
// DropoutUniform(seed, i) >= p, and zeroed otherwise (Note [Dropout mask]). p == 1 zeroes
// everything. Same shapes; output may alias the input. Eval-mode dropout is no op at all.
struct DropoutArgs {
  ConstTensorView input;
  TensorView output;
  double p = 0.5;
  uint64_t seed = 0;
};

// Note [Dropout mask]
// Every backend draws the same mask for the same seed, so the backend-ops test can compare
// CUDA against the CPU and a caller can reproduce a training step. The draw is counter
// based: element i (in C order) gets splitmix64(seed + (i + 1) * golden ratio), whose top
// 24 bits make a float in [0, 1). It is not PyTorch's generator: dropout masks never match
// PyTorch's bit for bit, only in distribution.
PARAMD_HOST_DEVICE inline float DropoutUniform(uint64_t seed, uint64_t index) {
  uint64_t z = seed + (index + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * 0x1p-24f;
}

// torch.cat along `dim`: inputs agree with the output on every other dimension; each may
// have any strides. An input with zero elements contributes nothing.
struct CatArgs {
  std::vector<ConstTensorView> inputs;
  int dim = 0;
  TensorView output;
};

// output = input converted to output.dtype as Tensor.to does (round to nearest even for
// float16 / bfloat16). The input may have any strides (a transpose, a broadcast); the
// output is contiguous with the input's shape. Same dtypes make this a strided copy.
struct ConvertArgs {
  ConstTensorView input;
  TensorView output;
};

// One optimizer step over every tensor of a parameter group, as torch.optim's single-tensor
// (foreach=False) implementation computes it, element by element in float32 with PyTorch's
// CPU rounding (Note [Optimizer arithmetic]). Every operand is float32 and contiguous with
// `numel` elements. The step is out of place: `param` and the `state_in` tensors are read,
// `param_out` and the `state_out` tensors written (an output may be its own input's memory).
//
// SGD: state[0] is the momentum buffer (unused when momentum == 0). `first_step` means the
//   buffer does not exist yet (torch's `buf is None`): it is set to the gradient, and
//   state_in[0] is not read.
// Adam (and AdamW, `decoupled_weight_decay`): state[0] exp_avg, state[1] exp_avg_sq,
//   state[2] max_exp_avg_sq (amsgrad only). The per-tensor `step_size` (lr / (1 - beta1^t))
//   and `bias_correction2_sqrt` ((1 - beta2^t)^0.5) are computed by the caller in double,
//   as torch does in Python.
enum class OptimizerAlgorithm : uint8_t { kSgd, kAdam };

struct OptimizerTensor {
  int64_t numel = 0;
  const void* param = nullptr;
  const void* grad = nullptr;
  void* param_out = nullptr;
  const void* state_in[3] = {};
  void* state_out[3] = {};
  bool first_step = false;
  double step_size = 0;
  double bias_correction2_sqrt = 1;
};

struct OptimizerStepArgs {
  OptimizerAlgorithm algorithm = OptimizerAlgorithm::kSgd;
  DType dtype = DType::kFloat32;
  std::vector<OptimizerTensor> tensors;
  double lr = 0;
  double weight_decay = 0;
  bool maximize = false;
  // SGD.
  double momentum = 0;
  double dampening = 0;
  bool nesterov = false;
  // Adam.
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  bool amsgrad = false;
  bool decoupled_weight_decay = false;
};

// Note [Optimizer arithmetic]
// torch.optim's single-tensor step is a sequence of ATen ops, each rounding to float32, with
// its Python-float hyperparameters rounded to float32 as the ops' scalars (1 - dampening,
// -lr, 1 - beta1, ... computed in double first, as Python does). Measured against torch
// 2.15's CPU kernels, `add(other, alpha)`, `lerp` and `addcmul` round once (a fused
// multiply-add: x + alpha * y, start + w * (end - start), x + (v * t1) * t2), while
// `addcdiv` rounds the quotient and the sum apart (x + (v * t1) / t2). The kernels use the
// same order and fusion; the only known difference is torch's AVX-512 sqrt, which is off by
// one unit in the last place for about 0.6% of inputs, where ours is correctly rounded.
// Every element of `output` (contiguous, any dtype) = `value` converted as Tensor.to
// converts a Python number (CastElement<T>(double)). A device backend takes the value as a
// kernel argument: a Python number in a program costs no host-to-device copy and no wait.
struct FillArgs {
  TensorView output;
  double value = 0;
};

// The bytes of one element of `dtype` holding `value` (FillArgs' conversion), in the low
// ElementSize(dtype) bytes, little-endian as in memory.
uint64_t FillBits(DType dtype, double value);

}  // namespace paramd::kernels
