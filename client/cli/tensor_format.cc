#include "client/cli/tensor_format.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "base/half.h"

namespace paramd::cli {
namespace {

using paramd::client::DType;
using paramd::client::HostTensor;

// torch._tensor_str.PRINT_OPTS defaults.
constexpr int kPrecision = 4;
constexpr int64_t kThreshold = 1000;
constexpr int64_t kEdgeItems = 3;
constexpr int64_t kLineWidth = 80;

bool IsFloating(DType dtype) {
  return dtype == DType::kFloat32 || dtype == DType::kFloat64 || dtype == DType::kFloat16 ||
         dtype == DType::kBFloat16;
}

uint64_t LoadLittleEndian(const char* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) {
    v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  }
  return v;
}

// The value Python sees from `.tolist()` / `.item()`: float16 and bfloat16 are first
// widened to float32 (as _tensor_str does with `self.float()`), then to double.
double FloatAt(const HostTensor& t, int64_t i) {
  const char* p = t.data.data() + i * paramd::client::ElementSize(t.dtype);
  switch (t.dtype) {
    case DType::kFloat64:
      return std::bit_cast<double>(LoadLittleEndian(p, 8));
    case DType::kFloat32:
      return std::bit_cast<float>(static_cast<uint32_t>(LoadLittleEndian(p, 4)));
    case DType::kFloat16:
      return HalfBitsToFloat(static_cast<uint16_t>(LoadLittleEndian(p, 2)));
    case DType::kBFloat16:
      return BFloat16BitsToFloat(static_cast<uint16_t>(LoadLittleEndian(p, 2)));
    default:
      return 0.0;
  }
}

int64_t IntAt(const HostTensor& t, int64_t i) {
  const char* p = t.data.data() + i * paramd::client::ElementSize(t.dtype);
  switch (t.dtype) {
    case DType::kInt64:
      return static_cast<int64_t>(LoadLittleEndian(p, 8));
    case DType::kInt32:
      return static_cast<int32_t>(LoadLittleEndian(p, 4));
    case DType::kInt16:
      return static_cast<int16_t>(LoadLittleEndian(p, 2));
    case DType::kInt8:
      return static_cast<int8_t>(LoadLittleEndian(p, 1));
    case DType::kUInt8:
      return static_cast<uint8_t>(LoadLittleEndian(p, 1));
    case DType::kBool:
      return p[0] != 0 ? 1 : 0;
    default:
      return 0;
  }
}

// Python's "{:.Nf}" / "{:.Ne}": C's conversions (both correctly rounded, ties to even)
// except that non-finite values are "nan", "inf", "-inf" whatever the NaN's sign.
std::string PyFloatFormat(double value, char conversion, int precision) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buffer[400];  // %.4f of DBL_MAX is 315 characters
  const char format[] = {'%', '.', '*', conversion, '\0'};
  const int n = std::snprintf(buffer, sizeof(buffer), format, precision, value);
  return std::string(buffer, n > 0 ? std::min<size_t>(n, sizeof(buffer) - 1) : 0);
}

std::string PadLeft(std::string text, size_t width) {
  if (text.size() >= width) return text;
  return std::string(width - text.size(), ' ') + text;
}

// torch._tensor_str._Formatter: decides the notation and the common element width from
// the elements that will be shown.
class Formatter {
 public:
  Formatter(const HostTensor& t, const std::vector<int64_t>& shown) : t_(t) {
    floating_ = IsFloating(t.dtype);
    if (!floating_) {
      for (int64_t i : shown) width_ = std::max(width_, IntText(i).size());
      return;
    }
    std::vector<double> nonzero_finite;
    for (int64_t i : shown) {
      const double v = FloatAt(t, i);
      if (std::isfinite(v) && v != 0.0) nonzero_finite.push_back(v);
    }
    if (nonzero_finite.empty()) return;
    double min_abs = std::fabs(nonzero_finite[0]);
    double max_abs = min_abs;
    for (double v : nonzero_finite) {
      min_abs = std::min(min_abs, std::fabs(v));
      max_abs = std::max(max_abs, std::fabs(v));
      if (int_mode_ && v != std::ceil(v)) int_mode_ = false;
    }
    if (int_mode_) {
      if (max_abs / min_abs > 1000.0 || max_abs > 1.0e8) {
        sci_mode_ = true;
        for (double v : nonzero_finite) {
          width_ = std::max(width_, PyFloatFormat(v, 'e', kPrecision).size());
        }
      } else {
        for (double v : nonzero_finite) {
          width_ = std::max(width_, PyFloatFormat(v, 'f', 0).size() + 1);
        }
      }
    } else if (max_abs / min_abs > 1000.0 || max_abs > 1.0e8 || min_abs < 1.0e-4) {
      sci_mode_ = true;
      for (double v : nonzero_finite) {
        width_ = std::max(width_, PyFloatFormat(v, 'e', kPrecision).size());
      }
    } else {
      for (double v : nonzero_finite) {
        width_ = std::max(width_, PyFloatFormat(v, 'f', kPrecision).size());
      }
    }
  }

  size_t width() const { return width_; }

  // The element at flat index `i`, right-aligned to width().
  std::string Format(int64_t i) const {
    if (!floating_) return PadLeft(IntText(i), width_);
    const double v = FloatAt(t_, i);
    std::string text;
    if (sci_mode_) {
      text = PyFloatFormat(v, 'e', kPrecision);
    } else if (int_mode_) {
      text = PyFloatFormat(v, 'f', 0);
      if (std::isfinite(v)) text += ".";
    } else {
      text = PyFloatFormat(v, 'f', kPrecision);
    }
    return PadLeft(std::move(text), width_);
  }

 private:
  std::string IntText(int64_t i) const {
    if (t_.dtype == DType::kBool) return IntAt(t_, i) != 0 ? "True" : "False";
    return absl::StrCat(IntAt(t_, i));
  }

  const HostTensor& t_;
  bool floating_ = false;
  bool int_mode_ = true;
  bool sci_mode_ = false;
  size_t width_ = 1;
};

struct Layout {
  std::vector<int64_t> shape;
  std::vector<int64_t> strides;  // in elements, C order
  bool summarize = false;
};

// torch._tensor_str.get_summarized_data, as the flat indices of the kept elements.
void CollectShown(const Layout& layout, size_t dim, int64_t offset, std::vector<int64_t>* out) {
  if (dim == layout.shape.size()) {
    out->push_back(offset);
    return;
  }
  const int64_t size = layout.shape[dim];
  const int64_t stride = layout.strides[dim];
  const bool cut = layout.summarize && size > 2 * kEdgeItems;
  for (int64_t i = 0; i < size; ++i) {
    if (cut && i == kEdgeItems) i = size - kEdgeItems;
    CollectShown(layout, dim + 1, offset + i * stride, out);
  }
}

// torch._tensor_str._vector_str.
std::string VectorStr(const Layout& layout, const Formatter& formatter, int64_t offset,
                      int64_t indent) {
  const size_t dim = layout.shape.size() - 1;
  const int64_t size = layout.shape[dim];
  const int64_t stride = layout.strides[dim];
  const int64_t element_length = static_cast<int64_t>(formatter.width()) + 2;
  const int64_t room = kLineWidth - indent;
  // Python floors the quotient; a negative room gives at most 0, so max(1, .) is 1.
  const int64_t per_line = std::max<int64_t>(1, room > 0 ? room / element_length : 0);

  std::vector<std::string> data;
  const bool cut = layout.summarize && size > 2 * kEdgeItems;
  for (int64_t i = 0; i < size; ++i) {
    if (cut && i == kEdgeItems) {
      data.push_back(" ...");
      i = size - kEdgeItems;
    }
    data.push_back(formatter.Format(offset + i * stride));
  }

  std::vector<std::string> lines;
  for (size_t i = 0; i < data.size(); i += per_line) {
    const size_t end = std::min(data.size(), i + static_cast<size_t>(per_line));
    lines.push_back(absl::StrJoin(data.begin() + i, data.begin() + end, ", "));
  }
  return absl::StrCat("[", absl::StrJoin(lines, absl::StrCat(",\n", std::string(indent + 1, ' '))),
                      "]");
}

// torch._tensor_str._tensor_str_with_formatter.
std::string TensorStr(const Layout& layout, const Formatter& formatter, size_t dim, int64_t offset,
                      int64_t indent) {
  const size_t rank = layout.shape.size() - dim;
  if (rank == 0) return formatter.Format(offset);
  if (rank == 1) return VectorStr(layout, formatter, offset, indent);

  const int64_t size = layout.shape[dim];
  const int64_t stride = layout.strides[dim];
  const bool cut = layout.summarize && size > 2 * kEdgeItems;
  std::vector<std::string> slices;
  for (int64_t i = 0; i < size; ++i) {
    if (cut && i == kEdgeItems) {
      slices.push_back("...");
      i = size - kEdgeItems;
    }
    slices.push_back(TensorStr(layout, formatter, dim + 1, offset + i * stride, indent + 1));
  }
  const std::string separator =
      absl::StrCat(",", std::string(rank - 1, '\n'), std::string(indent + 1, ' '));
  return absl::StrCat("[", absl::StrJoin(slices, separator), "]");
}

// torch._tensor_str._add_suffixes, including its estimate of the last line's length
// (two more than the characters after the last newline).
std::string AddSuffixes(std::string text, const std::vector<std::string>& suffixes,
                        int64_t indent) {
  const size_t newline = text.rfind('\n');
  int64_t last_line_len = static_cast<int64_t>(text.size()) -
                          (newline == std::string::npos ? -1 : static_cast<int64_t>(newline)) + 1;
  for (const std::string& suffix : suffixes) {
    const int64_t suffix_len = static_cast<int64_t>(suffix.size());
    if (last_line_len + suffix_len + 2 > kLineWidth) {
      absl::StrAppend(&text, ",\n", std::string(indent, ' '), suffix);
      last_line_len = indent + suffix_len;
    } else {
      absl::StrAppend(&text, ", ", suffix);
      last_line_len += suffix_len + 2;
    }
  }
  text += ")";
  return text;
}

std::string ShapeTuple(const std::vector<int64_t>& shape) {
  if (shape.size() == 1) return absl::StrCat("(", shape[0], ",)");
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

// The device suffix PyTorch adds for a tensor off the CPU, or "" for none.
std::string DeviceSuffix(const std::string& device) {
  const absl::string_view type = absl::string_view(device).substr(0, device.find(':'));
  if (type.empty() || type == "cpu") return "";
  if (device == "cuda") return "device='cuda:0'";
  return absl::StrCat("device='", device, "'");
}

}  // namespace

std::string FormatTensor(const HostTensor& t, bool as_parameter) {
  constexpr absl::string_view kPrefix = "tensor(";
  constexpr int64_t kIndent = kPrefix.size();
  const std::string head = as_parameter ? "Parameter containing:\n" : "";

  Layout layout;
  layout.shape = t.shape;
  layout.strides.assign(t.shape.size(), 1);
  int64_t numel = 1;
  bool valid = true;
  for (size_t i = t.shape.size(); i-- > 0;) {
    const int64_t size = t.shape[i];
    layout.strides[i] = numel;
    if (size < 0 || (size > 0 && numel > INT64_MAX / size)) {
      valid = false;
      break;
    }
    numel *= size;
  }
  if (valid && static_cast<uint64_t>(numel) > t.data.size() / paramd::client::ElementSize(t.dtype))
    valid = false;
  if (!valid ||
      t.data.size() != static_cast<size_t>(numel) * paramd::client::ElementSize(t.dtype)) {
    return absl::StrCat(head, kPrefix, "<invalid: ", t.data.size(), " bytes for shape ",
                        ShapeTuple(t.shape), " of torch.", paramd::client::DTypeName(t.dtype),
                        ">)");
  }

  std::vector<std::string> suffixes;
  if (std::string device = DeviceSuffix(t.device); !device.empty()) {
    suffixes.push_back(std::move(device));
  }
  std::string body;
  if (numel == 0) {
    // Matches NumPy: the shape is shown unless it is (0,); with no element to tell an
    // integer from a float, every dtype but the default one is shown.
    if (t.shape.size() != 1) suffixes.push_back(absl::StrCat("size=", ShapeTuple(t.shape)));
    if (t.dtype != DType::kFloat32) {
      suffixes.push_back(absl::StrCat("dtype=torch.", paramd::client::DTypeName(t.dtype)));
    }
    body = "[]";
  } else {
    if (t.dtype != DType::kFloat32 && t.dtype != DType::kInt64 && t.dtype != DType::kBool) {
      suffixes.push_back(absl::StrCat("dtype=torch.", paramd::client::DTypeName(t.dtype)));
    }
    layout.summarize = numel > kThreshold;
    std::vector<int64_t> shown;
    CollectShown(layout, 0, 0, &shown);
    const Formatter formatter(t, shown);
    body = TensorStr(layout, formatter, 0, 0, kIndent);
  }
  if (t.requires_grad) suffixes.push_back("requires_grad=True");
  return absl::StrCat(head, AddSuffixes(absl::StrCat(kPrefix, body), suffixes, kIndent));
}

}  // namespace paramd::cli
