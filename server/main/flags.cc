#include "server/main/flags.h"

#include <algorithm>
#include <cctype>
#include <optional>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace paramd::main {
namespace {

struct FlagDef {
  const char* name;
  const char* value_name;  // nullptr: a switch, which takes no value
  const char* help;        // nullptr: hidden from --help
  std::string Flags::*field;
};

constexpr FlagDef kFlags[] = {
    {"listen", "HOST:PORT",
     "Address to serve on (default 127.0.0.1:50051: loopback only; 0.0.0.0:PORT serves other "
     "machines). Port 0 picks a free port; the start log line says which.",
     &Flags::listen},
    {"data-dir", "DIR",
     "Directory for the daemon's own files, created on first start "
     "(default ./paramd-data). It keeps each model's latest snapshot (DIR/models), from which "
     "the daemon restores its models when it starts.",
     &Flags::data_dir},
    {"checkpoint-dir", "DIR",
     "The only directory clients' checkpoint paths (Save, Load, Upload, Download) may name; "
     "created when missing (default DATA_DIR/checkpoints).",
     &Flags::checkpoint_dir},
    {"snapshot-interval", "SECONDS",
     "Seconds between snapshots of the models that changed (default 300; 0: only on "
     "SIGTERM and on request).",
     &Flags::snapshot_interval},
    {"max-memory", "BYTES",
     "Most bytes of tensor memory on the CPU, e.g. 8G, 512M or 1073741824. Past it requests "
     "fail with RESOURCE_EXHAUSTED instead of the process running out of memory (default: 80% "
     "of physical memory).",
     &Flags::max_memory},
    {"max-gpu-memory", "BYTES",
     "Most bytes of memory on each GPU: tensors, the scratch and staging buffers of ops in "
     "flight, the GEMM workspace, and the allocator's cached blocks, which are handed back to "
     "the driver past it. Past it requests fail with RESOURCE_EXHAUSTED (default: the GPU's "
     "own memory).",
     &Flags::max_gpu_memory},
    {"workers", "N",
     "Worker threads for the heavy calls: tensor writes, checkpoint saves, loads and "
     "uploads, forwards, model creation and moves, snapshots (default: the number of CPU "
     "cores). Cheap calls such as Health, listings and reads of a pinned version never wait "
     "for them.",
     &Flags::workers},
    {"max-queued-calls", "N",
     "Heavy calls that may wait for a worker beyond the N running (default 64); past it a "
     "call gets RESOURCE_EXHAUSTED (\"N calls queued; retry\") before its request is read.",
     &Flags::max_queued_calls},
    {"max-upload-size", "BYTES",
     "Largest file a client may upload (Checkpoints.Upload), e.g. 64G (default 256G); an "
     "upload declaring more gets INVALID_ARGUMENT, one that does not fit the checkpoint "
     "directory's free space RESOURCE_EXHAUSTED.",
     &Flags::max_upload_size},
    {"upload-expiry", "DURATION",
     "Unfinished uploads untouched for this long (e.g. 24h, 90m) are removed, at start and "
     "when a save or upload starts (default 24h; 0: never).",
     &Flags::upload_expiry},
    {"max-transport-memory", "BYTES",
     "Most bytes gRPC may hold in receive buffers for all connections together (default "
     "256M; 0: no bound). Near it gRPC shrinks flow-control windows; past it it cancels "
     "streams with RESOURCE_EXHAUSTED, so one oversized message cannot be buffered whole. "
     "Below 128M concurrent bulk writers get cancelled too.",
     &Flags::max_transport_memory},
    {"stream-idle-timeout", "DURATION",
     "A client stream (a tensor write: SetTensor, SetTensors, Register*, LoadStateDict, "
     "PushGradients, LoadOptimizerState; a Forward's inputs) that sends no frame for this "
     "long (e.g. 60s, 500ms) is ended with DEADLINE_EXCEEDED, writes (or runs) nothing and "
     "frees the memory its tensors reserved (default 60s; 0: never).",
     &Flags::stream_idle_timeout},
    {"sync-round-timeout", "DURATION",
     "How long a synchronous optimizer's round waits for all its workers after its first "
     "push (e.g. 60s, 5m); then the pushes that came get ABORTED, their gradients are dropped "
     "and the round stays, so a dead worker cannot stall training (default 60s; 0: never).",
     &Flags::sync_round_timeout},
    {"keepalive-min-interval", "DURATION",
     "Shortest interval between a client's HTTP/2 keepalive pings the daemon accepts while it "
     "sends that client nothing (default 10s); a client that pings faster has its connection "
     "closed (GOAWAY too_many_pings). paramd's clients ping every 30s by default.",
     &Flags::keepalive_min_interval},
    {"max-state-dict-keys", "N",
     "Most state_dict keys a model may have, counting a shared module's tensors once per "
     "path as PyTorch lists them; the same limit bounds its module paths (default 1048576). "
     "A spec, checkpoint, RegisterParameter, RegisterBuffer or TieParameters past it gets "
     "INVALID_ARGUMENT naming the count, and nothing is built or changed.",
     &Flags::max_state_dict_keys},
    {"shutdown-grace", "SECONDS",
     "Seconds in-flight calls get to finish after SIGTERM or SIGINT before they are cancelled "
     "(default 10).",
     &Flags::shutdown_grace},
    {"health-listen", "HOST:PORT",
     "Also serve grpc.health.v1.Health alone, in plaintext, on this address (e.g. "
     "0.0.0.0:50052): for probes that cannot speak TLS or send a token, such as the kubelet's "
     "gRPC probes. It reports what the main port's health service reports; no other service "
     "is reachable there. Default: none.",
     &Flags::health_listen},
    {"tls-cert", "FILE",
     "Serve TLS with this PEM certificate (chain); needs --tls-key. "
     "Re-read when the file changes.",
     &Flags::tls_cert},
    {"tls-key", "FILE", "The PEM private key of --tls-cert. Re-read when the file changes.",
     &Flags::tls_key},
    {"tls-client-ca", "FILE",
     "Mutual TLS: every client must present a certificate signed by "
     "a CA in this PEM file. Re-read when the file changes.",
     &Flags::tls_client_ca},
    {"auth-tokens", "FILE",
     "Require a bearer token on every call: one 'NAME ROLE sha256:HEX' "
     "line per token, ROLE read, write or admin (paramctl hash-token prints the hash). "
     "Re-read when the file changes and on SIGHUP; a malformed, unreadable or empty file "
     "stops the start, and on a re-read keeps the old tokens.",
     &Flags::auth_tokens},
    {"allow-insecure", nullptr,
     "Serve beyond loopback (e.g. --listen 0.0.0.0:PORT) without "
     "both TLS and --auth-tokens. Without it paramd refuses to start so.",
     &Flags::allow_insecure},
    {"metrics-listen", "HOST:PORT",
     "Serve Prometheus metrics over HTTP at http://HOST:PORT/metrics (default: off). Port 0 "
     "picks a free port; the start log line says which (metrics=). docs/metrics.md "
     "lists the metrics.",
     &Flags::metrics_listen},
    {"metrics-max-models", "N",
     "Models with their own label value in the per-model metrics (default 100): the first N "
     "model names met keep theirs, later ones are summed under model=\"_other\".",
     &Flags::metrics_max_models},
    {"log-format", "FORMAT",
     "text (default: key=value lines) or json (one JSON object a line, with time, level, "
     "msg and the line's fields).",
     &Flags::log_format},
    // Hidden: tests point it at a fake cgroup tree (cgroup.h).
    {"cgroup-root", "DIR", nullptr, &Flags::cgroup_root},
};

// PARAMD_* variables that other programs read and paramd ignores: its clients' (paramctl,
// the C++ and Python clients) and its test tools'. Anything else PARAMD_* must be a flag.
constexpr const char* kOtherPrograms[] = {
    "PARAMD_SERVER",      "PARAMD_TOKEN",          // clients
    "PARAMD_PARAMD",      "PARAMD_PARAMCTL",       // tests/interop, client/python tests
    "PARAMD_CKPT_PROBE",  "PARAMD_INTEROP_VENV",   // tests/interop
    "PARAMD_TOOLS_VENV",  "PARAMD_TEST_SHOW_LOG",  // scripts/check-house, tests/integration
    "PARAMD_DEPLOY_CACHE",                         // tests/deploy
};

// Kubernetes gives every container variables for each Service in its namespace (and Docker
// for each link): a Service named "paramd" brings PARAMD_SERVICE_HOST, PARAMD_PORT,
// PARAMD_PORT_50051_TCP_ADDR and so on. No flag is named so; they are ignored.
bool IsServiceLink(const std::string& name) {
  return absl::StartsWith(name, "PARAMD_SERVICE_") || name == "PARAMD_PORT" ||
         absl::StartsWith(name, "PARAMD_PORT_");
}

const FlagDef* FindFlag(const std::string& name) {
  for (const FlagDef& flag : kFlags) {
    if (name == flag.name) return &flag;
  }
  return nullptr;
}

// A switch's value from its variable: "1" (on), "" (off) or nullopt (not a boolean).
std::optional<std::string> SwitchValue(std::string text) {
  absl::AsciiStrToLower(&text);
  if (text == "1" || text == "true" || text == "yes" || text == "on") return "1";
  if (text == "0" || text == "false" || text == "no" || text == "off") return "";
  return std::nullopt;
}

// Fills the flags not in `given` from the environment; the usage error, or "".
std::string ApplyEnvironment(const std::vector<std::string>& environment,
                             const std::vector<const FlagDef*>& given, Flags& flags) {
  for (const std::string& entry : environment) {
    const size_t eq = entry.find('=');
    if (eq == std::string::npos || !absl::StartsWith(entry, "PARAMD_")) continue;
    const std::string name = entry.substr(0, eq);
    const std::string value = entry.substr(eq + 1);
    const FlagDef* def = nullptr;
    for (const FlagDef& flag : kFlags) {
      if (EnvironmentName(flag.name) == name) def = &flag;
    }
    if (def == nullptr) {
      if (IsServiceLink(name) ||
          std::any_of(std::begin(kOtherPrograms), std::end(kOtherPrograms),
                      [&](const char* other) { return name == other; })) {
        continue;
      }
      return absl::StrCat("unknown environment variable ", name,
                          ": it sets no flag (each flag --NAME is PARAMD_NAME in capitals, "
                          "'-' as '_'; see paramd --help); unset or rename it");
    }
    if (std::find(given.begin(), given.end(), def) != given.end() || value.empty()) continue;
    if (def->value_name == nullptr) {
      std::optional<std::string> on = SwitchValue(value);
      if (!on) {
        return absl::StrCat(name, "='", value, "' is not a switch value (1, true, 0 or false)");
      }
      flags.*(def->field) = *on;
    } else {
      flags.*(def->field) = value;
    }
  }
  return "";
}

}  // namespace

std::string EnvironmentName(const std::string& flag) {
  std::string name = absl::StrCat("PARAMD_", flag);
  for (char& c : name) c = c == '-' ? '_' : static_cast<char>(std::toupper(c));
  return name;
}

std::string ParseFlags(int argc, char** argv, const std::vector<std::string>& environment,
                       Flags& flags, bool& help) {
  std::vector<const FlagDef*> given;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      help = true;
      continue;
    }
    if (arg.rfind("--", 0) != 0) return absl::StrCat("unexpected argument '", arg, "'");
    std::string name = arg.substr(2);
    std::optional<std::string> value;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    const FlagDef* def = FindFlag(name);
    if (def == nullptr) return absl::StrCat("unknown flag '--", name, "'; see paramd --help");
    if (def->value_name == nullptr) {
      if (value) return absl::StrCat("--", name, " takes no value");
      value = "1";
    }
    if (!value) {
      if (i + 1 >= argc) return absl::StrCat("--", name, " needs a value (", def->value_name, ")");
      value = argv[++i];
    }
    flags.*(def->field) = *value;
    given.push_back(def);
  }
  return ApplyEnvironment(environment, given, flags);
}

void PrintHelp(std::ostream& out) {
  out << "paramd: the paramd model-parameter server.\n\n"
         "usage: paramd [FLAGS]\n\n"
         "Serves paramd.v1.Models and paramd.v1.Parameters over gRPC, with the standard\n"
         "grpc.health.v1.Health service and server reflection. paramctl is its admin CLI.\n"
         "SIGTERM stops taking calls, lets in-flight ones finish, snapshots every model\n"
         "and exits 0 (1 when a final snapshot failed).\n\n"
         "Every flag can also be set by its environment variable, named after it\n"
         "(PARAMD_LISTEN, PARAMD_DATA_DIR, ...); a flag on the command line wins, and an\n"
         "unknown PARAMD_* variable stops the start.\n\nflags:\n";
  for (const FlagDef& flag : kFlags) {
    if (flag.help == nullptr) continue;
    out << "  --" << flag.name << (flag.value_name ? " " : "")
        << (flag.value_name ? flag.value_name : "") << "  [" << EnvironmentName(flag.name)
        << "]\n      " << flag.help << "\n";
  }
  out << "  --help\n      Print this text.\n";
}

}  // namespace paramd::main
