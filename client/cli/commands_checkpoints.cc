// paramctl commands on checkpoint files: save, load, checkpoints, upload, download,
// snapshot.
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "client/cli/command.h"
#include "client/cli/progress.h"
#include "nlohmann/json.hpp"
#include "paramd/client.h"
#include "base/status_macros.h"

namespace paramd::cli {

namespace {

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

}  // namespace

namespace {

absl::StatusOr<client::CheckpointFormat> ParseFormat(const Args& args) {
  const std::optional<std::string> text = args.Get("format");
  if (!text) return client::CheckpointFormat::kFromSuffix;
  if (*text == "safetensors") return client::CheckpointFormat::kSafetensors;
  if (*text == "torch" || *text == "pt" || *text == "pth") return client::CheckpointFormat::kTorch;
  return UsageError(absl::StrCat("--format '", *text, "': expected safetensors or torch"));
}

}  // namespace

absl::Status RunSave(Context& ctx, const Args& args) {
  client::SaveCheckpointOptions options;
  PARAMD_ASSIGN_OR_RETURN(options.format, ParseFormat(args));
  options.keep_vars = args.Has("keep-vars");
  options.optimizer = args.Get("optimizer").value_or("");
  options.sha256 = args.Has("sha256");
  PARAMD_ASSIGN_OR_RETURN(
      client::SaveCheckpointResult result,
      ctx.client->SaveCheckpoint(args.positional[0], args.positional[1], options));
  if (ctx.json) {
    json out = {{"path", result.path},
                {"format", FormatName(result.format)},
                {"version", result.version},
                {"size", result.size}};
    if (options.sha256) out["sha256"] = result.sha256;
    PrintJson(out);
  } else {
    std::cout << "saved " << args.positional[0] << " version " << result.version << " to "
              << result.path << " (" << FormatName(result.format) << ", " << result.size
              << " bytes";
    if (options.sha256) std::cout << ", sha256 " << result.sha256;
    std::cout << ")\n";
  }
  return absl::OkStatus();
}

namespace {

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

}  // namespace

absl::Status RunLoad(Context& ctx, const Args& args) {
  client::LoadCheckpointOptions options;
  options.strict = !args.Has("no-strict");
  options.assign = args.Has("assign");
  if (const std::optional<std::string> location = args.Get("map-location")) {
    PARAMD_RETURN_IF_ERROR(ParseMapLocation(*location, options));
  }
  if (const std::optional<std::string> spec = args.Get("spec")) {
    PARAMD_ASSIGN_OR_RETURN(options.spec_json, ReadSpec(*spec));
  }
  options.device = args.Get("device").value_or("");
  options.optimizer = args.Get("optimizer").value_or("");
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

namespace {

void PrintTransfer(Context& ctx, const char* verb, const std::string& from, const std::string& to,
                   const client::TransferResult& result, std::ostream& out = std::cout) {
  if (ctx.json) {
    PrintJson({{"from", from},
               {"to", to},
               {"size", result.size},
               {"sha256", result.sha256},
               {"resumed_from", result.resumed_from}},
              out);
    return;
  }
  out << verb << " " << from << " to " << to << " (" << result.size << " bytes, sha256 "
      << result.sha256;
  if (result.resumed_from > 0) out << ", resumed at byte " << result.resumed_from;
  out << ")\n";
}

}  // namespace

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
  PrintTransfer(ctx, "downloaded", args.positional[0], args.positional[1], result,
                ReportStream(args.positional[1]));
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

}  // namespace paramd::cli
