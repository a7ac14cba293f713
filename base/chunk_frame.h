// The protobuf wire bytes of a tensor chunk frame, written and read by hand on both sides
// of the wire so that a chunk's data never passes through a protobuf string: the frame
// travels as these few prefix bytes followed by the data itself (see docs/wire.md), and is
// read where it arrived, in the transport's own buffers.
//
// The frame is TensorFrame / WriteFrame field 3 (`chunk`, length-delimited) holding a
// TensorChunk: field 1 (`offset`, varint), then field 2 (`data`, length-delimited), in
// field order as protobuf encoders write them. Both messages number `chunk` 3, so one
// prefix serves reads and writes. Pure functions, no state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace paramd::wire {

inline constexpr uint8_t kChunkFrameTag = (3 << 3) | 2;  // TensorFrame/WriteFrame.chunk
inline constexpr uint8_t kOffsetTag = (1 << 3) | 0;      // TensorChunk.offset
inline constexpr uint8_t kDataTag = (2 << 3) | 2;        // TensorChunk.data

// Protobuf's base-128 varint of `value`.
void AppendVarint(uint64_t value, std::string* out);
size_t VarintSize(uint64_t value);

// The bytes that precede `size` data bytes in the frame chunk {offset, data}: at most 33.
// The offset field is written even when 0 (a parser takes it either way).
std::string ChunkFramePrefix(uint64_t offset, uint64_t size);

// A chunk frame read in place.
struct ChunkFrameView {
  uint64_t offset = 0;
  uint64_t size = 0;
  // The data: pieces of the buffers the frame arrived in, in order, `size` bytes in all.
  std::vector<absl::string_view> data;
};

// The frame whose bytes are `pieces` (in order, as a transport hands them over) read as a
// chunk frame, when it is one in the layout encoders write: the chunk field alone, holding
// the offset (absent when 0, as proto3 encoders leave it) and then the data, every length
// consistent, nothing after. nullopt for any other frame or layout, which the caller hands
// to protobuf: protobuf reads every layout and refuses broken ones, and wherever this
// answers, protobuf's reading is the same.
std::optional<ChunkFrameView> ReadChunkFrame(absl::Span<const absl::string_view> pieces);

}  // namespace paramd::wire
