// FileSink writes behind on a thread of its own (Note [Write-behind]), past the page cache
// where it can (Note [Past the page cache]): either way, whatever the pieces, the file must
// hold exactly what was appended, with each rewrite landing on the bytes it replaces, and a
// failed write must surface as an error, never as a short file reported whole.
#include "client/cli/file_sink.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace paramd::cli {
namespace {

using ::testing::HasSubstr;

absl::Span<const uint8_t> Bytes(const std::string& text) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size());
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream out;
  out << in.rdbuf();
  return out.str();
}

// Where two strings first differ, so that a failure prints an offset, not megabytes.
size_t FirstDifference(const std::string& a, const std::string& b) {
  const auto [at, ignored] = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
  return at == a.end() && a.size() == b.size() ? std::string::npos
                                               : static_cast<size_t>(at - a.begin());
}

std::string TempPath(const std::string& name) {
  return absl::StrCat(::testing::TempDir(), "/file_sink_", ::getpid(), "_", name);
}

// Whether the file system under `dir` takes direct I/O at all.
bool TakesDirectIo(const std::string& dir) {
  const std::string probe = absl::StrCat(dir, "/file_sink_probe_", ::getpid());
  const int fd = open(probe.c_str(), O_WRONLY | O_CREAT | O_DIRECT, 0644);
  if (fd >= 0) close(fd);
  std::filesystem::remove(probe);
  return fd >= 0;
}

class FileSinkWritesTest : public ::testing::TestWithParam<FileSink::Writes> {};

// Pieces of every size around the buffer's, more bytes than the queue holds (so appends wait
// for the writer), and rewrites of bytes still gathering, queued, long written, and across
// the edge of the piece still gathering.
TEST_P(FileSinkWritesTest, WritesEveryByteInOrderWithRewritesInPlace) {
  const std::string path = TempPath("order");
  auto sink = FileSink::Create(path, GetParam());
  ASSERT_TRUE(sink.ok()) << sink.status();
  std::string expected;
  std::mt19937 random(7);
  constexpr size_t kPiece = FileSink::kPieceBytes;
  const size_t sizes[] = {1, 3, kPiece - 1, kPiece, kPiece + 7, 3 * kPiece + 5, 0, 100};
  for (int round = 0; round < 3; ++round) {
    for (size_t size : sizes) {
      std::string piece(size, '\0');
      for (char& c : piece) c = static_cast<char>(random());
      ASSERT_TRUE((*sink)->Append(Bytes(piece)).ok());
      expected += piece;
      EXPECT_EQ((*sink)->size(), expected.size());
    }
    const uint64_t gathering_from = expected.size() / kPiece * kPiece;
    ASSERT_GT(expected.size() - gathering_from, 4u);
    for (uint64_t at : {uint64_t{expected.size() - 2}, gathering_from - 2,
                        gathering_from - kPiece + 4093, static_cast<uint64_t>(round * 10 + 1)}) {
      const std::string patch = absl::StrCat("r", round, "-", at).substr(0, expected.size() - at);
      ASSERT_TRUE((*sink)->Overwrite(at, Bytes(patch)).ok());
      expected.replace(at, patch.size(), patch);
    }
  }
  ASSERT_GT(expected.size(), (FileSink::kPieces + 2) * kPiece);
  ASSERT_NE(expected.size() % FileSink::kAlignment, 0u);  // the last piece is padded
  ASSERT_TRUE((*sink)->Close().ok());
  EXPECT_EQ(FirstDifference(ReadFile(path), expected), std::string::npos);
  EXPECT_EQ((*sink)->Close().code(), absl::StatusCode::kFailedPrecondition);
  // Measuring, the first two pieces go one each way.
  if (GetParam() == FileSink::Writes::kFastest && TakesDirectIo(::testing::TempDir())) {
    EXPECT_GE((*sink)->direct_bytes(), kPiece);
    EXPECT_LE((*sink)->direct_bytes(), expected.size() - kPiece);
  } else {
    EXPECT_EQ((*sink)->direct_bytes(), 0u);
  }
  std::filesystem::remove(path);
}

INSTANTIATE_TEST_SUITE_P(BothWays, FileSinkWritesTest,
                         ::testing::Values(FileSink::Writes::kFastest,
                                           FileSink::Writes::kPageCache),
                         [](const auto& info) {
                           return info.param == FileSink::Writes::kFastest ? "Fastest"
                                                                           : "PageCache";
                         });

TEST(FileSinkTest, RefusesARewritePastWhatWasAppended) {
  const std::string path = TempPath("past");
  auto sink = FileSink::Create(path);
  ASSERT_TRUE(sink.ok()) << sink.status();
  ASSERT_TRUE((*sink)->Append(Bytes("abcd")).ok());
  EXPECT_EQ((*sink)->Overwrite(3, Bytes("xy")).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*sink)->Overwrite(~uint64_t{0}, Bytes("x")).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*sink)->Overwrite(2, Bytes("xy")).ok());
  ASSERT_TRUE((*sink)->Close().ok());
  EXPECT_EQ(ReadFile(path), "abxy");
  std::filesystem::remove(path);
}

// A full disk: the writer's error comes back from a later call or from Close, naming the
// file; it is never lost.
TEST(FileSinkTest, AFailedWriteIsReported) {
  if (!std::filesystem::exists("/dev/full")) GTEST_SKIP() << "no /dev/full here";
  auto sink = FileSink::Create("/dev/full");
  ASSERT_TRUE(sink.ok()) << sink.status();
  const std::string piece(FileSink::kPieceBytes, 'x');
  absl::Status status;
  for (int i = 0; i < 32 && status.ok(); ++i) status = (*sink)->Append(Bytes(piece));
  absl::Status closed = (*sink)->Close();
  if (status.ok()) status = closed;
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_THAT(status.message(), HasSubstr("/dev/full"));
  EXPECT_FALSE(closed.ok());
}

// A write abandoned halfway (the read failed): the sink goes without Close, dropping what is
// queued, and the .part file goes with it; an earlier file under the name is untouched.
TEST(FileSinkTest, AnAbandonedPartFileLeavesTheOldFile) {
  const std::string path = TempPath("abandoned");
  std::ofstream(path) << "old";
  {
    auto part = PartFile::Create(path);
    ASSERT_TRUE(part.ok()) << part.status();
    const std::string piece(3 * FileSink::kPieceBytes, 'n');
    for (int i = 0; i < 6; ++i) ASSERT_TRUE((*part)->sink().Append(Bytes(piece)).ok());
  }
  EXPECT_EQ(ReadFile(path), "old");
  EXPECT_FALSE(std::filesystem::exists(path + ".part"));
  {
    auto part = PartFile::Create(path);
    ASSERT_TRUE(part.ok()) << part.status();
    ASSERT_TRUE((*part)->sink().Append(Bytes("new")).ok());
    ASSERT_TRUE((*part)->Commit().ok());
  }
  EXPECT_EQ(ReadFile(path), "new");
  EXPECT_FALSE(std::filesystem::exists(path + ".part"));
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace paramd::cli
