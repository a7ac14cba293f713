// paramctl's commands: the command-line model (flag specs, parsed arguments, the rows of the
// command table), the context a command runs in, and the helpers the command files share.
// Internal to the paramctl binary, which runs one command on one thread.
//
// Each command is one function `absl::Status RunX(Context&, const Args&)` in the file of its
// group, listed in Commands() (command_table.cc) with its usage and help text. Output goes
// to stdout (PyTorch's text where PyTorch prints, tables otherwise, JSON with --json);
// errors go to stderr.
#pragma once

#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/cli/py_repr.h"
#include "client/cli/region.h"
#include "nlohmann/json.hpp"
#include "paramd/client.h"
#include "paramd/tensor.h"

namespace paramd::cli {

using client::HostTensor;
// Objects keep their keys in the order written, so "name" comes first.
using json = nlohmann::ordered_json;

// Exit statuses: success, the server or a file refused, a usage error.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;

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
  // Positionals (0-based) that name local files: bytes, not text, so not checked for UTF-8.
  std::vector<size_t> local_file_args = {};
};

// --- parsing (flags.cc) -------------------------------------------------------------------

// The flags every command takes, before or after the command name.
const std::vector<FlagSpec>& GlobalFlags();

// Parses `argv` after the program name: global flags anywhere, the command (the first
// positional; nullptr when there is none), then the command's positionals and flags.
// `--flag=value` and `--flag value` both work; after `--` everything is positional. Errors
// are usage errors.
absl::StatusOr<std::pair<const Command*, Args>> ParseCommandLine(
    const std::vector<std::string>& argv);
// A usage error naming the first argument of `command` that travels as protobuf text (a
// model name, a key, a server path, a flag's value) but is not UTF-8: protobuf would log
// an error sending it and the daemon answer UNIMPLEMENTED with no message. Local file names
// (the command's local_file_args and flags whose value is a FILE) are bytes and pass.
absl::Status CheckTextArguments(const Command& command, const Args& args);

// --- the command table and help (command_table.cc) ----------------------------------------

const std::vector<Command>& Commands();
// nullptr when no command has that name.
const Command* FindCommand(absl::string_view name);
void PrintMainHelp(std::ostream& out);
void PrintCommandHelp(std::ostream& out, const Command& command);

// --- shared helpers (command.cc) ------------------------------------------------------------

// A usage error: the command line is wrong, not the server's state. Exit status 2.
absl::Status UsageError(absl::string_view message);
bool IsUsageError(const absl::Status& status);

// The value of --`flag` as a non-negative integer; 0 when absent.
absl::StatusOr<uint64_t> ParseUint(const Args& args, const std::string& flag);
// --if-version, 0 when absent.
absl::StatusOr<uint64_t> IfVersion(const Args& args);

// "[2, 3]".
std::string ShapeString(const std::vector<int64_t>& shape);
// Left-aligned columns separated by two spaces; the first row is the header.
void PrintTable(const std::vector<std::vector<std::string>>& rows);
void PrintJson(const json& value, std::ostream& out = std::cout);
// Where a command that wrote the file `written` reports so: stderr when that file is
// standard output itself (`--out /dev/stdout`), so that the report stays out of the data.
std::ostream& ReportStream(const std::string& written);
// "version N", or {"version": N} with --json.
void PrintVersion(const Context& ctx, uint64_t version);
json ModelInfoJson(const client::ModelInfo& info);
json TensorMetaJson(const std::string& name, const HostTensor& t);

// The most bytes the daemon receives in one message (SetMaxReceiveMessageSize in
// server/service/server.cc: four chunks).
inline constexpr size_t kDaemonMessageBytes = 4 * client::kChunkBytes;
// A spec travels whole in one request (CreateModel, Checkpoints.Load); the rest of the
// request (the model name, device, paths) gets the last 64 KiB of a message.
inline constexpr size_t kMaxSpecBytes = kDaemonMessageBytes - 64 * 1024;

// The JSON spec file `path` ('-': stdin) as the text a request carries. INVALID_ARGUMENT
// naming the file: over kMaxSpecBytes, with its size and the limit; not UTF-8 (a protobuf
// string must be), with the byte offset.
absl::StatusOr<std::string> ReadSpec(const std::string& path);
// The module path argument: "" or "." name the root.
std::string ModulePath(const std::string& text);

// The metadata (dtype, shape, device; no data) of the parameter or buffer `key`, from
// metadata-only listings of every name, duplicates included.
absl::StatusOr<HostTensor> LookupTensorMeta(const client::RemoteModel& model,
                                            const std::string& key);
// Resolves the subscripts of `target` into a region (nullopt when there are none). Reads
// the tensor's metadata only when the subscripts need its shape, unless `meta` already
// holds it.
absl::StatusOr<std::optional<client::Region>> ResolveTargetRegion(const client::RemoteModel& model,
                                                                  const KeyRegion& target,
                                                                  const HostTensor* meta);
// "key" or "key[subscripts]"; a bad one is a usage error.
absl::StatusOr<KeyRegion> ParseTarget(const std::string& text);

// load_state_dict's result as PyTorch prints it (or JSON with `extra` fields), then the
// new model version. Also for loading a checkpoint.
void PrintLoadResult(const Context& ctx, const std::vector<std::string>& missing,
                     const std::vector<std::string>& unexpected, uint64_t version,
                     nlohmann::json extra);

// --- the commands, by file ------------------------------------------------------------------

// commands_models.cc
absl::Status RunHealth(Context& ctx, const Args& args);
absl::Status RunModels(Context& ctx, const Args& args);
absl::Status RunCreate(Context& ctx, const Args& args);
absl::Status RunDelete(Context& ctx, const Args& args);
absl::Status RunDescribe(Context& ctx, const Args& args);
absl::Status RunModules(Context& ctx, const Args& args);
absl::Status RunTrain(Context& ctx, const Args& args);
absl::Status RunEval(Context& ctx, const Args& args);
absl::Status RunTo(Context& ctx, const Args& args);

// commands_tensors.cc
absl::Status RunStateDict(Context& ctx, const Args& args);
absl::Status RunParams(Context& ctx, const Args& args);
absl::Status RunBuffers(Context& ctx, const Args& args);
absl::Status RunGet(Context& ctx, const Args& args);
absl::Status RunSet(Context& ctx, const Args& args);
absl::Status RunRegisterParam(Context& ctx, const Args& args);
absl::Status RunRegisterBuffer(Context& ctx, const Args& args);
absl::Status RunTie(Context& ctx, const Args& args);
absl::Status RunLoadStateDict(Context& ctx, const Args& args);

// commands_forward.cc
absl::Status RunForward(Context& ctx, const Args& args);

// commands_checkpoints.cc
absl::Status RunSave(Context& ctx, const Args& args);
absl::Status RunLoad(Context& ctx, const Args& args);
absl::Status RunCheckpoints(Context& ctx, const Args& args);
absl::Status RunUpload(Context& ctx, const Args& args);
absl::Status RunDownload(Context& ctx, const Args& args);
absl::Status RunSnapshot(Context& ctx, const Args& args);

// commands_training.cc
absl::Status RunOptimizers(Context& ctx, const Args& args);
absl::Status RunOptimizerState(Context& ctx, const Args& args);

// command_table.cc
absl::Status RunHelp(Context& ctx, const Args& args);

// commands_security.cc
absl::Status RunHashToken(Context& ctx, const Args& args);
// Fills ctx.connect_options from --token (else $PARAMD_TOKEN), --tls, --tls-ca, --tls-cert and
// --tls-key (PEM files, read here); a usage error for an unreadable file.
absl::Status ApplyConnectionFlags(Context& ctx, const Args& args);

}  // namespace paramd::cli
