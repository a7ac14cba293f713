#include "client/cli/local_file.h"

#include "absl/strings/str_cat.h"
#include "base/text.h"

namespace paramd::cli {

std::optional<size_t> FirstNonUtf8(absl::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t length = Utf8SequenceLength(text, pos);
    if (length == 0) return pos;
    pos += length;
  }
  return std::nullopt;
}

std::string HexBytes(absl::string_view bytes, size_t max_bytes) {
  std::string out;
  for (size_t i = 0; i < bytes.size() && i < max_bytes; ++i) {
    if (i > 0) out += ' ';
    absl::StrAppend(&out, absl::Hex(static_cast<unsigned char>(bytes[i]), absl::kZeroPad2));
  }
  if (bytes.size() > max_bytes) out += " ...";
  return out;
}

std::optional<std::string> NonRegularKind(const struct stat& info) {
  if (S_ISREG(info.st_mode)) return std::nullopt;
  if (S_ISDIR(info.st_mode)) return "a directory";
  if (S_ISFIFO(info.st_mode)) return "a pipe";
  if (S_ISSOCK(info.st_mode)) return "a socket";
  if (S_ISCHR(info.st_mode)) return "a character device";
  if (S_ISBLK(info.st_mode)) return "a block device";
  return "not a regular file";
}

}  // namespace paramd::cli
