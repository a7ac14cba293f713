// MappedFile's read hints: ScatteredReads marks the mapping for random reads only while it
// lives, and reading a cold .pt's headers through it reads those headers, not the
// read_ahead_kb around each (Note [Headers without read-around]).
#include "server/io/mapped_file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "server/io/torch_checkpoint.h"
#include "tests/unit/io/test_util.h"

namespace paramd::io {
namespace {

class MappedFileTest : public test_util::ScratchDirTest {};

// The VmFlags line of /proc/self/smaps for the mapping that holds `address`.
std::string VmFlagsOf(const void* address) {
  const auto at = reinterpret_cast<uintptr_t>(address);
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    const std::vector<std::string> fields = absl::StrSplit(line, ' ');
    const std::vector<std::string> range = absl::StrSplit(fields[0], '-');
    uint64_t begin = 0;
    uint64_t end = 0;
    if (range.size() == 2 && absl::SimpleHexAtoi(range[0], &begin) &&
        absl::SimpleHexAtoi(range[1], &end)) {
      inside = begin <= at && at < end;
    } else if (inside && absl::StartsWith(line, "VmFlags:")) {
      return line;
    }
  }
  return "";
}

// Whether `flags` (a VmFlags line) holds the two-letter flag `flag`.
bool HasFlag(const std::string& flags, const std::string& flag) {
  for (absl::string_view field : absl::StrSplit(flags, ' ', absl::SkipEmpty())) {
    if (field == flag) return true;
  }
  return false;
}

TEST_F(MappedFileTest, ScatteredReadsAdvisesRandomReadsOnlyWhileItLives) {
  const std::string path = PathOf("three-pages");
  std::ofstream(path) << std::string(3 * 4096, 'x');
  absl::StatusOr<std::shared_ptr<MappedFile>> file = MappedFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  const std::string before = VmFlagsOf((*file)->data());
  ASSERT_FALSE(before.empty()) << "no smaps entry for the mapping";
  EXPECT_FALSE(HasFlag(before, "rr")) << before;
  {
    MappedFile::ScatteredReads headers(**file);
    EXPECT_TRUE(HasFlag(VmFlagsOf((*file)->data()), "rr")) << VmFlagsOf((*file)->data());
  }
  EXPECT_FALSE(HasFlag(VmFlagsOf((*file)->data()), "rr")) << VmFlagsOf((*file)->data());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>((*file)->data()), 3), "xxx");
}

TEST_F(MappedFileTest, ScatteredReadsOverAnEmptyFileIsHarmless) {
  const std::string path = PathOf("empty");
  std::ofstream(path).flush();
  absl::StatusOr<std::shared_ptr<MappedFile>> file = MappedFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  MappedFile::ScatteredReads headers(**file);
  EXPECT_EQ((*file)->size(), 0u);
}

// How many bytes of `path` are in the page cache (mincore over a mapping of its own).
size_t ResidentBytes(const std::string& path) {
  absl::StatusOr<std::shared_ptr<MappedFile>> file = MappedFile::Open(path);
  if (!file.ok() || (*file)->size() == 0) return 0;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> resident(((*file)->size() + page - 1) / page);
  if (mincore(const_cast<uint8_t*>((*file)->data()), (*file)->size(), resident.data()) != 0) {
    return 0;
  }
  size_t pages = 0;
  for (unsigned char r : resident) pages += r & 1;
  return pages * page;
}

// Drops `path` from the page cache; false where the file system keeps it (tmpfs).
bool Evict(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  fdatasync(fd);
  const bool dropped = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0;
  close(fd);
  return dropped && ResidentBytes(path) == 0;
}

// A .pt read without its CRC pass touches its records' headers and small records only: on a
// cold file that must read a few pages, not 8 MiB around each header (the whole of this file
// before the fix, where read_ahead_kb is 8192).
TEST_F(MappedFileTest, AColdTorchFilesHeadersAreReadWithoutTheDataAroundThem) {
  const std::string path = PathOf("cold.pt");
  std::vector<TorchCheckpointEntry> entries;
  constexpr int kRecords = 6;
  for (int i = 0; i < kRecords; ++i) {
    absl::StatusOr<core::Tensor> tensor = core::Tensor::Full(DType::kFloat32, {1 << 20}, i);
    ASSERT_TRUE(tensor.ok()) << tensor.status();
    TorchCheckpointEntry entry;
    entry.name = absl::StrCat("layers.", i, ".weight");
    entry.tensor = *tensor;
    entries.push_back(std::move(entry));
  }
  ASSERT_TRUE(SaveTorchCheckpoint(path, entries).ok());
  if (!Evict(path)) GTEST_SKIP() << "this file system keeps the file cached (tmpfs?)";

  TorchReadOptions options;
  options.verify_crc = false;
  absl::StatusOr<TorchCheckpoint> read = ReadTorchCheckpoint(path, options);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->entries.size(), static_cast<size_t>(kRecords));
  // Each record's header page, the small records and the zip's end: a few pages each.
  const size_t resident = ResidentBytes(path);
  EXPECT_LE(resident, size_t{kRecords + 8} * 64 * 1024) << "of a " << (kRecords * 4) << " MiB file";
}

}  // namespace
}  // namespace paramd::io
