#include "client/cli/npy.h"

#include <sys/stat.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "base/half.h"
#include "base/status_macros.h"
#include "base/zip/zip.h"
#include "client/cli/local_file.h"

namespace paramd::cli {
namespace {

using paramd::client::DType;
using paramd::client::HostTensor;

constexpr absl::string_view kNpyMagic = "\x93NUMPY";
// np.lib.format: headers are padded so that the data starts on a 64-byte boundary, and
// carry spare spaces for the first axis to grow to 21 digits.
constexpr size_t kArrayAlign = 64;
constexpr size_t kGrowthAxisMaxDigits = 21;

// ---------------------------------------------------------------------------------------
// Little-endian byte access.

uint64_t LoadLE(const char* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) {
    v |= static_cast<uint64_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  }
  return v;
}

void AppendLE(std::string* out, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// ---------------------------------------------------------------------------------------
// dtypes.

// The descr np.save writes for `dtype` (bfloat16 is written as float32).
absl::string_view Descr(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
    case DType::kBFloat16:
      return "<f4";
    case DType::kFloat64:
      return "<f8";
    case DType::kFloat16:
      return "<f2";
    case DType::kInt64:
      return "<i8";
    case DType::kInt32:
      return "<i4";
    case DType::kInt16:
      return "<i2";
    case DType::kInt8:
      return "|i1";
    case DType::kUInt8:
      return "|u1";
    case DType::kBool:
      return "|b1";
  }
  return "";
}

struct ParsedDescr {
  DType dtype;
  bool big_endian;
};

absl::StatusOr<ParsedDescr> ParseDescr(absl::string_view descr, absl::string_view source) {
  auto unsupported = [&]() {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": NumPy dtype '", descr,
        "' is not supported; use float16, float32, float64, int8, int16, int32, int64, "
        "uint8 or bool (convert with arr.astype(...) before saving)"));
  };
  if (descr.size() < 2) return unsupported();
  const char order = descr[0];
  if (order != '<' && order != '>' && order != '|' && order != '=') return unsupported();
  const absl::string_view type = descr.substr(1);
  DType dtype;
  if (type == "f2") {
    dtype = DType::kFloat16;
  } else if (type == "f4") {
    dtype = DType::kFloat32;
  } else if (type == "f8") {
    dtype = DType::kFloat64;
  } else if (type == "i1") {
    dtype = DType::kInt8;
  } else if (type == "i2") {
    dtype = DType::kInt16;
  } else if (type == "i4") {
    dtype = DType::kInt32;
  } else if (type == "i8") {
    dtype = DType::kInt64;
  } else if (type == "u1") {
    dtype = DType::kUInt8;
  } else if (type == "b1") {
    dtype = DType::kBool;
  } else {
    return unsupported();
  }
  // '|' (no byte order) only makes sense for one-byte types.
  if (order == '|' && paramd::client::ElementSize(dtype) != 1) return unsupported();
  // '=' is the writer's native order; every platform paramd runs on is little-endian.
  return ParsedDescr{dtype, order == '>'};
}

// ---------------------------------------------------------------------------------------
// The header: a Python dict literal such as
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// parsed strictly (exactly these three keys, each once) but with Python's freedom in
// whitespace, quotes and trailing commas.

struct Header {
  std::string descr;
  bool fortran_order = false;
  std::vector<int64_t> shape;
};

class HeaderParser {
 public:
  HeaderParser(absl::string_view text, absl::string_view source, bool allow_long_suffix)
      : text_(text), source_(source), allow_long_suffix_(allow_long_suffix) {}

  absl::StatusOr<Header> Parse() {
    Header header;
    bool seen_descr = false, seen_fortran = false, seen_shape = false;
    SkipSpace();
    PARAMD_RETURN_IF_ERROR(Expect('{'));
    SkipSpace();
    while (!Peek('}')) {
      PARAMD_ASSIGN_OR_RETURN(std::string key, ParseString());
      SkipSpace();
      PARAMD_RETURN_IF_ERROR(Expect(':'));
      SkipSpace();
      if (key == "descr") {
        if (seen_descr) return Error("duplicate key 'descr'");
        seen_descr = true;
        if (Peek('[')) {
          return absl::InvalidArgumentError(
              absl::StrCat(source_, ": structured NumPy dtypes are not supported"));
        }
        PARAMD_ASSIGN_OR_RETURN(header.descr, ParseString());
      } else if (key == "fortran_order") {
        if (seen_fortran) return Error("duplicate key 'fortran_order'");
        seen_fortran = true;
        PARAMD_ASSIGN_OR_RETURN(header.fortran_order, ParseBool());
      } else if (key == "shape") {
        if (seen_shape) return Error("duplicate key 'shape'");
        seen_shape = true;
        PARAMD_ASSIGN_OR_RETURN(header.shape, ParseShape());
      } else {
        return Error(absl::StrCat("unexpected key '", key, "'"));
      }
      SkipSpace();
      if (Peek(',')) {
        ++pos_;
        SkipSpace();
      } else if (!Peek('}')) {
        return Error("expected ',' or '}'");
      }
    }
    ++pos_;  // '}'
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after '}'");
    if (!seen_descr || !seen_fortran || !seen_shape) {
      return Error("the keys must be exactly 'descr', 'fortran_order' and 'shape'");
    }
    return header;
  }

 private:
  absl::Status Error(absl::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(source_, ": malformed .npy header at offset ", pos_, ": ", what,
                     " (header: ", absl::StripTrailingAsciiWhitespace(text_.substr(0, 200)), ")"));
  }

  void SkipSpace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool Peek(char c) const { return pos_ < text_.size() && text_[pos_] == c; }

  absl::Status Expect(char c) {
    if (!Peek(c)) return Error(absl::StrCat("expected '", absl::string_view(&c, 1), "'"));
    ++pos_;
    return absl::OkStatus();
  }

  // A quoted string without escapes: every value np.save writes is one.
  absl::StatusOr<std::string> ParseString() {
    if (!Peek('\'') && !Peek('"')) return Error("expected a quoted string");
    const char quote = text_[pos_++];
    const size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] != quote) {
      if (text_[pos_] == '\\' || text_[pos_] == '\n') return Error("unsupported string escape");
      ++pos_;
    }
    if (pos_ == text_.size()) return Error("unterminated string");
    std::string value(text_.substr(start, pos_ - start));
    ++pos_;
    return value;
  }

  absl::StatusOr<bool> ParseBool() {
    if (absl::StartsWith(text_.substr(pos_), "True")) {
      pos_ += 4;
      return true;
    }
    if (absl::StartsWith(text_.substr(pos_), "False")) {
      pos_ += 5;
      return false;
    }
    return Error("expected True or False");
  }

  // A Python tuple of non-negative ints: "()", "(3,)", "(2, 3)", "(2, 3,)".
  absl::StatusOr<std::vector<int64_t>> ParseShape() {
    PARAMD_RETURN_IF_ERROR(Expect('('));
    SkipSpace();
    std::vector<int64_t> shape;
    bool trailing_comma = false;
    while (!Peek(')')) {
      PARAMD_ASSIGN_OR_RETURN(int64_t dim, ParseDim());
      shape.push_back(dim);
      SkipSpace();
      trailing_comma = false;
      if (Peek(',')) {
        ++pos_;
        trailing_comma = true;
        SkipSpace();
      } else if (!Peek(')')) {
        return Error("expected ',' or ')' in shape");
      }
    }
    ++pos_;  // ')'
    // "(3)" is the int 3 in Python, not a tuple.
    if (shape.size() == 1 && !trailing_comma) return Error("shape is not a tuple");
    return shape;
  }

  absl::StatusOr<int64_t> ParseDim() {
    const size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
    const absl::string_view digits = text_.substr(start, pos_ - start);
    if (digits.empty()) return Error("expected a non-negative integer in shape");
    if (digits.size() > 1 && digits[0] == '0') return Error("integer with a leading zero");
    if (digits.size() > 18) return Error("dimension too large");
    int64_t value = 0;
    for (char c : digits) value = value * 10 + (c - '0');
    // Python 2 wrote longs as "3L"; NumPy still reads those in 1.0 and 2.0 files.
    if (allow_long_suffix_ && Peek('L')) ++pos_;
    return value;
  }

  absl::string_view text_;
  absl::string_view source_;
  bool allow_long_suffix_;
  size_t pos_ = 0;
};

absl::StatusOr<int64_t> CheckedNumel(const std::vector<int64_t>& shape, size_t element_bytes,
                                     absl::string_view source) {
  int64_t numel = 1;
  for (int64_t d : shape) {
    if (d < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": negative dimension in shape (", absl::StrJoin(shape, ", "), ")"));
    }
    if (d != 0 && numel > INT64_MAX / static_cast<int64_t>(element_bytes) / d) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": shape (", absl::StrJoin(shape, ", "), ") is too large"));
    }
    numel *= d;
  }
  return numel;
}

std::string ShapeRepr(const std::vector<int64_t>& shape) {
  if (shape.size() == 1) return absl::StrCat("(", shape[0], ",)");
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

// Reorders `data` (Fortran order: first index fastest) into C order.
std::string FortranToC(const std::string& data, const std::vector<int64_t>& shape,
                       size_t element_bytes) {
  const size_t rank = shape.size();
  const int64_t numel = static_cast<int64_t>(data.size() / element_bytes);
  if (rank < 2 || numel == 0) return data;
  std::vector<int64_t> f_strides(rank);
  int64_t stride = 1;
  for (size_t d = 0; d < rank; ++d) {
    f_strides[d] = stride;
    stride *= shape[d];
  }
  std::string out(data.size(), '\0');
  std::vector<int64_t> index(rank, 0);
  int64_t source = 0;  // Fortran offset of `index`
  for (int64_t c = 0; c < numel; ++c) {
    std::memcpy(&out[c * element_bytes], &data[source * element_bytes], element_bytes);
    // Advance the C-order multi-index (last dimension fastest).
    for (size_t d = rank; d-- > 0;) {
      if (++index[d] < shape[d]) {
        source += f_strides[d];
        break;
      }
      source -= (shape[d] - 1) * f_strides[d];
      index[d] = 0;
    }
  }
  return out;
}

struct FileCloser {
  void operator()(FILE* file) const { std::fclose(file); }
};

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::unique_ptr<FILE, FileCloser> file(std::fopen(path.c_str(), "rb"));
  if (file == nullptr) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open '", path, "'"));
  // A pipe is read to its end here; a directory would fail the read with a bare EISDIR.
  struct stat info;
  if (fstat(fileno(file.get()), &info) == 0 && S_ISDIR(info.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "' is a directory; a .npy or .npz file is wanted"));
  }
  std::string bytes;
  char buffer[1 << 16];
  while (true) {
    const size_t n = std::fread(buffer, 1, sizeof(buffer), file.get());
    bytes.append(buffer, n);
    if (n < sizeof(buffer)) break;
  }
  if (std::ferror(file.get())) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot read '", path, "'"));
  }
  return bytes;
}

absl::Status WriteFile(const std::string& path, absl::string_view bytes) {
  FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot create '", path, "'"));
  }
  const size_t written = std::fwrite(bytes.data(), 1, bytes.size(), file);
  const int write_errno = errno;
  if (written != bytes.size()) {
    std::fclose(file);
    return absl::ErrnoToStatus(write_errno, absl::StrCat("cannot write '", path, "'"));
  }
  if (std::fclose(file) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot write '", path, "'"));
  }
  return absl::OkStatus();
}

// .npz members: "<key>.npy", read back as "<key>" (np.load's NpzFile keys).
std::string NpzKey(absl::string_view member) {
  if (absl::EndsWith(member, ".npy")) member.remove_suffix(4);
  return std::string(member);
}

absl::Span<const uint8_t> AsBytes(absl::string_view bytes) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

// The magic and version bytes are all there.
absl::Status CheckPreamble(absl::string_view bytes, absl::string_view source) {
  auto invalid = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
  };
  // Callers hand over the whole file (or member) when it is this short, so a start of the
  // magic that stops early is a file cut short, not some other kind of file.
  const size_t preamble = kNpyMagic.size() + 2;
  if (bytes.empty()) return invalid("empty (0 bytes), not a .npy file");
  if (bytes.size() < preamble &&
      bytes.substr(0, kNpyMagic.size()) == kNpyMagic.substr(0, bytes.size())) {
    return invalid(absl::StrCat("truncated: it ends after ", bytes.size(),
                                " bytes, inside the .npy magic and version (", preamble,
                                " bytes, then the header); write the file again"));
  }
  if (bytes.size() < preamble || bytes.substr(0, kNpyMagic.size()) != kNpyMagic) {
    return invalid("not a .npy file (missing the \\x93NUMPY magic)");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<NpyLayout> ParseNpyHeader(absl::string_view bytes, absl::string_view source) {
  auto invalid = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
  };
  PARAMD_RETURN_IF_ERROR(CheckPreamble(bytes, source));
  const int major = static_cast<unsigned char>(bytes[6]);
  const int minor = static_cast<unsigned char>(bytes[7]);
  if (major < 1 || major > 3 || minor != 0) {
    return invalid(absl::StrCat(".npy format version ", major, ".", minor,
                                " is not supported (1.0, 2.0 and 3.0 are)"));
  }
  const size_t length_bytes = major == 1 ? 2 : 4;
  const size_t prefix = 8 + length_bytes;
  if (bytes.size() < prefix) return invalid("truncated in the header length");
  const uint64_t header_len = LoadLE(bytes.data() + 8, length_bytes);
  if (header_len > bytes.size() - prefix) {
    return invalid(absl::StrCat("truncated in the header (", header_len, " bytes declared, ",
                                bytes.size() - prefix, " present)"));
  }
  const absl::string_view header_text = bytes.substr(prefix, header_len);
  PARAMD_ASSIGN_OR_RETURN(Header header, HeaderParser(header_text, source, major < 3).Parse());
  PARAMD_ASSIGN_OR_RETURN(ParsedDescr descr, ParseDescr(header.descr, source));
  const size_t element_bytes = paramd::client::ElementSize(descr.dtype);
  PARAMD_ASSIGN_OR_RETURN(int64_t numel, CheckedNumel(header.shape, element_bytes, source));
  NpyLayout layout;
  layout.dtype = descr.dtype;
  layout.shape = std::move(header.shape);
  layout.big_endian = descr.big_endian && element_bytes > 1;
  layout.fortran_order = header.fortran_order;
  layout.data_offset = prefix + header_len;
  layout.data_bytes = static_cast<uint64_t>(numel) * element_bytes;
  layout.descr = std::move(header.descr);
  return layout;
}

void NormalizeNpyData(const NpyLayout& layout, char* data, size_t size) {
  const size_t element_bytes = paramd::client::ElementSize(layout.dtype);
  if (layout.big_endian) {
    for (size_t i = 0; i + element_bytes <= size; i += element_bytes) {
      std::reverse(data + i, data + i + element_bytes);
    }
  }
  if (layout.dtype == DType::kBool) {
    for (size_t i = 0; i < size; ++i) data[i] = data[i] != 0 ? 1 : 0;
  }
}

bool NpyDataIsAsHeld(const NpyLayout& layout) {
  return !layout.big_endian && layout.dtype != DType::kBool &&
         !(layout.fortran_order && layout.shape.size() >= 2);
}

absl::StatusOr<HostTensor> ParseNpy(absl::string_view bytes, absl::string_view source) {
  PARAMD_ASSIGN_OR_RETURN(NpyLayout layout, ParseNpyHeader(bytes, source));
  const uint64_t expected = layout.data_bytes;
  const absl::string_view data = bytes.substr(layout.data_offset);
  if (data.size() != expected) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": ", data.size() < expected ? "truncated data: " : "trailing data: ", "shape ",
        ShapeRepr(layout.shape), " of '", layout.descr, "' needs ", expected,
        " bytes after the header but ", data.size(), " are present"));
  }
  HostTensor t;
  t.dtype = layout.dtype;
  t.shape = layout.shape;
  t.data.assign(data.data(), data.size());
  NormalizeNpyData(layout, t.data.data(), t.data.size());
  if (layout.fortran_order) {
    t.data = FortranToC(t.data, t.shape, paramd::client::ElementSize(t.dtype));
  }
  return t;
}

std::string NpyHeader(DType dtype, const std::vector<int64_t>& shape) {
  // np.lib.format._write_array_header: sorted keys, repr'd values, growth room, padding.
  std::string header = absl::StrCat("{'descr': '", Descr(dtype),
                                    "', 'fortran_order': False, 'shape': ", ShapeRepr(shape), ", }");
  if (!shape.empty()) {
    const size_t digits = absl::StrCat(shape[0]).size();
    header.append(kGrowthAxisMaxDigits - std::min(digits, kGrowthAxisMaxDigits), ' ');
  }
  int major = 1;
  size_t length_bytes = 2;
  size_t padded = 0;
  for (; major <= 2; ++major, length_bytes = 4) {
    const size_t prefix = kNpyMagic.size() + 2 + length_bytes;
    const size_t hlen = header.size() + 1;  // with the final '\n'
    padded = hlen + (kArrayAlign - (prefix + hlen) % kArrayAlign);
    if (major == 2 || padded <= 0xffff) break;
  }
  header.append(padded - 1 - header.size(), ' ');
  header.push_back('\n');
  std::string out;
  out.reserve(12 + header.size());
  out.append(kNpyMagic.data(), kNpyMagic.size());
  out.push_back(static_cast<char>(major));
  out.push_back('\0');
  AppendLE(&out, header.size(), length_bytes);
  out.append(header);
  return out;
}

void WidenBFloat16(absl::string_view bfloat16, std::string* out) {
  const size_t start = out->size();
  out->resize(start + bfloat16.size() / 2 * 4);
  char* dst = out->data() + start;
  // Widening is exact: a bfloat16 is the top half of a float32.
  for (size_t i = 0; i + 2 <= bfloat16.size(); i += 2, dst += 4) {
    const uint32_t bits = std::bit_cast<uint32_t>(
        BFloat16BitsToFloat(static_cast<uint16_t>(LoadLE(bfloat16.data() + i, 2))));
    for (int b = 0; b < 4; ++b) dst[b] = static_cast<char>((bits >> (8 * b)) & 0xff);
  }
}

absl::string_view BFloat16Widener::Widen(absl::string_view bytes) {
  widened_.clear();
  if (!carry_.empty() && !bytes.empty()) {
    carry_.push_back(bytes[0]);
    bytes.remove_prefix(1);
    WidenBFloat16(carry_, &widened_);
    carry_.clear();
  }
  WidenBFloat16(bytes.substr(0, bytes.size() & ~size_t{1}), &widened_);
  if (bytes.size() % 2 != 0) carry_.assign(1, bytes.back());
  return widened_;
}

absl::StatusOr<std::string> SerializeNpy(const HostTensor& tensor) {
  PARAMD_ASSIGN_OR_RETURN(
      int64_t numel,
      CheckedNumel(tensor.shape, paramd::client::ElementSize(tensor.dtype), "tensor"));
  const size_t nbytes = static_cast<size_t>(numel) * paramd::client::ElementSize(tensor.dtype);
  if (tensor.data.size() != nbytes) {
    return absl::InvalidArgumentError(absl::StrCat("tensor of shape ", ShapeRepr(tensor.shape),
                                                   " holds ", tensor.data.size(),
                                                   " bytes; its dtype needs ", nbytes));
  }

  std::string out = NpyHeader(tensor.dtype, tensor.shape);
  out.reserve(out.size() + (tensor.dtype == DType::kBFloat16 ? 2 * nbytes : nbytes));
  if (tensor.dtype == DType::kBFloat16) {
    WidenBFloat16(tensor.data, &out);
  } else {
    out.append(tensor.data);
  }
  return out;
}

absl::StatusOr<HostTensor> ReadNpy(const std::string& path) {
  PARAMD_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  return ParseNpy(bytes, path);
}

absl::Status WriteNpy(const std::string& path, const HostTensor& tensor) {
  absl::StatusOr<std::string> bytes = SerializeNpy(tensor);
  if (!bytes.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot save '", path, "': ", bytes.status().message()));
  }
  return WriteFile(path, *bytes);
}

absl::StatusOr<NamedTensors> ParseNpz(absl::string_view bytes, absl::string_view source) {
  auto not_npz = [&](const absl::Status& status) {
    return absl::Status(status.code(),
                        absl::StrCat(source, ": not a valid .npz file: ", status.message()));
  };
  // Keys drop ".npy", so "a" and "a.npy" collide too: checked on the central directory's
  // names first, ahead of the zip reader's own rule against equal names.
  absl::StatusOr<std::vector<std::string>> names = zip::Reader::ListNames(AsBytes(bytes));
  if (!names.ok()) return not_npz(names.status());
  std::set<std::string> keys;
  for (size_t i = 0; i < names->size(); ++i) {
    const std::string& member = (*names)[i];
    PARAMD_RETURN_IF_ERROR(CheckNpzMemberNameUtf8(member, i + 1, source));
    if (absl::EndsWith(member, "/")) continue;  // a directory
    if (!keys.insert(NpzKey(member)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": more than one member is named '", NpzKey(member), "'"));
    }
  }
  absl::StatusOr<zip::Reader> archive = zip::Reader::Open(bytes);
  if (!archive.ok()) return not_npz(archive.status());
  NamedTensors tensors;
  for (const zip::Entry& entry : archive->entries()) {
    if (absl::EndsWith(entry.name, "/") && entry.size == 0) continue;  // a directory
    const std::string where = absl::StrCat(source, ": member '", entry.name, "'");
    absl::StatusOr<std::string> member = archive->Extract(entry);
    if (!member.ok()) {
      return absl::Status(member.status().code(),
                          absl::StrCat(where, ": ", member.status().message()));
    }
    PARAMD_ASSIGN_OR_RETURN(HostTensor tensor, ParseNpy(*member, where));
    tensors.emplace_back(NpzKey(entry.name), std::move(tensor));
  }
  return tensors;
}

absl::Status CheckNpzMemberNameUtf8(absl::string_view name, size_t number,
                                    absl::string_view source) {
  if (!FirstNonUtf8(name).has_value()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "member ", number, " of '", source, "' has a name that is not UTF-8 (bytes ", HexBytes(name),
      "): tensor names are sent as UTF-8 text; save the arrays again under ",
      "str keys (np.savez writes them in UTF-8)"));
}

absl::StatusOr<std::string> NpzMemberName(const std::string& name, std::set<std::string>& names) {
  if (name.empty() || name.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError("an .npz member name must be non-empty and hold no NUL");
  }
  if (!names.insert(name).second) {
    return absl::InvalidArgumentError(
        absl::StrCat("the name '", name, "' appears twice; .npz member names must be unique"));
  }
  std::string file_name = name + ".npy";
  if (file_name.size() > 0xffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("the name '", name.substr(0, 64), "...' is too long for a ZIP member"));
  }
  return file_name;
}

absl::StatusOr<std::string> SerializeNpz(const NamedTensors& tensors) {
  if (tensors.size() >= 0xffff) {
    return absl::InvalidArgumentError(absl::StrCat(
        tensors.size(), " tensors are too many for one .npz (at most 65534 without ZIP64)"));
  }
  // As np.savez: members stored where they fall (no alignment padding), marked as Unix files.
  zip::StringSink archive;
  zip::Writer writer(archive, zip::WriterOptions{.alignment = 0, .unix_mode = 0100644});
  uint64_t directory_size = 0;
  std::set<std::string> names;
  for (const auto& [name, tensor] : tensors) {
    PARAMD_ASSIGN_OR_RETURN(const std::string file_name, NpzMemberName(name, names));
    absl::StatusOr<std::string> data = SerializeNpy(tensor);
    if (!data.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", name, "': ", data.status().message()));
    }
    if (data->size() >= 0xffffffff || archive.size() >= 0xffffffff) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor '", name, "' does not fit an .npz without ZIP64 (4 GiB); save it as .npy"));
    }
    PARAMD_RETURN_IF_ERROR(writer.AddEntry(file_name, *data));
    directory_size += 46 + file_name.size();  // its central directory header
  }
  if (archive.size() >= 0xffffffff || directory_size >= 0xffffffff) {
    return absl::InvalidArgumentError(
        "the tensors do not fit an .npz without ZIP64 (4 GiB); save them as .npy files");
  }
  PARAMD_RETURN_IF_ERROR(writer.Finish());
  return std::move(archive.data);
}

absl::StatusOr<NamedTensors> ReadNpz(const std::string& path) {
  PARAMD_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path));
  return ParseNpz(bytes, path);
}

absl::Status WriteNpz(const std::string& path, const NamedTensors& tensors) {
  absl::StatusOr<std::string> bytes = SerializeNpz(tensors);
  if (!bytes.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot save '", path, "': ", bytes.status().message()));
  }
  return WriteFile(path, *bytes);
}

}  // namespace paramd::cli
