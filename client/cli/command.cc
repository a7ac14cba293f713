// The helpers paramctl's command files share: usage errors, flag values, printing, and
// lookups on the daemon.
#include "client/cli/command.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "base/status_macros.h"
#include "client/cli/local_file.h"
#include "client/cli/region.h"
#include "nlohmann/json.hpp"
#include "paramd/client.h"
#include "paramd/tensor.h"

namespace paramd::cli {

namespace {

constexpr absl::string_view kUsagePayload = "type.paramd.dev/paramctl.UsageError";

}  // namespace

// A usage error: the command line is wrong, not the server's state. Exit status 2.
absl::Status UsageError(absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kUsagePayload, absl::Cord("1"));
  return status;
}

bool IsUsageError(const absl::Status& status) {
  return status.GetPayload(kUsagePayload).has_value();
}

absl::StatusOr<uint64_t> ParseUint(const Args& args, const std::string& flag) {
  uint64_t value = 0;
  const std::optional<std::string> text = args.Get(flag);
  if (!text) return 0;
  if (!absl::SimpleAtoi(*text, &value)) {
    return UsageError(absl::StrCat("--", flag, " takes a non-negative integer, not '", *text, "'"));
  }
  return value;
}

absl::StatusOr<uint64_t> IfVersion(const Args& args) { return ParseUint(args, "if-version"); }

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// Left-aligned columns separated by two spaces; the first row is the header.
void PrintTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 2, ' ');
    }
    std::cout << line << "\n";
  }
}

void PrintJson(const json& value, std::ostream& out) { out << value.dump(2) << "\n"; }

std::ostream& ReportStream(const std::string& written) {
  struct stat file;
  struct stat out;
  const bool is_stdout = stat(written.c_str(), &file) == 0 && fstat(STDOUT_FILENO, &out) == 0 &&
                         file.st_dev == out.st_dev && file.st_ino == out.st_ino;
  return is_stdout ? std::cerr : std::cout;
}

void PrintVersion(const Context& ctx, uint64_t version) {
  if (ctx.json) {
    PrintJson({{"version", version}});
  } else {
    std::cout << "version " << version << "\n";
  }
}

json ModelInfoJson(const client::ModelInfo& info) {
  return {{"name", info.name},
          {"type", info.type},
          {"version", info.version},
          {"device", info.device},
          {"training", info.training},
          {"mode", info.training ? "train" : "eval"},
          {"state_dict_entries", info.state_dict_entries},
          {"parameter_count", info.parameter_count},
          {"parameter_numel", info.parameter_numel},
          {"nbytes", info.nbytes},
          {"repr", info.repr},
          {"repr_truncated", info.repr_truncated}};
}

json TensorMetaJson(const std::string& name, const HostTensor& t) {
  return {{"name", name},
          {"shape", t.shape},
          {"dtype", std::string(client::DTypeName(t.dtype))},
          {"device", t.device},
          {"nbytes", t.nbytes()},
          {"is_parameter", t.is_parameter},
          {"requires_grad", t.requires_grad},
          {"version", t.version},
          {"tied_with", t.tied_with}};
}

absl::StatusOr<std::string> ReadSpec(const std::string& path) {
  const std::string name =
      path == "-" ? "the spec on stdin" : absl::StrCat("spec file '", path, "'");
  std::ifstream file;
  std::istream* in = &std::cin;
  if (path != "-") {
    file.open(path, std::ios::binary);
    if (!file) return absl::NotFoundError(absl::StrCat("cannot open '", path, "' for reading"));
    in = &file;
  }
  // At most one byte past the limit is read: a larger file is refused without being held.
  std::string spec(kMaxSpecBytes + 1, '\0');
  in->read(spec.data(), static_cast<std::streamsize>(spec.size()));
  if (in->bad()) return absl::DataLossError(absl::StrCat("cannot read ", name));
  spec.resize(static_cast<size_t>(in->gcount()));
  // Refused here, since past the daemon's message limit gRPC would refuse it with only the
  // two numbers.
  if (spec.size() > kMaxSpecBytes) {
    std::error_code error;
    const uintmax_t size = path == "-" ? 0 : std::filesystem::file_size(path, error);
    return absl::InvalidArgumentError(absl::StrCat(
        name, " is ",
        size > kMaxSpecBytes && !error ? absl::StrCat(size)
                                       : absl::StrCat("more than ", kMaxSpecBytes),
        " bytes; a spec may be at most ", kMaxSpecBytes,
        " bytes, as it travels in one request and the daemon takes requests of up to ",
        kDaemonMessageBytes,
        " bytes (4 MiB). Share repeated modules with \"ref\" and send "
        "large tensor values after the create (set --in, load-state-dict) instead of in "
        "\"init\" (docs/specs.md)"));
  }
  if (std::optional<size_t> bad = FirstNonUtf8(spec)) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " is not UTF-8: byte 0x",
        absl::Hex(static_cast<unsigned char>(spec[*bad]), absl::kZeroPad2), " at offset ", *bad,
        " starts no UTF-8 character; a spec is JSON text, which must be UTF-8 (convert the "
        "file, for example with iconv -t UTF-8)"));
  }
  return spec;
}

// The module path argument: "" or "." name the root.
std::string ModulePath(const std::string& text) { return text == "." ? "" : text; }

// The metadata (dtype, shape, device; no data) of the parameter or buffer `key`, from
// metadata-only listings of every name, duplicates included.
absl::StatusOr<HostTensor> LookupTensorMeta(const client::RemoteModel& model,
                                            const std::string& key) {
  client::NamedOptions options;
  options.remove_duplicate = false;
  PARAMD_ASSIGN_OR_RETURN(client::NamedTensors parameters, model.NamedParameters(options));
  for (client::NamedTensor& entry : parameters.entries) {
    if (entry.name == key) return std::move(entry.tensor);
  }
  PARAMD_ASSIGN_OR_RETURN(client::NamedTensors buffers, model.NamedBuffers(options));
  for (client::NamedTensor& entry : buffers.entries) {
    if (entry.name == key) return std::move(entry.tensor);
  }
  return absl::NotFoundError(absl::StrCat(
      "model '", model.name(), "' has no parameter or buffer named '", key, "'; `paramctl params ",
      model.name(), " --all` and `paramctl buffers ", model.name(), " --all` list them"));
}

// Resolves the subscripts of `target` into a region (nullopt when there are none). Reads
// the tensor's metadata only when the subscripts need its shape, unless `meta` already
// holds it.
absl::StatusOr<std::optional<client::Region>> ResolveTargetRegion(const client::RemoteModel& model,
                                                                  const KeyRegion& target,
                                                                  const HostTensor* meta) {
  if (target.subscripts.empty()) return std::optional<client::Region>();
  if (meta != nullptr) {
    PARAMD_ASSIGN_OR_RETURN(client::Region region, ResolveRegion(target.subscripts, meta->shape));
    return std::optional<client::Region>(std::move(region));
  }
  if (target.NeedsShape()) {
    PARAMD_ASSIGN_OR_RETURN(HostTensor looked_up, LookupTensorMeta(model, target.key));
    PARAMD_ASSIGN_OR_RETURN(client::Region region,
                            ResolveRegion(target.subscripts, looked_up.shape));
    return std::optional<client::Region>(std::move(region));
  }
  PARAMD_ASSIGN_OR_RETURN(client::Region region, ResolveRegionWithoutShape(target.subscripts));
  return std::optional<client::Region>(std::move(region));
}

absl::StatusOr<KeyRegion> ParseTarget(const std::string& text) {
  absl::StatusOr<KeyRegion> target = ParseKeyRegion(text);
  if (!target.ok()) return UsageError(target.status().message());
  return target;
}

// load_state_dict's result as PyTorch prints it (or JSON with `extra` fields), then the
// new model version.
void PrintLoadResult(const Context& ctx, const std::vector<std::string>& missing,
                     const std::vector<std::string>& unexpected, uint64_t version,
                     nlohmann::json extra) {
  if (ctx.json) {
    extra["missing_keys"] = missing;
    extra["unexpected_keys"] = unexpected;
    extra["version"] = version;
    PrintJson(extra);
    return;
  }
  if (missing.empty() && unexpected.empty()) {
    std::cout << "<All keys matched successfully>\n";
  } else {
    std::cout << "_IncompatibleKeys(missing_keys=" << PyList(missing)
              << ", unexpected_keys=" << PyList(unexpected) << ")\n";
  }
  std::cout << "version " << version << "\n";
}

}  // namespace paramd::cli
