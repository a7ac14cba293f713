// MappedFile's read hints: ScatteredReads marks the mapping for random reads only while it
// lives and lets the pages it read go again, and a cold .pt's headers are read through it,
// not with the read_ahead_kb around each (Note [Headers without read-around]).
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

// A file of `pages` pages, each filled with its index.
void WritePages(const std::string& path, int pages) {
  std::ofstream out(path, std::ios::binary);
  for (int i = 0; i < pages; ++i) out << std::string(4096, static_cast<char>('a' + i % 26));
}

TEST_F(MappedFileTest, PagesReadUnderScatteredReadsLeaveTheCacheWhenItGoes) {
  const std::string path = PathOf("cold");
  constexpr int kPages = 4096;  // 16 MiB: two of read_ahead_kb's 8 MiB
  WritePages(path, kPages);
  if (!Evict(path)) GTEST_SKIP() << "this file system keeps the file cached (tmpfs?)";
  absl::StatusOr<std::shared_ptr<MappedFile>> file = MappedFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  {
    MappedFile::ScatteredReads headers(**file);
    EXPECT_EQ((*file)->data()[0], 'a');
    EXPECT_EQ((*file)->data()[2000 * 4096 + 7], 'a' + 2000 % 26);
    EXPECT_EQ((*file)->data()[kPages * 4096 - 1], 'a' + (kPages - 1) % 26);
    // Each touch read its own page, not the 8 MiB around it.
    EXPECT_LE(ResidentBytes(path), size_t{3} * 64 * 1024);
    EXPECT_GE(ResidentBytes(path), size_t{3} * 4096);
  }
  EXPECT_EQ(ResidentBytes(path), 0u);
  // The bytes are read again where they are needed.
  EXPECT_EQ((*file)->data()[2000 * 4096 + 7], 'a' + 2000 % 26);
}

TEST_F(MappedFileTest, ScatteredReadsLeavesPagesThatWereCachedBefore) {
  const std::string path = PathOf("warm");
  constexpr int kPages = 256;
  WritePages(path, kPages);
  absl::StatusOr<std::shared_ptr<MappedFile>> file = MappedFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  int sum = 0;
  for (int i = 0; i < kPages; ++i) sum += (*file)->data()[i * 4096];
  ASSERT_GT(sum, 0);
  ASSERT_EQ(ResidentBytes(path), size_t{kPages} * 4096);
  {
    MappedFile::ScatteredReads headers(**file);
    EXPECT_EQ((*file)->data()[100 * 4096], 'a' + 100 % 26);
  }
  EXPECT_EQ(ResidentBytes(path), size_t{kPages} * 4096);
}

// A .pt read without its CRC pass reads its records' headers and small records only: on a
// cold file that must read those pages and let them go again (the tensors are read later,
// in order), not read 8 MiB around each header (the whole of this file before, where
// read_ahead_kb is 8192).
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
  EXPECT_EQ(ResidentBytes(path), 0u) << "of a " << (kRecords * 4) << " MiB file";
  const auto* last = static_cast<const float*>(read->entries[5].tensor.data());
  EXPECT_EQ(last[0], 5.0f);
  EXPECT_EQ(last[(1 << 20) - 1], 5.0f);
}

}  // namespace
}  // namespace paramd::io
