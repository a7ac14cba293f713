// Input files that paramctl lends to gRPC straight from a read-only mapping (set --in,
// load-state-dict), and what it does when such a file is cut short under it.
//
// Note [Lent from the file]: reading a file's data into a buffer before gRPC copies the
// buffer into the socket cost a third of paramctl's CPU in a load-state-dict from a warm
// .npz (the pread copy and the CRC over its result). Lent from the mapping, the bytes are
// read once by the CRC (an .npz member's; an .npy has none) and once by the socket's copy.
// Pages already lent are unmapped from the process as the transfer moves on (the page cache
// keeps them), so the client's resident memory stays a few chunks. A mapping's risk is a
// file truncated while it is mapped: the next touch of a page past the new end raises
// SIGBUS. paramctl then exits with status 1 and a message naming the file: a write stream
// cut off this way is never committed by the daemon, so the outcome is that of any failed
// write (the model is unchanged).
//
// Thread-safety: a MappedInput is used by one thread; the SIGBUS handler is process-wide.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace paramd::cli {

class MappedInput {
 public:
  // Maps `size` bytes of `fd` (the file `path`, which names it in messages) read-only, and
  // names `path` in the message of a SIGBUS from here on. nullptr data for size 0.
  static absl::StatusOr<std::unique_ptr<MappedInput>> Map(int fd, const std::string& path,
                                                          uint64_t size);
  ~MappedInput();
  MappedInput(const MappedInput&) = delete;
  MappedInput& operator=(const MappedInput&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  // Unmaps from the process the pages more than kLag bytes before `position` (the end of
  // what has been lent so far); a later touch would map them again, unchanged.
  void ReleaseBehind(uint64_t position);
  // Unmaps from the process the pages around bytes [offset, offset + length): whole blocks of
  // kFolioBytes, since where the page cache holds large folios one touch maps in the whole
  // folio. Checking an archive touches a page or so of each member. What is touched again
  // maps back in.
  void Release(uint64_t offset, uint64_t length);
  static constexpr uint64_t kFolioBytes = uint64_t{2} << 20;

  // Bytes lent that gRPC may still be sending stay mapped a while (four chunks); one it
  // sends after all is mapped in again by the touch, at the cost of a page fault.
  static constexpr uint64_t kLag = uint64_t{4} << 20;

 private:
  MappedInput(const uint8_t* data, uint64_t size) : data_(data), size_(size) {}

  const uint8_t* data_;
  uint64_t size_;
  uint64_t released_ = 0;  // pages before this offset are unmapped from the process
};

// Makes SIGBUS print "paramctl: error [ABORTED]: ..." naming the last file MappedInput
// mapped and exit with status 1 (Note [Lent from the file]). For main(), once.
void ExitCleanlyOnBusError();

}  // namespace paramd::cli
