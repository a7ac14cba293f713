// Fuzzes ZipReader::Open and the accessors over what it accepts, and checks that every
// archive it accepts is rewritten by ZipWriter (plain and forced ZIP64) into an archive it
// accepts again, with the same entries in the same order.
#include <string>

#include "absl/strings/str_cat.h"
#include "server/io/zip.h"
#include "tests/fuzz/fuzz_support.h"

namespace paramd::fuzz {
namespace {

void CheckEntries(const io::ZipReader& reader, absl::Span<const uint8_t> archive) {
  for (const io::ZipEntry& entry : reader.entries()) {
    const absl::Span<const uint8_t> bytes = reader.Data(entry);
    // Spans are views of the archive, never past its end.
    PARAMD_FUZZ_CHECK(bytes.size() == entry.size, entry.name);
    PARAMD_FUZZ_CHECK(entry.data_offset <= archive.size() &&
                          entry.size <= archive.size() - entry.data_offset,
                      entry.name);
    PARAMD_FUZZ_CHECK(bytes.empty() || bytes.data() == archive.data() + entry.data_offset,
                      entry.name);
    PARAMD_FUZZ_CHECK(reader.Find(entry.name) == &entry, entry.name);
    (void)reader.VerifyCrc(entry);
  }
}

void RoundTrip(const io::ZipReader& reader, bool force_zip64) {
  io::StringWritableFile out;
  io::ZipWriter writer(out, io::ZipWriterOptions{.force_zip64 = force_zip64});
  for (const io::ZipEntry& entry : reader.entries()) {
    const absl::Status added = writer.AddEntry(entry.name, reader.Data(entry));
    PARAMD_FUZZ_CHECK(added.ok(), added.ToString());
  }
  const absl::Status finished = writer.Finish();
  PARAMD_FUZZ_CHECK(finished.ok(), finished.ToString());

  absl::StatusOr<io::ZipReader> again = io::ZipReader::Open(AsBytes(out.data));
  PARAMD_FUZZ_CHECK(again.ok(), absl::StrCat("force_zip64=", force_zip64, ": ",
                                             again.status().ToString()));
  PARAMD_FUZZ_CHECK(again->entries().size() == reader.entries().size(),
                    absl::StrCat(again->entries().size(), " vs ", reader.entries().size()));
  for (size_t i = 0; i < reader.entries().size(); ++i) {
    const io::ZipEntry& before = reader.entries()[i];
    const io::ZipEntry& after = again->entries()[i];
    PARAMD_FUZZ_CHECK(before.name == after.name, absl::StrCat(before.name, " vs ", after.name));
    PARAMD_FUZZ_CHECK(SameBytes(reader.Data(before), again->Data(after)), before.name);
    PARAMD_FUZZ_CHECK(after.data_offset % io::kZipDataAlignment == 0, after.name);
    const absl::Status crc = again->VerifyCrc(after);
    PARAMD_FUZZ_CHECK(crc.ok(), crc.ToString());
  }
}

}  // namespace
}  // namespace paramd::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace paramd;
  const absl::Span<const uint8_t> archive = absl::MakeConstSpan(data, size);
  absl::StatusOr<io::ZipReader> reader = io::ZipReader::Open(archive);
  if (!reader.ok()) return 0;
  fuzz::CheckEntries(*reader, archive);
  fuzz::RoundTrip(*reader, /*force_zip64=*/false);
  fuzz::RoundTrip(*reader, /*force_zip64=*/true);
  return 0;
}
