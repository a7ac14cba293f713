// paramctl: the operator's command line for a paramd daemon.
//
// The commands live in one file per group (commands_models.cc, commands_tensors.cc,
// commands_forward.cc, commands_checkpoints.cc), listed in command_table.cc; flags.cc parses
// the command line (command.h has the model). Exit status: 0 on success, 1 when the server
// or a file refused, 2 for a usage error.
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "base/warm_heap.h"
#include "client/cli/command.h"
#include "client/cli/mapped_input.h"
#include "paramd/client.h"

namespace paramd::cli {
namespace {

constexpr absl::string_view kDefaultServer = "127.0.0.1:50051";

void PrintError(const Context& ctx, const absl::Status& status) {
  std::cerr << "paramctl: error [" << absl::StatusCodeToString(status.code())
            << "]: " << status.message() << "\n";
  if (status.code() == absl::StatusCode::kUnavailable) {
    std::cerr << "paramctl: is paramd running at " << ctx.server
              << "? (set --server ADDR or PARAMD_SERVER)\n";
  }
  if (status.code() == absl::StatusCode::kUnauthenticated) {
    std::cerr << "paramctl: pass the daemon's bearer token with --token or PARAMD_TOKEN\n";
  }
}

int Main(int argc, char** argv) {
  ExitCleanlyOnBusError();  // Note [Lent from the file]
  KeepFreedMemoryWarm();
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

  if (const absl::Status text = CheckTextArguments(*command, args); !text.ok()) {
    std::cerr << "paramctl: " << text.message() << "\nusage: paramctl " << command->usage << "\n";
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
  if (const absl::Status applied = ApplyConnectionFlags(ctx, args); !applied.ok()) {
    std::cerr << "paramctl: " << applied.message() << "\n";
    return kExitUsage;
  }
  if (command->needs_server) {
    // state-dict --out writes to disk as data arrives: a fixed window keeps gRPC from
    // buffering tens of MiB ahead of it (the memory paramctl promises is a few chunks).
    ctx.connect_options.receive_window_bytes = size_t{4} << 20;
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
