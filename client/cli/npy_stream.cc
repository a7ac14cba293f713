#include "client/cli/npy_stream.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "client/cli/local_file.h"

namespace paramd::cli {
namespace {

using paramd::client::DType;
using paramd::client::HostTensor;

// The most read for the header: NumPy writes a few hundred bytes (and refuses to read more
// than 10000 by default); a first read of a page covers every header np.save writes.
constexpr uint64_t kMaxHeaderBytes = uint64_t{1} << 20;
constexpr uint64_t kProbeBytes = 4096;

absl::Span<const uint8_t> AsBytes(absl::string_view bytes) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  if (shape.size() == 1) return absl::StrCat("(", shape[0], ",)");
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

// Fills `out` from `fd` at `offset`; INVALID_ARGUMENT when the file ends first.
absl::Status PreadAll(int fd, const std::string& path, uint64_t offset, char* out, size_t size) {
  size_t done = 0;
  while (done < size) {
    const ssize_t n = pread(fd, out + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot read '", path, "'"));
    }
    if (n == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": the file ends early (it was cut while being read)"));
    }
    done += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

// The .npy a pipe (or another stream) `fd` carries: read to its end, but once the header is
// known no further than one byte past the data it announces, so that a writer that never
// stops costs no more than the tensor (and ParseNpy reports the trailing data).
absl::StatusOr<std::string> ReadStreamedNpy(int fd, const std::string& path) {
  std::string bytes;
  std::optional<uint64_t> limit;
  std::string piece(size_t{1} << 16, '\0');
  while (!limit || bytes.size() < *limit) {
    const size_t want =
        limit ? std::min<uint64_t>(piece.size(), *limit - bytes.size()) : piece.size();
    const ssize_t n = read(fd, piece.data(), want);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot read '", path, "'"));
    }
    if (n == 0) break;
    bytes.append(piece.data(), static_cast<size_t>(n));
    if (!limit) {
      absl::StatusOr<NpyLayout> layout = ParseNpyHeader(bytes, path);
      // More bytes cannot mend a stream that does not start with the magic.
      const bool not_npy = bytes.size() >= 6 && !absl::StartsWith(bytes, "\x93NUMPY");
      if (layout.ok()) {
        limit = layout->data_offset + layout->data_bytes + 1;
      } else if (not_npy || bytes.size() > kMaxHeaderBytes) {
        return layout.status();
      }
    }
  }
  return bytes;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// NpyWriter

absl::Status NpyWriter::BeginTensor(const std::string& name, const HostTensor& meta) {
  if (begun_) {
    return absl::InvalidArgumentError(
        absl::StrCat("an .npy file holds one tensor; '", name, "' would be a second"));
  }
  begun_ = true;
  meta_ = meta;
  meta_.data.clear();
  // The receiver checked the shape (no negative dimension, no overflow).
  expected_ = meta.nbytes();
  received_ = 0;
  widener_.Reset();
  return sink_.Append(AsBytes(NpyHeader(meta.dtype, meta.shape)));
}

absl::Status NpyWriter::TensorData(absl::string_view bytes) {
  if (!begun_ || ended_ || bytes.size() > expected_ - received_) {
    return absl::DataLossError(absl::StrCat("more data than the tensor's ", expected_,
                                            " bytes arrived for the .npy file"));
  }
  received_ += bytes.size();
  const bool widen = meta_.dtype == DType::kBFloat16;
  return sink_.Append(AsBytes(widen ? widener_.Widen(bytes) : bytes));
}

absl::Status NpyWriter::EndTensor() {
  if (!begun_ || ended_ || received_ != expected_ || widener_.pending()) {
    return absl::DataLossError(
        absl::StrCat("the tensor ended after ", received_, " of its ", expected_, " bytes"));
  }
  ended_ = true;
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// NpyFileWriter

absl::StatusOr<std::unique_ptr<NpyFileWriter>> NpyFileWriter::Create(const std::string& path) {
  PARAMD_ASSIGN_OR_RETURN(std::unique_ptr<PartFile> file, PartFile::Create(path));
  return std::unique_ptr<NpyFileWriter>(new NpyFileWriter(path, std::move(file)));
}

absl::Status NpyFileWriter::BeginTensor(const std::string& name, const HostTensor& meta) {
  return file_->Named(npy_.BeginTensor(name, meta));
}

absl::Status NpyFileWriter::TensorData(absl::string_view bytes) {
  return file_->Named(npy_.TensorData(bytes));
}

absl::Status NpyFileWriter::EndTensor() { return file_->Named(npy_.EndTensor()); }

absl::Status NpyFileWriter::Commit() {
  if (!npy_.complete()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot save '", path_, "': no whole tensor was written to it"));
  }
  return file_->Commit();
}

// ---------------------------------------------------------------------------------------
// NpyFileReader

absl::StatusOr<std::unique_ptr<NpyFileReader>> NpyFileReader::Open(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open '", path, "'"));
  std::unique_ptr<NpyFileReader> reader(new NpyFileReader(path, fd));
  struct stat info;
  if (fstat(fd, &info) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot read '", path, "'"));
  }
  if (S_ISDIR(info.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "' is a directory; --in needs a .npy file"));
  }
  // A pipe (or a device) can be neither mapped nor read at offsets: it is read whole first,
  // so that it is checked whole before anything is sent, as a file is.
  if (NonRegularKind(info)) {
    PARAMD_ASSIGN_OR_RETURN(const std::string bytes, ReadStreamedNpy(fd, path));
    PARAMD_ASSIGN_OR_RETURN(reader->layout_, ParseNpyHeader(bytes, path));
    const NpyLayout& layout = reader->layout_;
    if (bytes.size() - layout.data_offset > layout.data_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": trailing data: shape ", ShapeText(layout.shape), " of '", layout.descr,
          "' needs ", layout.data_bytes, " bytes after the header but more follow"));
    }
    PARAMD_ASSIGN_OR_RETURN(HostTensor whole, ParseNpy(bytes, path));
    reader->reordered_ = std::move(whole.data);
    reader->whole_ = true;
    reader->tensors_.push_back({path, HostTensor{}});
    reader->tensors_.back().tensor.dtype = whole.dtype;
    reader->tensors_.back().tensor.shape = whole.shape;
    return reader;
  }
  const uint64_t size = static_cast<uint64_t>(info.st_size);
  // A page first, and up to kMaxHeaderBytes only when the header needs more.
  std::string prefix;
  for (uint64_t want : {kProbeBytes, kMaxHeaderBytes}) {
    prefix.assign(static_cast<size_t>(std::min(size, want)), '\0');
    PARAMD_RETURN_IF_ERROR(PreadAll(fd, path, 0, prefix.data(), prefix.size()));
    absl::StatusOr<NpyLayout> layout = ParseNpyHeader(prefix, path);
    if (layout.ok() || size <= want || want == kMaxHeaderBytes) {
      PARAMD_ASSIGN_OR_RETURN(reader->layout_, std::move(layout));
      break;
    }
  }
  const NpyLayout& layout = reader->layout_;
  // The header was read from the file, so the data offset lies within it.
  const uint64_t present = size - layout.data_offset;
  if (present != layout.data_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": ", present < layout.data_bytes ? "truncated data: " : "trailing data: ", "shape ",
        ShapeText(layout.shape), " of '", layout.descr, "' needs ", layout.data_bytes,
        " bytes after the header but ", present, " are present"));
  }
  if (layout.fortran_order && layout.shape.size() >= 2) {
    PARAMD_ASSIGN_OR_RETURN(HostTensor whole, ReadNpy(path));
    reader->reordered_ = std::move(whole.data);
    reader->whole_ = true;
  } else if (NpyDataIsAsHeld(layout)) {
    PARAMD_ASSIGN_OR_RETURN(reader->mapped_, MappedInput::Map(fd, path, size));
  }
  client::NamedTensor& tensor = reader->tensors_.emplace_back();
  tensor.name = path;
  tensor.tensor.dtype = layout.dtype;
  tensor.tensor.shape = layout.shape;
  return reader;
}

NpyFileReader::~NpyFileReader() { close(fd_); }

absl::Status NpyFileReader::CheckOrder(size_t index, uint64_t offset, size_t size) const {
  if (index != 0 || (offset != 0 && offset != next_offset_) ||
      size > layout_.data_bytes - offset) {
    return absl::FailedPreconditionError(
        absl::StrCat("NpyFileReader::Read out of order: tensor ", index, " at byte ", offset));
  }
  return absl::OkStatus();
}

absl::StatusOr<const char*> NpyFileReader::Lend(size_t index, uint64_t offset, size_t size) {
  PARAMD_RETURN_IF_ERROR(CheckOrder(index, offset, size));
  if (mapped_ == nullptr) return nullptr;
  // Open checked that the data fills the file as it was mapped.
  const uint64_t at = layout_.data_offset + offset;
  next_offset_ = offset + size;
  mapped_->ReleaseBehind(at + size);
  return reinterpret_cast<const char*>(mapped_->data() + at);
}

absl::Status NpyFileReader::Read(size_t index, uint64_t offset, absl::Span<char> out) {
  PARAMD_RETURN_IF_ERROR(CheckOrder(index, offset, out.size()));
  if (whole_) {
    std::memcpy(out.data(), reordered_.data() + offset, out.size());
  } else {
    PARAMD_RETURN_IF_ERROR(
        PreadAll(fd_, path_, layout_.data_offset + offset, out.data(), out.size()));
    // Swapping needs whole elements: the pieces start at multiples of kChunkBytes.
    NormalizeNpyData(layout_, out.data(), out.size());
  }
  next_offset_ = offset + out.size();
  return absl::OkStatus();
}

}  // namespace paramd::cli
