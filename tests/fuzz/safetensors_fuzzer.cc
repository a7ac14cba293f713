// Fuzzes ParseSafetensors, both the copying path (owner == nullptr) and the zero-copy path,
// and checks that a file that parses survives SerializeSafetensors unchanged.
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "server/io/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

namespace paramd::fuzz {
namespace {

std::string Describe(const io::SafetensorsEntry& entry) {
  return absl::StrCat("'", entry.name, "' ", DTypeName(entry.tensor.dtype()), " ",
                      core::ShapeString(entry.tensor.shape()));
}

absl::Span<const uint8_t> TensorBytes(const core::Tensor& tensor) {
  return absl::MakeConstSpan(static_cast<const uint8_t*>(tensor.data()), tensor.nbytes());
}

void CheckSameEntry(const io::SafetensorsEntry& a, const io::SafetensorsEntry& b) {
  PARAMD_FUZZ_CHECK(a.name == b.name && a.tensor.dtype() == b.tensor.dtype() &&
                        a.tensor.shape() == b.tensor.shape(),
                    absl::StrCat(Describe(a), " vs ", Describe(b)));
  PARAMD_FUZZ_CHECK(a.tensor.is_contiguous() && b.tensor.is_contiguous(), Describe(a));
  PARAMD_FUZZ_CHECK(SameBytes(TensorBytes(a.tensor), TensorBytes(b.tensor)), Describe(a));
}

// The same tensors in the same order, and the same metadata.
void CheckSameFile(const io::SafetensorsFile& a, const io::SafetensorsFile& b) {
  PARAMD_FUZZ_CHECK(a.entries.size() == b.entries.size(),
                    absl::StrCat(a.entries.size(), " vs ", b.entries.size(), " tensors"));
  for (size_t i = 0; i < a.entries.size(); ++i) CheckSameEntry(a.entries[i], b.entries[i]);
  PARAMD_FUZZ_CHECK(a.metadata == b.metadata, "metadata differs");
}

// The writer orders tensors its own way, so the round trip is compared by name.
void CheckSameByName(const io::SafetensorsFile& original, const io::SafetensorsFile& again) {
  PARAMD_FUZZ_CHECK(original.entries.size() == again.entries.size(),
                    absl::StrCat(original.entries.size(), " vs ", again.entries.size(), " tensors"));
  std::map<std::string, const io::SafetensorsEntry*> by_name;
  for (const io::SafetensorsEntry& entry : again.entries) by_name[entry.name] = &entry;
  for (const io::SafetensorsEntry& entry : original.entries) {
    auto it = by_name.find(entry.name);
    PARAMD_FUZZ_CHECK(it != by_name.end(), absl::StrCat(Describe(entry), " lost"));
    CheckSameEntry(entry, *it->second);
  }
  PARAMD_FUZZ_CHECK(original.metadata == again.metadata, "metadata differs after the round trip");
}

absl::StatusOr<std::string> Serialize(const io::SafetensorsFile& file) {
  io::NamedTensors tensors;
  for (const io::SafetensorsEntry& entry : file.entries) {
    tensors.emplace_back(entry.name, entry.tensor);
  }
  return io::SerializeSafetensors(tensors, file.metadata);
}

}  // namespace
}  // namespace paramd::fuzz

extern "C" int LLVMFuzzerInitialize(int* /*argc*/, char*** /*argv*/) {
  paramd::fuzz::LimitBackendMemory();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace paramd;
  using namespace paramd::fuzz;
  absl::StatusOr<io::SafetensorsFile> copied =
      io::ParseSafetensors(absl::MakeConstSpan(data, size), nullptr);
  const std::shared_ptr<const std::string> owner = CopyOfInput(data, size);
  absl::StatusOr<io::SafetensorsFile> mapped = io::ParseSafetensors(AsBytes(*owner), owner);
  // Only the copying path allocates, so only it may run out of memory.
  if (absl::IsResourceExhausted(copied.status())) return 0;
  PARAMD_FUZZ_CHECK(copied.status() == mapped.status(),
                    absl::StrCat("copying: ", copied.status().ToString(),
                                 "\nzero-copy: ", mapped.status().ToString()));
  if (!copied.ok()) return 0;
  CheckSameFile(*copied, *mapped);

  absl::StatusOr<std::string> written = Serialize(*copied);
  PARAMD_FUZZ_CHECK(written.ok(), written.status().ToString());
  absl::StatusOr<io::SafetensorsFile> again = io::ParseSafetensors(AsBytes(*written), nullptr);
  PARAMD_FUZZ_CHECK(again.ok(), again.status().ToString());
  CheckSameByName(*copied, *again);
  // The writer's layout is canonical: writing what it wrote gives the same bytes.
  absl::StatusOr<std::string> rewritten = Serialize(*again);
  PARAMD_FUZZ_CHECK(rewritten.ok() && *rewritten == *written, "the writer is not a fixed point");
  return 0;
}
