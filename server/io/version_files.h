// VersionFiles: the version reservations of the models in one directory, one small file per
// model, `<directory>/<name>.versions`, holding the last version the model may hand out
// (Note [Version reservation] in server/core/model.h).
//
// A reservation file is written atomically (temporary file, fsync, rename, directory fsync)
// before any version of its block is handed out, so after any crash it names a version at
// least as large as every version a client was told. A clean shutdown removes the files of
// the models whose final snapshot holds their current version; a file that is present at
// start therefore means the stop was unclean, and the restored model starts past it.
//
// Thread-safety: every method may be called from any thread; callers serialise calls for
// one model (the model's writer lock does).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "server/core/model.h"
#include "server/io/file_system.h"

namespace paramd::io {

class VersionFiles : public core::VersionLease {
 public:
  static constexpr char kSuffix[] = ".versions";
  // Versions reserved at once: one fsynced file per this many writes of a model.
  static constexpr uint64_t kDefaultBlock = 1024;

  // `directory` must exist; `fs` writes the files and must outlive this.
  VersionFiles(std::string directory, FileSystem& fs, uint64_t block = kDefaultBlock)
      : directory_(std::move(directory)), fs_(&fs), block_(block == 0 ? 1 : block) {}

  // Writes `version + block - 1` (at most the largest uint64) to the model's file, durably,
  // and returns it.
  absl::StatusOr<uint64_t> Reserve(const std::string& name, uint64_t version) override;
  // The end of the model's last reserved block; nullopt when it has no file. INVALID_ARGUMENT
  // naming the file when it holds no version.
  absl::StatusOr<std::optional<uint64_t>> ReservedEnd(const std::string& name) const;
  // Removes the model's file (nothing when it has none).
  void Remove(const std::string& name);
  std::string PathOf(const std::string& name) const;

 private:
  const std::string directory_;
  FileSystem* const fs_;
  const uint64_t block_;
};

}  // namespace paramd::io
