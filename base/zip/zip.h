// ZIP archives (PKWARE APPNOTE 6.3) for paramd's two kinds of archive: torch.save checkpoints
// (pytorch-semantics.md §5.1: stored entries, CRC-32, ZIP64, each entry's data at a 64-byte
// aligned offset, data descriptors from PyTorch's streaming writer) and NumPy's .npz (np.savez
// stores its members, np.savez_compressed deflates them, both with ZIP64 local headers).
//
// Reader validates a whole archive held in memory (a mapped file, or bytes read into a
// string) and then hands out spans into it. Writer streams entries into a Sink without
// seeking: entries of known size with their CRC-32 and sizes in the local header, or entries
// of unknown size (BeginEntry / Write / EndEntry) followed by a data descriptor. Both take
// stored and deflated entries and ZIP64 fields.
//
// This library depends on abseil, zlib (inflate, deflate, crc32_combine) and ISA-L (CRC-32)
// only: never on server/ or client/ code, so that both can use it.
//
// Ownership: a Reader borrows the bytes it was opened on; they must outlive it and every span
// it returned. A Writer borrows its Sink.
// Thread-safety: a Reader is immutable after Open and safe to read from many threads. A
// Writer is used from one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace paramd::zip {

// Where Writer puts each entry's data by default: a multiple of this from the start of the
// sink, as in PyTorch's PyTorchStreamWriter (kFieldAlignment), so that tensors can be used
// in place.
inline constexpr uint64_t kDataAlignment = 64;

// The compression methods read and written (APPNOTE 4.4.5).
enum class Method : uint16_t {
  kStored = 0,
  kDeflate = 8,
};

struct Entry {
  std::string name;
  Method method = Method::kStored;
  uint64_t local_header_offset = 0;
  uint64_t data_offset = 0;      // from the start of the archive
  uint64_t compressed_size = 0;  // bytes at data_offset; equal to `size` when stored
  uint64_t size = 0;             // uncompressed
  uint32_t crc32 = 0;            // of the uncompressed bytes, from the central directory
};

class Reader {
 public:
  // Parses the end of central directory record (ZIP64 when present), the central directory
  // and every local header, and checks them against `archive`: offsets and sizes inside the
  // archive and free of overflow, local headers agreeing with the central directory, no
  // overlapping or duplicate entries, no empty names or NUL bytes in names, stored entries
  // whose two sizes agree. Entries may use data descriptors (sizes and CRC then come from the
  // central directory). Refused: encrypted entries, methods other than stored and deflate,
  // and multi-disk archives. Every problem is INVALID_ARGUMENT with a message that starts
  // "zip archive: " and says what is wrong. Neither CRCs nor deflate streams are checked here
  // (see VerifyCrc and Extract): that would read every byte of a possibly huge archive.
  static absl::StatusOr<Reader> Open(absl::Span<const uint8_t> archive);
  // The same, calling `checked` with each entry once its local header has been checked (and
  // before its data is looked at): a caller reading a mapped file can then let the pages go,
  // since one touch of a page cache's large folio maps in all of it (up to 2 MiB).
  static absl::StatusOr<Reader> Open(absl::Span<const uint8_t> archive,
                                     absl::FunctionRef<void(const Entry&)> checked);
  static absl::StatusOr<Reader> Open(absl::string_view archive) {
    return Open(
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(archive.data()), archive.size()));
  }
  // Only the entry names from the central directory, with every method allowed: for telling
  // what an archive Open refuses is (a TorchScript archive, say), or for a caller's own rules
  // on names before Open's.
  static absl::StatusOr<std::vector<std::string>> ListNames(absl::Span<const uint8_t> archive);

  // In central directory order.
  const std::vector<Entry>& entries() const { return entries_; }
  // nullptr when absent.
  const Entry* Find(absl::string_view name) const;
  // The entry's bytes as they lie in the archive: its content when stored, its deflate stream
  // when deflated (see Extract).
  absl::Span<const uint8_t> Data(const Entry& entry) const;
  // The entry's content, a copy of a stored entry or a deflated entry inflated, checked
  // against its size and CRC-32. INVALID_ARGUMENT whose message says what is wrong with the
  // data ("corrupt deflate data: ...", "CRC-32 mismatch ...") without naming the entry, so that
  // the caller names it in its own terms.
  absl::StatusOr<std::string> Extract(const Entry& entry) const;
  // INVALID_ARGUMENT naming the entry when its content does not match its CRC-32 (a
  // deflated entry is inflated for the check).
  absl::Status VerifyCrc(const Entry& entry) const;
  // VerifyCrc of every entry, on up to `threads` threads: a cold file's pages come off the
  // disk faster with more than one reader, and the check is the only pass a mapped load
  // makes before it returns. The error is the first entry's in central directory order,
  // whatever the threads' timing.
  absl::Status VerifyCrcs(int threads) const;

 private:
  Reader(absl::Span<const uint8_t> archive, std::vector<Entry> entries)
      : archive_(archive), entries_(std::move(entries)) {}

  absl::Span<const uint8_t> archive_;
  std::vector<Entry> entries_;
};

// Where a Writer puts the archive: appends only, and knows how much it holds, since entry
// offsets count from its start (bytes already in it included). server/io adapts its
// WritableFile to this; StringSink keeps the bytes in memory.
class Sink {
 public:
  virtual ~Sink() = default;
  // Appends all of `bytes` or fails; after a failure the Writer stops.
  virtual absl::Status Append(absl::Span<const uint8_t> bytes) = 0;
  // Bytes appended so far.
  virtual uint64_t size() const = 0;
  // Rewrites `bytes` already appended at `offset` (a sized entry's CRC-32, once its last byte
  // is known). UNIMPLEMENTED for a sink that cannot seek back, such as a pipe.
  virtual absl::Status Overwrite(uint64_t offset, absl::Span<const uint8_t> bytes) {
    (void)offset;
    (void)bytes;
    return absl::UnimplementedError("this zip sink cannot rewrite what it holds");
  }
};

class StringSink final : public Sink {
 public:
  absl::Status Append(absl::Span<const uint8_t> bytes) override {
    data.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return absl::OkStatus();
  }
  uint64_t size() const override { return data.size(); }
  absl::Status Overwrite(uint64_t offset, absl::Span<const uint8_t> bytes) override {
    if (offset > data.size() || bytes.size() > data.size() - offset) {
      return absl::OutOfRangeError("zip sink overwrite past its end");
    }
    data.replace(offset, bytes.size(), reinterpret_cast<const char*>(bytes.data()), bytes.size());
    return absl::OkStatus();
  }

  std::string data;
};

struct WriterOptions {
  // Writes ZIP64 extra fields for every entry and a ZIP64 end record even when all sizes
  // and offsets fit in 32 bits (as Python's zipfile force_zip64 does). Without it ZIP64 is
  // used exactly where a value does not fit, and an entry of unknown size must stay under
  // 4 GiB.
  bool force_zip64 = false;
  // A local extra field 'FB' (PyTorch's) pads each local header so that the entry's data
  // starts at a multiple of this. 0: no padding and no extra field, as Python's zipfile.
  uint64_t alignment = kDataAlignment;
  // Non-zero: entries are marked as made on Unix with these mode bits in their external
  // attributes (0100644: a regular file, rw-r--r--). 0: made on MS-DOS with no attributes,
  // as PyTorch's writer marks them.
  uint32_t unix_mode = 0;
};

// Writes a ZIP archive to a Sink, entry after entry, then the central directory on Finish.
// Names are checked as the Reader checks them; the DOS date is fixed at 1980-01-01 00:00 so
// that equal inputs give equal archives.
class Writer {
 public:
  explicit Writer(Sink& out, WriterOptions options = {});
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Appends one entry of known content, with its CRC-32 and sizes in the local header (a
  // deflated entry is compressed in memory first). INVALID_ARGUMENT for an empty name, a name
  // longer than 65535 bytes, holding a NUL byte, or already written, and for a method other
  // than stored and deflate; FAILED_PRECONDITION during a streamed entry or after Finish; the
  // sink's error when a write fails (the writer is then unusable).
  absl::Status AddEntry(absl::string_view name, absl::Span<const uint8_t> data,
                        Method method = Method::kStored);
  absl::Status AddEntry(absl::string_view name, absl::string_view data,
                        Method method = Method::kStored) {
    return AddEntry(name,
                    absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(data.data()), data.size()),
                    method);
  }

  // An entry of unknown size: BeginEntry writes a local header with bit 3 set and zero CRC and
  // sizes (with a ZIP64 extra field under force_zip64), Write appends (compressing as it
  // goes when deflated), and EndEntry writes the data descriptor: signature, CRC-32 and the
  // sizes, 8 bytes each when the entry is ZIP64. Errors as AddEntry's; Write and EndEntry are
  // FAILED_PRECONDITION without a BeginEntry, and an entry without ZIP64 that passes
  // 0xFFFFFFFF bytes is INVALID_ARGUMENT (the writer is then unusable).
  absl::Status BeginEntry(absl::string_view name, Method method = Method::kStored);
  // A stored entry whose size is known before its bytes are (a tensor arriving in chunks):
  // BeginSizedEntry writes the local header with the sizes (ZIP64 from 4 GiB on, or under
  // force_zip64) and a zero CRC-32, Write appends, and EndEntry writes the CRC-32 into the
  // local header through Sink::Overwrite; no data descriptor, so the archive is byte for
  // byte what AddEntry writes for the same content. Write past `size` and EndEntry short of
  // it are INVALID_ARGUMENT (the writer is then unusable); so is a sink that cannot
  // overwrite, at EndEntry.
  absl::Status BeginSizedEntry(absl::string_view name, uint64_t size);
  absl::Status Write(absl::Span<const uint8_t> data);
  absl::Status EndEntry();

  // Writes the central directory and end records. The sink is not flushed or closed.
  // FAILED_PRECONDITION during a streamed entry or when already finished.
  absl::Status Finish();

  // CRC-32 of every entry's content so far, combined as if the contents were concatenated.
  uint32_t combined_crc32() const { return combined_crc32_; }

 private:
  struct Written {
    std::string name;
    Method method;
    bool descriptor;
    uint64_t local_header_offset;
    uint64_t compressed_size;
    uint64_t size;
    uint32_t crc32;
  };
  struct Streaming;  // the entry between BeginEntry and EndEntry

  absl::Status CheckNewEntry(absl::string_view name, Method method) const;
  absl::Status WriteLocalHeader(const Written& entry, bool zip64);
  absl::Status Append(absl::Span<const uint8_t> bytes);
  absl::Status Append(const std::string& bytes);
  absl::Status Fail(absl::Status status);
  void Record(Written entry);

  Sink& out_;
  WriterOptions options_;
  std::vector<Written> written_;
  std::unique_ptr<Streaming> streaming_;
  uint32_t combined_crc32_ = 0;
  bool finished_ = false;
  absl::Status error_;
};

// Inflates a raw deflate stream (a deflated entry's data) piece by piece, so that an entry
// of any size passes through a fixed amount of memory. Not copyable; one stream per object.
class Inflater {
 public:
  Inflater();
  ~Inflater();
  Inflater(const Inflater&) = delete;
  Inflater& operator=(const Inflater&) = delete;

  // Inflates from `input` into `output` until `output` is full, `input` is used up or the
  // stream ends; advances `input` past what was consumed and returns the bytes written to
  // `output`. INVALID_ARGUMENT "corrupt deflate data: ..." for a broken stream.
  absl::StatusOr<size_t> Run(absl::Span<const uint8_t>& input, absl::Span<uint8_t> output);
  // The stream's end marker has been read.
  bool finished() const { return finished_; }

 private:
  struct State;
  std::unique_ptr<State> state_;
  bool finished_ = false;
};

// CRC-32 of `data` as zip and zlib define it (reflected IEEE), for any length; `crc` chains
// pieces as zlib's crc32() does.
uint32_t Crc32(absl::Span<const uint8_t> data, uint32_t crc = 0);

// An entry name made safe for messages: control bytes escaped, cut at 200 bytes (names come
// from untrusted files).
std::string PrintableName(absl::string_view name);

}  // namespace paramd::zip
