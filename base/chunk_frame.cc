#include "base/chunk_frame.h"

#include <algorithm>

namespace paramd::wire {
namespace {

// Reads protobuf wire bytes across pieces.
class PieceCursor {
 public:
  explicit PieceCursor(absl::Span<const absl::string_view> pieces) : pieces_(pieces) { Skip(); }

  bool ReadByte(uint8_t* byte) {
    if (index_ >= pieces_.size()) return false;
    *byte = static_cast<uint8_t>(pieces_[index_][position_++]);
    ++consumed_;
    Skip();
    return true;
  }

  // Protobuf's varint reading: at most 10 bytes, bits past the 64th dropped.
  bool ReadVarint(uint64_t* value) {
    *value = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      uint8_t byte = 0;
      if (!ReadByte(&byte)) return false;
      if (shift < 64) *value |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;
  }

  // The next `size` bytes as pieces of the input; false when fewer remain.
  bool Take(uint64_t size, std::vector<absl::string_view>* out) {
    while (size > 0) {
      if (index_ >= pieces_.size()) return false;
      const size_t n =
          static_cast<size_t>(std::min<uint64_t>(pieces_[index_].size() - position_, size));
      out->push_back(pieces_[index_].substr(position_, n));
      position_ += n;
      consumed_ += n;
      size -= n;
      Skip();
    }
    return true;
  }

  bool AtEnd() const { return index_ >= pieces_.size(); }
  uint64_t consumed() const { return consumed_; }

 private:
  // Moves past exhausted (or empty) pieces.
  void Skip() {
    while (index_ < pieces_.size() && position_ >= pieces_[index_].size()) {
      ++index_;
      position_ = 0;
    }
  }

  absl::Span<const absl::string_view> pieces_;
  size_t index_ = 0;
  size_t position_ = 0;
  uint64_t consumed_ = 0;
};

}  // namespace

void AppendVarint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

size_t VarintSize(uint64_t value) {
  size_t size = 1;
  while (value >= 0x80) {
    value >>= 7;
    ++size;
  }
  return size;
}

std::string ChunkFramePrefix(uint64_t offset, uint64_t size) {
  const uint64_t chunk_size = 1 + VarintSize(offset) + 1 + VarintSize(size) + size;
  std::string prefix;
  prefix.push_back(static_cast<char>(kChunkFrameTag));
  AppendVarint(chunk_size, &prefix);
  prefix.push_back(static_cast<char>(kOffsetTag));
  AppendVarint(offset, &prefix);
  prefix.push_back(static_cast<char>(kDataTag));
  AppendVarint(size, &prefix);
  return prefix;
}

std::optional<ChunkFrameView> ReadChunkFrame(absl::Span<const absl::string_view> pieces) {
  PieceCursor cursor(pieces);
  uint8_t tag = 0;
  uint64_t length = 0;
  if (!cursor.ReadByte(&tag) || tag != kChunkFrameTag || !cursor.ReadVarint(&length)) {
    return std::nullopt;
  }
  const uint64_t chunk_start = cursor.consumed();
  ChunkFrameView view;
  uint8_t field = 0;
  if (!cursor.ReadByte(&field)) return std::nullopt;
  if (field == kOffsetTag && (!cursor.ReadVarint(&view.offset) || !cursor.ReadByte(&field))) {
    return std::nullopt;
  }
  if (field != kDataTag || !cursor.ReadVarint(&view.size)) return std::nullopt;
  // The chunk's length must cover exactly its fields: protobuf would read any other
  // length differently (or refuse it).
  const uint64_t fields = cursor.consumed() - chunk_start;
  if (length < fields || length - fields != view.size) return std::nullopt;
  if (!cursor.Take(view.size, &view.data) || !cursor.AtEnd()) return std::nullopt;
  return view;
}

}  // namespace paramd::wire
