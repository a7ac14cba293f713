// The pieces of zip.h that both directions use: CRC-32, printable names, inflate.
#include "base/zip/zip.h"

#include <isa-l/crc.h>
#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/zip/zip_format.h"

namespace paramd::zip {

uint32_t Crc32(absl::Span<const uint8_t> data, uint32_t crc) {
  // ISA-L's folding CRC (PCLMULQDQ/AVX-512) runs at 8-10 GB/s here against zlib's 2 GB/s;
  // every .pt save and load checks every byte, so zlib's rate capped both (docs/benchmarks.md).
  // Same polynomial, same reflected form and chaining as zlib's crc32().
  const uint8_t* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    const uint64_t chunk = std::min<size_t>(left, uint64_t{1} << 30);
    crc = crc32_gzip_refl(crc, p, chunk);
    p += chunk;
    left -= chunk;
  }
  return crc;
}

std::string PrintableName(absl::string_view name) {
  std::string out;
  for (char c : name.substr(0, 200)) {
    const unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      absl::StrAppend(&out, "\\x", absl::Hex(u, absl::kZeroPad2));
    } else {
      out.push_back(c);
    }
  }
  if (name.size() > 200) out += "...";
  return out;
}

struct Inflater::State {
  z_stream stream;
  bool started = false;
};

Inflater::Inflater() : state_(std::make_unique<State>()) {
  std::memset(&state_->stream, 0, sizeof(state_->stream));
}

Inflater::~Inflater() {
  if (state_->started) inflateEnd(&state_->stream);
}

absl::StatusOr<size_t> Inflater::Run(absl::Span<const uint8_t>& input,
                                     absl::Span<uint8_t> output) {
  z_stream& stream = state_->stream;
  if (!state_->started) {
    if (inflateInit2(&stream, -MAX_WBITS) != Z_OK) {
      return absl::ResourceExhaustedError("cannot start zlib inflate");
    }
    state_->started = true;
  }
  size_t produced = 0;
  // zlib counts in uInt: at most UINT_MAX bytes each way per call.
  while (!finished_ && produced < output.size()) {
    const size_t in_size = std::min<size_t>(input.size(), UINT_MAX);
    const size_t out_size = std::min<size_t>(output.size() - produced, UINT_MAX);
    stream.next_in = const_cast<Bytef*>(input.data());
    stream.avail_in = static_cast<uInt>(in_size);
    stream.next_out = output.data() + produced;
    stream.avail_out = static_cast<uInt>(out_size);
    const int rc = inflate(&stream, Z_NO_FLUSH);
    const size_t consumed = in_size - stream.avail_in;
    const size_t written = out_size - stream.avail_out;
    input.remove_prefix(consumed);
    produced += written;
    if (rc == Z_STREAM_END) {
      finished_ = true;
    } else if (rc == Z_BUF_ERROR || (rc == Z_OK && consumed == 0 && written == 0)) {
      break;  // needs more input
    } else if (rc != Z_OK) {
      return absl::InvalidArgumentError(absl::StrCat(
          "corrupt deflate data: ", stream.msg != nullptr ? stream.msg : "inflate failed"));
    }
  }
  return produced;
}

namespace internal {

absl::StatusOr<std::string> Inflate(absl::Span<const uint8_t> compressed, uint64_t size) {
  auto corrupt = [](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("corrupt deflate data: ", what));
  };
  // Deflate cannot expand data more than 1032:1; a larger recorded size is a lie, and
  // believing it would allocate up to 16 EiB.
  if (size / 1032 > compressed.size() + 1) {
    return corrupt(absl::StrCat("recorded size ", size, " is impossible for ", compressed.size(),
                                " compressed bytes"));
  }
  std::string out(size, '\0');
  z_stream stream;
  std::memset(&stream, 0, sizeof(stream));
  if (inflateInit2(&stream, -MAX_WBITS) != Z_OK) {
    return absl::ResourceExhaustedError("cannot start zlib inflate");
  }
  // zlib counts in uInt, so feed both buffers in chunks of at most UINT_MAX bytes.
  stream.next_in = const_cast<Bytef*>(compressed.data());
  stream.next_out = reinterpret_cast<Bytef*>(out.data());
  size_t in_left = compressed.size();
  size_t out_left = out.size();
  int rc = Z_OK;
  do {
    if (stream.avail_in == 0) {
      stream.avail_in = static_cast<uInt>(std::min<size_t>(in_left, UINT_MAX));
      in_left -= stream.avail_in;
    }
    if (stream.avail_out == 0) {
      stream.avail_out = static_cast<uInt>(std::min<size_t>(out_left, UINT_MAX));
      out_left -= stream.avail_out;
    }
    rc = inflate(&stream, Z_NO_FLUSH);
  } while (rc == Z_OK);
  const size_t produced = out.size() - out_left - stream.avail_out;
  const std::string message = stream.msg != nullptr ? stream.msg : "inflate failed";
  inflateEnd(&stream);
  if (rc == Z_BUF_ERROR) {
    // No progress was possible: the input ran out, or the output is full.
    return corrupt(produced == out.size() ? "more data than the recorded size"
                                          : "the stream ends early");
  }
  if (rc != Z_STREAM_END) return corrupt(message);
  if (produced != out.size()) return corrupt("less data than the recorded size");
  return out;
}

}  // namespace internal
}  // namespace paramd::zip
