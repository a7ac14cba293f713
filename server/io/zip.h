// ZIP archives as torch.save writes them (pytorch-semantics.md §5.1): uncompressed ("stored")
// entries, CRC-32 checked, ZIP64 where sizes or offsets do not fit 32 bits, and each entry's
// data starting at a 64-byte aligned offset so that tensors can be used in place.
//
// ZipReader validates a whole archive held in memory (a MappedFile, usually) and then hands
// out spans into it; ZipWriter streams entries into a WritableFile without seeking.
//
// Ownership: a ZipReader borrows the bytes it was opened on; they must outlive it and every
// span it returned. A ZipWriter borrows its WritableFile.
// Thread-safety: a ZipReader is immutable after Open and safe to read from many threads. A
// ZipWriter is used from one thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "server/io/file_system.h"

namespace paramd::io {

// Data of every entry ZipWriter writes starts at a multiple of this, as in PyTorch's
// PyTorchStreamWriter (kFieldAlignment).
inline constexpr uint64_t kZipDataAlignment = 64;

struct ZipEntry {
  std::string name;
  uint64_t local_header_offset = 0;
  uint64_t data_offset = 0;  // from the start of the archive
  uint64_t size = 0;         // stored: compressed size == uncompressed size
  uint32_t crc32 = 0;        // from the central directory
};

class ZipReader {
 public:
  // Parses the end of central directory record (ZIP64 when present), the central directory
  // and every local header, and checks them against `archive`: offsets and sizes inside the
  // archive and free of overflow, local headers agreeing with the central directory, no
  // overlapping or duplicate entries, no empty names or NUL bytes in names. Entries may
  // use data descriptors (sizes and CRC then come from the central directory). Refused:
  // compressed or encrypted entries and multi-disk archives. Every problem is
  // INVALID_ARGUMENT with a message saying what is wrong. CRCs are not checked here (see
  // VerifyCrc): that would read every byte of a possibly huge archive.
  static absl::StatusOr<ZipReader> Open(absl::Span<const uint8_t> archive);
  // Only the entry names from the central directory, with compressed entries allowed: for
  // telling what an archive Open refuses is (a TorchScript archive, say).
  static absl::StatusOr<std::vector<std::string>> ListNames(absl::Span<const uint8_t> archive);

  // In central directory order.
  const std::vector<ZipEntry>& entries() const { return entries_; }
  // nullptr when absent.
  const ZipEntry* Find(absl::string_view name) const;
  // The entry's bytes inside the archive.
  absl::Span<const uint8_t> Data(const ZipEntry& entry) const;
  // INVALID_ARGUMENT naming the entry when its bytes do not match its CRC-32.
  absl::Status VerifyCrc(const ZipEntry& entry) const;

 private:
  ZipReader(absl::Span<const uint8_t> archive, std::vector<ZipEntry> entries)
      : archive_(archive), entries_(std::move(entries)) {}

  absl::Span<const uint8_t> archive_;
  std::vector<ZipEntry> entries_;
};

struct ZipWriterOptions {
  // Writes ZIP64 extra fields for every entry and a ZIP64 end record even when all sizes
  // and offsets fit in 32 bits (as Python's zipfile force_zip64 does). Without it ZIP64 is
  // used exactly where a value does not fit.
  bool force_zip64 = false;
};

// Writes a ZIP archive to `out`, entry after entry, then the central directory on Finish.
// Entries are stored with their CRC-32 and sizes in the local header (no data descriptors);
// a local extra field 'FB' pads each header so the data starts at a multiple of
// kZipDataAlignment. Offsets count from the start of `out`, bytes already in it included.
class ZipWriter {
 public:
  explicit ZipWriter(WritableFile& out, ZipWriterOptions options = {});

  // Appends one entry. INVALID_ARGUMENT for an empty name, a name longer than 65535 bytes,
  // holding a NUL byte, or already written; FAILED_PRECONDITION after Finish; the file's
  // error when a write fails (the writer is then unusable).
  absl::Status AddEntry(absl::string_view name, absl::Span<const uint8_t> data);
  absl::Status AddEntry(absl::string_view name, absl::string_view data) {
    return AddEntry(
        name, absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(data.data()), data.size()));
  }
  // Writes the central directory and end records. The file is not synced or closed.
  absl::Status Finish();

  // CRC-32 of every entry's data so far, combined as if the data were concatenated.
  uint32_t combined_crc32() const { return combined_crc32_; }

 private:
  struct Written {
    std::string name;
    uint64_t local_header_offset;
    uint64_t size;
    uint32_t crc32;
  };

  absl::Status Fail(absl::Status status);

  WritableFile& out_;
  ZipWriterOptions options_;
  std::vector<Written> written_;
  uint32_t combined_crc32_ = 0;
  bool finished_ = false;
  absl::Status error_;
};

// CRC-32 of `data` as zip and zlib define it (reflected IEEE), for any length; `crc` chains
// pieces as zlib's crc32() does.
uint32_t Crc32(absl::Span<const uint8_t> data, uint32_t crc = 0);

}  // namespace paramd::io
