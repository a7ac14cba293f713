// paramctl commands on whole models: health, models, create, delete, describe, modules,
// train, eval, to.
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/cli/command.h"
#include "nlohmann/json.hpp"
#include "paramd/client.h"
#include "base/status_macros.h"

namespace paramd::cli {

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
  PARAMD_ASSIGN_OR_RETURN(std::string spec, ReadSpec(*spec_path));
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

namespace {

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

}  // namespace

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

}  // namespace paramd::cli
