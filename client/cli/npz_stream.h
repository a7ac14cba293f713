// .npz files streamed for paramctl's state-dict --out and load-state-dict: a state_dict is
// written member by member as its chunks arrive, and a file's members are sent chunk by
// chunk as they are read, so that neither direction holds a whole tensor (but for a
// Fortran-ordered member, which is reordered in memory, as NumPy itself does on load).
//
// The archives are those of npy.h: NpzWriter writes byte for byte what SerializeNpz writes
// (np.savez's layout: stored members, Unix mode bits) and goes on to ZIP64 where SerializeNpz
// stops (a member or the archive from 4 GiB on, 65535 members or more); NpzFileReader reads
// what ParseNpz reads, stored and deflated members (np.savez_compressed) alike, checking
// each member's CRC-32 before its last chunk leaves.
//
// Errors: INVALID_ARGUMENT naming the file and member for anything malformed, truncated or
// corrupt; file-system failures map errno and name the path.
// Thread-safety: one thread per object.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "base/zip/zip.h"
#include "client/cli/file_sink.h"
#include "client/cli/mapped_input.h"
#include "client/cli/npy.h"
#include "paramd/client.h"

namespace paramd::cli {

// Writes the tensors it is handed as an .npz archive into a sink: each tensor a stored
// member "<name>.npy" written as its bytes arrive (its sizes are known from its header, its
// CRC-32 is patched in at its end), bfloat16 widened to float32 as SerializeNpy does.
//
// A sink that cannot seek back (a FIFO, a device) gets `in_order`: each member is then
// written with a data descriptor after its data, which is where its CRC-32 goes, and with
// ZIP64 fields (np.load reads both); the archive is no longer byte for byte np.savez's.
class NpzWriter final : public client::TensorConsumer {
 public:
  // `sink` must be able to Overwrite unless `in_order`.
  explicit NpzWriter(zip::Sink& sink, bool in_order = false);

  absl::Status BeginTensor(const std::string& name, const client::HostTensor& meta) override;
  absl::Status TensorData(absl::string_view bytes) override;
  absl::Status EndTensor() override;
  // Writes the central directory; the archive is then complete.
  absl::Status Finish();

  size_t entries() const { return names_.size(); }

 private:
  zip::Writer writer_;
  const bool in_order_;
  std::set<std::string> names_;
  bool widen_ = false;  // the tensor being written is bfloat16
  BFloat16Widener widener_;
};

// An .npz file written through `path`.part, renamed to `path` by Commit; removed unless
// committed. A device or FIFO is written in order (PartFile).
class NpzFileWriter final : public client::TensorConsumer {
 public:
  static absl::StatusOr<std::unique_ptr<NpzFileWriter>> Create(const std::string& path);

  absl::Status BeginTensor(const std::string& name, const client::HostTensor& meta) override;
  absl::Status TensorData(absl::string_view bytes) override;
  absl::Status EndTensor() override;
  // Finishes the archive, closes it and renames it into place.
  absl::Status Commit();

  size_t entries() const { return npz_.entries(); }

 private:
  explicit NpzFileWriter(std::unique_ptr<PartFile> file)
      : file_(std::move(file)), npz_(file_->sink(), !file_->sink().can_rewrite()) {}

  std::unique_ptr<PartFile> file_;
  NpzWriter npz_;
};

// An .npz file's members sent from the file as a write asks for them. Open checks the
// archive's structure and every member's .npy header and sizes (nothing else is read); Lend
// then lends a stored member's data from the file's mapping, or Read reads it with pread(2)
// (inflating a deflated one as it goes), and either checks its CRC-32, and the deflate
// stream's end, before handing out its last piece.
class NpzFileReader final : public client::TensorProducer {
 public:
  // The file's members, named as np.load's keys. Errors as ParseNpz's, and the same ones.
  static absl::StatusOr<std::unique_ptr<NpzFileReader>> Open(const std::string& path);
  ~NpzFileReader() override;
  NpzFileReader(const NpzFileReader&) = delete;
  NpzFileReader& operator=(const NpzFileReader&) = delete;

  const std::vector<client::NamedTensor>& tensors() const override { return tensors_; }
  absl::Status Read(size_t index, uint64_t offset, absl::Span<char> out) override;
  // A stored member in native byte order and C order is lent from the file's mapping (Note
  // [Lent from the file]), its CRC-32 checked there; any other is left to Read.
  absl::StatusOr<const char*> Lend(size_t index, uint64_t offset, size_t size) override;

 private:
  struct Member {
    zip::Entry entry;
    NpyLayout layout;
    std::string header;  // the member's bytes before its data
    std::string where;   // "PATH: member 'NAME'", for messages
  };

  NpzFileReader(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  // Read's and Lend's check of their arguments' order.
  absl::Status CheckOrder(size_t index, uint64_t offset, size_t size) const;
  absl::Status AddMember(const zip::Reader& archive, const zip::Entry& entry);
  absl::Status Start(size_t index);
  // The member's next `size` raw bytes (after its header) into `out`, into the CRC.
  absl::Status Fill(char* out, size_t size);
  absl::Status FillDeflated(char* out, size_t size);
  // Its last byte was read: the deflate stream must end there and the CRC-32 match.
  absl::Status FinishMember();
  absl::Status Reorder();

  std::string path_;
  int fd_;
  std::unique_ptr<MappedInput> mapped_;  // the whole file
  std::vector<Member> members_;
  std::vector<client::NamedTensor> tensors_;
  // The member being read.
  size_t current_ = SIZE_MAX;
  uint64_t next_offset_ = 0;   // in its data
  uint64_t file_pos_ = 0;      // its next byte in the file (compressed, when deflated)
  uint64_t file_left_ = 0;     // bytes of it after file_pos_
  uint32_t crc_ = 0;
  std::unique_ptr<zip::Inflater> inflater_;
  std::string input_;                  // compressed bytes read ahead
  absl::Span<const uint8_t> pending_;  // their unconsumed part
  std::string reordered_;              // a Fortran-ordered member, whole, in C order
};

}  // namespace paramd::cli
