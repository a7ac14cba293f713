#include "server/io/zip.h"

#include <isa-l/crc.h>
#include <zlib.h>

#include <algorithm>
#include <limits>
#include <set>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace paramd::io {
namespace {

constexpr uint32_t kLocalHeaderSignature = 0x04034b50;
constexpr uint32_t kCentralHeaderSignature = 0x02014b50;
constexpr uint32_t kEndSignature = 0x06054b50;
constexpr uint32_t kZip64EndSignature = 0x06064b50;
constexpr uint32_t kZip64LocatorSignature = 0x07064b50;

constexpr size_t kLocalHeaderSize = 30;
constexpr size_t kCentralHeaderSize = 46;
constexpr size_t kEndSize = 22;
constexpr size_t kZip64EndSize = 56;
constexpr size_t kZip64LocatorSize = 20;

constexpr uint16_t kZip64ExtraId = 0x0001;
constexpr uint16_t kFlagEncrypted = 1 << 0;
constexpr uint16_t kFlagDataDescriptor = 1 << 3;
constexpr uint16_t kFlagUtf8 = 1 << 11;
constexpr uint16_t kMethodStored = 0;
constexpr uint32_t kMax32 = 0xFFFFFFFF;
constexpr uint16_t kMax16 = 0xFFFF;
// DOS date 1980-01-01, time 00:00: fixed so that equal inputs give equal archives.
constexpr uint16_t kDosDate = (0 << 9) | (1 << 5) | 1;

template <typename... Args>
absl::Status Invalid(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat("zip archive: ", args...));
}

uint16_t Load16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t Load32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}
uint64_t Load64(const uint8_t* p) {
  return static_cast<uint64_t>(Load32(p)) | (static_cast<uint64_t>(Load32(p + 4)) << 32);
}

void Put16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v & 0xFF));
  out.push_back(static_cast<char>(v >> 8));
}
void Put32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}
void Put64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

// Printable form of an entry name for messages (names come from untrusted files).
std::string Printable(absl::string_view name) {
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

// The values a ZIP64 extra field replaces, filled in where the 32-bit field was all ones.
struct Zip64Values {
  uint64_t uncompressed;
  uint64_t compressed;
  uint64_t offset;
  uint32_t disk;
};

// Walks the extra field block, checking its framing, and applies the ZIP64 field when the
// header's 32-bit values say one is needed.
absl::Status ApplyZip64Extra(absl::Span<const uint8_t> extra, bool want_uncompressed,
                             bool want_compressed, bool want_offset, bool want_disk,
                             const std::string& where, Zip64Values& values) {
  bool found = false;
  size_t pos = 0;
  while (pos < extra.size()) {
    if (extra.size() - pos < 4) {
      return Invalid(where, " has a truncated extra field header");
    }
    const uint16_t id = Load16(extra.data() + pos);
    const uint16_t length = Load16(extra.data() + pos + 2);
    pos += 4;
    if (extra.size() - pos < length) {
      return Invalid(where, " has an extra field of ", length, " bytes running past its end");
    }
    if (id == kZip64ExtraId && !found) {
      found = true;
      const uint8_t* field = extra.data() + pos;
      size_t left = length;
      auto take64 = [&](uint64_t& value, const char* what) -> absl::Status {
        if (left < 8) return Invalid(where, " has a ZIP64 extra field without the ", what);
        value = Load64(field);
        field += 8;
        left -= 8;
        return absl::OkStatus();
      };
      if (want_uncompressed) {
        PARAMD_RETURN_IF_ERROR(take64(values.uncompressed, "uncompressed size"));
      }
      if (want_compressed) PARAMD_RETURN_IF_ERROR(take64(values.compressed, "compressed size"));
      if (want_offset) PARAMD_RETURN_IF_ERROR(take64(values.offset, "local header offset"));
      if (want_disk) {
        if (left < 4) return Invalid(where, " has a ZIP64 extra field without the disk number");
        values.disk = Load32(field);
      }
    }
    pos += length;
  }
  if (!found && (want_uncompressed || want_compressed || want_offset || want_disk)) {
    return Invalid(where, " has 32-bit fields set to 0xFFFFFFFF but no ZIP64 extra field");
  }
  return absl::OkStatus();
}

struct EndRecord {
  uint64_t entry_count;
  uint64_t directory_size;
  uint64_t directory_offset;
  uint64_t directory_limit;  // where the end records begin: the directory must end by here
};

absl::StatusOr<EndRecord> ReadEndRecord(absl::Span<const uint8_t> archive) {
  const uint64_t size = archive.size();
  if (size < kEndSize) {
    return Invalid("the file has ", size,
                   " bytes, too few for an end of central directory record (truncated?)");
  }
  // The record is the last thing in the file but for a comment of up to 65535 bytes.
  const uint64_t lowest = size - kEndSize > kMax16 ? size - kEndSize - kMax16 : 0;
  uint64_t end_pos = size;  // not found
  for (uint64_t pos = size - kEndSize + 1; pos-- > lowest;) {
    const uint8_t* p = archive.data() + pos;
    if (Load32(p) == kEndSignature && Load16(p + 20) == size - pos - kEndSize) {
      end_pos = pos;
      break;
    }
  }
  if (end_pos == size) {
    return Invalid("no end of central directory record: the file is truncated or not a zip");
  }
  const uint8_t* end = archive.data() + end_pos;
  const uint16_t disk = Load16(end + 4);
  const uint16_t directory_disk = Load16(end + 6);
  const uint16_t disk_entries = Load16(end + 8);
  EndRecord record;
  record.entry_count = Load16(end + 10);
  record.directory_size = Load32(end + 12);
  record.directory_offset = Load32(end + 16);
  record.directory_limit = end_pos;

  const bool has_locator =
      end_pos >= kZip64LocatorSize && Load32(end - kZip64LocatorSize) == kZip64LocatorSignature;
  if (has_locator) {
    const uint8_t* locator = end - kZip64LocatorSize;
    const uint64_t locator_pos = end_pos - kZip64LocatorSize;
    const uint32_t zip64_disk = Load32(locator + 4);
    const uint64_t zip64_pos = Load64(locator + 8);
    const uint32_t disks = Load32(locator + 16);
    if (zip64_disk != 0 || disks > 1) {
      return Invalid("multi-disk (spanned) archives are not supported");
    }
    if (zip64_pos > locator_pos || locator_pos - zip64_pos < kZip64EndSize) {
      return Invalid("ZIP64 end of central directory offset ", zip64_pos,
                     " does not leave room for the record before its locator at ", locator_pos);
    }
    const uint8_t* zip64 = archive.data() + zip64_pos;
    if (Load32(zip64) != kZip64EndSignature) {
      return Invalid("no ZIP64 end of central directory record at offset ", zip64_pos,
                     " where its locator points");
    }
    const uint64_t record_size = Load64(zip64 + 4);
    if (record_size < kZip64EndSize - 12 || record_size > locator_pos - zip64_pos - 12) {
      return Invalid("ZIP64 end of central directory record has an invalid size ", record_size);
    }
    if (Load32(zip64 + 16) != 0 || Load32(zip64 + 20) != 0) {
      return Invalid("multi-disk (spanned) archives are not supported");
    }
    const uint64_t zip64_disk_entries = Load64(zip64 + 24);
    record.entry_count = Load64(zip64 + 32);
    record.directory_size = Load64(zip64 + 40);
    record.directory_offset = Load64(zip64 + 48);
    record.directory_limit = zip64_pos;
    if (zip64_disk_entries != record.entry_count) {
      return Invalid("ZIP64 end record counts ", zip64_disk_entries, " entries on this disk but ",
                     record.entry_count, " in all; multi-disk archives are not supported");
    }
  } else {
    if (disk != 0 || directory_disk != 0 || disk_entries != record.entry_count) {
      return Invalid("multi-disk (spanned) archives are not supported");
    }
    if (record.entry_count == kMax16 || record.directory_size == kMax32 ||
        record.directory_offset == kMax32) {
      return Invalid(
          "end of central directory record needs ZIP64 values but the ZIP64 "
          "locator is missing");
    }
  }
  if (record.directory_offset > record.directory_limit ||
      record.directory_size > record.directory_limit - record.directory_offset) {
    return Invalid("central directory (offset ", record.directory_offset, ", ",
                   record.directory_size, " bytes) runs past the end records at offset ",
                   record.directory_limit, "; the file is truncated or corrupt");
  }
  if (record.entry_count > record.directory_size / kCentralHeaderSize) {
    return Invalid("end record counts ", record.entry_count, " entries but the ",
                   record.directory_size, "-byte central directory cannot hold them");
  }
  return record;
}

struct CentralEntry {
  ZipEntry entry;
  uint16_t flags;
  uint16_t method;
};

// `names_only`: only the name and position are wanted, so compressed entries pass.
absl::StatusOr<CentralEntry> ReadCentralEntry(absl::Span<const uint8_t> directory, size_t& pos,
                                              uint64_t index, bool names_only = false) {
  const std::string where = absl::StrCat("central directory entry ", index);
  if (directory.size() - pos < kCentralHeaderSize) {
    return Invalid(where, " runs past the end of the central directory");
  }
  const uint8_t* h = directory.data() + pos;
  if (Load32(h) != kCentralHeaderSignature) {
    return Invalid(where, " has a bad signature; the central directory is corrupt");
  }
  CentralEntry central;
  central.flags = Load16(h + 8);
  central.method = Load16(h + 10);
  central.entry.crc32 = Load32(h + 16);
  const uint32_t compressed32 = Load32(h + 20);
  const uint32_t uncompressed32 = Load32(h + 24);
  const uint16_t name_length = Load16(h + 28);
  const uint16_t extra_length = Load16(h + 30);
  const uint16_t comment_length = Load16(h + 32);
  const uint16_t disk16 = Load16(h + 34);
  const uint32_t offset32 = Load32(h + 42);
  const size_t variable = size_t{name_length} + extra_length + comment_length;
  if (directory.size() - pos - kCentralHeaderSize < variable) {
    return Invalid(where, " has a name, extra field or comment running past the directory");
  }
  const char* name = reinterpret_cast<const char*>(h + kCentralHeaderSize);
  central.entry.name.assign(name, name_length);
  const std::string named = absl::StrCat(where, " ('", Printable(central.entry.name), "')");
  if (central.entry.name.empty()) return Invalid(where, " has an empty name");
  if (central.entry.name.find('\0') != std::string::npos) {
    return Invalid(named, " has a NUL byte in its name");
  }
  Zip64Values values{uncompressed32, compressed32, offset32, disk16};
  PARAMD_RETURN_IF_ERROR(
      ApplyZip64Extra(absl::MakeConstSpan(h + kCentralHeaderSize + name_length, extra_length),
                      uncompressed32 == kMax32, compressed32 == kMax32, offset32 == kMax32,
                      disk16 == kMax16, named, values));
  if (values.disk != 0) return Invalid("multi-disk (spanned) archives are not supported");
  if (central.flags & kFlagEncrypted) return Invalid(named, " is encrypted");
  if (central.method != kMethodStored && !names_only) {
    return Invalid(named, " is compressed (method ", central.method,
                   central.method == 8 ? ", deflate" : "",
                   "); paramd reads only stored (uncompressed) entries, as torch.save writes "
                   "them. Re-save the file with torch.save instead of re-zipping it");
  }
  if (values.compressed != values.uncompressed && !names_only) {
    return Invalid(named, " is stored but its compressed size ", values.compressed,
                   " differs from its size ", values.uncompressed);
  }
  central.entry.size = values.uncompressed;
  central.entry.local_header_offset = values.offset;
  pos += kCentralHeaderSize + variable;
  return central;
}

// Checks the local header against the central directory and finds where the data starts.
absl::Status ReadLocalHeader(absl::Span<const uint8_t> archive, uint64_t directory_offset,
                             CentralEntry& central) {
  ZipEntry& entry = central.entry;
  const std::string named = absl::StrCat("entry '", Printable(entry.name), "'");
  const uint64_t offset = entry.local_header_offset;
  if (offset > directory_offset || directory_offset - offset < kLocalHeaderSize) {
    return Invalid(named, " has its local header at offset ", offset,
                   ", outside the data before the central directory at ", directory_offset);
  }
  const uint8_t* h = archive.data() + offset;
  if (Load32(h) != kLocalHeaderSignature) {
    return Invalid(named, " has no local header at offset ", offset);
  }
  const uint16_t flags = Load16(h + 6);
  const uint16_t method = Load16(h + 8);
  const uint32_t crc = Load32(h + 14);
  const uint32_t compressed32 = Load32(h + 18);
  const uint32_t uncompressed32 = Load32(h + 22);
  const uint16_t name_length = Load16(h + 26);
  const uint16_t extra_length = Load16(h + 28);
  const uint64_t header_end = offset + kLocalHeaderSize + name_length + extra_length;
  if (header_end > directory_offset) {
    return Invalid(named, "'s local header runs into the central directory");
  }
  const absl::string_view local_name(reinterpret_cast<const char*>(h + kLocalHeaderSize),
                                     name_length);
  if (local_name != entry.name) {
    return Invalid(named, " is named '", Printable(local_name),
                   "' in its local header; the archive is corrupt");
  }
  if (method != central.method || (flags & kFlagEncrypted) != (central.flags & kFlagEncrypted)) {
    return Invalid(named, "'s local header disagrees with the central directory on method");
  }
  if (!(flags & kFlagDataDescriptor)) {
    Zip64Values values{uncompressed32, compressed32, 0, 0};
    PARAMD_RETURN_IF_ERROR(
        ApplyZip64Extra(absl::MakeConstSpan(h + kLocalHeaderSize + name_length, extra_length),
                        uncompressed32 == kMax32, compressed32 == kMax32, false, false,
                        absl::StrCat(named, "'s local header"), values));
    if (crc != entry.crc32 || values.uncompressed != entry.size ||
        values.compressed != entry.size) {
      return Invalid(named,
                     "'s local header disagrees with the central directory on size or "
                     "CRC; the archive is corrupt");
    }
  }
  if (entry.size > directory_offset - header_end) {
    return Invalid(named, " has ", entry.size, " bytes of data at offset ", header_end,
                   ", running past the central directory at ", directory_offset,
                   "; the file is truncated or corrupt");
  }
  entry.data_offset = header_end;
  return absl::OkStatus();
}

}  // namespace

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

absl::StatusOr<ZipReader> ZipReader::Open(absl::Span<const uint8_t> archive) {
  PARAMD_ASSIGN_OR_RETURN(EndRecord end, ReadEndRecord(archive));
  const absl::Span<const uint8_t> directory =
      archive.subspan(end.directory_offset, end.directory_size);
  std::vector<CentralEntry> centrals;
  centrals.reserve(end.entry_count);
  std::set<absl::string_view> names;
  size_t pos = 0;
  for (uint64_t i = 0; i < end.entry_count; ++i) {
    PARAMD_ASSIGN_OR_RETURN(CentralEntry central, ReadCentralEntry(directory, pos, i));
    centrals.push_back(std::move(central));
  }
  if (pos != directory.size()) {
    return Invalid("central directory holds ", directory.size() - pos,
                   " bytes after its last entry; the end record's count or size is wrong");
  }
  std::vector<ZipEntry> entries;
  entries.reserve(centrals.size());
  for (CentralEntry& central : centrals) {
    PARAMD_RETURN_IF_ERROR(ReadLocalHeader(archive, end.directory_offset, central));
    entries.push_back(std::move(central.entry));
  }
  for (const ZipEntry& entry : entries) {
    if (!names.insert(entry.name).second) {
      return Invalid("entry '", Printable(entry.name), "' appears more than once");
    }
  }
  // No two entries may share bytes: each one's header and data end before the next begins.
  std::vector<const ZipEntry*> by_offset;
  for (const ZipEntry& entry : entries) by_offset.push_back(&entry);
  std::sort(by_offset.begin(), by_offset.end(), [](const ZipEntry* a, const ZipEntry* b) {
    return a->local_header_offset < b->local_header_offset;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const ZipEntry& previous = *by_offset[i - 1];
    if (previous.data_offset + previous.size > by_offset[i]->local_header_offset) {
      return Invalid("entries '", Printable(previous.name), "' and '",
                     Printable(by_offset[i]->name), "' overlap");
    }
  }
  return ZipReader(archive, std::move(entries));
}

absl::StatusOr<std::vector<std::string>> ZipReader::ListNames(absl::Span<const uint8_t> archive) {
  PARAMD_ASSIGN_OR_RETURN(EndRecord end, ReadEndRecord(archive));
  const absl::Span<const uint8_t> directory =
      archive.subspan(end.directory_offset, end.directory_size);
  std::vector<std::string> names;
  size_t pos = 0;
  for (uint64_t i = 0; i < end.entry_count; ++i) {
    PARAMD_ASSIGN_OR_RETURN(CentralEntry central,
                            ReadCentralEntry(directory, pos, i, /*names_only=*/true));
    names.push_back(std::move(central.entry.name));
  }
  return names;
}

const ZipEntry* ZipReader::Find(absl::string_view name) const {
  for (const ZipEntry& entry : entries_) {
    if (entry.name == name) return &entry;
  }
  return nullptr;
}

absl::Span<const uint8_t> ZipReader::Data(const ZipEntry& entry) const {
  return archive_.subspan(entry.data_offset, entry.size);
}

absl::Status ZipReader::VerifyCrc(const ZipEntry& entry) const {
  const uint32_t actual = Crc32(Data(entry));
  if (actual != entry.crc32) {
    return Invalid("entry '", Printable(entry.name), "' fails its CRC-32 check (stored ",
                   absl::Hex(entry.crc32, absl::kZeroPad8), ", computed ",
                   absl::Hex(actual, absl::kZeroPad8), "); the file is corrupt");
  }
  return absl::OkStatus();
}

ZipWriter::ZipWriter(WritableFile& out, ZipWriterOptions options) : out_(out), options_(options) {}

absl::Status ZipWriter::Fail(absl::Status status) {
  error_ = status;
  return status;
}

absl::Status ZipWriter::AddEntry(absl::string_view name, absl::Span<const uint8_t> data) {
  if (!error_.ok()) return error_;
  if (finished_) return absl::FailedPreconditionError("zip archive is already finished");
  if (name.empty()) return absl::InvalidArgumentError("zip entry name is empty");
  if (name.size() > kMax16) {
    return absl::InvalidArgumentError(
        absl::StrCat("zip entry name of ", name.size(), " bytes exceeds 65535"));
  }
  if (name.find('\0') != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("zip entry name '", Printable(name), "' holds a NUL byte"));
  }
  for (const Written& written : written_) {
    if (written.name == name) {
      return absl::InvalidArgumentError(
          absl::StrCat("zip entry '", Printable(name), "' is written twice"));
    }
  }

  const uint64_t offset = out_.size();
  const uint64_t size = data.size();
  const uint32_t crc = Crc32(data);
  const bool zip64 = options_.force_zip64 || size >= kMax32;
  bool ascii = true;
  for (char c : name) ascii = ascii && static_cast<unsigned char>(c) < 0x80;

  std::string header;
  Put32(header, kLocalHeaderSignature);
  Put16(header, zip64 ? 45 : 20);  // version needed: 4.5 for ZIP64
  Put16(header, ascii ? 0 : kFlagUtf8);
  Put16(header, kMethodStored);
  Put16(header, 0);  // time
  Put16(header, kDosDate);
  Put32(header, crc);
  Put32(header, zip64 ? kMax32 : static_cast<uint32_t>(size));
  Put32(header, zip64 ? kMax32 : static_cast<uint32_t>(size));
  Put16(header, static_cast<uint16_t>(name.size()));
  const size_t extra_length_at = header.size();
  Put16(header, 0);  // extra length, filled below
  header.append(name.data(), name.size());
  const size_t extra_begin = header.size();
  if (zip64) {
    Put16(header, kZip64ExtraId);
    Put16(header, 16);
    Put64(header, size);
    Put64(header, size);
  }
  // PyTorch's padding: an 'FB' field whose length brings the data to the alignment.
  const uint64_t unpadded = offset + header.size() + 4;
  const uint64_t padding = (kZipDataAlignment - unpadded % kZipDataAlignment) % kZipDataAlignment;
  header += "FB";
  Put16(header, static_cast<uint16_t>(padding));
  header.append(padding, 'Z');
  const size_t extra_length = header.size() - extra_begin;
  header[extra_length_at] = static_cast<char>(extra_length & 0xFF);
  header[extra_length_at + 1] = static_cast<char>(extra_length >> 8);

  absl::Status status = out_.Append(header.data(), header.size());
  if (status.ok() && !data.empty()) status = out_.Append(data);
  if (!status.ok()) return Fail(status);
  combined_crc32_ = static_cast<uint32_t>(::crc32_combine(combined_crc32_, crc, size));
  written_.push_back(Written{std::string(name), offset, size, crc});
  return absl::OkStatus();
}

absl::Status ZipWriter::Finish() {
  if (!error_.ok()) return error_;
  if (finished_) return absl::FailedPreconditionError("zip archive is already finished");
  const uint64_t directory_offset = out_.size();
  std::string directory;
  for (const Written& entry : written_) {
    const bool size64 = options_.force_zip64 || entry.size >= kMax32;
    const bool offset64 = options_.force_zip64 || entry.local_header_offset >= kMax32;
    bool ascii = true;
    for (char c : entry.name) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
    std::string extra;
    if (size64 || offset64) {
      Put16(extra, kZip64ExtraId);
      Put16(extra, static_cast<uint16_t>((size64 ? 16 : 0) + (offset64 ? 8 : 0)));
      if (size64) {
        Put64(extra, entry.size);
        Put64(extra, entry.size);
      }
      if (offset64) Put64(extra, entry.local_header_offset);
    }
    const uint16_t version = (size64 || offset64) ? 45 : 20;
    Put32(directory, kCentralHeaderSignature);
    Put16(directory, version);  // made by: MS-DOS attributes, this version
    Put16(directory, version);
    Put16(directory, ascii ? 0 : kFlagUtf8);
    Put16(directory, kMethodStored);
    Put16(directory, 0);
    Put16(directory, kDosDate);
    Put32(directory, entry.crc32);
    Put32(directory, size64 ? kMax32 : static_cast<uint32_t>(entry.size));
    Put32(directory, size64 ? kMax32 : static_cast<uint32_t>(entry.size));
    Put16(directory, static_cast<uint16_t>(entry.name.size()));
    Put16(directory, static_cast<uint16_t>(extra.size()));
    Put16(directory, 0);  // comment
    Put16(directory, 0);  // disk
    Put16(directory, 0);  // internal attributes
    Put32(directory, 0);  // external attributes
    Put32(directory, offset64 ? kMax32 : static_cast<uint32_t>(entry.local_header_offset));
    directory += entry.name;
    directory += extra;
  }
  const uint64_t count = written_.size();
  const uint64_t directory_size = directory.size();
  const bool zip64_end = options_.force_zip64 || count >= kMax16 || directory_size >= kMax32 ||
                         directory_offset >= kMax32;
  std::string end;
  if (zip64_end) {
    const uint64_t zip64_offset = directory_offset + directory_size;
    Put32(end, kZip64EndSignature);
    Put64(end, kZip64EndSize - 12);
    Put16(end, 45);
    Put16(end, 45);
    Put32(end, 0);
    Put32(end, 0);
    Put64(end, count);
    Put64(end, count);
    Put64(end, directory_size);
    Put64(end, directory_offset);
    Put32(end, kZip64LocatorSignature);
    Put32(end, 0);
    Put64(end, zip64_offset);
    Put32(end, 1);
  }
  Put32(end, kEndSignature);
  Put16(end, 0);
  Put16(end, 0);
  Put16(end, zip64_end ? kMax16 : static_cast<uint16_t>(count));
  Put16(end, zip64_end ? kMax16 : static_cast<uint16_t>(count));
  Put32(end, zip64_end ? kMax32 : static_cast<uint32_t>(directory_size));
  Put32(end, zip64_end ? kMax32 : static_cast<uint32_t>(directory_offset));
  Put16(end, 0);  // comment
  directory += end;
  absl::Status status = out_.Append(directory.data(), directory.size());
  if (!status.ok()) return Fail(status);
  finished_ = true;
  return absl::OkStatus();
}

}  // namespace paramd::io
