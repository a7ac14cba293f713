// Reader of zip.h: validates the end records, the central directory and every local header
// of an archive in memory before handing out spans into it.
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <system_error>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/zip/zip.h"
#include "base/zip/zip_format.h"
#include "base/status_macros.h"

namespace paramd::zip {

using namespace internal;  // NOLINT(build/namespaces): the format's constants and helpers

namespace {

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
    return Invalid("too short: the file has ", size,
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
    return Invalid("central directory lies outside the archive: its ", record.directory_size,
                   " bytes at offset ", record.directory_offset,
                   " run past the end records at offset ", record.directory_limit,
                   "; the file is truncated or corrupt");
  }
  if (record.entry_count > record.directory_size / kCentralHeaderSize) {
    return Invalid("end record counts ", record.entry_count, " entries but the ",
                   record.directory_size, "-byte central directory cannot hold them");
  }
  return record;
}

struct CentralEntry {
  Entry entry;
  uint16_t flags;
  uint16_t method;
};

// `names_only`: only the name and position are wanted, so every method passes.
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
  const std::string named = absl::StrCat(where, " ('", PrintableName(central.entry.name), "')");
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
  if (central.flags & kFlagEncrypted) {
    return Invalid(named, " is encrypted; encrypted members are not supported");
  }
  // Listing names lets every method pass.
  const bool stored = central.method == static_cast<uint16_t>(Method::kStored);
  const bool deflated = central.method == static_cast<uint16_t>(Method::kDeflate);
  if (!names_only && !stored && !deflated) {
    return Invalid(named, ": compression method ", central.method,
                   " is not supported (only stored and deflate)");
  }
  if (!names_only && stored && values.compressed != values.uncompressed) {
    return Invalid(named, " is stored but its compressed size ", values.compressed,
                   " differs from its size ", values.uncompressed);
  }
  central.entry.method = static_cast<Method>(central.method);
  central.entry.size = values.uncompressed;
  central.entry.compressed_size = values.compressed;
  central.entry.local_header_offset = values.offset;
  pos += kCentralHeaderSize + variable;
  return central;
}

// Checks the local header against the central directory and finds where the data starts.
absl::Status ReadLocalHeader(absl::Span<const uint8_t> archive, uint64_t directory_offset,
                             CentralEntry& central) {
  Entry& entry = central.entry;
  const std::string named = absl::StrCat("entry '", PrintableName(entry.name), "'");
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
    return Invalid(named, " is named '", PrintableName(local_name),
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
        values.compressed != entry.compressed_size) {
      return Invalid(named,
                     "'s local header disagrees with the central directory on size or "
                     "CRC; the archive is corrupt");
    }
  }
  if (entry.compressed_size > directory_offset - header_end) {
    return Invalid(named, " has ", entry.compressed_size, " bytes of data at offset ", header_end,
                   ", running past the central directory at ", directory_offset,
                   "; the file is truncated or corrupt");
  }
  entry.data_offset = header_end;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Reader> Reader::Open(absl::Span<const uint8_t> archive) {
  return Open(archive, [](const Entry&) {});
}

absl::StatusOr<Reader> Reader::Open(absl::Span<const uint8_t> archive,
                                    absl::FunctionRef<void(const Entry&)> checked) {
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
  std::vector<Entry> entries;
  entries.reserve(centrals.size());
  for (CentralEntry& central : centrals) {
    PARAMD_RETURN_IF_ERROR(ReadLocalHeader(archive, end.directory_offset, central));
    checked(central.entry);
    entries.push_back(std::move(central.entry));
  }
  for (const Entry& entry : entries) {
    if (!names.insert(entry.name).second) {
      return Invalid("entry '", PrintableName(entry.name), "' appears more than once");
    }
  }
  // No two entries may share bytes: each one's header and data end before the next begins.
  std::vector<const Entry*> by_offset;
  for (const Entry& entry : entries) by_offset.push_back(&entry);
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) {
    return a->local_header_offset < b->local_header_offset;
  });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const Entry& previous = *by_offset[i - 1];
    if (previous.data_offset + previous.compressed_size > by_offset[i]->local_header_offset) {
      return Invalid("entries '", PrintableName(previous.name), "' and '",
                     PrintableName(by_offset[i]->name), "' overlap");
    }
  }
  return Reader(archive, std::move(entries));
}

absl::StatusOr<std::vector<std::string>> Reader::ListNames(absl::Span<const uint8_t> archive) {
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

const Entry* Reader::Find(absl::string_view name) const {
  for (const Entry& entry : entries_) {
    if (entry.name == name) return &entry;
  }
  return nullptr;
}

absl::Span<const uint8_t> Reader::Data(const Entry& entry) const {
  return archive_.subspan(entry.data_offset, entry.compressed_size);
}

absl::StatusOr<std::string> Reader::Extract(const Entry& entry) const {
  const absl::Span<const uint8_t> data = Data(entry);
  std::string content;
  if (entry.method == Method::kStored) {
    content.assign(reinterpret_cast<const char*>(data.data()), data.size());
  } else {
    PARAMD_ASSIGN_OR_RETURN(content, Inflate(data, entry.size));
  }
  const uint32_t actual = Crc32(AsBytes(content));
  if (actual != entry.crc32) {
    return absl::InvalidArgumentError(absl::StrCat(
        "CRC-32 mismatch (stored ", absl::Hex(entry.crc32, absl::kZeroPad8), ", computed ",
        absl::Hex(actual, absl::kZeroPad8), "); the archive is corrupt"));
  }
  return content;
}

namespace {

absl::Status CheckCrc(const Entry& entry, uint32_t actual) {
  if (actual != entry.crc32) {
    return Invalid("entry '", PrintableName(entry.name), "' fails its CRC-32 check (stored ",
                   absl::Hex(entry.crc32, absl::kZeroPad8), ", computed ",
                   absl::Hex(actual, absl::kZeroPad8), "); the file is corrupt");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status Reader::VerifyCrc(const Entry& entry) const {
  uint32_t actual = 0;
  if (entry.method == Method::kStored) {
    actual = Crc32(Data(entry));
  } else {
    absl::StatusOr<std::string> content = Inflate(Data(entry), entry.size);
    if (!content.ok()) {
      return absl::Status(content.status().code(),
                          absl::StrCat("zip archive: entry '", PrintableName(entry.name),
                                       "': ", content.status().message()));
    }
    actual = Crc32(AsBytes(*content));
  }
  return CheckCrc(entry, actual);
}

// Note [One reader ahead of the CRCs]
// A cold archive's pages come off the disk fastest as the kernel's readahead serves one
// sequential stream of page faults (read_ahead_kb keeps its next request in flight), the
// way torch.load(mmap=True) and a touch read a file. CRC threads faulting in interleaved
// pieces of their own, after one madvise(MADV_WILLNEED) over the whole file, read a cold
// 1 GiB .pt at 0.94-1.79 GB/s in checkpoint_bench, against torch's 1.94-2.00 in the same
// runs. So one thread faults the pages in, in file order, a byte per page, and the CRC
// threads follow it piece by piece over pages already in, the CRCs (12 GB/s) hidden behind
// the disk: 1.82-1.99 GB/s in five runs, 0.92-0.98 of torch's. (MADV_WILLNEED is gone
// from the loads altogether: with it on the files read before, the same code ran at 0.83
// and 0.87 of torch, and the safetensors loads were no faster for it.)
absl::Status Reader::VerifyCrcs(int threads) const {
  // Stored entries are cut into pieces whose CRCs are combined in order afterwards (zlib's
  // crc32_combine), so one large tensor is checked by every thread; a deflated entry is one
  // piece, inflated whole by VerifyCrc.
  constexpr uint64_t kPiece = uint64_t{8} << 20;
  struct Piece {
    size_t entry;
    uint64_t offset;
    uint64_t length;
  };
  std::vector<Piece> pieces;
  uint64_t total = 0;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& entry = entries_[i];
    total += entry.compressed_size;
    if (entry.method != Method::kStored) {
      pieces.push_back({i, 0, entry.compressed_size});
      continue;
    }
    uint64_t offset = 0;
    do {
      const uint64_t length = std::min(kPiece, entry.size - offset);
      pieces.push_back({i, offset, length});
      offset += length;
    } while (offset < entry.size);
  }
  std::vector<uint32_t> crcs(pieces.size());
  std::vector<absl::Status> inflated(entries_.size());  // deflated entries' own checks
  // The file's bytes a piece covers (compressed, for a deflated entry).
  auto bytes_of = [&](const Piece& piece) {
    const Entry& entry = entries_[piece.entry];
    return entry.method == Method::kStored ? Data(entry).subspan(piece.offset, piece.length)
                                           : Data(entry);
  };
  auto check = [&](const Piece& piece, size_t k) {
    const Entry& entry = entries_[piece.entry];
    if (entry.method == Method::kStored) {
      crcs[k] = Crc32(bytes_of(piece));
    } else {
      inflated[piece.entry] = VerifyCrc(entry);
    }
  };
  // Below a few pieces, or on one CPU, a thread costs more than it saves: one thread checks
  // every piece in order, which reads the file in order too.
  const size_t followers =
      total < 4 * kPiece ? 0 : std::min<size_t>(std::max(threads, 1) - 1, pieces.size() - 1);
  if (followers == 0) {
    for (size_t k = 0; k < pieces.size(); ++k) check(pieces[k], k);
  } else {
    absl::Mutex mu;
    size_t faulted_in = 0;  // pieces whose pages are in; guarded by mu
    std::atomic<size_t> next{0};
    auto follow = [&] {
      for (size_t k = next++; k < pieces.size(); k = next++) {
        {
          absl::MutexLock lock(&mu);
          auto in = [&faulted_in, k] { return faulted_in > k; };
          mu.Await(absl::Condition(&in));
        }
        check(pieces[k], k);
      }
    };
    constexpr size_t kPageBytes = 4096;
    volatile uint8_t sink = 0;
    std::vector<std::thread> running;
    for (size_t t = 0; t < followers; ++t) {
      try {
        running.emplace_back(follow);
      } catch (const std::system_error&) {
        break;  // no thread to be had: fewer of them check
      }
    }
    for (size_t k = 0; k < pieces.size(); ++k) {
      const absl::Span<const uint8_t> bytes = bytes_of(pieces[k]);
      uint8_t touched = 0;
      for (size_t at = 0; at < bytes.size(); at += kPageBytes) touched |= bytes[at];
      if (!bytes.empty()) touched |= bytes.back();
      sink = sink | touched;  // so that the reads stay
      absl::MutexLock lock(&mu);
      faulted_in = k + 1;
    }
    if (running.empty()) follow();  // no follower started: this thread checks it all
    for (std::thread& thread : running) thread.join();
  }

  size_t k = 0;
  for (size_t i = 0; i < entries_.size(); ++i) {
    const Entry& entry = entries_[i];
    if (entry.method != Method::kStored) {
      PARAMD_RETURN_IF_ERROR(inflated[i]);
      ++k;
      continue;
    }
    uint32_t crc = 0;
    for (; k < pieces.size() && pieces[k].entry == i; ++k) {
      crc = pieces[k].offset == 0 ? crcs[k]
                                  : static_cast<uint32_t>(::crc32_combine(
                                        crc, crcs[k], static_cast<z_off_t>(pieces[k].length)));
    }
    PARAMD_RETURN_IF_ERROR(CheckCrc(entry, crc));
  }
  return absl::OkStatus();
}

}  // namespace paramd::zip
