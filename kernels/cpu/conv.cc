// conv2d as im2col + sgemm, one image and group at a time: the column buffer of one image
// stays in cache, and OpenBLAS spreads each product over its threads. A 1×1 kernel with
// stride 1 and no padding reads the input in place.
#include <cblas.h>

#include <algorithm>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/op_checks.h"
#include "base/status_macros.h"

namespace paramd::kernels {
namespace {

// Writes the [channels * kernel_h * kernel_w, out_h * out_w] column matrix of one image.
void Im2Col(const float* input, const ConvGeometry& g, float* col) {
  const int64_t out_plane = g.out_h * g.out_w;
  for (int64_t c = 0; c < g.channels; ++c) {
    const float* plane = input + c * g.height * g.width;
    for (int64_t i = 0; i < g.kernel_h; ++i) {
      for (int64_t j = 0; j < g.kernel_w; ++j) {
        float* dst = col + ((c * g.kernel_h + i) * g.kernel_w + j) * out_plane;
        const int64_t col_offset = j * g.dilation_w - g.pad_w;
        // The output columns whose input column lies inside the image.
        int64_t ow_begin = 0, ow_end = g.out_w;
        while (ow_begin < g.out_w && ow_begin * g.stride_w + col_offset < 0) ++ow_begin;
        while (ow_end > ow_begin && (ow_end - 1) * g.stride_w + col_offset >= g.width) --ow_end;
        for (int64_t oh = 0; oh < g.out_h; ++oh) {
          float* row = dst + oh * g.out_w;
          const int64_t ih = oh * g.stride_h - g.pad_h + i * g.dilation_h;
          if (ih < 0 || ih >= g.height) {
            std::fill(row, row + g.out_w, 0.0f);
            continue;
          }
          const float* src = plane + ih * g.width + col_offset;
          std::fill(row, row + ow_begin, 0.0f);
          if (g.stride_w == 1) {
            std::copy(src + ow_begin, src + ow_end, row + ow_begin);
          } else {
            for (int64_t ow = ow_begin; ow < ow_end; ++ow) row[ow] = src[ow * g.stride_w];
          }
          std::fill(row + ow_end, row + g.out_w, 0.0f);
        }
      }
    }
  }
}

}  // namespace

absl::Status CpuBackend::Conv2d(const Conv2dArgs& args) {
  PARAMD_ASSIGN_OR_RETURN(const ConvGeometry g, CheckConv2d(*this, args));
  const ConstTensorView& x = args.input;
  const ConstTensorView& w = args.weight;
  const TensorView& y = args.output;
  const int64_t groups = args.groups;
  const int64_t batch = x.shape[0], in_channels = x.shape[1];
  const int64_t out_channels = w.shape[0];
  if (y.numel() == 0) return absl::OkStatus();

  const cpu::FloatIn input(x.data, x.dtype, x.numel());
  const cpu::FloatIn weight(w.data, w.dtype, w.numel());
  const cpu::FloatIn bias(args.bias, x.dtype, out_channels);
  cpu::FloatOut output(y.data, y.dtype, y.numel());

  const int64_t group_out = out_channels / groups;
  const int64_t patch = g.channels * g.kernel_h * g.kernel_w;
  const int64_t out_plane = g.out_h * g.out_w;
  const int64_t in_plane = g.height * g.width;
  const bool direct = g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 && g.stride_w == 1 &&
                      g.pad_h == 0 && g.pad_w == 0 && g.out_h == g.height && g.out_w == g.width;
  std::vector<float> col(direct ? 0 : static_cast<size_t>(patch * out_plane));
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t gi = 0; gi < groups; ++gi) {
      const float* image = input.get() + (n * in_channels + gi * g.channels) * in_plane;
      float* out = output.get() + (n * out_channels + gi * group_out) * out_plane;
      const float* columns = image;
      if (!direct) {
        Im2Col(image, g, col.data());
        columns = col.data();
      }
      if (bias.get() != nullptr) {
        for (int64_t o = 0; o < group_out; ++o) {
          std::fill(out + o * out_plane, out + (o + 1) * out_plane, bias.get()[gi * group_out + o]);
        }
      }
      if (patch == 0) {
        if (bias.get() == nullptr) std::fill(out, out + group_out * out_plane, 0.0f);
        continue;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<blasint>(group_out),
                  static_cast<blasint>(out_plane), static_cast<blasint>(patch), 1.0f,
                  weight.get() + gi * group_out * patch, static_cast<blasint>(patch), columns,
                  static_cast<blasint>(out_plane), bias.get() != nullptr ? 1.0f : 0.0f, out,
                  static_cast<blasint>(out_plane));
    }
  }
  output.Finish();
  return absl::OkStatus();
}

}  // namespace paramd::kernels
