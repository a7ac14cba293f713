#include "server/io/version_files.h"

#include <filesystem>
#include <fstream>
#include <limits>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace paramd::io {

std::string VersionFiles::PathOf(const std::string& name) const {
  // Model names are valid file names (ValidateModelName).
  return absl::StrCat(directory_, "/", name, kSuffix);
}

absl::StatusOr<uint64_t> VersionFiles::Reserve(const std::string& name, uint64_t version) {
  const uint64_t end = version > std::numeric_limits<uint64_t>::max() - (block_ - 1)
                           ? std::numeric_limits<uint64_t>::max()
                           : version + (block_ - 1);
  const std::string text = absl::StrCat(end, "\n");
  absl::Status written = WriteFileAtomically(*fs_, PathOf(name), [&](WritableFile& file) {
    return file.Append(absl::Span<const uint8_t>(
        reinterpret_cast<const uint8_t*>(text.data()), text.size()));
  });
  if (!written.ok()) {
    return absl::Status(written.code(),
                        absl::StrCat("cannot reserve versions for model '", name, "' (",
                                     written.message(), "); the write changed nothing, check ",
                                     "the data directory and retry"));
  }
  return end;
}

absl::StatusOr<std::optional<uint64_t>> VersionFiles::ReservedEnd(const std::string& name) const {
  const std::string path = PathOf(name);
  std::error_code error;
  if (!std::filesystem::exists(path, error)) return std::optional<uint64_t>();
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  uint64_t end = 0;
  if (!in.good() && !in.eof()) {
    return absl::UnavailableError(absl::StrCat("cannot read '", path, "'; check its permissions"));
  }
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &end)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", path, "' holds no version reservation; if the model's last version ",
                     "is known, write a number past it into the file, then restart"));
  }
  return std::optional<uint64_t>(end);
}

void VersionFiles::Remove(const std::string& name) {
  std::error_code error;
  std::filesystem::remove(PathOf(name), error);
}

}  // namespace paramd::io
