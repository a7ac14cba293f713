// .npy files streamed for paramctl's `get --out FILE.npy` and `set --in FILE.npy`: the
// tensor's bytes go from the wire to the file, and from the file to the wire, a chunk at a
// time, so that neither direction holds the whole tensor.
//
// The files are those of npy.h: NpyWriter writes byte for byte what SerializeNpy (and so
// np.save) writes, bfloat16 widened to '<f4' as it arrives (BFloat16Widener, as NpzWriter
// does). NpyFileReader reads what ParseNpy reads: versions 1.0, 2.0 and 3.0, either byte
// order (big-endian elements are swapped in each piece as it is read) and Fortran order.
// A Fortran-ordered file of two or more dimensions is the one case read whole into memory
// (ReadNpy, which reorders it), as NumPy itself does on load and NpzFileReader does for such
// members: C order is a transpose of it, which no single pass over the file produces.
//
// Errors: INVALID_ARGUMENT naming the file for anything malformed or truncated (the same
// messages as ParseNpy's); file-system failures map errno and name the path.
// Thread-safety: one thread per object.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "base/zip/zip.h"
#include "client/cli/mapped_input.h"
#include "client/cli/npy.h"
#include "client/cli/npz_stream.h"
#include "paramd/client.h"

namespace paramd::cli {

// Writes the one tensor it is handed into a sink as an .npy file: np.save's header, then
// the data as it arrives. A second tensor, or data beyond or short of what the header
// announced, is an error.
class NpyWriter final : public client::TensorConsumer {
 public:
  explicit NpyWriter(zip::Sink& sink) : sink_(sink) {}

  absl::Status BeginTensor(const std::string& name, const client::HostTensor& meta) override;
  absl::Status TensorData(absl::string_view bytes) override;
  absl::Status EndTensor() override;

  // The tensor's dtype, shape and server fields (`data` empty), once BeginTensor came.
  const client::HostTensor& meta() const { return meta_; }
  // EndTensor came: the file is whole.
  bool complete() const { return ended_; }

 private:
  zip::Sink& sink_;
  client::HostTensor meta_;
  bool begun_ = false;
  bool ended_ = false;
  uint64_t expected_ = 0;  // data bytes the tensor has
  uint64_t received_ = 0;
  BFloat16Widener widener_;
};

// An .npy file written through `path`.part, renamed to `path` by Commit; removed unless
// committed.
class NpyFileWriter final : public client::TensorConsumer {
 public:
  static absl::StatusOr<std::unique_ptr<NpyFileWriter>> Create(const std::string& path);

  absl::Status BeginTensor(const std::string& name, const client::HostTensor& meta) override;
  absl::Status TensorData(absl::string_view bytes) override;
  absl::Status EndTensor() override;
  // Closes the file and renames it into place; FAILED_PRECONDITION unless a whole tensor
  // was written.
  absl::Status Commit();

  const client::HostTensor& meta() const { return npy_.meta(); }

 private:
  NpyFileWriter(std::string path, std::unique_ptr<PartFile> file)
      : path_(std::move(path)), file_(std::move(file)), npy_(file_->sink()) {}

  std::string path_;
  std::unique_ptr<PartFile> file_;
  NpyWriter npy_;
};

// An .npy file's one tensor sent from the file as a write asks for it. Open reads and
// checks the header and that the file holds exactly the data it announces; Lend then lends
// the data from the file's mapping, or Read reads it with pread(2) where it must change.
class NpyFileReader final : public client::TensorProducer {
 public:
  // The tensor is named `path`. Errors as ReadNpy's, and the same ones.
  static absl::StatusOr<std::unique_ptr<NpyFileReader>> Open(const std::string& path);
  ~NpyFileReader() override;
  NpyFileReader(const NpyFileReader&) = delete;
  NpyFileReader& operator=(const NpyFileReader&) = delete;

  const std::vector<client::NamedTensor>& tensors() const override { return tensors_; }
  absl::Status Read(size_t index, uint64_t offset, absl::Span<char> out) override;
  // Data in native byte order and C order is lent from the file's mapping (Note [Lent from
  // the file]); any other is left to Read.
  absl::StatusOr<const char*> Lend(size_t index, uint64_t offset, size_t size) override;

  const NpyLayout& layout() const { return layout_; }

 private:
  NpyFileReader(std::string path, int fd) : path_(std::move(path)), fd_(fd) {}
  // Read's and Lend's check of their arguments' order.
  absl::Status CheckOrder(size_t index, uint64_t offset, size_t size) const;

  std::string path_;
  int fd_;
  std::unique_ptr<MappedInput> mapped_;  // the whole file, unless it is read whole
  NpyLayout layout_;
  std::vector<client::NamedTensor> tensors_;
  uint64_t next_offset_ = 0;  // in the data
  // A Fortran-ordered tensor, whole, in C order (see the file comment).
  bool whole_ = false;
  std::string reordered_;
};

}  // namespace paramd::cli
