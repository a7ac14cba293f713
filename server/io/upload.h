// PartialUpload: a file that arrives in pieces over calls that may break off
// (Checkpoints.Upload). The bytes go to a hidden partial file beside the target, kept
// between calls so that a client can resume at its size; Finish checks the SHA-256 of the
// whole and only then renames it over the target, so a broken or corrupt upload never
// touches the file it would replace. Every file step goes through FileSystem, so the
// fault-injection tests cover uploads as they cover saves.
//
// Ownership: borrows the FileSystem, which must outlive the upload.
// Thread-safety: one upload of a target at a time (the caller serialises them); an
// instance is used from one thread.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/io/file_system.h"
#include "server/io/sha256.h"

namespace paramd::io {

class PartialUpload {
 public:
  // The hidden file an unfinished upload of `target` is kept in.
  static std::string PartialPathOf(const std::string& target);
  // The target whose partial file `partial` is; nullopt when it names none.
  static std::optional<std::string> TargetOfPartial(const std::string& partial);
  // Bytes of an unfinished upload of `target` kept so far; 0 when there is none.
  static uint64_t KeptBytes(const std::string& target);

  // Starts the upload of `target` (`total_size` bytes) at `offset`: 0 starts afresh,
  // dropping any kept bytes; KeptBytes(target) resumes. INVALID_ARGUMENT when `offset` is
  // past `total_size`, FAILED_PRECONDITION (saying where to resume) for any other offset.
  static absl::StatusOr<PartialUpload> Open(FileSystem& fs, const std::string& target,
                                            uint64_t offset, uint64_t total_size);

  PartialUpload(PartialUpload&&) = default;
  PartialUpload& operator=(PartialUpload&&) = default;

  // Appends a piece. More bytes than `total_size` in all is INVALID_ARGUMENT and drops the
  // kept bytes (the sender is confused about the file, so none of them can be trusted).
  absl::Status Append(absl::string_view piece);
  // Bytes kept so far, those of earlier calls included.
  uint64_t size() const { return file_->size(); }
  uint64_t total_size() const { return total_size_; }

  // Makes the bytes so far durable and closes the file, keeping them for a resume.
  absl::Status Keep();
  // An upload that ends before any byte was kept (refused at its second frame, say)
  // leaves no empty partial file behind; one with bytes, or put in place, is left as it is.
  void DropIfEmpty();

  // Once all `total_size` bytes are in: syncs and closes the file, compares its SHA-256
  // with `expected_sha256` (hex), renames it over the target and syncs the directory.
  // Returns the file's size, digest and identity. A mismatch removes the kept bytes and is
  // INVALID_ARGUMENT; fewer bytes than `total_size` is FAILED_PRECONDITION and keeps them.
  absl::StatusOr<WrittenFile> Finish(absl::string_view expected_sha256);

 private:
  PartialUpload(FileSystem& fs, std::string target, uint64_t total_size,
                std::unique_ptr<WritableFile> file, Sha256 hasher);

  FileSystem* fs_;
  std::string target_;
  std::string partial_;
  uint64_t total_size_;
  std::unique_ptr<WritableFile> file_;
  // Of every kept byte: the prefix kept by earlier calls is hashed once when resuming.
  Sha256 hasher_;
  bool placed_ = false;  // Finish renamed it over the target
};

}  // namespace paramd::io
