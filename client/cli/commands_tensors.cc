// paramctl commands on named tensors: state-dict, params, buffers, get, set,
// register-param, register-buffer, tie, load-state-dict.
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/output_path.h"
#include "base/status_macros.h"
#include "client/cli/command.h"
#include "client/cli/npy.h"
#include "client/cli/npy_stream.h"
#include "client/cli/npz_stream.h"
#include "client/cli/progress.h"
#include "client/cli/region.h"
#include "client/cli/tensor_format.h"
#include "client/cli/value.h"
#include "nlohmann/json.hpp"
#include "paramd/client.h"
#include "paramd/tensor.h"

namespace paramd::cli {

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

  // Each tensor goes to the file as its chunks arrive: the client never holds a whole one.
  PARAMD_ASSIGN_OR_RETURN(std::unique_ptr<NpzFileWriter> file, NpzFileWriter::Create(*out_path));
  uint64_t version = 0;
  {
    ProgressBar bar("state_dict");
    options.progress = bar.Callback();
    PARAMD_ASSIGN_OR_RETURN(version, model.StateDictTo(*file, options));
  }
  PARAMD_RETURN_IF_ERROR(file->Commit());
  std::ostream& report = ReportStream(*out_path);
  if (ctx.json) {
    PrintJson({{"out", *out_path}, {"entries", file->entries()}, {"version", version}}, report);
  } else {
    report << "wrote " << file->entries() << " entries to " << *out_path << "\n"
           << "version " << version << "\n";
  }
  return absl::OkStatus();
}

namespace {

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

}  // namespace

absl::Status RunParams(Context& ctx, const Args& args) {
  return RunNamedTensors(ctx, args, /*parameters=*/true);
}

absl::Status RunBuffers(Context& ctx, const Args& args) {
  return RunNamedTensors(ctx, args, /*parameters=*/false);
}

absl::Status RunGet(Context& ctx, const Args& args) {
  client::RemoteModel model = ctx.client->Model(args.positional[0]);
  PARAMD_ASSIGN_OR_RETURN(KeyRegion target, ParseTarget(args.positional[1]));
  const std::optional<std::string> out_path = args.Get("out");
  if (out_path) {
    // A directory or an empty name is refused before anything is fetched.
    PARAMD_RETURN_IF_ERROR(ResolveOutputPath(*out_path).status());
  }
  client::GetTensorOptions options;
  if (const std::optional<std::string> dtype = args.Get("dtype")) {
    absl::StatusOr<client::DType> parsed = client::ParseDType(*dtype);
    if (!parsed.ok()) return UsageError(parsed.status().message());
    options.wire_dtype = *parsed;
  }
  PARAMD_ASSIGN_OR_RETURN(std::optional<client::Region> region,
                          ResolveTargetRegion(model, target, nullptr));
  // A region prints as `p.data[...]` would: a plain tensor, not a Parameter.
  auto plain_if_region = [&](HostTensor& tensor) {
    if (!region) return;
    tensor.is_parameter = false;
    tensor.requires_grad = false;
  };
  if (out_path) {
    // The bytes go to the file as their chunks arrive: the client never holds the tensor.
    PARAMD_ASSIGN_OR_RETURN(std::unique_ptr<NpyFileWriter> file, NpyFileWriter::Create(*out_path));
    {
      ProgressBar bar(target.key);
      options.progress = bar.Callback();
      PARAMD_RETURN_IF_ERROR(model.GetTensorTo(target.key, *file, region, options).status());
    }
    PARAMD_RETURN_IF_ERROR(file->Commit());
    HostTensor meta = file->meta();
    plain_if_region(meta);
    std::ostream& report = ReportStream(*out_path);
    if (ctx.json) {
      json out = TensorMetaJson(target.key, meta);
      out["out"] = *out_path;
      PrintJson(out, report);
    } else {
      report << "wrote " << target.key << " (" << ShapeString(meta.shape) << ", "
             << client::DTypeName(meta.dtype) << ") to " << *out_path << "\n";
    }
    return absl::OkStatus();
  }
  HostTensor tensor;
  {
    ProgressBar bar(target.key);
    options.progress = bar.Callback();
    PARAMD_ASSIGN_OR_RETURN(tensor, model.GetTensor(target.key, region, options));
  }
  plain_if_region(tensor);
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
  uint64_t version = 0;
  if (value_text) {
    absl::StatusOr<HostTensor> parsed = ParseValueJson(*value_text, meta->dtype);
    if (!parsed.ok()) return UsageError(parsed.status().message());
    ProgressBar bar(target.key);
    PARAMD_ASSIGN_OR_RETURN(
        version, model.SetTensor(target.key, *parsed, region, if_version, bar.Callback()));
  } else {
    // Checked before anything is sent, then sent from the file chunk by chunk; a file cut
    // on the way cancels the write, which then changes nothing.
    PARAMD_ASSIGN_OR_RETURN(std::unique_ptr<NpyFileReader> file, NpyFileReader::Open(*in_path));
    ProgressBar bar(target.key);
    PARAMD_ASSIGN_OR_RETURN(
        version, model.SetTensorFrom(target.key, *file, region, if_version, bar.Callback()));
  }
  PrintVersion(ctx, version);
  return absl::OkStatus();
}

namespace {

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

}  // namespace

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

absl::Status RunLoadStateDict(Context& ctx, const Args& args) {
  client::RemoteModel model = ctx.client->Model(args.positional[0]);
  PARAMD_ASSIGN_OR_RETURN(uint64_t if_version, IfVersion(args));
  // Checked whole before anything is sent, then sent from the file chunk by chunk; a member
  // found corrupt on the way cancels the load, which then changes nothing.
  PARAMD_ASSIGN_OR_RETURN(std::unique_ptr<NpzFileReader> file,
                          NpzFileReader::Open(args.positional[1]));
  client::LoadOptions options;
  options.strict = !args.Has("no-strict");
  options.assign = args.Has("assign");
  client::LoadResult result;
  {
    ProgressBar bar("load_state_dict");
    options.progress = bar.Callback();
    PARAMD_ASSIGN_OR_RETURN(result, model.LoadStateDictFrom(*file, options, if_version));
  }
  PrintLoadResult(ctx, result.missing_keys, result.unexpected_keys, result.version, {});
  return absl::OkStatus();
}

}  // namespace paramd::cli
