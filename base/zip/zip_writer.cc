// Writer of zip.h: local headers (PyTorch's 'FB' alignment padding, ZIP64 extra fields), data
// descriptors for streamed entries, deflate through zlib, and the central directory.
#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "base/zip/zip.h"
#include "base/zip/zip_format.h"
#include "base/status_macros.h"

namespace paramd::zip {

using namespace internal;  // NOLINT(build/namespaces): the format's constants and helpers

namespace {

bool IsAscii(absl::string_view name) {
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x80; });
}

// A raw deflate stream (no zlib or gzip wrapper, as ZIP method 8 holds), at zlib's default
// level as Python's zipfile uses.
class Deflater {
 public:
  Deflater() { std::memset(&stream_, 0, sizeof(stream_)); }
  ~Deflater() {
    if (started_) deflateEnd(&stream_);
  }
  Deflater(const Deflater&) = delete;
  Deflater& operator=(const Deflater&) = delete;

  absl::Status Start() {
    if (deflateInit2(&stream_, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -MAX_WBITS, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
      return absl::ResourceExhaustedError("cannot start zlib deflate");
    }
    started_ = true;
    return absl::OkStatus();
  }

  // Compresses `data`, appending what zlib emits to `out`; `finish` ends the stream.
  absl::Status Run(absl::Span<const uint8_t> data, bool finish, std::string& out) {
    const uint8_t* next = data.data();
    size_t left = data.size();
    uint8_t buffer[1 << 16];
    while (true) {
      // zlib counts in uInt, so feed the input in chunks of at most UINT_MAX bytes.
      if (stream_.avail_in == 0 && left > 0) {
        stream_.next_in = const_cast<Bytef*>(next);
        stream_.avail_in = static_cast<uInt>(std::min<size_t>(left, UINT_MAX));
        next += stream_.avail_in;
        left -= stream_.avail_in;
      }
      const bool last = finish && left == 0;
      stream_.next_out = buffer;
      stream_.avail_out = sizeof(buffer);
      const int rc = deflate(&stream_, last ? Z_FINISH : Z_NO_FLUSH);
      if (rc == Z_STREAM_ERROR) return absl::InternalError("zlib deflate failed");
      out.append(reinterpret_cast<const char*>(buffer), sizeof(buffer) - stream_.avail_out);
      if (last ? rc == Z_STREAM_END : (stream_.avail_in == 0 && left == 0)) break;
    }
    return absl::OkStatus();
  }

 private:
  z_stream stream_;
  bool started_ = false;
};

// The version needed to extract an entry (and the low byte of "made by").
uint16_t VersionNeeded(bool zip64) { return zip64 ? kVersionZip64 : kVersionDefault; }

}  // namespace

struct Writer::Streaming {
  Written entry;
  bool zip64 = false;
  uint32_t crc = 0;
  // BeginSizedEntry's: `entry` holds the declared sizes, `written` counts what came.
  bool sized = false;
  uint64_t written = 0;
  Deflater deflater;  // started for deflated entries only
};

Writer::Writer(Sink& out, WriterOptions options) : out_(out), options_(options) {}

Writer::~Writer() = default;

absl::Status Writer::Fail(absl::Status status) {
  error_ = status;
  return status;
}

absl::Status Writer::Append(absl::Span<const uint8_t> bytes) {
  if (bytes.empty()) return absl::OkStatus();
  absl::Status status = out_.Append(bytes);
  if (!status.ok()) return Fail(std::move(status));
  return absl::OkStatus();
}

absl::Status Writer::Append(const std::string& bytes) { return Append(AsBytes(bytes)); }

absl::Status Writer::CheckNewEntry(absl::string_view name, Method method) const {
  if (!error_.ok()) return error_;
  if (finished_) return absl::FailedPreconditionError("zip archive is already finished");
  if (streaming_ != nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "zip entry '", PrintableName(streaming_->entry.name), "' is still being written"));
  }
  if (name.empty()) return absl::InvalidArgumentError("zip entry name is empty");
  if (name.size() > kMax16) {
    return absl::InvalidArgumentError(
        absl::StrCat("zip entry name of ", name.size(), " bytes exceeds 65535"));
  }
  if (name.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("zip entry name '", PrintableName(name), "' holds a NUL byte"));
  }
  if (method != Method::kStored && method != Method::kDeflate) {
    return absl::InvalidArgumentError(absl::StrCat("zip entry '", PrintableName(name), "': method ",
                                                   static_cast<int>(method),
                                                   " is neither stored (0) nor deflate (8)"));
  }
  for (const Written& written : written_) {
    if (written.name == name) {
      return absl::InvalidArgumentError(
          absl::StrCat("zip entry '", PrintableName(name), "' is written twice"));
    }
  }
  return absl::OkStatus();
}

absl::Status Writer::WriteLocalHeader(const Written& entry, bool zip64) {
  const uint64_t offset = out_.size();
  const absl::string_view name = entry.name;
  std::string header;
  Put32(header, kLocalHeaderSignature);
  Put16(header, VersionNeeded(zip64));
  Put16(header, static_cast<uint16_t>((IsAscii(name) ? 0 : kFlagUtf8) |
                                      (entry.descriptor ? kFlagDataDescriptor : 0)));
  Put16(header, static_cast<uint16_t>(entry.method));
  Put16(header, 0);  // time
  Put16(header, kDosDate);
  // With a data descriptor the CRC and sizes follow the data (zeros here; all ones under
  // ZIP64, as Python's zipfile writes them).
  Put32(header, entry.crc32);
  Put32(header, zip64 ? kMax32 : static_cast<uint32_t>(entry.compressed_size));
  Put32(header, zip64 ? kMax32 : static_cast<uint32_t>(entry.size));
  Put16(header, static_cast<uint16_t>(name.size()));
  const size_t extra_length_at = header.size();
  Put16(header, 0);  // extra length, filled below
  header.append(name.data(), name.size());
  const size_t extra_begin = header.size();
  if (zip64) {
    Put16(header, kZip64ExtraId);
    Put16(header, 16);
    Put64(header, entry.size);
    Put64(header, entry.compressed_size);
  }
  if (options_.alignment > 0) {
    // PyTorch's padding: an 'FB' field whose length brings the data to the alignment.
    const uint64_t unpadded = offset + header.size() + 4;
    const uint64_t padding =
        (options_.alignment - unpadded % options_.alignment) % options_.alignment;
    header += "FB";
    Put16(header, static_cast<uint16_t>(padding));
    header.append(padding, 'Z');
  }
  const size_t extra_length = header.size() - extra_begin;
  header[extra_length_at] = static_cast<char>(extra_length & 0xFF);
  header[extra_length_at + 1] = static_cast<char>(extra_length >> 8);
  return Append(header);
}

void Writer::Record(Written entry) {
  combined_crc32_ =
      static_cast<uint32_t>(::crc32_combine(combined_crc32_, entry.crc32, entry.size));
  written_.push_back(std::move(entry));
}

absl::Status Writer::AddEntry(absl::string_view name, absl::Span<const uint8_t> data,
                              Method method) {
  PARAMD_RETURN_IF_ERROR(CheckNewEntry(name, method));
  std::string deflated;
  if (method == Method::kDeflate) {
    Deflater deflater;
    PARAMD_RETURN_IF_ERROR(deflater.Start());
    PARAMD_RETURN_IF_ERROR(deflater.Run(data, /*finish=*/true, deflated));
  }
  const absl::Span<const uint8_t> stored = method == Method::kDeflate ? AsBytes(deflated) : data;
  Written entry{std::string(name), method,      /*descriptor=*/false, out_.size(),
                stored.size(),     data.size(), Crc32(data)};
  const bool zip64 =
      options_.force_zip64 || entry.size >= kMax32 || entry.compressed_size >= kMax32;
  PARAMD_RETURN_IF_ERROR(WriteLocalHeader(entry, zip64));
  PARAMD_RETURN_IF_ERROR(Append(stored));
  Record(std::move(entry));
  return absl::OkStatus();
}

absl::Status Writer::BeginEntry(absl::string_view name, Method method) {
  PARAMD_RETURN_IF_ERROR(CheckNewEntry(name, method));
  auto streaming = std::make_unique<Streaming>();
  streaming->entry = Written{std::string(name), method, /*descriptor=*/true, out_.size(), 0, 0, 0};
  streaming->zip64 = options_.force_zip64;
  if (method == Method::kDeflate) PARAMD_RETURN_IF_ERROR(streaming->deflater.Start());
  PARAMD_RETURN_IF_ERROR(WriteLocalHeader(streaming->entry, streaming->zip64));
  streaming_ = std::move(streaming);
  return absl::OkStatus();
}

absl::Status Writer::BeginSizedEntry(absl::string_view name, uint64_t size) {
  PARAMD_RETURN_IF_ERROR(CheckNewEntry(name, Method::kStored));
  auto streaming = std::make_unique<Streaming>();
  streaming->entry =
      Written{std::string(name), Method::kStored, /*descriptor=*/false, out_.size(), size, size, 0};
  streaming->zip64 = options_.force_zip64 || size >= kMax32;
  streaming->sized = true;
  PARAMD_RETURN_IF_ERROR(WriteLocalHeader(streaming->entry, streaming->zip64));
  streaming_ = std::move(streaming);
  return absl::OkStatus();
}

absl::Status Writer::Write(absl::Span<const uint8_t> data) {
  if (!error_.ok()) return error_;
  if (streaming_ == nullptr) {
    return absl::FailedPreconditionError("zip Writer::Write without a BeginEntry");
  }
  Streaming& s = *streaming_;
  if (s.sized) {
    if (data.size() > s.entry.size - s.written) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("zip entry '", PrintableName(s.entry.name), "' was declared with ",
                       s.entry.size, " bytes but more are written")));
    }
    s.crc = Crc32(data, s.crc);
    s.written += data.size();
    return Append(data);
  }
  s.crc = Crc32(data, s.crc);
  s.entry.size += data.size();
  if (s.entry.method == Method::kDeflate) {
    std::string deflated;
    PARAMD_RETURN_IF_ERROR(s.deflater.Run(data, /*finish=*/false, deflated));
    s.entry.compressed_size += deflated.size();
    PARAMD_RETURN_IF_ERROR(Append(deflated));
  } else {
    s.entry.compressed_size += data.size();
    PARAMD_RETURN_IF_ERROR(Append(data));
  }
  if (!s.zip64 && (s.entry.size >= kMax32 || s.entry.compressed_size >= kMax32)) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("zip entry '", PrintableName(s.entry.name),
                     "' passed 4 GiB without ZIP64; write it with force_zip64")));
  }
  return absl::OkStatus();
}

absl::Status Writer::EndEntry() {
  if (!error_.ok()) return error_;
  if (streaming_ == nullptr) {
    return absl::FailedPreconditionError("zip Writer::EndEntry without a BeginEntry");
  }
  Streaming& s = *streaming_;
  if (s.sized) {
    if (s.written != s.entry.size) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("zip entry '", PrintableName(s.entry.name), "' was declared with ",
                       s.entry.size, " bytes but ends after ", s.written)));
    }
    s.entry.crc32 = s.crc;
    std::string crc;
    Put32(crc, s.crc);
    // The CRC-32 field of the local header (APPNOTE 4.3.7).
    absl::Status patched = out_.Overwrite(s.entry.local_header_offset + 14, AsBytes(crc));
    if (!patched.ok()) return Fail(std::move(patched));
    Record(std::move(s.entry));
    streaming_.reset();
    return absl::OkStatus();
  }
  if (s.entry.method == Method::kDeflate) {
    std::string tail;
    PARAMD_RETURN_IF_ERROR(s.deflater.Run({}, /*finish=*/true, tail));
    s.entry.compressed_size += tail.size();
    PARAMD_RETURN_IF_ERROR(Append(tail));
    if (!s.zip64 && s.entry.compressed_size >= kMax32) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("zip entry '", PrintableName(s.entry.name),
                       "' passed 4 GiB without ZIP64; write it with force_zip64")));
    }
  }
  s.entry.crc32 = s.crc;
  std::string descriptor;
  Put32(descriptor, kDataDescriptorSignature);
  Put32(descriptor, s.entry.crc32);
  if (s.zip64) {
    Put64(descriptor, s.entry.compressed_size);
    Put64(descriptor, s.entry.size);
  } else {
    Put32(descriptor, static_cast<uint32_t>(s.entry.compressed_size));
    Put32(descriptor, static_cast<uint32_t>(s.entry.size));
  }
  PARAMD_RETURN_IF_ERROR(Append(descriptor));
  Record(std::move(s.entry));
  streaming_.reset();
  return absl::OkStatus();
}

namespace {

// One central directory header.
void PutCentralHeader(std::string& directory, absl::string_view name, uint16_t flags,
                      uint16_t method, uint32_t crc, uint64_t compressed_size, uint64_t size,
                      uint64_t offset, bool force_zip64, uint32_t unix_mode) {
  const bool size64 = force_zip64 || size >= kMax32 || compressed_size >= kMax32;
  const bool offset64 = force_zip64 || offset >= kMax32;
  std::string extra;
  if (size64 || offset64) {
    Put16(extra, kZip64ExtraId);
    Put16(extra, static_cast<uint16_t>((size64 ? 16 : 0) + (offset64 ? 8 : 0)));
    if (size64) {
      Put64(extra, size);
      Put64(extra, compressed_size);
    }
    if (offset64) Put64(extra, offset);
  }
  const uint16_t version = VersionNeeded(size64 || offset64);
  Put32(directory, kCentralHeaderSignature);
  // Made by: MS-DOS (no attributes) or Unix (mode bits), this version.
  Put16(directory, static_cast<uint16_t>((unix_mode != 0 ? 3 << 8 : 0) | version));
  Put16(directory, version);
  Put16(directory, flags);
  Put16(directory, method);
  Put16(directory, 0);
  Put16(directory, kDosDate);
  Put32(directory, crc);
  Put32(directory, size64 ? kMax32 : static_cast<uint32_t>(compressed_size));
  Put32(directory, size64 ? kMax32 : static_cast<uint32_t>(size));
  Put16(directory, static_cast<uint16_t>(name.size()));
  Put16(directory, static_cast<uint16_t>(extra.size()));
  Put16(directory, 0);                // comment
  Put16(directory, 0);                // disk
  Put16(directory, 0);                // internal attributes
  Put32(directory, unix_mode << 16);  // external attributes
  Put32(directory, offset64 ? kMax32 : static_cast<uint32_t>(offset));
  directory.append(name.data(), name.size());
  directory += extra;
}

// The end records: ZIP64 end record and locator when needed, then the classic one.
void PutEndRecords(std::string& out, uint64_t count, uint64_t directory_offset,
                   uint64_t directory_size, bool zip64_end) {
  if (zip64_end) {
    const uint64_t zip64_offset = directory_offset + directory_size;
    Put32(out, kZip64EndSignature);
    Put64(out, kZip64EndSize - 12);
    Put16(out, kVersionZip64);
    Put16(out, kVersionZip64);
    Put32(out, 0);
    Put32(out, 0);
    Put64(out, count);
    Put64(out, count);
    Put64(out, directory_size);
    Put64(out, directory_offset);
    Put32(out, kZip64LocatorSignature);
    Put32(out, 0);
    Put64(out, zip64_offset);
    Put32(out, 1);
  }
  Put32(out, kEndSignature);
  Put16(out, 0);
  Put16(out, 0);
  Put16(out, zip64_end ? kMax16 : static_cast<uint16_t>(count));
  Put16(out, zip64_end ? kMax16 : static_cast<uint16_t>(count));
  Put32(out, zip64_end ? kMax32 : static_cast<uint32_t>(directory_size));
  Put32(out, zip64_end ? kMax32 : static_cast<uint32_t>(directory_offset));
  Put16(out, 0);  // comment
}

}  // namespace

absl::Status Writer::Finish() {
  if (!error_.ok()) return error_;
  if (finished_) return absl::FailedPreconditionError("zip archive is already finished");
  if (streaming_ != nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "zip entry '", PrintableName(streaming_->entry.name), "' is still being written"));
  }
  const uint64_t directory_offset = out_.size();
  std::string directory;
  for (const Written& entry : written_) {
    const uint16_t flags = static_cast<uint16_t>((IsAscii(entry.name) ? 0 : kFlagUtf8) |
                                                 (entry.descriptor ? kFlagDataDescriptor : 0));
    PutCentralHeader(directory, entry.name, flags, static_cast<uint16_t>(entry.method), entry.crc32,
                     entry.compressed_size, entry.size, entry.local_header_offset,
                     options_.force_zip64, options_.unix_mode);
  }
  const uint64_t count = written_.size();
  const uint64_t directory_size = directory.size();
  const bool zip64_end = options_.force_zip64 || count >= kMax16 || directory_size >= kMax32 ||
                         directory_offset >= kMax32;
  PutEndRecords(directory, count, directory_offset, directory_size, zip64_end);
  PARAMD_RETURN_IF_ERROR(Append(directory));
  finished_ = true;
  return absl::OkStatus();
}

}  // namespace paramd::zip
