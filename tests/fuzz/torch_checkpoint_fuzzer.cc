// Fuzzes ParseTorchCheckpoint: the copying path with CRC checks (as ReadTorchCheckpoint
// reads a file), and the zero-copy path without them, so that mutated inputs get past the
// CRCs into the pickle and the tensor checks. A checkpoint that parses must be written by
// WriteTorchCheckpoint into one that parses to the same state_dict.
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "server/io/torch_checkpoint.h"
#include "tests/fuzz/fuzz_support.h"

namespace paramd::fuzz {
namespace {

std::string Describe(const io::TorchCheckpointEntry& entry) {
  const core::Tensor& t = entry.tensor;
  return absl::StrCat("'", entry.name, "' ", DTypeName(t.dtype()), " offset ", t.offset(),
                      " size ", core::ShapeString(t.shape()), " stride ",
                      core::ShapeString(t.strides()), entry.is_parameter ? " parameter" : "",
                      entry.requires_grad ? " requires_grad" : "");
}

// Same state_dict: names, flags, views and the bytes of the storages they view. Views are
// compared by their storage, never element by element: a stride-0 view may stand for far
// more elements than its storage holds.
void CheckSameCheckpoint(const io::TorchCheckpoint& a, const io::TorchCheckpoint& b,
                         bool same_locations) {
  PARAMD_FUZZ_CHECK(a.entries.size() == b.entries.size(),
                    absl::StrCat(a.entries.size(), " vs ", b.entries.size(), " entries"));
  // The first entry to use each storage.
  absl::flat_hash_map<const core::Storage*, size_t> first_user_a, first_user_b;
  for (size_t i = 0; i < a.entries.size(); ++i) {
    const io::TorchCheckpointEntry& x = a.entries[i];
    const io::TorchCheckpointEntry& y = b.entries[i];
    PARAMD_FUZZ_CHECK(x.name == y.name && x.is_parameter == y.is_parameter &&
                          x.requires_grad == y.requires_grad &&
                          x.tensor.dtype() == y.tensor.dtype() &&
                          x.tensor.offset() == y.tensor.offset() &&
                          x.tensor.shape() == y.tensor.shape() &&
                          x.tensor.strides() == y.tensor.strides(),
                      absl::StrCat(Describe(x), " vs ", Describe(y)));
    PARAMD_FUZZ_CHECK(x.tensor.device().is_cpu() && y.tensor.device().is_cpu(), Describe(x));
    PARAMD_FUZZ_CHECK(SameBytes(StorageBytes(x.tensor), StorageBytes(y.tensor)), Describe(x));
    PARAMD_FUZZ_CHECK(!same_locations || x.saved_location == y.saved_location, Describe(x));
    // Tensors that share a storage in one must share it in the other.
    const size_t first_a = first_user_a.emplace(x.tensor.storage().get(), i).first->second;
    const size_t first_b = first_user_b.emplace(y.tensor.storage().get(), i).first->second;
    PARAMD_FUZZ_CHECK(first_a == first_b,
                      absl::StrCat(Describe(x), " shares its storage with entry ", first_a,
                                   " in one and with entry ", first_b, " in the other"));
  }
  PARAMD_FUZZ_CHECK(a.metadata == b.metadata, "_metadata differs");
}

// Writes `checkpoint` back; the archive name and extra records are kept where the writer
// accepts them (it is stricter about record names than the reader is).
void CheckRoundTrip(const io::TorchCheckpoint& checkpoint) {
  io::TorchSaveOptions options;
  options.archive_name = checkpoint.archive_name;
  options.metadata = checkpoint.metadata;
  options.extra_records = checkpoint.extra_records;
  options.serialization_id = "0";
  io::StringWritableFile out;
  if (!io::WriteTorchCheckpoint(out, checkpoint.entries, options).ok()) {
    options.archive_name = "archive";
    options.extra_records.clear();
    out.data.clear();
    const absl::Status written = io::WriteTorchCheckpoint(out, checkpoint.entries, options);
    PARAMD_FUZZ_CHECK(written.ok(), written.ToString());
  }
  absl::StatusOr<io::TorchCheckpoint> again = io::ParseTorchCheckpoint(AsBytes(out.data), nullptr);
  PARAMD_FUZZ_CHECK(again.ok(), again.status().ToString());
  CheckSameCheckpoint(checkpoint, *again, /*same_locations=*/false);
  PARAMD_FUZZ_CHECK(again->format_version == 3, absl::StrCat(again->format_version));
  PARAMD_FUZZ_CHECK(again->archive_name == options.archive_name, again->archive_name);
  PARAMD_FUZZ_CHECK(again->extra_records == options.extra_records, "extra records differ");
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
  absl::StatusOr<io::TorchCheckpoint> checked = io::ParseTorchCheckpoint(
      absl::MakeConstSpan(data, size), nullptr, io::TorchReadOptions{.verify_crc = true});
  const std::shared_ptr<const std::string> owner = CopyOfInput(data, size);
  absl::StatusOr<io::TorchCheckpoint> mapped = io::ParseTorchCheckpoint(
      AsBytes(*owner), owner, io::TorchReadOptions{.verify_crc = false});
  if (checked.ok()) {
    // Skipping the CRCs accepts a superset, and where both accept they agree.
    PARAMD_FUZZ_CHECK(mapped.ok(), mapped.status().ToString());
    CheckSameCheckpoint(*checked, *mapped, /*same_locations=*/true);
    PARAMD_FUZZ_CHECK(checked->extra_records == mapped->extra_records, "extra records differ");
  }
  if (!mapped.ok()) return 0;
  CheckRoundTrip(*mapped);
  return 0;
}
