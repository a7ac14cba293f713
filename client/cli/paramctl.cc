// paramctl: the operator's command line for a paramd daemon.
//
// Each command is one function `absl::Status RunX(Context&, const Args&)` listed in
// kCommands with its usage and help text. Output goes to stdout (PyTorch's text where
// PyTorch prints, tables otherwise, JSON with --json); errors go to stderr. Exit status: 0
// on success, 1 when the server or a file refused, 2 for a usage error.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "absl/strings/string_view.h"
#include "client/cli/npy.h"
#include "client/cli/progress.h"
#include "client/cli/region.h"
#include "client/cli/tensor_format.h"
#include "client/cli/value.h"
#include "nlohmann/json.hpp"
#include "paramd/client.h"
#include "paramd/tensor.h"
#include "base/status_macros.h"

namespace paramd::cli {
namespace {

using client::HostTensor;
// Objects keep their keys in the order written, so "name" comes first.
using json = nlohmann::ordered_json;

constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 2;
constexpr absl::string_view kDefaultServer = "127.0.0.1:50051";
constexpr absl::string_view kUsagePayload = "type.paramd.dev/paramctl.UsageError";

// --- command-line model ------------------------------------------------------------------

struct FlagSpec {
  const char* name;        // without the leading "--"
  const char* value_name;  // nullptr: a switch
  const char* help;
};

// A command line after parsing: positionals and flags (switches map to "").
struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::string> flags;

  bool Has(const std::string& name) const { return flags.count(name) > 0; }
  std::optional<std::string> Get(const std::string& name) const {
    auto it = flags.find(name);
    if (it == flags.end()) return std::nullopt;
    return it->second;
  }
};

struct Context {
  std::string server;
  bool json = false;
  client::ConnectOptions connect_options;
  std::unique_ptr<client::Client> client;
};

struct Command {
  const char* name;
  const char* usage;    // after "paramctl "
  const char* summary;  // one line
  const char* details;  // paragraphs for `paramctl help NAME`
  size_t min_args = 0;  // positionals after the command name
  size_t max_args = 0;
  std::vector<FlagSpec> flags = {};
  absl::Status (*run)(Context&, const Args&) = nullptr;
  bool needs_server = true;
};

const std::vector<FlagSpec>& GlobalFlags() {
  static const std::vector<FlagSpec> kFlags = {
      {"server", "ADDR", "the daemon's address (default: $PARAMD_SERVER, else 127.0.0.1:50051)"},
      {"json", nullptr, "print machine-readable JSON instead of text"},
      {"timeout", "SECONDS", "deadline of each unary call (default 30; 0 = none)"},
      {"help", nullptr, "show help (for the command, when one is given)"},
  };
  return kFlags;
}

// A usage error: the command line is wrong, not the server's state. Exit status 2.
absl::Status UsageError(absl::string_view message) {
  absl::Status status = absl::InvalidArgumentError(message);
  status.SetPayload(kUsagePayload, absl::Cord("1"));
  return status;
}

bool IsUsageError(const absl::Status& status) {
  return status.GetPayload(kUsagePayload).has_value();
}

// --- small helpers -----------------------------------------------------------------------

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

// A Python string literal, as repr() writes one.
std::string PyRepr(absl::string_view text) {
  const bool has_single = absl::StrContains(text, '\'');
  const bool has_double = absl::StrContains(text, '"');
  const char quote = has_single && !has_double ? '"' : '\'';
  std::string out(1, quote);
  for (char c : text) {
    if (c == '\\' || c == quote) out.push_back('\\');
    out.push_back(c);
  }
  out.push_back(quote);
  return out;
}

std::string PyList(const std::vector<std::string>& items) {
  return absl::StrCat(
      "[",
      absl::StrJoin(items, ", ",
                    [](std::string* out, const std::string& item) { out->append(PyRepr(item)); }),
      "]");
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

void PrintJson(const json& value) { std::cout << value.dump(2) << "\n"; }

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
          {"repr", info.repr}};
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

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  if (path == "-") {
    std::ostringstream text;
    text << std::cin.rdbuf();
    return text.str();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path, "' for reading"));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat("cannot read '", path, "'"));
  return text.str();
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

// --- commands ------------------------------------------------------------------------------

absl::Status RunHealth(Context& ctx, const Args&) {
  PARAMD_RETURN_IF_ERROR(ctx.client->Health());
  if (ctx.json) {
    PrintJson({{"server", ctx.server}, {"status", "SERVING"}});
  } else {
    std::cout << "SERVING\n";
  }
  return absl::OkStatus();
}

absl::Status RunModels(Context& ctx, const Args&) {
  PARAMD_ASSIGN_OR_RETURN(std::vector<client::ModelInfo> models, ctx.client->ListModels());
  if (ctx.json) {
    json out = json::array();
    for (const client::ModelInfo& info : models) out.push_back(ModelInfoJson(info));
    PrintJson(out);
    return absl::OkStatus();
  }
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "TYPE", "DEVICE", "MODE", "VERSION", "ENTRIES", "PARAMS", "BYTES"}};
  for (const client::ModelInfo& info : models) {
    rows.push_back({info.name, info.type, info.device, info.training ? "train" : "eval",
                    absl::StrCat(info.version), absl::StrCat(info.state_dict_entries),
                    absl::StrCat(info.parameter_numel), absl::StrCat(info.nbytes)});
  }
  PrintTable(rows);
  return absl::OkStatus();
}

absl::Status RunCreate(Context& ctx, const Args& args) {
  const std::string& name = args.positional[0];
  const std::optional<std::string> spec_path = args.Get("spec");
  if (!spec_path)
    return UsageError("create needs --spec FILE (a JSON model spec; '-' reads stdin)");
  PARAMD_ASSIGN_OR_RETURN(uint64_t seed, ParseUint(args, "seed"));
  PARAMD_ASSIGN_OR_RETURN(std::string spec, ReadFile(*spec_path));
  PARAMD_ASSIGN_OR_RETURN(
      client::ModelInfo info,
      ctx.client->CreateModel(name, spec, args.Get("device").value_or("cpu"), seed));
  if (ctx.json) {
    PrintJson(ModelInfoJson(info));
  } else {
    std::cout << "created model '" << info.name << "' (" << info.type << " on " << info.device
              << ", " << info.parameter_numel << " parameter elements)\n"
              << "version " << info.version << "\n";
  }
  return absl::OkStatus();
}

absl::Status RunDelete(Context& ctx, const Args& args) {
  const std::string& name = args.positional[0];
  PARAMD_ASSIGN_OR_RETURN(uint64_t if_version, IfVersion(args));
  PARAMD_RETURN_IF_ERROR(ctx.client->DeleteModel(name, if_version));
  if (ctx.json) {
    PrintJson({{"deleted", name}});
  } else {
    std::cout << "deleted model '" << name << "'\n";
  }
  return absl::OkStatus();
}

absl::Status RunDescribe(Context& ctx, const Args& args) {
  PARAMD_ASSIGN_OR_RETURN(client::ModelInfo info, ctx.client->DescribeModel(args.positional[0]));
  if (ctx.json) {
    PrintJson(ModelInfoJson(info));
    return absl::OkStatus();
  }
  std::cout << info.repr << "\n\n";
  PrintTable({{"name:", info.name},
              {"type:", info.type},
              {"device:", info.device},
              {"mode:", info.training ? "train" : "eval"},
              {"version:", absl::StrCat(info.version)},
              {"state_dict entries:", absl::StrCat(info.state_dict_entries)},
              {"parameters:",
               absl::StrCat(info.parameter_count, " (", info.parameter_numel, " elements)")},
              {"bytes:", absl::StrCat(info.nbytes)}});
  return absl::OkStatus();
}

absl::Status RunStateDict(Context& ctx, const Args& args) {
  client::RemoteModel model = ctx.client->Model(args.positional[0]);
  client::StateDictOptions options;
  options.prefix = args.Get("prefix").value_or("");
  const std::optional<std::string> out_path = args.Get("out");
  if (!out_path) {
    options.metadata_only = true;
    PARAMD_ASSIGN_OR_RETURN(client::StateDictResult result, model.StateDict(options));
    if (ctx.json) {
      json out = json::array();
      for (const client::NamedTensor& entry : result.entries) {
        out.push_back(TensorMetaJson(entry.name, entry.tensor));
      }
      PrintJson(out);
      return absl::OkStatus();
    }
    std::vector<std::vector<std::string>> rows = {
        {"NAME", "SHAPE", "DTYPE", "DEVICE", "BYTES", "TIED_WITH"}};
    for (const client::NamedTensor& entry : result.entries) {
      const HostTensor& t = entry.tensor;
      rows.push_back({entry.name, ShapeString(t.shape), std::string(client::DTypeName(t.dtype)),
                      t.device, absl::StrCat(t.nbytes()),
                      t.tied_with.empty() ? "-" : absl::StrJoin(t.tied_with, ",")});
    }
    PrintTable(rows);
    std::cout << "version " << result.version << "\n";
    return absl::OkStatus();
  }

  client::StateDictResult result;
  {
    ProgressBar bar("state_dict");
    options.progress = bar.Callback();
    PARAMD_ASSIGN_OR_RETURN(result, model.StateDict(options));
  }
  std::vector<std::pair<std::string, HostTensor>> arrays;
  arrays.reserve(result.entries.size());
  for (client::NamedTensor& entry : result.entries) {
    arrays.emplace_back(std::move(entry.name), std::move(entry.tensor));
  }
  PARAMD_RETURN_IF_ERROR(WriteNpz(*out_path, arrays));
  if (ctx.json) {
    PrintJson({{"out", *out_path}, {"entries", arrays.size()}, {"version", result.version}});
  } else {
    std::cout << "wrote " << arrays.size() << " entries to " << *out_path << "\n"
              << "version " << result.version << "\n";
  }
  return absl::OkStatus();
}

absl::Status RunNamedTensors(Context& ctx, const Args& args, bool parameters) {
  client::RemoteModel model = ctx.client->Model(args.positional[0]);
  client::NamedOptions options;
  options.prefix = args.Get("prefix").value_or("");
  options.recurse = !args.Has("no-recurse");
  options.remove_duplicate = !args.Has("all");
  PARAMD_ASSIGN_OR_RETURN(client::NamedTensors result, parameters ? model.NamedParameters(options)
                                                                  : model.NamedBuffers(options));
  if (ctx.json) {
    json out = json::array();
    for (const client::NamedTensor& entry : result.entries) {
      out.push_back(TensorMetaJson(entry.name, entry.tensor));
    }
    PrintJson(out);
    return absl::OkStatus();
  }
  std::vector<std::vector<std::string>> rows;
  if (parameters) {
    rows.push_back({"NAME", "SHAPE", "DTYPE", "DEVICE", "REQUIRES_GRAD", "BYTES"});
  } else {
    rows.push_back({"NAME", "SHAPE", "DTYPE", "DEVICE", "BYTES"});
  }
  for (const client::NamedTensor& entry : result.entries) {
    const HostTensor& t = entry.tensor;
    std::vector<std::string> row = {entry.name, ShapeString(t.shape),
                                    std::string(client::DTypeName(t.dtype)), t.device};
    if (parameters) row.push_back(t.requires_grad ? "True" : "False");
    row.push_back(absl::StrCat(t.nbytes()));
    rows.push_back(std::move(row));
  }
  PrintTable(rows);
  return absl::OkStatus();
}

absl::Status RunParams(Context& ctx, const Args& args) {
  return RunNamedTensors(ctx, args, /*parameters=*/true);
}

absl::Status RunBuffers(Context& ctx, const Args& args) {
  return RunNamedTensors(ctx, args, /*parameters=*/false);
}

absl::Status RunModules(Context& ctx, const Args& args) {
  client::RemoteModel model = ctx.client->Model(args.positional[0]);
  PARAMD_ASSIGN_OR_RETURN(
      client::NamedModulesResult result,
      model.NamedModules(args.Get("prefix").value_or(""), /*remove_duplicate=*/!args.Has("all")));
  if (ctx.json) {
    json out = json::array();
    for (const client::ModuleEntry& entry : result.modules) {
      out.push_back({{"name", entry.name},
                     {"type", entry.type},
                     {"parameters", entry.parameters},
                     {"buffers", entry.buffers},
                     {"shared_with", entry.shared_with}});
    }
    PrintJson(out);
    return absl::OkStatus();
  }
  auto join = [](const std::vector<std::string>& items) {
    return items.empty() ? std::string("-") : absl::StrJoin(items, ",");
  };
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "TYPE", "PARAMETERS", "BUFFERS", "SHARED_WITH"}};
  for (const client::ModuleEntry& entry : result.modules) {
    rows.push_back({entry.name.empty() ? "(root)" : entry.name, entry.type, join(entry.parameters),
                    join(entry.buffers), join(entry.shared_with)});
  }
  PrintTable(rows);
  return absl::OkStatus();
}

absl::Status RunGet(Context& ctx, const Args& args) {
  client::RemoteModel model = ctx.client->Model(args.positional[0]);
  PARAMD_ASSIGN_OR_RETURN(KeyRegion target, ParseTarget(args.positional[1]));
  client::GetTensorOptions options;
  if (const std::optional<std::string> dtype = args.Get("dtype")) {
    absl::StatusOr<client::DType> parsed = client::ParseDType(*dtype);
    if (!parsed.ok()) return UsageError(parsed.status().message());
    options.wire_dtype = *parsed;
  }
  PARAMD_ASSIGN_OR_RETURN(std::optional<client::Region> region,
                          ResolveTargetRegion(model, target, nullptr));
  HostTensor tensor;
  {
    ProgressBar bar(target.key);
    options.progress = bar.Callback();
    PARAMD_ASSIGN_OR_RETURN(tensor, model.GetTensor(target.key, region, options));
  }
  if (region) {
    // A region prints as `p.data[...]` would: a plain tensor, not a Parameter.
    tensor.is_parameter = false;
    tensor.requires_grad = false;
  }
  if (const std::optional<std::string> out_path = args.Get("out")) {
    PARAMD_RETURN_IF_ERROR(WriteNpy(*out_path, tensor));
    if (ctx.json) {
      json out = TensorMetaJson(target.key, tensor);
      out["out"] = *out_path;
      PrintJson(out);
    } else {
      std::cout << "wrote " << target.key << " (" << ShapeString(tensor.shape) << ", "
                << client::DTypeName(tensor.dtype) << ") to " << *out_path << "\n";
    }
    return absl::OkStatus();
  }
  if (ctx.json) {
    json out = TensorMetaJson(target.key, tensor);
    if (region) out["region"] = *region;
    out["values"] = TensorValuesJson(tensor);
    PrintJson(out);
  } else {
    std::cout << FormatTensor(tensor, tensor.is_parameter) << "\n";
  }
  return absl::OkStatus();
}

absl::Status RunSet(Context& ctx, const Args& args) {
  client::RemoteModel model = ctx.client->Model(args.positional[0]);
  PARAMD_ASSIGN_OR_RETURN(KeyRegion target, ParseTarget(args.positional[1]));
  const std::optional<std::string> in_path = args.Get("in");
  const std::optional<std::string> value_text = args.Get("value");
  if (in_path.has_value() == value_text.has_value()) {
    return UsageError("set takes exactly one of --in FILE.npy and --value JSON");
  }
  PARAMD_ASSIGN_OR_RETURN(uint64_t if_version, IfVersion(args));

  // --value converts to the destination's dtype, so it needs the destination's metadata.
  std::optional<HostTensor> meta;
  if (value_text) {
    PARAMD_ASSIGN_OR_RETURN(meta, LookupTensorMeta(model, target.key));
  }
  PARAMD_ASSIGN_OR_RETURN(std::optional<client::Region> region,
                          ResolveTargetRegion(model, target, meta ? &*meta : nullptr));
  HostTensor tensor;
  if (value_text) {
    absl::StatusOr<HostTensor> parsed = ParseValueJson(*value_text, meta->dtype);
    if (!parsed.ok()) return UsageError(parsed.status().message());
    tensor = *std::move(parsed);
  } else {
    PARAMD_ASSIGN_OR_RETURN(tensor, ReadNpy(*in_path));
  }
  uint64_t version = 0;
  {
    ProgressBar bar(target.key);
    PARAMD_ASSIGN_OR_RETURN(
        version, model.SetTensor(target.key, tensor, region, if_version, bar.Callback()));
  }
  PrintVersion(ctx, version);
  return absl::OkStatus();
}

// --in FILE.npy or --none, for the register commands.
absl::StatusOr<std::optional<HostTensor>> RegisterValue(const Args& args) {
  const std::optional<std::string> in_path = args.Get("in");
  if (in_path.has_value() == args.Has("none")) {
    return UsageError("give exactly one of --in FILE.npy and --none");
  }
  if (!in_path) return std::optional<HostTensor>();
  PARAMD_ASSIGN_OR_RETURN(HostTensor tensor, ReadNpy(*in_path));
  return std::optional<HostTensor>(std::move(tensor));
}

absl::Status RunRegisterParam(Context& ctx, const Args& args) {
  client::RemoteModel model = ctx.client->Model(args.positional[0]);
  PARAMD_ASSIGN_OR_RETURN(uint64_t if_version, IfVersion(args));
  PARAMD_ASSIGN_OR_RETURN(std::optional<HostTensor> tensor, RegisterValue(args));
  uint64_t version = 0;
  {
    ProgressBar bar(args.positional[2]);
    PARAMD_ASSIGN_OR_RETURN(
        version, model.RegisterParameter(ModulePath(args.positional[1]), args.positional[2], tensor,
                                         if_version,
                                         /*requires_grad=*/!args.Has("no-grad"), bar.Callback()));
  }
  PrintVersion(ctx, version);
  return absl::OkStatus();
}

absl::Status RunRegisterBuffer(Context& ctx, const Args& args) {
  client::RemoteModel model = ctx.client->Model(args.positional[0]);
  PARAMD_ASSIGN_OR_RETURN(uint64_t if_version, IfVersion(args));
  PARAMD_ASSIGN_OR_RETURN(std::optional<HostTensor> tensor, RegisterValue(args));
  uint64_t version = 0;
  {
    ProgressBar bar(args.positional[2]);
    PARAMD_ASSIGN_OR_RETURN(
        version, model.RegisterBuffer(ModulePath(args.positional[1]), args.positional[2], tensor,
                                      /*persistent=*/!args.Has("non-persistent"), if_version,
                                      bar.Callback()));
  }
  PrintVersion(ctx, version);
  return absl::OkStatus();
}

absl::Status RunTie(Context& ctx, const Args& args) {
  client::RemoteModel model = ctx.client->Model(args.positional[0]);
  const std::optional<std::string> target = args.Get("to");
  if (!target) return UsageError("tie needs --to OTHER_KEY, the parameter to share");
  PARAMD_ASSIGN_OR_RETURN(uint64_t if_version, IfVersion(args));
  PARAMD_ASSIGN_OR_RETURN(uint64_t version,
                          model.TieParameters(args.positional[1], *target, if_version));
  PrintVersion(ctx, version);
  return absl::OkStatus();
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

absl::Status RunLoadStateDict(Context& ctx, const Args& args) {
  client::RemoteModel model = ctx.client->Model(args.positional[0]);
  PARAMD_ASSIGN_OR_RETURN(uint64_t if_version, IfVersion(args));
  PARAMD_ASSIGN_OR_RETURN(auto arrays, ReadNpz(args.positional[1]));
  std::vector<client::NamedTensor> state_dict;
  state_dict.reserve(arrays.size());
  for (auto& [name, tensor] : arrays) {
    state_dict.push_back({std::move(name), std::move(tensor)});
  }
  client::LoadOptions options;
  options.strict = !args.Has("no-strict");
  options.assign = args.Has("assign");
  client::LoadResult result;
  {
    ProgressBar bar("load_state_dict");
    options.progress = bar.Callback();
    PARAMD_ASSIGN_OR_RETURN(result, model.LoadStateDict(state_dict, options, if_version));
  }
  PrintLoadResult(ctx, result.missing_keys, result.unexpected_keys, result.version, {});
  return absl::OkStatus();
}

absl::Status RunMode(Context& ctx, const Args& args, bool training) {
  client::RemoteModel model = ctx.client->Model(args.positional[0]);
  PARAMD_ASSIGN_OR_RETURN(uint64_t if_version, IfVersion(args));
  PARAMD_ASSIGN_OR_RETURN(client::ModelInfo info, model.SetMode(training, if_version));
  if (ctx.json) {
    PrintJson(ModelInfoJson(info));
  } else {
    std::cout << "version " << info.version << "\n";
  }
  return absl::OkStatus();
}

absl::Status RunTrain(Context& ctx, const Args& args) { return RunMode(ctx, args, true); }
absl::Status RunEval(Context& ctx, const Args& args) { return RunMode(ctx, args, false); }

absl::Status RunTo(Context& ctx, const Args& args) {
  client::RemoteModel model = ctx.client->Model(args.positional[0]);
  PARAMD_ASSIGN_OR_RETURN(uint64_t if_version, IfVersion(args));
  PARAMD_ASSIGN_OR_RETURN(client::ModelInfo info, model.MoveModel(args.positional[1], if_version));
  if (ctx.json) {
    PrintJson(ModelInfoJson(info));
  } else {
    std::cout << "version " << info.version << "\n";
  }
  return absl::OkStatus();
}

// --- inference -----------------------------------------------------------------------

absl::Status RunForward(Context& ctx, const Args& args) {
  client::RemoteModel model = ctx.client->Model(args.positional[0]);
  const std::optional<std::string> in_path = args.Get("in");
  if (!in_path) {
    return UsageError(
        "forward needs --in FILE.npy (the input) or --in FILE.npz (named inputs, one named "
        "'input')");
  }
  if (args.Has("train") && args.Has("eval")) {
    return UsageError("give at most one of --train and --eval");
  }
  client::ForwardOptions options;
  if (args.Has("train")) options.mode = client::ForwardMode::kTrain;
  if (args.Has("eval")) options.mode = client::ForwardMode::kEval;
  PARAMD_ASSIGN_OR_RETURN(options.seed, ParseUint(args, "seed"));
  PARAMD_ASSIGN_OR_RETURN(options.if_version, IfVersion(args));
  if (const std::optional<std::string> dtype = args.Get("dtype")) {
    absl::StatusOr<client::DType> parsed = client::ParseDType(*dtype);
    if (!parsed.ok()) return UsageError(parsed.status().message());
    options.wire_dtype = *parsed;
  }
  std::vector<client::NamedTensor> inputs;
  if (absl::EndsWith(*in_path, ".npz")) {
    PARAMD_ASSIGN_OR_RETURN(NamedTensors arrays, ReadNpz(*in_path));
    bool has_input = false;
    for (auto& [name, tensor] : arrays) {
      has_input = has_input || name == "input";
      inputs.push_back({std::move(name), std::move(tensor)});
    }
    if (!has_input) {
      return UsageError(absl::StrCat(*in_path,
                                     " has no array named 'input'; the model's positional "
                                     "argument is the array named 'input'"));
    }
  } else {
    PARAMD_ASSIGN_OR_RETURN(HostTensor input, ReadNpy(*in_path));
    inputs.push_back({"input", std::move(input)});
  }
  PARAMD_ASSIGN_OR_RETURN(client::ForwardResult result, model.Forward(inputs, options));
  if (result.outputs.size() != 1) {
    return absl::DataLossError(absl::StrCat("the server answered with ", result.outputs.size(),
                                            " outputs instead of one"));
  }
  const client::NamedTensor& output = result.outputs.front();
  const std::optional<std::string> out_path = args.Get("out");
  if (out_path) PARAMD_RETURN_IF_ERROR(WriteNpy(*out_path, output.tensor));
  if (ctx.json) {
    json out = {{"model", model.name()},
                {"version", result.version},
                {"updated_version", result.updated_version},
                {"mode", result.training ? "train" : "eval"},
                {"name", output.name},
                {"shape", output.tensor.shape},
                {"dtype", std::string(client::DTypeName(output.tensor.dtype))},
                {"device", output.tensor.device}};
    if (out_path) {
      out["out"] = *out_path;
    } else {
      out["values"] = TensorValuesJson(output.tensor);
    }
    PrintJson(out);
    return absl::OkStatus();
  }
  if (out_path) {
    std::cout << "wrote output (" << ShapeString(output.tensor.shape) << ", "
              << client::DTypeName(output.tensor.dtype) << ") to " << *out_path << "\n";
  } else {
    std::cout << FormatTensor(output.tensor, /*as_parameter=*/false) << "\n";
  }
  std::cout << "version " << result.version;
  if (result.updated_version != 0) {
    std::cout << " (running statistics committed as version " << result.updated_version << ")";
  }
  std::cout << "\n";
  return absl::OkStatus();
}

// --- checkpoints ---------------------------------------------------------------------

const char* FormatName(client::CheckpointFormat format) {
  switch (format) {
    case client::CheckpointFormat::kSafetensors:
      return "safetensors";
    case client::CheckpointFormat::kTorch:
      return "torch";
    default:
      return "";
  }
}

absl::StatusOr<client::CheckpointFormat> ParseFormat(const Args& args) {
  const std::optional<std::string> text = args.Get("format");
  if (!text) return client::CheckpointFormat::kFromSuffix;
  if (*text == "safetensors") return client::CheckpointFormat::kSafetensors;
  if (*text == "torch" || *text == "pt" || *text == "pth") return client::CheckpointFormat::kTorch;
  return UsageError(absl::StrCat("--format '", *text, "': expected safetensors or torch"));
}

absl::Status RunSave(Context& ctx, const Args& args) {
  client::SaveCheckpointOptions options;
  PARAMD_ASSIGN_OR_RETURN(options.format, ParseFormat(args));
  options.keep_vars = args.Has("keep-vars");
  PARAMD_ASSIGN_OR_RETURN(
      client::SaveCheckpointResult result,
      ctx.client->SaveCheckpoint(args.positional[0], args.positional[1], options));
  if (ctx.json) {
    PrintJson({{"path", result.path},
               {"format", FormatName(result.format)},
               {"version", result.version},
               {"size", result.size},
               {"sha256", result.sha256}});
  } else {
    std::cout << "saved " << args.positional[0] << " version " << result.version << " to "
              << result.path << " (" << FormatName(result.format) << ", " << result.size
              << " bytes, sha256 " << result.sha256 << ")\n";
  }
  return absl::OkStatus();
}

// "cpu", "cuda:1", or a mapping "cuda:0=cpu,cuda:1=cuda:0".
absl::Status ParseMapLocation(const std::string& text, client::LoadCheckpointOptions& options) {
  if (text.find('=') == std::string::npos) {
    options.map_location = text;
    return absl::OkStatus();
  }
  for (absl::string_view pair : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    std::vector<std::string> sides = absl::StrSplit(pair, absl::MaxSplits('=', 1));
    if (sides.size() != 2 || sides[0].empty() || sides[1].empty()) {
      return UsageError(absl::StrCat("--map-location '", text,
                                     "': expected a device or FROM=TO pairs such as "
                                     "cuda:0=cpu,cuda:1=cpu"));
    }
    options.location_map[sides[0]] = sides[1];
  }
  return absl::OkStatus();
}

absl::Status RunLoad(Context& ctx, const Args& args) {
  client::LoadCheckpointOptions options;
  options.strict = !args.Has("no-strict");
  options.assign = args.Has("assign");
  if (const std::optional<std::string> location = args.Get("map-location")) {
    PARAMD_RETURN_IF_ERROR(ParseMapLocation(*location, options));
  }
  if (const std::optional<std::string> spec = args.Get("spec")) {
    PARAMD_ASSIGN_OR_RETURN(options.spec_json, ReadFile(*spec));
  }
  options.device = args.Get("device").value_or("");
  PARAMD_ASSIGN_OR_RETURN(options.if_version, IfVersion(args));
  PARAMD_ASSIGN_OR_RETURN(
      client::LoadCheckpointResult result,
      ctx.client->LoadCheckpoint(args.positional[0], args.positional[1], options));
  if (result.created && !ctx.json) std::cout << "created model " << args.positional[0] << "\n";
  PrintLoadResult(ctx, result.missing_keys, result.unexpected_keys, result.version,
                  {{"created", result.created}, {"format", FormatName(result.format)}});
  return absl::OkStatus();
}

absl::Status RunCheckpoints(Context& ctx, const Args&) {
  PARAMD_ASSIGN_OR_RETURN(std::vector<client::CheckpointFile> files, ctx.client->ListCheckpoints());
  if (ctx.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& file : files) {
      out.push_back({{"path", file.path},
                     {"size", file.size},
                     {"modified_unix", file.modified_unix},
                     {"format", FormatName(file.format)}});
    }
    PrintJson(out);
    return absl::OkStatus();
  }
  std::vector<std::vector<std::string>> rows = {{"PATH", "FORMAT", "BYTES", "MODIFIED"}};
  for (const auto& file : files) {
    rows.push_back({file.path, FormatName(file.format), absl::StrCat(file.size),
                    absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixSeconds(file.modified_unix),
                                     absl::LocalTimeZone())});
  }
  PrintTable(rows);
  return absl::OkStatus();
}

void PrintTransfer(Context& ctx, const char* verb, const std::string& from, const std::string& to,
                   const client::TransferResult& result) {
  if (ctx.json) {
    PrintJson({{"from", from}, {"to", to}, {"size", result.size}, {"sha256", result.sha256},
               {"resumed_from", result.resumed_from}});
    return;
  }
  std::cout << verb << " " << from << " to " << to << " (" << result.size << " bytes, sha256 "
            << result.sha256;
  if (result.resumed_from > 0) std::cout << ", resumed at byte " << result.resumed_from;
  std::cout << ")\n";
}

absl::Status RunUpload(Context& ctx, const Args& args) {
  client::TransferResult result;
  {
    ProgressBar bar("upload");
    PARAMD_ASSIGN_OR_RETURN(result,
                            ctx.client->Upload(args.positional[0], args.positional[1], bar.Callback()));
  }
  PrintTransfer(ctx, "uploaded", args.positional[0], args.positional[1], result);
  return absl::OkStatus();
}

absl::Status RunDownload(Context& ctx, const Args& args) {
  client::TransferResult result;
  {
    ProgressBar bar("download");
    PARAMD_ASSIGN_OR_RETURN(
        result, ctx.client->Download(args.positional[0], args.positional[1], bar.Callback()));
  }
  PrintTransfer(ctx, "downloaded", args.positional[0], args.positional[1], result);
  return absl::OkStatus();
}

absl::Status RunSnapshot(Context& ctx, const Args& args) {
  PARAMD_ASSIGN_OR_RETURN(auto taken, ctx.client->Snapshot(args.positional));
  if (ctx.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& [model, version] : taken) out.push_back({{"model", model}, {"version", version}});
    PrintJson(out);
    return absl::OkStatus();
  }
  for (const auto& [model, version] : taken) {
    std::cout << "snapshot of " << model << " at version " << version << "\n";
  }
  return absl::OkStatus();
}

absl::Status RunHelp(Context& ctx, const Args& args);

// --- the command table -------------------------------------------------------------------

const FlagSpec kIfVersion = {"if-version", "N",
                             "write only if the model is still at version N (else ABORTED)"};
const FlagSpec kPrefix = {"prefix", "P", "prepend P to every name, as PyTorch's prefix= does"};

const std::vector<Command>& Commands() {
  static const std::vector<Command> kCommands = {
      {.name = "health",
       .usage = "health",
       .summary = "check that the daemon is serving",
       .details = "Calls grpc.health.v1.Health/Check for the whole server. Prints SERVING and\n"
                  "exits 0 when it serves; otherwise prints the reported status and exits 1.",
       .run = RunHealth},
      {.name = "models",
       .usage = "models",
       .summary = "list the loaded models",
       .details = "One row per model: name, root type, device, train/eval mode, version, number\n"
                  "of state_dict entries, parameter elements and bytes held.",
       .run = RunModels},
      {.name = "create",
       .usage = "create NAME --spec FILE [--device D] [--seed N]",
       .summary = "build a model from a JSON spec",
       .details = "Builds the module tree described by the JSON spec in FILE ('-' reads stdin;\n"
                  "see docs/specs.md) on device D, initialising parameters as PyTorch would\n"
                  "with seed N.",
       .min_args = 1,
       .max_args = 1,
       .flags = {{"spec", "FILE", "the JSON model spec ('-' for stdin)"},
                 {"device", "D", "cpu (default), cuda or cuda:N"},
                 {"seed", "N", "the initialisation seed (default 0)"}},
       .run = RunCreate},
      {.name = "delete",
       .usage = "delete NAME [--if-version N]",
       .summary = "delete a model",
       .details = "Deletes the model NAME.",
       .min_args = 1,
       .max_args = 1,
       .flags = {kIfVersion},
       .run = RunDelete},
      {.name = "describe",
       .usage = "describe NAME",
       .summary = "print a model's repr and summary",
       .details = "Prints repr(model) exactly as PyTorch prints it, then the root type, device,\n"
                  "mode, version, number of state_dict entries, parameters (and their\n"
                  "elements) and bytes held.",
       .min_args = 1,
       .max_args = 1,
       .run = RunDescribe},
      {.name = "state-dict",
       .usage = "state-dict NAME [--prefix P] [--out FILE.npz]",
       .summary = "list (or download) model.state_dict()",
       .details = "Lists every state_dict entry in PyTorch's order: name, shape, dtype, device,\n"
                  "bytes, and the other names of the same tensor object (tied parameters,\n"
                  "shared modules), then the model version read. With --json, a JSON array\n"
                  "of objects with name, shape, dtype, device, nbytes, tied_with, ...\n"
                  "With --out, downloads the whole state_dict instead and writes it as an .npz\n"
                  "file (one array per key) that load-state-dict and numpy.load read.",
       .min_args = 1,
       .max_args = 1,
       .flags = {kPrefix, {"out", "FILE.npz", "download every tensor into FILE.npz"}},
       .run = RunStateDict},
      {.name = "params",
       .usage = "params NAME [--all] [--no-recurse] [--prefix P]",
       .summary = "list model.named_parameters()",
       .details = "Lists named_parameters(): name, shape, dtype, device, requires_grad, bytes.\n"
                  "Like PyTorch, a parameter reachable under several names is listed once\n"
                  "(under its first name) unless --all is given.",
       .min_args = 1,
       .max_args = 1,
       .flags = {{"all", nullptr, "remove_duplicate=False: list every name of shared parameters"},
                 {"no-recurse", nullptr, "recurse=False: only the root module's own parameters"},
                 kPrefix},
       .run = RunParams},
      {.name = "buffers",
       .usage = "buffers NAME [--all] [--no-recurse] [--prefix P]",
       .summary = "list model.named_buffers()",
       .details = "Lists named_buffers() (persistent or not): name, shape, dtype, device, bytes.",
       .min_args = 1,
       .max_args = 1,
       .flags = {{"all", nullptr, "remove_duplicate=False: list every name of shared buffers"},
                 {"no-recurse", nullptr, "recurse=False: only the root module's own buffers"},
                 kPrefix},
       .run = RunBuffers},
      {.name = "modules",
       .usage = "modules NAME [--all] [--prefix P]",
       .summary = "list model.named_modules()",
       .details = "Lists named_modules(): path ('(root)' for the model itself), type, own\n"
                  "parameter and buffer names, and other paths of the same module object.",
       .min_args = 1,
       .max_args = 1,
       .flags = {{"all", nullptr, "remove_duplicate=False: list every path of shared modules"},
                 kPrefix},
       .run = RunModules},
      {.name = "get",
       .usage = "get NAME KEY[REGION] [--out FILE.npy] [--dtype D]",
       .summary = "print (or save) one parameter or buffer",
       .details =
           "Prints the tensor KEY as PyTorch prints it (a parameter as 'Parameter\n"
           "containing:' then tensor([...], requires_grad=True)), or writes it to FILE.npy\n"
           "with --out. REGION selects part of it with one subscript per leading dimension,\n"
           "as in Python: an index i, or a slice a:b with either end optional and negative\n"
           "values counting from the end, e.g. 'fc.weight[0]', 'fc.weight[:, 1:3]'. A\n"
           "region prints as a plain tensor and keeps its dimensions (an index selects a\n"
           "length-1 range). --dtype D (e.g. bfloat16) casts floating-point data on the\n"
           "wire. With --json, prints the metadata and the values as nested lists.",
       .min_args = 2,
       .max_args = 2,
       .flags = {{"out", "FILE.npy", "write the tensor to a .npy file instead of printing it"},
                 {"dtype", "D", "receive floating-point data as dtype D"}},
       .run = RunGet},
      {.name = "set",
       .usage = "set NAME KEY[REGION] (--in FILE.npy | --value JSON) [--if-version N]",
       .summary = "write one parameter or buffer (or a region of it)",
       .details =
           "Writes the tensor KEY, or the REGION of it (syntax as for get), from a .npy file\n"
           "or from JSON: a number, a boolean, or nested lists, converted to KEY's dtype.\n"
           "The data has the region's shape, or is a single value that fills it:\n"
           "  paramctl set net '2.weight[0,0]' --value 100\n"
           "  paramctl set net 0.bias --value '[0.5, -0.5]'\n"
           "  paramctl set net 0.weight --in weight.npy --if-version 7\n"
           "Prints the new model version.",
       .min_args = 2,
       .max_args = 2,
       .flags = {{"in", "FILE.npy", "the values, from a .npy file"},
                 {"value", "JSON", "the values, as JSON"},
                 kIfVersion},
       .run = RunSet},
      {.name = "register-param",
       .usage = "register-param NAME MODULE PNAME (--in FILE.npy | --none) [--no-grad]",
       .summary = "register a parameter on a module",
       .details = "module.register_parameter(PNAME, nn.Parameter(tensor)) on the module at\n"
                  "path MODULE ('' or '.' for the root), with PyTorch's name rules; --none\n"
                  "registers None. Prints the new model version.",
       .min_args = 3,
       .max_args = 3,
       .flags = {{"in", "FILE.npy", "the parameter's value"},
                 {"none", nullptr, "register None"},
                 {"no-grad", nullptr, "requires_grad=False"},
                 kIfVersion},
       .run = RunRegisterParam},
      {.name = "register-buffer",
       .usage = "register-buffer NAME MODULE BNAME (--in FILE.npy | --none) [--non-persistent]",
       .summary = "register a buffer on a module",
       .details = "module.register_buffer(BNAME, tensor, persistent) on the module at path\n"
                  "MODULE ('' or '.' for the root); --non-persistent keeps it out of\n"
                  "state_dict, --none registers None. Prints the new model version.",
       .min_args = 3,
       .max_args = 3,
       .flags = {{"in", "FILE.npy", "the buffer's value"},
                 {"none", nullptr, "register None"},
                 {"non-persistent", nullptr, "persistent=False"},
                 kIfVersion},
       .run = RunRegisterBuffer},
      {.name = "tie",
       .usage = "tie NAME KEY --to OTHER_KEY [--if-version N]",
       .summary = "make KEY the same Parameter object as OTHER_KEY",
       .details = "The equivalent of `module.name = other_parameter` in PyTorch: afterwards\n"
                  "both names hold one Parameter, so a write through either shows through\n"
                  "both. Prints the new model version.",
       .min_args = 2,
       .max_args = 2,
       .flags = {{"to", "OTHER_KEY", "the parameter to share"}, kIfVersion},
       .run = RunTie},
      {.name = "load-state-dict",
       .usage = "load-state-dict NAME FILE.npz [--no-strict] [--assign]",
       .summary = "model.load_state_dict() from an .npz file",
       .details = "Loads the arrays of FILE.npz (key = state_dict name) with PyTorch's rules,\n"
                  "atomically: a load that fails changes nothing. Prints PyTorch's result\n"
                  "(<All keys matched successfully> or _IncompatibleKeys(...)) and the new\n"
                  "model version.",
       .min_args = 2,
       .max_args = 2,
       .flags = {{"no-strict", nullptr,
                  "strict=False: report missing and unexpected keys, load the rest"},
                 {"assign", nullptr,
                  "assign=True: take the file's tensors instead of copying into them"},
                 kIfVersion},
       .run = RunLoadStateDict},
      {.name = "train",
       .usage = "train NAME",
       .summary = "model.train()",
       .details = "Puts the model in training mode. Prints the model version.",
       .min_args = 1,
       .max_args = 1,
       .flags = {kIfVersion},
       .run = RunTrain},
      {.name = "eval",
       .usage = "eval NAME",
       .summary = "model.eval()",
       .details = "Puts the model in evaluation mode. Prints the model version.",
       .min_args = 1,
       .max_args = 1,
       .flags = {kIfVersion},
       .run = RunEval},
      {.name = "to",
       .usage = "to NAME DEVICE",
       .summary = "model.to(DEVICE)",
       .details = "Moves every parameter and buffer to DEVICE (cpu, cuda, cuda:N). Prints the\n"
                  "new model version.",
       .min_args = 2,
       .max_args = 2,
       .flags = {kIfVersion},
       .run = RunTo},
      {.name = "forward",
       .usage = "forward NAME --in FILE.npy|FILE.npz [--out FILE.npy] [--train|--eval] "
                "[--seed N] [--if-version N] [--dtype D]",
       .summary = "run the model on inputs: model(input)",
       .details =
           "Runs the model on the server on the array in FILE.npy (the positional input),\n"
           "or on the arrays of FILE.npz: the one named 'input' is the positional input, the\n"
           "others are named values a custom container's forward program reads. Prints the\n"
           "output as PyTorch prints a tensor (or writes it to --out FILE.npy) and the model\n"
           "version that answered. The model's train/eval mode applies unless --train or\n"
           "--eval says otherwise for this call; a training-mode forward through BatchNorm\n"
           "commits the updated running statistics as the next version, and says so.\n"
           "--seed N seeds dropout; --if-version N runs on version N or fails (ABORTED);\n"
           "--dtype D receives a floating-point output as dtype D.",
       .min_args = 1,
       .max_args = 1,
       .flags = {{"in", "FILE", "the input: FILE.npy, or FILE.npz with named inputs"},
                 {"out", "FILE.npy", "write the output to a .npy file instead of printing it"},
                 {"train", nullptr, "run in training mode for this call"},
                 {"eval", nullptr, "run in evaluation mode for this call"},
                 {"seed", "N", "seed of the dropout masks (default 0)"},
                 {"if-version", "N", "run on version N only (else ABORTED)"},
                 {"dtype", "D", "receive a floating-point output as dtype D"}},
       .run = RunForward},
      {.name = "save",
       .usage = "save NAME PATH [--format F] [--keep-vars]",
       .summary = "save a model to a checkpoint file on the server",
       .details =
           "torch.save(model.state_dict(), PATH) or safetensors' save_model, into the\n"
           "daemon's checkpoint directory (PATH is relative to it). The format follows the\n"
           "suffix (.safetensors, .pt, .pth) unless --format says. The file is written to a\n"
           "temporary name and renamed: a failed save leaves an older file as it was. Tied\n"
           "parameters and shared modules are stored once. The file also records the\n"
           "model's spec, so `load` can recreate the model from it alone.",
       .min_args = 2,
       .max_args = 2,
       .flags = {{"format", "F", "safetensors or torch (default: from the suffix)"},
                 {"keep-vars", nullptr, "save parameters as nn.Parameter (PyTorch format)"}},
       .run = RunSave},
      {.name = "load",
       .usage = "load NAME PATH [--no-strict] [--assign] [--map-location L] [--spec FILE] "
                "[--device D]",
       .summary = "load a checkpoint file on the server into a model",
       .details =
           "model.load_state_dict(torch.load(PATH, map_location=L)) for a model that exists,\n"
           "atomically (a load that fails changes nothing). When NAME does not exist it is\n"
           "created first, from the spec the file records (files paramd saved) or the one\n"
           "in --spec FILE. Reads safetensors and PyTorch zip files; the pickle in a PyTorch\n"
           "file is read without running any code. L is a device (cpu, cuda:0) or FROM=TO\n"
           "pairs (cuda:0=cpu,cuda:1=cpu), as torch.load's map_location.",
       .min_args = 2,
       .max_args = 2,
       .flags = {{"no-strict", nullptr,
                  "strict=False: report missing and unexpected keys, load the rest"},
                 {"assign", nullptr,
                  "assign=True: take the file's tensors instead of copying into them"},
                 {"map-location", "L", "where saved locations go, as torch.load's map_location"},
                 {"spec", "FILE", "create NAME from this JSON spec ('-' for stdin)"},
                 {"device", "D", "the device of a model created by the load (default cpu)"},
                 kIfVersion},
       .run = RunLoad},
      {.name = "checkpoints",
       .usage = "checkpoints",
       .summary = "list the files in the server's checkpoint directory",
       .details = "One row per file: path, format, bytes, modification time.",
       .run = RunCheckpoints},
      {.name = "upload",
       .usage = "upload LOCAL REMOTE",
       .summary = "send a local file to the server's checkpoint directory",
       .details =
           "Streams LOCAL to REMOTE (relative to the checkpoint directory). An upload that\n"
           "broke off is resumed where it stopped when run again. The file appears on the\n"
           "server only once all of it arrived and its SHA-256 matches.",
       .min_args = 2,
       .max_args = 2,
       .run = RunUpload},
      {.name = "download",
       .usage = "download REMOTE LOCAL",
       .summary = "fetch a file from the server's checkpoint directory",
       .details =
           "Streams REMOTE into LOCAL through LOCAL.part; a download that broke off resumes\n"
           "from the part when run again. LOCAL appears only once the SHA-256 matches.",
       .min_args = 2,
       .max_args = 2,
       .run = RunDownload},
      {.name = "snapshot",
       .usage = "snapshot [NAME...]",
       .summary = "snapshot models into the server's data directory now",
       .details = "Writes the latest state of the named models (all when none is named) to\n"
                  "the daemon's data directory, from which it restores them when it starts.",
       .max_args = 64,
       .run = RunSnapshot},
      {.name = "help",
       .usage = "help [COMMAND]",
       .summary = "show help for paramctl or one command",
       .details = "Without COMMAND lists every command; with it, shows that command's usage\n"
                  "and flags.",
       .max_args = 1,
       .run = RunHelp,
       .needs_server = false},
  };
  return kCommands;
}

const Command* FindCommand(absl::string_view name) {
  for (const Command& command : Commands()) {
    if (name == command.name) return &command;
  }
  return nullptr;
}

void PrintFlags(std::ostream& out, const std::vector<FlagSpec>& flags) {
  std::vector<std::pair<std::string, std::string>> rows;
  size_t width = 0;
  for (const FlagSpec& flag : flags) {
    std::string left = absl::StrCat("  --", flag.name);
    if (flag.value_name != nullptr) absl::StrAppend(&left, " ", flag.value_name);
    width = std::max(width, left.size());
    rows.emplace_back(std::move(left), flag.help);
  }
  for (const auto& [left, help] : rows) {
    out << left << std::string(width - left.size() + 2, ' ') << help << "\n";
  }
}

void PrintMainHelp(std::ostream& out) {
  out << "paramctl: the command line for a paramd model-parameter server\n\n"
         "usage: paramctl [--server ADDR] [--json] [--timeout SECONDS] COMMAND [ARGS...]\n\n"
         "commands:\n";
  size_t width = 0;
  for (const Command& command : Commands()) width = std::max(width, strlen(command.name));
  for (const Command& command : Commands()) {
    out << "  " << command.name << std::string(width - strlen(command.name) + 2, ' ')
        << command.summary << "\n";
  }
  out << "\nglobal flags (before or after the command):\n";
  PrintFlags(out, GlobalFlags());
  out << "\nWrites take --if-version N and print the new model version. Exit status: 0 on\n"
         "success, 1 when the server (or a file) refused, 2 for a usage error.\n"
         "Run 'paramctl help COMMAND' for a command's details.\n";
}

void PrintCommandHelp(std::ostream& out, const Command& command) {
  out << "usage: paramctl " << command.usage << "\n\n"
      << command.summary << "\n\n"
      << command.details << "\n";
  if (!command.flags.empty()) {
    out << "\nflags:\n";
    PrintFlags(out, command.flags);
  }
  out << "\nglobal flags:\n";
  PrintFlags(out, GlobalFlags());
}

absl::Status RunHelp(Context&, const Args& args) {
  if (args.positional.empty()) {
    PrintMainHelp(std::cout);
    return absl::OkStatus();
  }
  const Command* command = FindCommand(args.positional[0]);
  if (command == nullptr) {
    return UsageError(absl::StrCat("unknown command '", args.positional[0], "'"));
  }
  PrintCommandHelp(std::cout, *command);
  return absl::OkStatus();
}

// --- parsing and main ----------------------------------------------------------------------

const FlagSpec* FindFlag(const std::vector<FlagSpec>& flags, absl::string_view name) {
  for (const FlagSpec& flag : flags) {
    if (name == flag.name) return &flag;
  }
  return nullptr;
}

// Parses `argv` after the program name: global flags anywhere, the command (the first
// positional), then the command's positionals and flags. `--flag=value` and
// `--flag value` both work; after `--` everything is positional.
absl::StatusOr<std::pair<const Command*, Args>> ParseCommandLine(
    const std::vector<std::string>& argv) {
  const Command* command = nullptr;
  Args args;
  bool flags_done = false;
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& arg = argv[i];
    if (!flags_done && arg == "--") {
      flags_done = true;
      continue;
    }
    if (!flags_done && (absl::StartsWith(arg, "--") || arg == "-h")) {
      std::string name = arg == "-h" ? "help" : arg.substr(2);
      std::optional<std::string> inline_value;
      if (const size_t eq = name.find('='); eq != std::string::npos) {
        inline_value = name.substr(eq + 1);
        name.resize(eq);
      }
      const FlagSpec* flag = FindFlag(GlobalFlags(), name);
      if (flag == nullptr && command != nullptr) flag = FindFlag(command->flags, name);
      if (flag == nullptr) {
        return UsageError(
            command == nullptr
                ? absl::StrCat("unknown flag --", name, " before the command")
                : absl::StrCat("unknown flag --", name, " for '", command->name, "'"));
      }
      if (flag->value_name == nullptr) {
        if (inline_value) return UsageError(absl::StrCat("--", name, " takes no value"));
        args.flags[name] = "";
      } else if (inline_value) {
        args.flags[name] = *inline_value;
      } else if (i + 1 < argv.size()) {
        args.flags[name] = argv[++i];
      } else {
        return UsageError(absl::StrCat("--", name, " needs a value (", flag->value_name, ")"));
      }
      continue;
    }
    if (command == nullptr) {
      command = FindCommand(arg);
      if (command == nullptr) {
        return UsageError(absl::StrCat("unknown command '", arg, "'"));
      }
      continue;
    }
    args.positional.push_back(arg);
  }
  return std::make_pair(command, std::move(args));
}

void PrintError(const Context& ctx, const absl::Status& status) {
  std::cerr << "paramctl: error [" << absl::StatusCodeToString(status.code())
            << "]: " << status.message() << "\n";
  if (status.code() == absl::StatusCode::kUnavailable) {
    std::cerr << "paramctl: is paramd running at " << ctx.server
              << "? (set --server ADDR or PARAMD_SERVER)\n";
  }
}

int Main(int argc, char** argv) {
  const std::vector<std::string> arguments(argv + 1, argv + argc);
  absl::StatusOr<std::pair<const Command*, Args>> parsed = ParseCommandLine(arguments);
  if (!parsed.ok()) {
    std::cerr << "paramctl: " << parsed.status().message()
              << "\nRun 'paramctl --help' for usage.\n";
    return kExitUsage;
  }
  const Command* command = parsed->first;
  Args& args = parsed->second;

  if (command == nullptr) {
    if (args.Has("help")) {
      PrintMainHelp(std::cout);
      return kExitOk;
    }
    PrintMainHelp(std::cerr);
    return kExitUsage;
  }
  if (args.Has("help")) {
    PrintCommandHelp(std::cout, *command);
    return kExitOk;
  }
  if (args.positional.size() < command->min_args || args.positional.size() > command->max_args) {
    std::cerr << "paramctl: '" << command->name << "' takes "
              << (command->min_args == command->max_args
                      ? absl::StrCat(command->min_args)
                      : absl::StrCat(command->min_args, " to ", command->max_args))
              << " argument(s), got " << args.positional.size() << "\nusage: paramctl "
              << command->usage << "\nRun 'paramctl help " << command->name << "' for details.\n";
    return kExitUsage;
  }

  Context ctx;
  ctx.json = args.Has("json");
  if (const std::optional<std::string> server = args.Get("server")) {
    ctx.server = *server;
  } else if (const char* env = std::getenv("PARAMD_SERVER"); env != nullptr && *env != '\0') {
    ctx.server = env;
  } else {
    ctx.server = std::string(kDefaultServer);
  }
  if (const std::optional<std::string> timeout = args.Get("timeout")) {
    double seconds = 0;
    if (!absl::SimpleAtod(*timeout, &seconds) || seconds < 0) {
      std::cerr << "paramctl: --timeout takes a number of seconds, not '" << *timeout << "'\n";
      return kExitUsage;
    }
    ctx.connect_options.unary_deadline =
        std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
  }
  if (command->needs_server) {
    absl::StatusOr<std::unique_ptr<client::Client>> client =
        client::Client::Connect(ctx.server, ctx.connect_options);
    if (!client.ok()) {
      PrintError(ctx, client.status());
      return kExitError;
    }
    ctx.client = *std::move(client);
  }

  const absl::Status status = command->run(ctx, args);
  std::cout.flush();
  if (status.ok()) return kExitOk;
  if (IsUsageError(status)) {
    std::cerr << "paramctl: " << status.message() << "\nusage: paramctl " << command->usage
              << "\nRun 'paramctl help " << command->name << "' for details.\n";
    return kExitUsage;
  }
  PrintError(ctx, status);
  return kExitError;
}

}  // namespace
}  // namespace paramd::cli

int main(int argc, char** argv) { return paramd::cli::Main(argc, argv); }
