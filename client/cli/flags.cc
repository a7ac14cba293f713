// paramctl's command-line parser: global flags, the command, its positionals and flags.
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "client/cli/command.h"
#include "client/cli/local_file.h"

namespace paramd::cli {

const std::vector<FlagSpec>& GlobalFlags() {
  static const std::vector<FlagSpec> kFlags = {
      {"server", "ADDR", "the daemon's address (default: $PARAMD_SERVER, else 127.0.0.1:50051)"},
      {"json", nullptr, "print machine-readable JSON instead of text"},
      {"timeout", "SECONDS", "deadline of each unary call (default 30; 0 = none)"},
      {"token", "TOKEN", "bearer token for a daemon with --auth-tokens (default: $PARAMD_TOKEN)"},
      {"tls", nullptr, "connect with TLS, checking the daemon's certificate by the system's roots"},
      {"tls-ca", "FILE", "connect with TLS, checking the daemon's certificate by this PEM CA"},
      {"tls-cert", "FILE", "mutual TLS: this client's PEM certificate (with --tls-key)"},
      {"tls-key", "FILE", "mutual TLS: the PEM private key of --tls-cert"},
      {"help", nullptr, "show help (for the command, when one is given)"},
  };
  return kFlags;
}

namespace {

const FlagSpec* FindFlag(const std::vector<FlagSpec>& flags, absl::string_view name) {
  for (const FlagSpec& flag : flags) {
    if (name == flag.name) return &flag;
  }
  return nullptr;
}

}  // namespace

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

absl::Status CheckTextArguments(const Command& command, const Args& args) {
  // help and hash-token send nothing.
  if (!command.needs_server) return absl::OkStatus();
  auto refuse = [](absl::string_view what, absl::string_view value, size_t offset) {
    return UsageError(absl::StrCat(
        what, " is not UTF-8 (bytes ", HexBytes(value), "; byte ", offset,
        " starts no UTF-8 character): names, keys and server paths travel as UTF-8 text"));
  };
  for (size_t i = 0; i < args.positional.size(); ++i) {
    if (absl::c_linear_search(command.local_file_args, i)) continue;
    if (std::optional<size_t> bad = FirstNonUtf8(args.positional[i])) {
      return refuse(absl::StrCat("argument ", i + 1), args.positional[i], *bad);
    }
  }
  for (const FlagSpec& flag : command.flags) {
    if (flag.value_name == nullptr || absl::StartsWith(flag.value_name, "FILE")) continue;
    const std::optional<std::string> value = args.Get(flag.name);
    if (!value) continue;
    if (std::optional<size_t> bad = FirstNonUtf8(*value)) {
      return refuse(absl::StrCat("--", flag.name), *value, *bad);
    }
  }
  return absl::OkStatus();
}

}  // namespace paramd::cli
