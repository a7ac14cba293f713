// Every op of kernels/ops.h on every backend present, against a naive reference written
// here (double precision loops) and, for backends other than the CPU, against the CPU
// backend, each with its own tolerance. A backend that does not have the op (Supports)
// or is absent (no GPU) skips the case, as ggml's test-backend-ops does.
#include <cctype>
#include <cmath>
#include <functional>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "kernels/backend.h"
#include "tests/unit/kernels/ops_test_util.h"

namespace paramd::kernels {
namespace {

using testing::AllClose;
using testing::DeviceTensor;
using testing::HostTensor;
using testing::Random;
using testing::Shape;
using testing::Values;

using Inputs = std::vector<std::unique_ptr<DeviceTensor>>;
using Outputs = std::vector<std::unique_ptr<DeviceTensor>>;
using Expected = std::vector<std::vector<double>>;

struct OpCase {
  std::string name;
  OpQuery query;
  double atol = 1e-5;
  double rtol = 1e-5;
  std::vector<HostTensor> inputs;
  std::vector<std::pair<DType, Shape>> outputs;
  std::function<absl::Status(Backend&, const Inputs&, const Outputs&)> run;
  std::function<Expected(const std::vector<HostTensor>&)> reference;
};

double RefUnary(UnaryOp op, double x) {
  switch (op) {
    case UnaryOp::kIdentity:
      return x;
    case UnaryOp::kReLU:
      return x < 0 ? 0 : x;
    case UnaryOp::kGELU:
      return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case UnaryOp::kGELUTanh:
      return 0.5 * x * (1 + std::tanh(std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case UnaryOp::kSiLU:
      return x / (1 + std::exp(-x));
    case UnaryOp::kSigmoid:
      return 1 / (1 + std::exp(-x));
    case UnaryOp::kTanh:
      return std::tanh(x);
  }
  return x;
}

// Rounds expected values to the output dtype, as the kernel's final store does.
std::vector<double> Rounded(DType dtype, std::vector<double> values) {
  for (double& v : values) v = testing::RoundTo(dtype, v);
  return values;
}

// Tolerances by dtype: float32 math differs from the double reference by accumulated
// rounding; 16-bit outputs by one rounding of the result.
void SetTolerance(OpCase& c, DType dtype, double f32_atol = 1e-5) {
  if (dtype == DType::kFloat32) {
    c.atol = f32_atol;
    c.rtol = 1e-5;
  } else if (dtype == DType::kFloat16) {
    c.atol = 2e-3;
    c.rtol = 2e-3;
  } else {
    c.atol = 1.6e-2;
    c.rtol = 1.6e-2;
  }
}

// `ldc` > n writes rows longer than the product's (ldc 0: n): the columns past n must keep
// the poison (NaN) the output starts with.
OpCase GemmCase(std::string name, DType dtype, int64_t m, int64_t n, int64_t k, bool trans_a,
                bool trans_b, bool bias, UnaryOp epilogue, uint32_t seed, int64_t ldc = 0) {
  if (ldc == 0) ldc = n;
  OpCase c;
  c.name = std::move(name);
  c.query = {.kind = OpKind::kGemm, .dtype = dtype, .unary = epilogue};
  SetTolerance(c, dtype, 1e-4);
  c.inputs = {Random(dtype, trans_a ? Shape{k, m} : Shape{m, k}, seed),
              Random(dtype, trans_b ? Shape{n, k} : Shape{k, n}, seed + 1),
              Random(dtype, {bias ? n : 0}, seed + 2)};
  c.outputs = {{dtype, {m, ldc}}};
  c.run = [=](Backend& b, const Inputs& in, const Outputs& out) {
    return b.Gemm({.dtype = dtype,
                   .m = m,
                   .n = n,
                   .k = k,
                   .a = in[0]->data(),
                   .lda = trans_a ? m : k,
                   .trans_a = trans_a,
                   .b = in[1]->data(),
                   .ldb = trans_b ? k : n,
                   .trans_b = trans_b,
                   .bias = bias ? in[2]->data() : nullptr,
                   .c = out[0]->data(),
                   .ldc = ldc,
                   .epilogue = epilogue});
  };
  c.reference = [=](const std::vector<HostTensor>& in) {
    std::vector<double> y(static_cast<size_t>(m * ldc), std::nan(""));
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        double s = bias ? in[2].values[j] : 0.0;
        for (int64_t p = 0; p < k; ++p) {
          const double a = trans_a ? in[0].values[p * m + i] : in[0].values[i * k + p];
          const double bv = trans_b ? in[1].values[j * k + p] : in[1].values[p * n + j];
          s += a * bv;
        }
        y[i * ldc + j] = RefUnary(epilogue, s);
      }
    }
    return Expected{Rounded(dtype, y)};
  };
  return c;
}

struct ConvSpec {
  int64_t n, c, h, w, o, kh, kw;
  int64_t stride[2] = {1, 1};
  int64_t pad_begin[2] = {0, 0};
  int64_t pad_end[2] = {0, 0};
  int64_t dilation[2] = {1, 1};
  int64_t groups = 1;
  bool bias = true;
};

OpCase ConvCase(std::string name, DType dtype, ConvSpec s, uint32_t seed) {
  OpCase c;
  c.name = std::move(name);
  c.query = {.kind = OpKind::kConv2d, .dtype = dtype};
  SetTolerance(c, dtype, 1e-4);
  const int64_t oh =
      (s.h + s.pad_begin[0] + s.pad_end[0] - s.dilation[0] * (s.kh - 1) - 1) / s.stride[0] + 1;
  const int64_t ow =
      (s.w + s.pad_begin[1] + s.pad_end[1] - s.dilation[1] * (s.kw - 1) - 1) / s.stride[1] + 1;
  const int64_t cg = s.c / s.groups;
  c.inputs = {Random(dtype, {s.n, s.c, s.h, s.w}, seed),
              Random(dtype, {s.o, cg, s.kh, s.kw}, seed + 1),
              Random(dtype, {s.bias ? s.o : 0}, seed + 2)};
  c.outputs = {{dtype, {s.n, s.o, oh, ow}}};
  c.run = [=](Backend& b, const Inputs& in, const Outputs& out) {
    Conv2dArgs args{.input = in[0]->view(),
                    .weight = in[1]->view(),
                    .bias = s.bias ? in[2]->data() : nullptr,
                    .output = out[0]->view(),
                    .groups = s.groups};
    for (int d = 0; d < 2; ++d) {
      args.stride[d] = s.stride[d];
      args.padding[d] = s.pad_begin[d];
      args.dilation[d] = s.dilation[d];
    }
    return b.Conv2d(args);
  };
  c.reference = [=](const std::vector<HostTensor>& in) {
    const int64_t og = s.o / s.groups;
    std::vector<double> y(static_cast<size_t>(s.n * s.o * oh * ow));
    for (int64_t n = 0; n < s.n; ++n)
      for (int64_t o = 0; o < s.o; ++o)
        for (int64_t i = 0; i < oh; ++i)
          for (int64_t j = 0; j < ow; ++j) {
            const int64_t g = o / og;
            double sum = s.bias ? in[2].values[o] : 0.0;
            for (int64_t ci = 0; ci < cg; ++ci)
              for (int64_t p = 0; p < s.kh; ++p)
                for (int64_t q = 0; q < s.kw; ++q) {
                  const int64_t ih = i * s.stride[0] - s.pad_begin[0] + p * s.dilation[0];
                  const int64_t iw = j * s.stride[1] - s.pad_begin[1] + q * s.dilation[1];
                  if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
                  const int64_t channel = g * cg + ci;
                  sum += in[0].values[((n * s.c + channel) * s.h + ih) * s.w + iw] *
                         in[1].values[((o * cg + ci) * s.kh + p) * s.kw + q];
                }
            y[((n * s.o + o) * oh + i) * ow + j] = sum;
          }
    return Expected{Rounded(dtype, y)};
  };
  return c;
}

struct PoolSpec {
  int64_t planes, h, w, oh, ow;
  int64_t kernel[2], stride[2], padding[2];
  int64_t dilation[2] = {1, 1};
  bool count_include_pad = true;
  int64_t divisor_override = 0;
};

OpCase MaxPoolCase(std::string name, DType dtype, PoolSpec s, uint32_t seed) {
  OpCase c;
  c.name = std::move(name);
  c.query = {.kind = OpKind::kMaxPool2d, .dtype = dtype};
  SetTolerance(c, dtype);
  c.inputs = {Random(dtype, {1, s.planes, s.h, s.w}, seed)};
  c.outputs = {{dtype, {1, s.planes, s.oh, s.ow}}};
  c.run = [=](Backend& b, const Inputs& in, const Outputs& out) {
    MaxPool2dArgs args{.input = in[0]->view(), .output = out[0]->view()};
    for (int d = 0; d < 2; ++d) {
      args.kernel[d] = s.kernel[d];
      args.stride[d] = s.stride[d];
      args.padding[d] = s.padding[d];
      args.dilation[d] = s.dilation[d];
    }
    return b.MaxPool2d(args);
  };
  c.reference = [=](const std::vector<HostTensor>& in) {
    std::vector<double> y;
    for (int64_t p = 0; p < s.planes; ++p)
      for (int64_t i = 0; i < s.oh; ++i)
        for (int64_t j = 0; j < s.ow; ++j) {
          double best = -INFINITY;
          for (int64_t a = 0; a < s.kernel[0]; ++a)
            for (int64_t b = 0; b < s.kernel[1]; ++b) {
              const int64_t ih = i * s.stride[0] - s.padding[0] + a * s.dilation[0];
              const int64_t iw = j * s.stride[1] - s.padding[1] + b * s.dilation[1];
              if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
              best = std::max(best, in[0].values[(p * s.h + ih) * s.w + iw]);
            }
          y.push_back(best);
        }
    return Expected{y};
  };
  return c;
}

OpCase AvgPoolCase(std::string name, DType dtype, PoolSpec s, uint32_t seed) {
  OpCase c;
  c.name = std::move(name);
  c.query = {.kind = OpKind::kAvgPool2d, .dtype = dtype};
  SetTolerance(c, dtype);
  c.inputs = {Random(dtype, {s.planes, s.h, s.w}, seed)};
  c.outputs = {{dtype, {s.planes, s.oh, s.ow}}};
  c.run = [=](Backend& b, const Inputs& in, const Outputs& out) {
    AvgPool2dArgs args{.input = in[0]->view(),
                       .output = out[0]->view(),
                       .count_include_pad = s.count_include_pad,
                       .divisor_override = s.divisor_override};
    for (int d = 0; d < 2; ++d) {
      args.kernel[d] = s.kernel[d];
      args.stride[d] = s.stride[d];
      args.padding[d] = s.padding[d];
    }
    return b.AvgPool2d(args);
  };
  c.reference = [=](const std::vector<HostTensor>& in) {
    std::vector<double> y;
    for (int64_t p = 0; p < s.planes; ++p)
      for (int64_t i = 0; i < s.oh; ++i)
        for (int64_t j = 0; j < s.ow; ++j) {
          double sum = 0;
          int64_t inside = 0, padded = 0;
          for (int64_t a = 0; a < s.kernel[0]; ++a)
            for (int64_t b = 0; b < s.kernel[1]; ++b) {
              const int64_t ih = i * s.stride[0] - s.padding[0] + a;
              const int64_t iw = j * s.stride[1] - s.padding[1] + b;
              // Positions past the far padding (ceil_mode's overhang) count for nothing.
              if (ih >= s.h + s.padding[0] || iw >= s.w + s.padding[1]) continue;
              ++padded;
              if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
              ++inside;
              sum += in[0].values[(p * s.h + ih) * s.w + iw];
            }
          const double divisor = s.divisor_override    ? s.divisor_override
                                 : s.count_include_pad ? padded
                                                       : inside;
          y.push_back(sum / divisor);
        }
    return Expected{y};
  };
  return c;
}

OpCase AdaptiveCase(std::string name, DType dtype, int64_t h, int64_t w, int64_t oh, int64_t ow) {
  OpCase c;
  c.name = std::move(name);
  c.query = {.kind = OpKind::kAdaptiveAvgPool2d, .dtype = dtype};
  SetTolerance(c, dtype);
  c.inputs = {Random(dtype, {2, 3, h, w}, 7)};
  c.outputs = {{dtype, {2, 3, oh, ow}}};
  c.run = [](Backend& b, const Inputs& in, const Outputs& out) {
    return b.AdaptiveAvgPool2d({.input = in[0]->view(), .output = out[0]->view()});
  };
  c.reference = [=](const std::vector<HostTensor>& in) {
    std::vector<double> y;
    for (int64_t p = 0; p < 6; ++p)
      for (int64_t i = 0; i < oh; ++i)
        for (int64_t j = 0; j < ow; ++j) {
          const int64_t h0 = static_cast<int64_t>(std::floor(double(i * h) / oh));
          const int64_t h1 = static_cast<int64_t>(std::ceil(double((i + 1) * h) / oh));
          const int64_t w0 = static_cast<int64_t>(std::floor(double(j * w) / ow));
          const int64_t w1 = static_cast<int64_t>(std::ceil(double((j + 1) * w) / ow));
          double sum = 0;
          for (int64_t a = h0; a < h1; ++a)
            for (int64_t b = w0; b < w1; ++b) sum += in[0].values[(p * h + a) * w + b];
          y.push_back(sum / double((h1 - h0) * (w1 - w0)));
        }
    return Expected{y};
  };
  return c;
}

OpCase BatchNormCase(std::string name, DType dtype, Shape shape, bool train, bool affine) {
  OpCase c;
  c.name = std::move(name);
  c.query = {.kind = OpKind::kBatchNorm, .dtype = dtype};
  SetTolerance(c, dtype, 1e-4);
  const int64_t channels = shape[1];
  const double momentum = 0.1, eps = 1e-5;
  c.inputs = {Random(dtype, shape, 11, -2, 3), Random(dtype, {channels}, 12),
              Random(dtype, {channels}, 13), Random(dtype, {channels}, 14),
              Random(dtype, {channels}, 15, 0.5, 2.0)};
  c.outputs = {{dtype, shape}, {dtype, {channels}}, {dtype, {channels}}};
  c.run = [=](Backend& b, const Inputs& in, const Outputs& out) {
    return b.BatchNorm({.input = in[0]->view(),
                        .output = out[0]->view(),
                        .weight = affine ? in[1]->data() : nullptr,
                        .bias = affine ? in[2]->data() : nullptr,
                        .running_mean = in[3]->data(),
                        .running_var = in[4]->data(),
                        .use_batch_stats = train,
                        .momentum = momentum,
                        .eps = eps,
                        .new_running_mean = train ? out[1]->data() : nullptr,
                        .new_running_var = train ? out[2]->data() : nullptr});
  };
  c.reference = [=](const std::vector<HostTensor>& in) {
    const int64_t batch = shape[0];
    int64_t inner = 1;
    for (size_t d = 2; d < shape.size(); ++d) inner *= shape[d];
    std::vector<double> y(in[0].values.size()), rm(channels), rv(channels);
    for (int64_t ch = 0; ch < channels; ++ch) {
      double mean = in[3].values[ch], var = in[4].values[ch];
      const double count = double(batch * inner);
      if (train) {
        double sum = 0, sq = 0;
        for (int64_t n = 0; n < batch; ++n)
          for (int64_t i = 0; i < inner; ++i) sum += in[0].values[(n * channels + ch) * inner + i];
        mean = sum / count;
        for (int64_t n = 0; n < batch; ++n)
          for (int64_t i = 0; i < inner; ++i) {
            const double d = in[0].values[(n * channels + ch) * inner + i] - mean;
            sq += d * d;
          }
        var = sq / count;
        rm[ch] = (1 - momentum) * in[3].values[ch] + momentum * mean;
        rv[ch] = (1 - momentum) * in[4].values[ch] + momentum * sq / (count - 1);
      }
      const double w = affine ? in[1].values[ch] : 1.0, bias = affine ? in[2].values[ch] : 0.0;
      for (int64_t n = 0; n < batch; ++n)
        for (int64_t i = 0; i < inner; ++i) {
          const int64_t at = (n * channels + ch) * inner + i;
          y[at] = (in[0].values[at] - mean) / std::sqrt(var + eps) * w + bias;
        }
    }
    if (!train) {
      // Untouched outputs: compare whatever the backend left with itself.
      return Expected{Rounded(dtype, y)};
    }
    return Expected{Rounded(dtype, y), Rounded(dtype, rm), Rounded(dtype, rv)};
  };
  return c;
}

OpCase LayerNormCase(std::string name, DType dtype, int64_t rows, int64_t size, bool affine) {
  OpCase c;
  c.name = std::move(name);
  c.query = {.kind = OpKind::kLayerNorm, .dtype = dtype};
  SetTolerance(c, dtype, 1e-4);
  c.inputs = {Random(dtype, {rows, size}, 21, -3, 2), Random(dtype, {size}, 22),
              Random(dtype, {size}, 23)};
  c.outputs = {{dtype, {rows, size}}};
  c.run = [=](Backend& b, const Inputs& in, const Outputs& out) {
    return b.LayerNorm({.input = in[0]->view(),
                        .output = out[0]->view(),
                        .normalized_size = size,
                        .weight = affine ? in[1]->data() : nullptr,
                        .bias = affine ? in[2]->data() : nullptr,
                        .eps = 1e-5});
  };
  c.reference = [=](const std::vector<HostTensor>& in) {
    std::vector<double> y(in[0].values.size());
    for (int64_t r = 0; r < rows; ++r) {
      double mean = 0, var = 0;
      for (int64_t i = 0; i < size; ++i) mean += in[0].values[r * size + i];
      mean /= size;
      for (int64_t i = 0; i < size; ++i) {
        const double d = in[0].values[r * size + i] - mean;
        var += d * d;
      }
      var /= size;
      for (int64_t i = 0; i < size; ++i) {
        double v = (in[0].values[r * size + i] - mean) / std::sqrt(var + 1e-5);
        if (affine) v = v * in[1].values[i] + in[2].values[i];
        y[r * size + i] = v;
      }
    }
    return Expected{Rounded(dtype, y)};
  };
  return c;
}

OpCase UnaryCase(UnaryOp op, DType dtype) {
  OpCase c;
  c.name = absl::StrCat("unary_", UnaryOpName(op), "_", DTypeName(dtype));
  for (char& ch : c.name) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  c.query = {.kind = OpKind::kUnary, .dtype = dtype, .unary = op};
  SetTolerance(c, dtype, 1e-6);
  c.inputs = {Random(dtype, {3, 7, 11}, 31, -6, 6)};
  c.outputs = {{dtype, {3, 7, 11}}};
  c.run = [=](Backend& b, const Inputs& in, const Outputs& out) {
    return b.Unary({.op = op, .input = in[0]->view(), .output = out[0]->view()});
  };
  c.reference = [=](const std::vector<HostTensor>& in) {
    std::vector<double> y;
    for (double v : in[0].values) y.push_back(RefUnary(op, v));
    return Expected{Rounded(dtype, y)};
  };
  return c;
}

// `a` and `b` are stored compactly in their own shapes and broadcast to `out` by stride 0.
OpCase BinaryCase(std::string name, BinaryOp op, DType dtype, Shape a_shape, Shape b_shape,
                  Shape out_shape) {
  OpCase c;
  c.name = std::move(name);
  c.query = {.kind = OpKind::kBinary, .dtype = dtype, .binary = op};
  SetTolerance(c, dtype, 1e-6);
  c.inputs = {Random(dtype, a_shape, 41), Random(dtype, b_shape, 42, 0.5, 2.0)};
  c.outputs = {{dtype, out_shape}};
  auto expand = [out_shape](const Shape& shape) {
    Shape strides = testing::Strides(shape);
    Shape expanded(out_shape.size(), 0);
    const size_t lead = out_shape.size() - shape.size();
    for (size_t d = 0; d < shape.size(); ++d) {
      expanded[lead + d] = shape[d] == 1 ? 0 : strides[d];
    }
    return expanded;
  };
  c.run = [=](Backend& b, const Inputs& in, const Outputs& out) {
    return b.Binary({.op = op,
                     .a = in[0]->ViewOf(out_shape, expand(a_shape)),
                     .b = in[1]->ViewOf(out_shape, expand(b_shape)),
                     .output = out[0]->view()});
  };
  c.reference = [=](const std::vector<HostTensor>& in) {
    const Shape sa = expand(a_shape), sb = expand(b_shape);
    const int64_t n = testing::Numel(out_shape);
    std::vector<double> y(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      int64_t rest = i, oa = 0, ob = 0;
      for (int d = static_cast<int>(out_shape.size()) - 1; d >= 0; --d) {
        const int64_t index = rest % out_shape[d];
        rest /= out_shape[d];
        oa += index * sa[d];
        ob += index * sb[d];
      }
      const double x = in[0].values[oa], z = in[1].values[ob];
      y[i] = op == BinaryOp::kAdd   ? x + z
             : op == BinaryOp::kSub ? x - z
             : op == BinaryOp::kMul ? x * z
                                    : x / z;
    }
    return Expected{Rounded(dtype, y)};
  };
  return c;
}

OpCase SoftmaxCase(std::string name, DType dtype, Shape shape, int dim, bool log) {
  OpCase c;
  c.name = std::move(name);
  c.query = {.kind = OpKind::kSoftmax, .dtype = dtype};
  SetTolerance(c, dtype, 1e-6);
  c.inputs = {Random(dtype, shape, 51, -5, 5)};
  c.outputs = {{dtype, shape}};
  c.run = [=](Backend& b, const Inputs& in, const Outputs& out) {
    return b.Softmax({.input = in[0]->view(), .output = out[0]->view(), .dim = dim, .log = log});
  };
  c.reference = [=](const std::vector<HostTensor>& in) {
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < dim; ++d) outer *= shape[d];
    for (size_t d = dim + 1; d < shape.size(); ++d) inner *= shape[d];
    const int64_t size = shape[dim];
    std::vector<double> y(in[0].values.size());
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t i = 0; i < inner; ++i) {
        double sum = 0;
        for (int64_t k = 0; k < size; ++k)
          sum += std::exp(in[0].values[(o * size + k) * inner + i]);
        for (int64_t k = 0; k < size; ++k) {
          const double v = in[0].values[(o * size + k) * inner + i];
          y[(o * size + k) * inner + i] = log ? v - std::log(sum) : std::exp(v) / sum;
        }
      }
    return Expected{Rounded(dtype, y)};
  };
  return c;
}

OpCase EmbeddingCase(std::string name, DType index_dtype) {
  OpCase c;
  c.name = std::move(name);
  c.query = {.kind = OpKind::kEmbedding, .dtype = DType::kFloat32, .index_dtype = index_dtype};
  c.inputs = {Random(DType::kFloat32, {10, 6}, 61),
              Values(index_dtype, {2, 3}, {0, 9, 3, 3, 7, 1})};
  c.outputs = {{DType::kFloat32, {2, 3, 6}}};
  c.run = [](Backend& b, const Inputs& in, const Outputs& out) {
    return b.Embedding(
        {.weight = in[0]->view(), .indices = in[1]->view(), .output = out[0]->view()});
  };
  c.reference = [](const std::vector<HostTensor>& in) {
    std::vector<double> y;
    for (double index : in[1].values) {
      for (int64_t j = 0; j < 6; ++j)
        y.push_back(in[0].values[static_cast<int64_t>(index) * 6 + j]);
    }
    return Expected{y};
  };
  return c;
}

OpCase DropoutCase(DType dtype, double p) {
  OpCase c;
  c.name = absl::StrCat("dropout_p", static_cast<int>(p * 100), "_", DTypeName(dtype));
  c.query = {.kind = OpKind::kDropout, .dtype = dtype};
  SetTolerance(c, dtype, 1e-6);
  c.inputs = {Random(dtype, {40, 50}, 71)};
  c.outputs = {{dtype, {40, 50}}};
  c.run = [=](Backend& b, const Inputs& in, const Outputs& out) {
    return b.Dropout({.input = in[0]->view(), .output = out[0]->view(), .p = p, .seed = 1234});
  };
  c.reference = [=](const std::vector<HostTensor>& in) {
    std::vector<double> y;
    for (size_t i = 0; i < in[0].values.size(); ++i) {
      const bool keep = p < 1 && DropoutUniform(1234, i) >= p;
      y.push_back(keep ? in[0].values[i] * static_cast<float>(1.0 / (1.0 - p)) : 0.0);
    }
    return Expected{Rounded(dtype, y)};
  };
  return c;
}

OpCase CatCase(std::string name, DType dtype, std::vector<Shape> shapes, int dim, Shape out_shape) {
  OpCase c;
  c.name = std::move(name);
  c.query = {.kind = OpKind::kCat, .dtype = dtype};
  for (size_t i = 0; i < shapes.size(); ++i) c.inputs.push_back(Random(dtype, shapes[i], 81 + i));
  c.outputs = {{dtype, out_shape}};
  c.run = [=](Backend& b, const Inputs& in, const Outputs& out) {
    CatArgs args{.dim = dim, .output = out[0]->view()};
    for (const auto& t : in) args.inputs.push_back(t->view());
    return b.Cat(args);
  };
  c.reference = [=](const std::vector<HostTensor>& in) {
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < dim; ++d) outer *= out_shape[d];
    for (size_t d = dim + 1; d < out_shape.size(); ++d) inner *= out_shape[d];
    std::vector<double> y;
    for (int64_t o = 0; o < outer; ++o) {
      for (const HostTensor& t : in) {
        const int64_t block = t.shape[dim] * inner;
        for (int64_t i = 0; i < block; ++i) y.push_back(t.values[o * block + i]);
      }
    }
    return Expected{y};
  };
  return c;
}

// One element converted as Tensor.to converts it (CastElement in base/element.h): float to
// integer truncates toward zero, NaN gives 0, out-of-range values saturate to int64 and then
// narrow as an integer cast does; anything to bool is `!= 0` (NaN is true).
double CastReference(DType to, double v) {
  if (IsFloatingPoint(to)) return testing::RoundTo(to, v);
  if (to == DType::kBool) return v != 0 ? 1 : 0;
  if (std::isnan(v)) return 0;
  constexpr double kMax = 9223372036854775807.0;
  const double clamped = std::fmax(-kMax - 1.0, std::fmin(std::trunc(v), kMax));
  const int64_t whole = clamped >= kMax ? INT64_MAX : static_cast<int64_t>(clamped);
  switch (to) {
    case DType::kInt32:
      return static_cast<int32_t>(whole);
    case DType::kInt16:
      return static_cast<int16_t>(whole);
    case DType::kInt8:
      return static_cast<int8_t>(whole);
    case DType::kUInt8:
      return static_cast<uint8_t>(whole);
    default:
      return static_cast<double>(whole);
  }
}

// Converts a [rows, cols] tensor, optionally read transposed (a strided view).
OpCase ConvertCase(std::string name, DType from, DType to, bool transposed) {
  OpCase c;
  c.name = std::move(name);
  c.query = {.kind = OpKind::kConvert, .dtype = from, .out_dtype = to};
  c.atol = c.rtol = 0;
  const int64_t rows = 5, cols = 7;
  c.inputs = {Random(from, {rows, cols}, 91, -300, 300)};
  const Shape out_shape = transposed ? Shape{cols, rows} : Shape{rows, cols};
  c.outputs = {{to, out_shape}};
  c.run = [=](Backend& b, const Inputs& in, const Outputs& out) {
    const TensorView input = transposed ? in[0]->ViewOf({cols, rows}, {1, cols}) : in[0]->view();
    return b.Convert({.input = input, .output = out[0]->view()});
  };
  c.reference = [=](const std::vector<HostTensor>& in) {
    std::vector<double> y;
    for (int64_t i = 0; i < out_shape[0]; ++i)
      for (int64_t j = 0; j < out_shape[1]; ++j) {
        const double v = transposed ? in[0].values[j * cols + i] : in[0].values[i * cols + j];
        y.push_back(CastReference(to, v));
      }
    return Expected{y};
  };
  return c;
}

// `c` with a NaN at position `index` of input `input`: every backend must carry it to the
// outputs that depend on it (PyTorch's relu keeps NaN; a max(x, 0) would not).
OpCase WithNaN(OpCase c, size_t input, size_t index) {
  c.name += "_nan";
  c.inputs[input].values[index] = std::nan("");
  return c;
}

// A Linear product in `dtype` whose bias is a view one element into its buffer (2-byte
// aligned in 16 bits), as a bias sliced out of a larger tensor is.
OpCase GemmOffsetBiasCase(std::string name, DType dtype, int64_t m, int64_t n, int64_t k,
                          UnaryOp epilogue) {
  OpCase c = GemmCase(std::move(name), dtype, m, n, k, false, true, true, epilogue, 17);
  c.inputs[2] = Random(dtype, {n + 1}, 19);
  auto run = c.run;
  c.run = [=](Backend& b, const Inputs& in, const Outputs& out) {
    return b.Gemm({.dtype = dtype, .m = m, .n = n, .k = k, .a = in[0]->data(), .lda = k,
                   .trans_a = false, .b = in[1]->data(), .ldb = k, .trans_b = true,
                   .bias = static_cast<const char*>(in[2]->data()) + ElementSize(dtype),
                   .c = out[0]->data(), .ldc = n, .epilogue = epilogue});
  };
  auto reference = c.reference;
  c.reference = [=](const std::vector<HostTensor>& in) {
    std::vector<HostTensor> shifted = in;
    shifted[2].values.erase(shifted[2].values.begin());
    return reference(shifted);
  };
  return c;
}

// Every element of a poisoned output = `value`, converted as Tensor.to converts a number.
OpCase FillCase(DType dtype, double value) {
  OpCase c;
  c.name = absl::StrCat("fill_", DTypeName(dtype));
  c.query = {.kind = OpKind::kFill, .dtype = dtype};
  c.atol = c.rtol = 0;
  c.outputs = {{dtype, {3, 67}}};
  c.run = [=](Backend& b, const Inputs&, const Outputs& out) {
    return b.Fill({.output = out[0]->view(), .value = value});
  };
  c.reference = [=](const std::vector<HostTensor>&) {
    const double v = IsFloatingPoint(dtype) ? testing::RoundTo(dtype, value) : std::trunc(value);
    return Expected{std::vector<double>(3 * 67, v)};
  };
  return c;
}

// ConvertCase over NaN, infinities, signed zeros, a subnormal, values past int8's range and
// fractions, cycled (and scaled) through the 5 x 7 input, as stored in `from`.
OpCase ConvertSpecialsCase(std::string name, DType from, DType to, bool transposed) {
  OpCase c = ConvertCase(std::move(name), from, to, transposed);
  const double specials[] = {std::nan(""), INFINITY, -INFINITY, 0.0, -0.0, 1e-40, 0.75,
                             -0.75,        127.9,    -128.5,    200, -300, 1,    -1};
  std::vector<double> values;
  for (int i = 0; i < 35; ++i) values.push_back(specials[i % 14] * (1 + i / 14));
  c.inputs = {testing::Values(from, {5, 7}, values)};
  return c;
}

// `c` run with its output over input 0's own memory (out == in, which element-wise ops
// allow): `run` gets input 0's view as the output; input 0 is then copied to the output
// that is compared.
OpCase InPlaceCase(OpCase c,
                   std::function<absl::Status(Backend&, const Inputs&, const TensorView&)> run) {
  c.name += "_in_place";
  c.run = [run](Backend& b, const Inputs& in, const Outputs& out) -> absl::Status {
    absl::Status status = run(b, in, in[0]->view());
    if (!status.ok()) return status;
    return b.Convert({.input = in[0]->view(), .output = out[0]->view()});
  };
  return c;
}

const std::vector<OpCase>& AllCases() {
  static const auto* const cases = [] {
    auto* list = new std::vector<OpCase>;
    const DType f32 = DType::kFloat32, f16 = DType::kFloat16, bf16 = DType::kBFloat16;
    // GEMM: Linear's layout (B transposed), the others, epilogues, 16-bit, k = 0.
    list->push_back(
        GemmCase("gemm_linear", f32, 5, 7, 9, false, true, true, UnaryOp::kIdentity, 1));
    list->push_back(
        GemmCase("gemm_nn_nobias", f32, 6, 4, 3, false, false, false, UnaryOp::kIdentity, 2));
    list->push_back(GemmCase("gemm_tn", f32, 6, 4, 3, true, false, true, UnaryOp::kIdentity, 3));
    list->push_back(GemmCase("gemm_tt", f32, 6, 4, 3, true, true, false, UnaryOp::kIdentity, 3));
    list->push_back(GemmCase("gemm_relu", f32, 8, 16, 32, false, true, true, UnaryOp::kReLU, 4));
    list->push_back(GemmCase("gemm_gelu", f32, 8, 16, 32, false, true, true, UnaryOp::kGELU, 5));
    list->push_back(
        GemmCase("gemm_gelu_tanh", f32, 8, 16, 32, false, true, true, UnaryOp::kGELUTanh, 6));
    list->push_back(
        GemmCase("gemm_large", f32, 64, 128, 256, false, true, true, UnaryOp::kIdentity, 7));
    list->push_back(GemmCase("gemm_k0", f32, 3, 4, 0, false, true, true, UnaryOp::kReLU, 8));
    // Above the CPU backend's oneDNN threshold (2^22 multiply-adds).
    list->push_back(
        GemmCase("gemm_onednn_linear", f32, 64, 256, 512, false, true, true, UnaryOp::kReLU, 11));
    list->push_back(
        GemmCase("gemm_onednn_tn", f32, 128, 128, 512, true, false, false, UnaryOp::kIdentity, 12));
    list->push_back(
        GemmCase("gemm_onednn_bf16", bf16, 64, 256, 512, false, true, true, UnaryOp::kGELU, 13));
    // Small batches against wide layers: oneDNN runs the product transposed (Note [Skinny
    // products run transposed] in kernels/cpu/onednn_matmul.cc), for every transpose.
    list->push_back(GemmCase("gemm_onednn_skinny_linear", f32, 16, 512, 512, false, true, true,
                             UnaryOp::kReLU, 14));
    list->push_back(GemmCase("gemm_onednn_skinny_nn", f32, 8, 1024, 512, false, false, false,
                             UnaryOp::kIdentity, 15));
    list->push_back(GemmCase("gemm_onednn_skinny_tt", f32, 32, 1024, 128, true, true, true,
                             UnaryOp::kIdentity, 16));
    list->push_back(GemmCase("gemm_onednn_skinny_tn", f32, 64, 1024, 64, true, false, true,
                             UnaryOp::kGELU, 17));
    list->push_back(GemmCase("gemm_onednn_skinny_bf16", bf16, 16, 512, 512, false, true, true,
                             UnaryOp::kIdentity, 18));
    list->push_back(GemmCase("gemm_f16", f16, 8, 16, 32, false, true, true, UnaryOp::kIdentity, 9));
    list->push_back(GemmCase("gemm_bf16", bf16, 8, 16, 32, false, true, true, UnaryOp::kReLU, 10));
    // Convolution: the seed CNN's layer, strides/padding/dilation, groups, 1x1, 'same'.
    list->push_back(ConvCase("conv_seed", f32,
                             {.n = 2, .c = 1, .h = 12, .w = 12, .o = 4, .kh = 5, .kw = 5}, 1));
    list->push_back(ConvCase("conv_stride_pad_dilation", f32,
                             {.n = 2,
                              .c = 3,
                              .h = 11,
                              .w = 9,
                              .o = 5,
                              .kh = 3,
                              .kw = 2,
                              .stride = {2, 1},
                              .pad_begin = {1, 2},
                              .pad_end = {1, 2},
                              .dilation = {2, 1}},
                             2));
    list->push_back(ConvCase("conv_groups", f32,
                             {.n = 1,
                              .c = 4,
                              .h = 6,
                              .w = 6,
                              .o = 6,
                              .kh = 3,
                              .kw = 3,
                              .pad_begin = {1, 1},
                              .pad_end = {1, 1},
                              .groups = 2,
                              .bias = false},
                             3));
    list->push_back(
        ConvCase("conv_1x1", f32, {.n = 3, .c = 5, .h = 4, .w = 4, .o = 2, .kh = 1, .kw = 1}, 4));
    list->push_back(ConvCase("conv_same_even_kernel", f32,
                             {.n = 1,
                              .c = 2,
                              .h = 6,
                              .w = 7,
                              .o = 3,
                              .kh = 4,
                              .kw = 2,
                              .pad_begin = {1, 0},
                              .pad_end = {2, 1}},
                             5));
    list->push_back(
        ConvCase("conv_f16", f16, {.n = 2, .c = 2, .h = 7, .w = 7, .o = 3, .kh = 3, .kw = 3}, 6));
    // Pools.
    list->push_back(MaxPoolCase("max_pool_2x2", f32,
                                {.planes = 3,
                                 .h = 8,
                                 .w = 8,
                                 .oh = 4,
                                 .ow = 4,
                                 .kernel = {2, 2},
                                 .stride = {2, 2},
                                 .padding = {0, 0}},
                                1));
    // Odd sizes: the last row and column belong to no window (floor mode).
    list->push_back(MaxPoolCase("max_pool_2x2_odd", f32,
                                {.planes = 4,
                                 .h = 7,
                                 .w = 9,
                                 .oh = 3,
                                 .ow = 4,
                                 .kernel = {2, 2},
                                 .stride = {2, 2},
                                 .padding = {0, 0}},
                                5));
    list->push_back(MaxPoolCase("max_pool_pad_dilation", f32,
                                {.planes = 2,
                                 .h = 9,
                                 .w = 7,
                                 .oh = 4,
                                 .ow = 4,
                                 .kernel = {3, 2},
                                 .stride = {2, 2},
                                 .padding = {1, 1},
                                 .dilation = {2, 1}},
                                2));
    list->push_back(MaxPoolCase("max_pool_ceil_mode", f32,
                                {.planes = 2,
                                 .h = 5,
                                 .w = 5,
                                 .oh = 3,
                                 .ow = 3,
                                 .kernel = {2, 2},
                                 .stride = {2, 2},
                                 .padding = {0, 0}},
                                3));
    list->push_back(MaxPoolCase("max_pool_bf16", bf16,
                                {.planes = 3,
                                 .h = 6,
                                 .w = 6,
                                 .oh = 3,
                                 .ow = 3,
                                 .kernel = {2, 2},
                                 .stride = {2, 2},
                                 .padding = {0, 0}},
                                4));
    list->push_back(AvgPoolCase("avg_pool_include_pad", f32,
                                {.planes = 2,
                                 .h = 7,
                                 .w = 6,
                                 .oh = 4,
                                 .ow = 3,
                                 .kernel = {3, 3},
                                 .stride = {2, 2},
                                 .padding = {1, 1}},
                                1));
    list->push_back(AvgPoolCase("avg_pool_exclude_pad", f32,
                                {.planes = 2,
                                 .h = 7,
                                 .w = 6,
                                 .oh = 4,
                                 .ow = 3,
                                 .kernel = {3, 3},
                                 .stride = {2, 2},
                                 .padding = {1, 1},
                                 .count_include_pad = false},
                                2));
    list->push_back(AvgPoolCase("avg_pool_ceil_overhang", f32,
                                {.planes = 1,
                                 .h = 5,
                                 .w = 5,
                                 .oh = 3,
                                 .ow = 3,
                                 .kernel = {2, 2},
                                 .stride = {2, 2},
                                 .padding = {0, 0}},
                                3));
    list->push_back(AvgPoolCase("avg_pool_divisor_override", f32,
                                {.planes = 1,
                                 .h = 4,
                                 .w = 4,
                                 .oh = 2,
                                 .ow = 2,
                                 .kernel = {2, 2},
                                 .stride = {2, 2},
                                 .padding = {0, 0},
                                 .divisor_override = 3},
                                4));
    list->push_back(AdaptiveCase("adaptive_avg_pool_7x5_to_3x2", f32, 7, 5, 3, 2));
    list->push_back(AdaptiveCase("adaptive_avg_pool_upsample", f32, 2, 3, 5, 4));
    // Normalisation.
    list->push_back(BatchNormCase("batch_norm_train_2d", f32, {4, 3, 2, 5}, true, true));
    list->push_back(BatchNormCase("batch_norm_train_1d", f32, {6, 4}, true, false));
    list->push_back(BatchNormCase("batch_norm_eval", f32, {4, 3, 2, 5}, false, true));
    list->push_back(BatchNormCase("batch_norm_train_f16", f16, {4, 3, 6}, true, true));
    list->push_back(LayerNormCase("layer_norm", f32, 6, 10, true));
    list->push_back(LayerNormCase("layer_norm_no_affine", f32, 3, 17, false));
    list->push_back(LayerNormCase("layer_norm_bf16", bf16, 4, 8, true));
    // Element-wise.
    for (UnaryOp op : {UnaryOp::kIdentity, UnaryOp::kReLU, UnaryOp::kGELU, UnaryOp::kGELUTanh,
                       UnaryOp::kSiLU, UnaryOp::kSigmoid, UnaryOp::kTanh}) {
      list->push_back(UnaryCase(op, f32));
    }
    list->push_back(UnaryCase(UnaryOp::kGELU, f16));
    list->push_back(UnaryCase(UnaryOp::kReLU, bf16));
    list->push_back(BinaryCase("add_same_shape", BinaryOp::kAdd, f32, {4, 5}, {4, 5}, {4, 5}));
    list->push_back(
        BinaryCase("mul_row_broadcast", BinaryOp::kMul, f32, {3, 4, 5}, {5}, {3, 4, 5}));
    list->push_back(
        BinaryCase("sub_both_broadcast", BinaryOp::kSub, f32, {3, 1, 5}, {4, 1}, {3, 4, 5}));
    list->push_back(BinaryCase("div_scalar", BinaryOp::kDiv, f32, {2, 3}, {}, {2, 3}));
    list->push_back(BinaryCase("add_f16_broadcast", BinaryOp::kAdd, f16, {2, 3}, {1, 3}, {2, 3}));
    list->push_back(SoftmaxCase("softmax_dim1", f32, {3, 5, 4}, 1, false));
    list->push_back(SoftmaxCase("softmax_last", f32, {6, 10}, 1, false));
    list->push_back(SoftmaxCase("log_softmax_dim0", f32, {7, 3}, 0, true));
    list->push_back(SoftmaxCase("softmax_bf16", bf16, {4, 9}, 1, false));
    list->push_back(EmbeddingCase("embedding_int64", DType::kInt64));
    list->push_back(EmbeddingCase("embedding_int32", DType::kInt32));
    list->push_back(DropoutCase(f32, 0.3));
    list->push_back(DropoutCase(f32, 1.0));
    list->push_back(DropoutCase(f16, 0.5));
    list->push_back(CatCase("cat_dim1", f32, {{2, 3}, {2, 4}, {2, 1}}, 1, {2, 8}));
    list->push_back(CatCase("cat_dim0", f32, {{2, 3}, {1, 3}}, 0, {3, 3}));
    list->push_back(CatCase("cat_int64", DType::kInt64, {{2, 2, 2}, {2, 1, 2}}, 1, {2, 3, 2}));
    list->push_back(ConvertCase("convert_f32_f16", f32, f16, false));
    list->push_back(ConvertCase("convert_f32_bf16", f32, bf16, false));
    list->push_back(ConvertCase("convert_f16_f32", f16, f32, false));
    list->push_back(ConvertCase("convert_transposed_f32", f32, f32, true));
    list->push_back(ConvertCase("convert_transposed_bf16_f32", bf16, f32, true));
    list->push_back(ConvertCase("convert_f32_int64", f32, DType::kInt64, false));
    // What a review found untested: 16-bit GEMM with odd k, fused 16-bit epilogues, a large
    // k in bfloat16 (float32 accumulation, Note [16-bit GEMM numerics]: one rounding of the
    // result), a misaligned bias view, NaN through the ReLU epilogue.
    list->push_back(GemmCase("gemm_f16_odd_k", f16, 9, 24, 33, false, true, true,
                             UnaryOp::kGELUTanh, 21));
    list->push_back(GemmCase("gemm_bf16_relu_fused", bf16, 16, 64, 64, false, true, true,
                             UnaryOp::kReLU, 22));
    list->push_back(GemmCase("gemm_bf16_large_k", bf16, 8, 32, 4096, false, true, false,
                             UnaryOp::kIdentity, 23));
    list->push_back(GemmOffsetBiasCase("gemm_bf16_offset_bias", bf16, 8, 32, 64, UnaryOp::kIdentity));
    list->push_back(GemmOffsetBiasCase("gemm_f32_offset_bias_relu", f32, 8, 32, 64, UnaryOp::kReLU));
    // GELU-tanh cannot be fused without its bias: gelu(x + bias), not gelu(x) + bias.
    list->push_back(
        GemmOffsetBiasCase("gemm_f32_offset_bias_gelu_tanh", f32, 8, 32, 64, UnaryOp::kGELUTanh));
    list->push_back(
        GemmOffsetBiasCase("gemm_f16_offset_bias_gelu_tanh", f16, 8, 32, 64, UnaryOp::kGELUTanh));
    list->push_back(
        WithNaN(GemmCase("gemm_relu", f32, 8, 16, 32, false, true, true, UnaryOp::kReLU, 4), 0, 5));
    list->push_back(WithNaN(UnaryCase(UnaryOp::kReLU, f32), 0, 7));
    // Every dtype: 16-bit layer norm, log_softmax, eval batch norm, pooling; widths past
    // 1024 take the 256-thread, multi-warp reduction paths.
    list->push_back(LayerNormCase("layer_norm_f16_wide", f16, 3, 1500, true));
    list->push_back(LayerNormCase("layer_norm_wide", f32, 2, 4099, true));
    list->push_back(SoftmaxCase("softmax_wide", f32, {3, 2000}, 1, false));
    list->push_back(SoftmaxCase("log_softmax_f16", f16, {5, 70}, 1, true));
    list->push_back(SoftmaxCase("log_softmax_bf16_dim0", bf16, {40, 3}, 0, true));
    list->push_back(BatchNormCase("batch_norm_eval_bf16", bf16, {4, 3, 2, 5}, false, true));
    list->push_back(BatchNormCase("batch_norm_eval_f16", f16, {2, 5, 7}, false, true));
    list->push_back(MaxPoolCase("max_pool_f16", f16,
                                {.planes = 3, .h = 6, .w = 6, .oh = 3, .ow = 3, .kernel = {2, 2},
                                 .stride = {2, 2}, .padding = {0, 0}},
                                5));
    list->push_back(AvgPoolCase("avg_pool_bf16", bf16,
                                {.planes = 2, .h = 7, .w = 6, .oh = 4, .ow = 3, .kernel = {3, 3},
                                 .stride = {2, 2}, .padding = {1, 1}},
                                2));
    list->push_back(ConvertCase("convert_f64_f32", DType::kFloat64, f32, false));
    list->push_back(ConvertCase("convert_f32_f64", f32, DType::kFloat64, true));
    list->push_back(ConvertCase("convert_int32_bf16", DType::kInt32, bf16, false));
    list->push_back(FillCase(f32, -1.25));
    list->push_back(FillCase(f16, 0.1));
    list->push_back(FillCase(bf16, 3.3));
    list->push_back(FillCase(DType::kFloat64, 0.1));
    list->push_back(FillCase(DType::kInt64, -7.9));
    list->push_back(FillCase(DType::kInt32, 12.5));
    // Convert to and from bool and int8 over NaN and infinities (CastElement's rules).
    const DType i8 = DType::kInt8, b8 = DType::kBool;
    list->push_back(ConvertSpecialsCase("convert_f32_bool_specials", f32, b8, false));
    list->push_back(ConvertSpecialsCase("convert_f32_int8_specials", f32, i8, true));
    list->push_back(ConvertSpecialsCase("convert_f16_int8_specials", f16, i8, false));
    list->push_back(ConvertSpecialsCase("convert_f64_int32_specials", DType::kFloat64,
                                        DType::kInt32, false));
    list->push_back(ConvertSpecialsCase("convert_bf16_bool_specials", bf16, b8, true));
    list->push_back(ConvertCase("convert_int8_f32", i8, f32, false));
    list->push_back(ConvertCase("convert_int8_bool", i8, b8, true));
    list->push_back(ConvertSpecialsCase("convert_bool_f16", b8, f16, false));
    list->push_back(ConvertSpecialsCase("convert_bool_int8", b8, i8, true));
    // GEMM into rows longer than n (ldc > n), fused and unfused epilogues.
    list->push_back(GemmCase("gemm_f32_bias_ldc29", f32, 7, 20, 33, false, true, true,
                             UnaryOp::kIdentity, 24, 29));
    list->push_back(GemmCase("gemm_bf16_relu_ldc24", bf16, 9, 16, 40, false, true, true,
                             UnaryOp::kReLU, 25, 24));
    list->push_back(GemmCase("gemm_f16_gelu_tanh_trans_a_ldc13", f16, 5, 8, 16, true, false, true,
                             UnaryOp::kGELUTanh, 26, 13));
    // Grouped and depthwise convolution in every float dtype (Note [Grouped conv as batched
    // GEMMs] in kernels/cuda/cuda_backend.cc): more groups than images (batched over
    // groups), more images than groups (batched over images), one image, a channel
    // multiplier, the 1×1 direct path both ways, with and without a bias.
    for (const DType dtype : {f32, f16, bf16}) {
      const std::string suffix = absl::StrCat("_", DTypeName(dtype));
      list->push_back(ConvCase("conv_depthwise" + suffix, dtype,
                               {.n = 3, .c = 8, .h = 7, .w = 6, .o = 8, .kh = 3, .kw = 3,
                                .pad_begin = {1, 1}, .pad_end = {1, 1}, .groups = 8},
                               31));
      list->push_back(ConvCase("conv_depthwise_one_image_x2_nobias" + suffix, dtype,
                               {.n = 1, .c = 6, .h = 5, .w = 5, .o = 12, .kh = 3, .kw = 3,
                                .stride = {2, 1}, .groups = 6, .bias = false},
                               32));
      list->push_back(ConvCase("conv_groups2_many_images" + suffix, dtype,
                               {.n = 9, .c = 4, .h = 5, .w = 6, .o = 6, .kh = 3, .kw = 2,
                                .pad_begin = {1, 0}, .pad_end = {1, 1}, .groups = 2},
                               33));
      list->push_back(ConvCase("conv_groups2_one_image_nobias" + suffix, dtype,
                               {.n = 1, .c = 6, .h = 6, .w = 6, .o = 4, .kh = 3, .kw = 3,
                                .groups = 2, .bias = false},
                               34));
      list->push_back(ConvCase("conv_1x1_groups3_two_images" + suffix, dtype,
                               {.n = 2, .c = 6, .h = 4, .w = 5, .o = 9, .kh = 1, .kw = 1,
                                .groups = 3},
                               35));
      list->push_back(ConvCase("conv_1x1_groups3_five_images_nobias" + suffix, dtype,
                               {.n = 5, .c = 6, .h = 3, .w = 4, .o = 3, .kh = 1, .kw = 1,
                                .groups = 3, .bias = false},
                               36));
      list->push_back(ConvCase("conv_1x1_depthwise" + suffix, dtype,
                               {.n = 2, .c = 5, .h = 4, .w = 4, .o = 5, .kh = 1, .kw = 1,
                                .groups = 5},
                               37));
    }
    // Softmax over the last, a middle and the first dimension (Note [Softmax over columns] in
    // kernels/cuda/softmax.cu): inner = 1, 7, 32, 1000, in every float dtype.
    for (const DType dtype : {f32, f16, bf16}) {
      const std::string suffix = absl::StrCat("_", DTypeName(dtype));
      list->push_back(SoftmaxCase("softmax_dim0_inner7" + suffix, dtype, {40, 7}, 0, false));
      list->push_back(SoftmaxCase("log_softmax_dim0_inner7" + suffix, dtype, {40, 7}, 0, true));
      list->push_back(SoftmaxCase("softmax_mid_inner32" + suffix, dtype, {6, 5, 32}, 1, false));
      list->push_back(
          SoftmaxCase("log_softmax_mid_inner32" + suffix, dtype, {3, 17, 32}, 1, true));
      list->push_back(
          SoftmaxCase("softmax_mid_inner1000" + suffix, dtype, {2, 9, 1000}, 1, false));
      list->push_back(
          SoftmaxCase("log_softmax_dim0_inner1000" + suffix, dtype, {12, 1000}, 0, true));
      list->push_back(SoftmaxCase("softmax_mid_inner1" + suffix, dtype, {4, 9, 1}, 1, false));
      // Few, long columns: several threads per column.
      list->push_back(SoftmaxCase("softmax_dim0_long" + suffix, dtype, {3000, 3}, 0, false));
      list->push_back(
          SoftmaxCase("log_softmax_dim0_long" + suffix, dtype, {2000, 2, 5}, 0, true));
    }
    // Outputs over their inputs (out == in).
    list->push_back(InPlaceCase(UnaryCase(UnaryOp::kGELU, f32),
                                [](Backend& b, const Inputs& in, const TensorView& out) {
                                  return b.Unary({.op = UnaryOp::kGELU,
                                                  .input = in[0]->view(),
                                                  .output = out});
                                }));
    list->push_back(InPlaceCase(UnaryCase(UnaryOp::kSiLU, bf16),
                                [](Backend& b, const Inputs& in, const TensorView& out) {
                                  return b.Unary({.op = UnaryOp::kSiLU,
                                                  .input = in[0]->view(),
                                                  .output = out});
                                }));
    list->push_back(InPlaceCase(
        BinaryCase("mul_row_broadcast", BinaryOp::kMul, f32, {3, 4, 5}, {5}, {3, 4, 5}),
        [](Backend& b, const Inputs& in, const TensorView& out) {
          return b.Binary({.op = BinaryOp::kMul,
                           .a = in[0]->view(),
                           .b = in[1]->ViewOf({3, 4, 5}, {0, 0, 1}),
                           .output = out});
        }));
    list->push_back(InPlaceCase(DropoutCase(f16, 0.3),
                                [](Backend& b, const Inputs& in, const TensorView& out) {
                                  return b.Dropout({.input = in[0]->view(),
                                                    .output = out,
                                                    .p = 0.3,
                                                    .seed = 1234});
                                }));
    return list;
  }();
  return *cases;
}

struct RunResult {
  std::vector<HostTensor> outputs;
};

absl::StatusOr<RunResult> RunCase(const OpCase& c, Backend& backend) {
  Inputs in;
  for (const HostTensor& t : c.inputs) in.push_back(DeviceTensor::Upload(&backend, t));
  Outputs out;
  for (const auto& [dtype, shape] : c.outputs) {
    out.push_back(std::make_unique<DeviceTensor>(&backend, dtype, shape));
    out.back()->Poison();
  }
  absl::Status status = c.run(backend, in, out);
  if (!status.ok()) return status;
  RunResult result;
  for (const auto& t : out) result.outputs.push_back(t->Download());
  return result;
}

class BackendOpsTest : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(BackendOpsTest, MatchesReferenceAndCpu) {
  const OpCase& c = AllCases()[std::get<0>(GetParam())];
  const testing::NamedBackend named = testing::AllBackendNames()[std::get<1>(GetParam())];
  absl::StatusOr<Backend*> backend = GetBackend(named.device);
  if (!backend.ok()) GTEST_SKIP() << named.name << " is absent: " << backend.status();
  absl::Status supported = (*backend)->Supports(c.query);
  if (!supported.ok()) GTEST_SKIP() << supported;

  absl::StatusOr<RunResult> result = RunCase(c, **backend);
  ASSERT_TRUE(result.ok()) << result.status();
  const Expected expected = c.reference(c.inputs);
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_TRUE(AllClose(result->outputs[i].values, expected[i], c.atol, c.rtol))
        << c.name << " output " << i << " on " << named.name << " vs the reference";
  }
  if (named.device.is_cpu()) return;
  absl::StatusOr<Backend*> cpu = GetBackend(Device::Cpu());
  ASSERT_TRUE(cpu.ok());
  absl::StatusOr<RunResult> on_cpu = RunCase(c, **cpu);
  ASSERT_TRUE(on_cpu.ok()) << on_cpu.status();
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_TRUE(AllClose(result->outputs[i].values, on_cpu->outputs[i].values, c.atol, c.rtol))
        << c.name << " output " << i << " on " << named.name << " vs the cpu backend";
  }
}

INSTANTIATE_TEST_SUITE_P(
    AllOps, BackendOpsTest,
    ::testing::Combine(::testing::Range(0, static_cast<int>(AllCases().size())),
                       ::testing::Range(0, static_cast<int>(testing::AllBackendNames().size()))),
    [](const ::testing::TestParamInfo<std::tuple<int, int>>& info) {
      return absl::StrCat(AllCases()[std::get<0>(info.param)].name, "_",
                          testing::AllBackendNames()[std::get<1>(info.param)].name);
    });

// Every backend present answers UNIMPLEMENTED, never crashes, for what it lacks.
TEST(BackendOpsSupportTest, UnsupportedDtypeIsUnimplemented) {
  absl::StatusOr<Backend*> cpu = GetBackend(Device::Cpu());
  ASSERT_TRUE(cpu.ok());
  const absl::Status status = (*cpu)->Supports({.kind = OpKind::kGemm, .dtype = DType::kInt64});
  EXPECT_EQ(status.code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(status.message(), "the cpu backend has no gemm kernel for int64");
  const absl::Status gemm = (*cpu)->Gemm({.dtype = DType::kFloat64, .m = 1, .n = 1, .k = 1});
  EXPECT_EQ(gemm.code(), absl::StatusCode::kUnimplemented);
}

}  // namespace
}  // namespace paramd::kernels
