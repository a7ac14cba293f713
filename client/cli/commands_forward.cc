// paramctl forward: one forward pass on the daemon.
#include <iostream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/cli/command.h"
#include "client/cli/npy.h"
#include "client/cli/tensor_format.h"
#include "client/cli/value.h"
#include "nlohmann/json.hpp"
#include "paramd/client.h"
#include "paramd/tensor.h"
#include "base/status_macros.h"

namespace paramd::cli {

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

}  // namespace paramd::cli
