// Fuzzes zip::Reader::Open (stored and deflated entries, ZIP64, data descriptors) and the
// accessors over what it accepts, and checks that every archive it accepts is rewritten by
// zip::Writer into an archive it accepts again, with the same entries and contents in the
// same order: entries of known size, plain and forced ZIP64, and streamed entries with data
// descriptors, each entry keeping its method.
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/zip/zip.h"
#include "tests/fuzz/fuzz_support.h"

namespace paramd::fuzz {
namespace {

// Each entry's content, or nullopt where Extract refuses it (a corrupt deflate stream or a
// CRC mismatch); VerifyCrc must agree.
std::vector<std::optional<std::string>> CheckEntries(const zip::Reader& reader,
                                                     absl::Span<const uint8_t> archive) {
  std::vector<std::optional<std::string>> contents;
  for (const zip::Entry& entry : reader.entries()) {
    const absl::Span<const uint8_t> bytes = reader.Data(entry);
    // Spans are views of the archive, never past its end.
    PARAMD_FUZZ_CHECK(bytes.size() == entry.compressed_size, entry.name);
    PARAMD_FUZZ_CHECK(entry.data_offset <= archive.size() &&
                          entry.compressed_size <= archive.size() - entry.data_offset,
                      entry.name);
    PARAMD_FUZZ_CHECK(bytes.empty() || bytes.data() == archive.data() + entry.data_offset,
                      entry.name);
    PARAMD_FUZZ_CHECK(reader.Find(entry.name) == &entry, entry.name);
    PARAMD_FUZZ_CHECK(entry.method == zip::Method::kDeflate || entry.size == entry.compressed_size,
                      entry.name);
    const absl::Status crc = reader.VerifyCrc(entry);
    absl::StatusOr<std::string> content = reader.Extract(entry);
    PARAMD_FUZZ_CHECK(content.ok() == crc.ok(), absl::StrCat(entry.name, ": ", crc.ToString(),
                                                             " vs ", content.status().ToString()));
    if (!content.ok()) {
      contents.push_back(std::nullopt);
      continue;
    }
    PARAMD_FUZZ_CHECK(content->size() == entry.size, entry.name);
    PARAMD_FUZZ_CHECK(zip::Crc32(AsBytes(*content)) == entry.crc32, entry.name);
    contents.push_back(*std::move(content));
  }
  return contents;
}

enum class Mode { kKnownSize, kForcedZip64, kStreamed };

void RoundTrip(const zip::Reader& reader, const std::vector<std::optional<std::string>>& contents,
               Mode mode) {
  const std::string label = absl::StrCat("mode ", static_cast<int>(mode));
  zip::StringSink out;
  zip::Writer writer(out, zip::WriterOptions{.force_zip64 = mode == Mode::kForcedZip64});
  for (size_t i = 0; i < contents.size(); ++i) {
    const zip::Entry& entry = reader.entries()[i];
    // An entry whose content cannot be read is written as it is stored.
    const std::string content = contents[i].value_or(std::string(
        reinterpret_cast<const char*>(reader.Data(entry).data()), reader.Data(entry).size()));
    const zip::Method method = contents[i].has_value() ? entry.method : zip::Method::kStored;
    absl::Status status;
    if (mode == Mode::kStreamed) {
      status = writer.BeginEntry(entry.name, method);
      // In two pieces, to cross a Write boundary.
      const absl::string_view all = content;
      if (status.ok()) status = writer.Write(AsBytes(std::string(all.substr(0, all.size() / 2))));
      if (status.ok()) status = writer.Write(AsBytes(std::string(all.substr(all.size() / 2))));
      if (status.ok()) status = writer.EndEntry();
    } else {
      status = writer.AddEntry(entry.name, content, method);
    }
    PARAMD_FUZZ_CHECK(status.ok(), absl::StrCat(label, ": ", status.ToString()));
  }
  const absl::Status finished = writer.Finish();
  PARAMD_FUZZ_CHECK(finished.ok(), finished.ToString());

  absl::StatusOr<zip::Reader> again = zip::Reader::Open(AsBytes(out.data));
  PARAMD_FUZZ_CHECK(again.ok(), absl::StrCat(label, ": ", again.status().ToString()));
  PARAMD_FUZZ_CHECK(again->entries().size() == reader.entries().size(),
                    absl::StrCat(again->entries().size(), " vs ", reader.entries().size()));
  for (size_t i = 0; i < reader.entries().size(); ++i) {
    const zip::Entry& before = reader.entries()[i];
    const zip::Entry& after = again->entries()[i];
    PARAMD_FUZZ_CHECK(before.name == after.name, absl::StrCat(before.name, " vs ", after.name));
    PARAMD_FUZZ_CHECK(after.data_offset % zip::kDataAlignment == 0, after.name);
    absl::StatusOr<std::string> content = again->Extract(after);
    PARAMD_FUZZ_CHECK(content.ok(), absl::StrCat(label, ": ", content.status().ToString()));
    if (contents[i].has_value()) {
      PARAMD_FUZZ_CHECK(*content == *contents[i], absl::StrCat(label, ": ", before.name));
    } else {
      PARAMD_FUZZ_CHECK(SameBytes(AsBytes(*content), reader.Data(before)), before.name);
    }
    const absl::Status crc = again->VerifyCrc(after);
    PARAMD_FUZZ_CHECK(crc.ok(), crc.ToString());
  }
}

}  // namespace
}  // namespace paramd::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace paramd;
  const absl::Span<const uint8_t> archive = absl::MakeConstSpan(data, size);
  // ListNames reads a superset of what Open accepts.
  const absl::StatusOr<std::vector<std::string>> names = zip::Reader::ListNames(archive);
  absl::StatusOr<zip::Reader> reader = zip::Reader::Open(archive);
  if (!reader.ok()) return 0;
  PARAMD_FUZZ_CHECK(names.ok() && names->size() == reader->entries().size(),
                    names.status().ToString());
  const std::vector<std::optional<std::string>> contents = fuzz::CheckEntries(*reader, archive);
  fuzz::RoundTrip(*reader, contents, fuzz::Mode::kKnownSize);
  fuzz::RoundTrip(*reader, contents, fuzz::Mode::kForcedZip64);
  fuzz::RoundTrip(*reader, contents, fuzz::Mode::kStreamed);
  return 0;
}
