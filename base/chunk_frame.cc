#include "base/chunk_frame.h"

namespace paramd::wire {

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

}  // namespace paramd::wire
