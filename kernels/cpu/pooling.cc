// max_pool2d, avg_pool2d and adaptive_avg_pool2d over the last two dimensions, one plane
// (image and channel) at a time, planes spread over the threads.
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/op_checks.h"
#include "base/status_macros.h"

namespace paramd::kernels {
namespace {

// The output columns [lo, hi) whose input column ow * stride + offset lies in [0, width).
std::pair<int64_t, int64_t> ColumnRange(int64_t offset, int64_t stride, int64_t width,
                                        int64_t out_w) {
  // Smallest ow with ow * stride + offset >= 0, and one past the largest with < width.
  int64_t lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  int64_t hi = width - offset <= 0 ? 0 : (width - offset - 1) / stride + 1;
  lo = std::min(lo, out_w);
  hi = std::max(lo, std::min(hi, out_w));
  return {lo, hi};
}

// max(b, v) as ATen's max pooling takes it: a NaN wins and stays.
inline float MaxKeepingNan(float b, float v) { return (v > b || v != v) ? v : b; }

// The 2x2 window with stride 2 and no padding (every CNN's MaxPool2d(2, 2)), with each
// window whole: one pass per output row over two input rows, in the general loop's order
// of comparisons, so NaNs and ties come out the same.
void MaxPool2x2(const float* src, float* dst, int64_t width, int64_t out_h, int64_t out_w) {
  for (int64_t oh = 0; oh < out_h; ++oh) {
    const float* top = src + 2 * oh * width;
    const float* bottom = top + width;
    float* out = dst + oh * out_w;
#pragma omp simd
    for (int64_t ow = 0; ow < out_w; ++ow) {
      float best = -std::numeric_limits<float>::infinity();
      best = MaxKeepingNan(best, top[2 * ow]);
      best = MaxKeepingNan(best, top[2 * ow + 1]);
      best = MaxKeepingNan(best, bottom[2 * ow]);
      out[ow] = MaxKeepingNan(best, bottom[2 * ow + 1]);
    }
  }
}

}  // namespace

absl::Status CpuBackend::MaxPool2d(const MaxPool2dArgs& args) {
  PARAMD_ASSIGN_OR_RETURN(const PoolPlanes p, CheckMaxPool2d(*this, args));
  const cpu::FloatIn input(args.input.data, args.input.dtype, args.input.numel());
  cpu::FloatOut output(args.output.data, args.output.dtype, args.output.numel());
  const int64_t kh = args.kernel[0], kw = args.kernel[1];
  const int64_t sh = args.stride[0], sw = args.stride[1];
  const int64_t ph = args.padding[0], pw = args.padding[1];
  const int64_t dh = args.dilation[0], dw = args.dilation[1];
  if (kh == 2 && kw == 2 && sh == 2 && sw == 2 && ph == 0 && pw == 0 && dh == 1 && dw == 1 &&
      2 * p.out_h <= p.height && 2 * p.out_w <= p.width) {
    cpu::ParallelFor(p.count, p.out_h * p.out_w * 4, [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane) {
        MaxPool2x2(input.get() + plane * p.height * p.width,
                   output.get() + plane * p.out_h * p.out_w, p.width, p.out_h, p.out_w);
      }
    });
    output.Finish();
    return absl::OkStatus();
  }
  // Window column j reads input column ow * sw - pw + j * dw; ColumnRange gives the output
  // columns for which that lies inside the image, so the inner loops carry no bounds checks
  // and vectorise.
  cpu::ParallelFor(p.count, p.out_h * p.out_w * kh * kw, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const float* src = input.get() + plane * p.height * p.width;
      float* dst = output.get() + plane * p.out_h * p.out_w;
      for (int64_t oh = 0; oh < p.out_h; ++oh) {
        float* best = dst + oh * p.out_w;
        std::fill(best, best + p.out_w, -std::numeric_limits<float>::infinity());
        for (int64_t i = 0; i < kh; ++i) {
          const int64_t ih = oh * sh - ph + i * dh;
          if (ih < 0 || ih >= p.height) continue;
          const float* row = src + ih * p.width;
          for (int64_t j = 0; j < kw; ++j) {
            const int64_t offset = j * dw - pw;
            const auto [lo, hi] = ColumnRange(offset, sw, p.width, p.out_w);
            for (int64_t ow = lo; ow < hi; ++ow) {
              best[ow] = MaxKeepingNan(best[ow], row[ow * sw + offset]);
            }
          }
        }
      }
    }
  });
  output.Finish();
  return absl::OkStatus();
}

absl::Status CpuBackend::AvgPool2d(const AvgPool2dArgs& args) {
  PARAMD_ASSIGN_OR_RETURN(const PoolPlanes p, CheckAvgPool2d(*this, args));
  const cpu::FloatIn input(args.input.data, args.input.dtype, args.input.numel());
  cpu::FloatOut output(args.output.data, args.output.dtype, args.output.numel());
  const int64_t kh = args.kernel[0], kw = args.kernel[1];
  const int64_t sh = args.stride[0], sw = args.stride[1];
  const int64_t ph = args.padding[0], pw = args.padding[1];
  cpu::ParallelFor(p.count, p.out_h * p.out_w * kh * kw, [&](int64_t begin, int64_t end) {
    for (int64_t plane = begin; plane < end; ++plane) {
      const float* src = input.get() + plane * p.height * p.width;
      float* dst = output.get() + plane * p.out_h * p.out_w;
      for (int64_t oh = 0; oh < p.out_h; ++oh) {
        float* sum = dst + oh * p.out_w;
        std::fill(sum, sum + p.out_w, 0.0f);
        const int64_t h_start = oh * sh - ph;
        const int64_t h_stop = std::min(h_start + kh, p.height + ph);
        for (int64_t ih = std::max<int64_t>(h_start, 0); ih < std::min(h_stop, p.height); ++ih) {
          const float* row = src + ih * p.width;
          for (int64_t j = 0; j < kw; ++j) {
            const auto [lo, hi] = ColumnRange(j - pw, sw, p.width, p.out_w);
            for (int64_t ow = lo; ow < hi; ++ow) sum[ow] += row[ow * sw + j - pw];
          }
        }
        // The divisors, as ATen: the window clipped to the padded input, then to the input.
        for (int64_t ow = 0; ow < p.out_w; ++ow) {
          const int64_t w_start = ow * sw - pw;
          const int64_t w_stop = std::min(w_start + kw, p.width + pw);
          const int64_t padded_size = (h_stop - h_start) * (w_stop - w_start);
          const int64_t rows = std::min(h_stop, p.height) - std::max<int64_t>(h_start, 0);
          const int64_t cols = std::min(w_stop, p.width) - std::max<int64_t>(w_start, 0);
          if (rows <= 0 || cols <= 0) {
            sum[ow] = 0.0f;
            continue;
          }
          const int64_t inside = rows * cols;
          int64_t divisor = args.count_include_pad ? padded_size : inside;
          if (args.divisor_override != 0) divisor = args.divisor_override;
          sum[ow] /= static_cast<float>(divisor);
        }
      }
    }
  });
  output.Finish();
  return absl::OkStatus();
}

absl::Status CpuBackend::AdaptiveAvgPool2d(const AdaptiveAvgPool2dArgs& args) {
  PARAMD_ASSIGN_OR_RETURN(const PoolPlanes p, CheckAdaptiveAvgPool2d(*this, args));
  if (args.output.numel() == 0) return absl::OkStatus();
  const cpu::FloatIn input(args.input.data, args.input.dtype, args.input.numel());
  cpu::FloatOut output(args.output.data, args.output.dtype, args.output.numel());
  // ATen's start_index / end_index.
  auto start = [](int64_t o, int64_t out, int64_t in) { return (o * in) / out; };
  auto stop = [](int64_t o, int64_t out, int64_t in) { return ((o + 1) * in + out - 1) / out; };
  cpu::ParallelFor(
      p.count, p.height * p.width + p.out_h * p.out_w, [&](int64_t begin, int64_t end) {
        for (int64_t plane = begin; plane < end; ++plane) {
          const float* src = input.get() + plane * p.height * p.width;
          float* dst = output.get() + plane * p.out_h * p.out_w;
          for (int64_t oh = 0; oh < p.out_h; ++oh) {
            const int64_t h0 = start(oh, p.out_h, p.height), h1 = stop(oh, p.out_h, p.height);
            for (int64_t ow = 0; ow < p.out_w; ++ow) {
              const int64_t w0 = start(ow, p.out_w, p.width), w1 = stop(ow, p.out_w, p.width);
              float sum = 0.0f;
              for (int64_t ih = h0; ih < h1; ++ih) {
                for (int64_t iw = w0; iw < w1; ++iw) sum += src[ih * p.width + iw];
              }
              dst[oh * p.out_w + ow] = sum / static_cast<float>((h1 - h0) * (w1 - w0));
            }
          }
        }
      });
  output.Finish();
  return absl::OkStatus();
}

}  // namespace paramd::kernels
