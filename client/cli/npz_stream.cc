#include "client/cli/npz_stream.h"

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

// The most of a member read for its .npy header: NumPy writes a few hundred bytes (and
// refuses to read more than 10000 by default).
constexpr uint64_t kMaxHeaderBytes = uint64_t{1} << 20;
constexpr uint64_t kProbeBytes = 4096;
// Compressed bytes read ahead for a deflated member.
constexpr size_t kInputBytes = size_t{1} << 18;

absl::Span<const uint8_t> AsBytes(absl::string_view bytes) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

std::string NpzKey(absl::string_view member) {
  if (absl::EndsWith(member, ".npy")) member.remove_suffix(4);
  return std::string(member);
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  if (shape.size() == 1) return absl::StrCat("(", shape[0], ",)");
  return absl::StrCat("(", absl::StrJoin(shape, ", "), ")");
}

}  // namespace

// ---------------------------------------------------------------------------------------
// NpzWriter

NpzWriter::NpzWriter(zip::Sink& sink, bool in_order)
    // As np.savez: members stored where they fall (no alignment padding), Unix files. In
    // order, every member has ZIP64 fields: a member of unknown size must, to pass 4 GiB.
    : writer_(sink,
              zip::WriterOptions{.force_zip64 = in_order, .alignment = 0, .unix_mode = 0100644}),
      in_order_(in_order) {}

absl::Status NpzWriter::BeginTensor(const std::string& name, const HostTensor& meta) {
  PARAMD_ASSIGN_OR_RETURN(const std::string file_name, NpzMemberName(name, names_));
  // The receiver checked the shape (no negative dimension, no overflow).
  widen_ = meta.dtype == DType::kBFloat16;
  widener_.Reset();
  const uint64_t data_bytes = meta.nbytes() * (widen_ ? 2 : 1);
  const std::string header = NpyHeader(meta.dtype, meta.shape);
  if (in_order_) {
    PARAMD_RETURN_IF_ERROR(writer_.BeginEntry(file_name, zip::Method::kStored));
  } else {
    PARAMD_RETURN_IF_ERROR(writer_.BeginSizedEntry(file_name, header.size() + data_bytes));
  }
  return writer_.Write(AsBytes(header));
}

absl::Status NpzWriter::TensorData(absl::string_view bytes) {
  return writer_.Write(AsBytes(widen_ ? widener_.Widen(bytes) : bytes));
}

absl::Status NpzWriter::EndTensor() { return writer_.EndEntry(); }

absl::Status NpzWriter::Finish() { return writer_.Finish(); }

// ---------------------------------------------------------------------------------------
// NpzFileWriter

absl::StatusOr<std::unique_ptr<NpzFileWriter>> NpzFileWriter::Create(const std::string& path) {
  PARAMD_ASSIGN_OR_RETURN(std::unique_ptr<PartFile> file, PartFile::Create(path));
  return std::unique_ptr<NpzFileWriter>(new NpzFileWriter(std::move(file)));
}

absl::Status NpzFileWriter::BeginTensor(const std::string& name, const HostTensor& meta) {
  return file_->Named(npz_.BeginTensor(name, meta));
}

absl::Status NpzFileWriter::TensorData(absl::string_view bytes) {
  return file_->Named(npz_.TensorData(bytes));
}

absl::Status NpzFileWriter::EndTensor() { return file_->Named(npz_.EndTensor()); }

absl::Status NpzFileWriter::Commit() {
  PARAMD_RETURN_IF_ERROR(file_->Named(npz_.Finish()));
  return file_->Commit();
}

// ---------------------------------------------------------------------------------------
// NpzFileReader

absl::StatusOr<std::unique_ptr<NpzFileReader>> NpzFileReader::Open(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open '", path, "'"));
  std::unique_ptr<NpzFileReader> reader(new NpzFileReader(path, fd));
  struct stat info;
  if (fstat(fd, &info) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot read '", path, "'"));
  }
  // An archive is read from its end and mapped whole: a pipe or a device allows neither.
  if (std::optional<std::string> kind = NonRegularKind(info)) {
    if (S_ISDIR(info.st_mode)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", path,
          "' is a directory; load-state-dict needs an .npz file (a .safetensors or "
          ".pt checkpoint is loaded by the daemon: `paramctl upload` it, then `paramctl load`)"));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        "'", path, "' is ", *kind,
        "; load-state-dict needs a regular file (an .npz archive is read from its end and "
        "checked whole before it is sent): write the data to a file first"));
  }
  auto not_npz = [&](const absl::Status& status) {
    return absl::Status(status.code(),
                        absl::StrCat(path, ": not a valid .npz file: ", status.message()));
  };
  // The end records, the central directory and the local headers are all Open touches of
  // the mapping; the data is lent from it or read with pread later. Each header's pages go
  // once it is checked: a touch can map in a whole large folio of the page cache.
  PARAMD_ASSIGN_OR_RETURN(reader->mapped_,
                          MappedInput::Map(fd, path, static_cast<uint64_t>(info.st_size)));
  const absl::Span<const uint8_t> bytes(reader->mapped_->data(),
                                        static_cast<size_t>(reader->mapped_->size()));
  // Keys drop ".npy", so "a" and "a.npy" collide too (as ParseNpz checks them).
  absl::StatusOr<std::vector<std::string>> names = zip::Reader::ListNames(bytes);
  if (!names.ok()) return not_npz(names.status());
  std::set<std::string> keys;
  for (size_t i = 0; i < names->size(); ++i) {
    const std::string& member = (*names)[i];
    PARAMD_RETURN_IF_ERROR(CheckNpzMemberNameUtf8(member, i + 1, path));
    if (absl::EndsWith(member, "/")) continue;  // a directory
    if (!keys.insert(NpzKey(member)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": more than one member is named '", NpzKey(member), "'"));
    }
  }
  MappedInput& mapped = *reader->mapped_;
  absl::StatusOr<zip::Reader> archive = zip::Reader::Open(bytes, [&](const zip::Entry& entry) {
    mapped.Release(entry.local_header_offset, entry.data_offset - entry.local_header_offset);
  });
  if (!archive.ok()) return not_npz(archive.status());
  for (const zip::Entry& entry : archive->entries()) {
    if (absl::EndsWith(entry.name, "/") && entry.size == 0) continue;  // a directory
    PARAMD_RETURN_IF_ERROR(reader->AddMember(*archive, entry));
    mapped.Release(entry.local_header_offset,
                   entry.data_offset - entry.local_header_offset + kMaxHeaderBytes);
  }
  return reader;
}

NpzFileReader::~NpzFileReader() { close(fd_); }

absl::Status NpzFileReader::AddMember(const zip::Reader& archive, const zip::Entry& entry) {
  Member member;
  member.entry = entry;
  member.where = absl::StrCat(path_, ": member '", zip::PrintableName(entry.name), "'");
  auto invalid = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(member.where, ": ", what));
  };
  const absl::Span<const uint8_t> data = archive.Data(entry);
  if (entry.method == zip::Method::kDeflate && entry.size / 1032 > entry.compressed_size + 1) {
    // Deflate cannot expand data more than 1032:1.
    return invalid(absl::StrCat("corrupt deflate data: recorded size ", entry.size,
                                " is impossible for ", entry.compressed_size,
                                " compressed bytes"));
  }
  // The header: the member's first bytes (inflated when deflated), a page first and up to
  // kMaxHeaderBytes only when a header needs more, so that checking a large archive maps
  // in only a page or so of each member.
  std::string prefix;
  for (uint64_t want : {kProbeBytes, kMaxHeaderBytes}) {
    prefix.assign(std::min(entry.size, want), '\0');
    if (entry.method == zip::Method::kStored) {
      std::memcpy(prefix.data(), data.data(), prefix.size());
    } else {
      zip::Inflater inflater;
      absl::Span<const uint8_t> input = data;
      absl::StatusOr<size_t> got = inflater.Run(
          input, absl::MakeSpan(reinterpret_cast<uint8_t*>(prefix.data()), prefix.size()));
      if (!got.ok()) return invalid(got.status().message());
      prefix.resize(*got);
    }
    absl::StatusOr<NpyLayout> layout = ParseNpyHeader(prefix, member.where);
    if (layout.ok() || entry.size <= want || want == kMaxHeaderBytes) {
      PARAMD_ASSIGN_OR_RETURN(member.layout, std::move(layout));
      break;
    }
  }
  const NpyLayout& layout = member.layout;
  if (entry.size - layout.data_offset != layout.data_bytes) {
    const uint64_t present = entry.size - layout.data_offset;
    return invalid(absl::StrCat(
        present < layout.data_bytes ? "truncated data: " : "trailing data: ", "shape ",
        ShapeText(layout.shape), " of '", layout.descr, "' needs ", layout.data_bytes,
        " bytes after the header but ", present, " are present"));
  }
  member.header = prefix.substr(0, layout.data_offset);
  if (layout.data_bytes == 0) {
    // Nothing will be read later: check the member's CRC-32 (and deflate stream) now.
    absl::StatusOr<std::string> content = archive.Extract(entry);
    if (!content.ok()) return invalid(content.status().message());
  }
  client::NamedTensor& tensor = tensors_.emplace_back();
  tensor.name = NpzKey(entry.name);
  tensor.tensor.dtype = layout.dtype;
  tensor.tensor.shape = layout.shape;
  members_.push_back(std::move(member));
  return absl::OkStatus();
}

absl::Status NpzFileReader::Start(size_t index) {
  const Member& member = members_[index];
  current_ = index;
  next_offset_ = 0;
  reordered_.clear();
  inflater_.reset();
  pending_ = {};
  file_pos_ = member.entry.data_offset;
  file_left_ = member.entry.compressed_size;
  crc_ = 0;
  if (member.entry.method == zip::Method::kStored) {
    crc_ = zip::Crc32(AsBytes(member.header));
    file_pos_ += member.header.size();
    file_left_ -= member.header.size();
  } else {
    // The header again, inflated from the start of the stream.
    inflater_ = std::make_unique<zip::Inflater>();
    std::string header(member.header.size(), '\0');
    PARAMD_RETURN_IF_ERROR(FillDeflated(header.data(), header.size()));
    if (header != member.header) {
      return absl::InvalidArgumentError(
          absl::StrCat(member.where, ": its header changed while the file was being read"));
    }
  }
  if (member.layout.fortran_order && member.layout.shape.size() >= 2) return Reorder();
  return absl::OkStatus();
}

absl::Status NpzFileReader::Fill(char* out, size_t size) {
  if (inflater_ != nullptr) return FillDeflated(out, size);
  const Member& member = members_[current_];
  size_t done = 0;
  while (done < size) {
    const ssize_t n = pread(fd_, out + done, size - done, static_cast<off_t>(file_pos_));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot read '", path_, "'"));
    }
    if (n == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          member.where, ": the file ends early (it was cut while being read)"));
    }
    done += static_cast<size_t>(n);
    file_pos_ += static_cast<uint64_t>(n);
  }
  crc_ = zip::Crc32(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(out), size), crc_);
  return absl::OkStatus();
}

absl::Status NpzFileReader::FillDeflated(char* out, size_t size) {
  const Member& member = members_[current_];
  auto corrupt = [&](absl::string_view what) {
    return absl::InvalidArgumentError(
        absl::StrCat(member.where, ": corrupt deflate data: ", what));
  };
  size_t done = 0;
  while (done < size) {
    if (pending_.empty() && file_left_ > 0) {
      input_.resize(static_cast<size_t>(std::min<uint64_t>(kInputBytes, file_left_)));
      const ssize_t n = pread(fd_, input_.data(), input_.size(), static_cast<off_t>(file_pos_));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot read '", path_, "'"));
      if (n == 0) return corrupt("the file ends early (it was cut while being read)");
      file_pos_ += static_cast<uint64_t>(n);
      file_left_ -= static_cast<uint64_t>(n);
      pending_ = AsBytes(absl::string_view(input_.data(), static_cast<size_t>(n)));
    }
    const size_t before = pending_.size();
    absl::StatusOr<size_t> got = inflater_->Run(
        pending_, absl::MakeSpan(reinterpret_cast<uint8_t*>(out + done), size - done));
    if (!got.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(member.where, ": ", got.status().message()));
    }
    if (*got == 0 && !pending_.empty() && pending_.size() == before) {
      return corrupt("the stream makes no progress");
    }
    done += *got;
    const bool input_gone = *got == 0 && pending_.empty() && file_left_ == 0;
    if (done < size && (inflater_->finished() || input_gone)) {
      return corrupt("the stream ends early");
    }
  }
  crc_ = zip::Crc32(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(out), size), crc_);
  return absl::OkStatus();
}

absl::Status NpzFileReader::FinishMember() {
  const Member& member = members_[current_];
  if (inflater_ != nullptr && !inflater_->finished()) {
    // The recorded size is reached: the stream must end here, with no byte more.
    uint8_t extra = 0;
    const uint32_t crc = crc_;
    absl::Status more = FillDeflated(reinterpret_cast<char*>(&extra), 1);
    crc_ = crc;
    if (more.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          member.where, ": corrupt deflate data: more data than the recorded size"));
    }
    if (!inflater_->finished()) return more;
  }
  if (crc_ != member.entry.crc32) {
    return absl::InvalidArgumentError(
        absl::StrCat(member.where, ": CRC-32 mismatch (stored ",
                     absl::Hex(member.entry.crc32, absl::kZeroPad8), ", computed ",
                     absl::Hex(crc_, absl::kZeroPad8), "); the archive is corrupt"));
  }
  return absl::OkStatus();
}

absl::Status NpzFileReader::Reorder() {
  // Fortran order is a transpose: done in memory, on the whole member (checked first).
  const Member& member = members_[current_];
  std::string bytes = member.header;
  bytes.resize(member.header.size() + member.layout.data_bytes);
  PARAMD_RETURN_IF_ERROR(Fill(bytes.data() + member.header.size(), member.layout.data_bytes));
  PARAMD_RETURN_IF_ERROR(FinishMember());
  PARAMD_ASSIGN_OR_RETURN(HostTensor tensor, ParseNpy(bytes, member.where));
  reordered_ = std::move(tensor.data);
  return absl::OkStatus();
}

absl::Status NpzFileReader::CheckOrder(size_t index, uint64_t offset, size_t size) const {
  if (index >= members_.size() || (index != current_ && offset != 0) ||
      (index == current_ && offset != next_offset_) ||
      size > members_[index].layout.data_bytes - offset) {
    return absl::FailedPreconditionError(absl::StrCat(
        "NpzFileReader::Read out of order: tensor ", index, " at byte ", offset));
  }
  return absl::OkStatus();
}

absl::StatusOr<const char*> NpzFileReader::Lend(size_t index, uint64_t offset, size_t size) {
  PARAMD_RETURN_IF_ERROR(CheckOrder(index, offset, size));
  const Member& member = members_[index];
  if (member.entry.method != zip::Method::kStored || !NpyDataIsAsHeld(member.layout)) {
    return nullptr;
  }
  if (index != current_ || offset == 0) PARAMD_RETURN_IF_ERROR(Start(index));
  // Open checked that every member lies within the file as it was mapped.
  const uint8_t* bytes = mapped_->data() + file_pos_;
  crc_ = zip::Crc32(absl::MakeConstSpan(bytes, size), crc_);
  file_pos_ += size;
  file_left_ -= size;
  next_offset_ = offset + size;
  mapped_->ReleaseBehind(file_pos_);
  if (next_offset_ == member.layout.data_bytes) PARAMD_RETURN_IF_ERROR(FinishMember());
  return reinterpret_cast<const char*>(bytes);
}

absl::Status NpzFileReader::Read(size_t index, uint64_t offset, absl::Span<char> out) {
  PARAMD_RETURN_IF_ERROR(CheckOrder(index, offset, out.size()));
  if (index != current_ || offset == 0) PARAMD_RETURN_IF_ERROR(Start(index));
  const Member& member = members_[index];
  if (!reordered_.empty()) {
    std::memcpy(out.data(), reordered_.data() + offset, out.size());
  } else {
    PARAMD_RETURN_IF_ERROR(Fill(out.data(), out.size()));
    // Swapping needs whole elements: the pieces start at multiples of kChunkBytes.
    NormalizeNpyData(member.layout, out.data(), out.size());
  }
  next_offset_ = offset + out.size();
  if (next_offset_ == member.layout.data_bytes && reordered_.empty()) {
    PARAMD_RETURN_IF_ERROR(FinishMember());
  }
  return absl::OkStatus();
}

}  // namespace paramd::cli
