// paramd: the model-parameter server daemon.
//
//   paramd --listen 127.0.0.1:50051 --data-dir DIR --max-memory 8G
//
// Serves paramd.v1.Models, Parameters and Checkpoints, grpc.health.v1.Health and server
// reflection. Restores the models snapshotted in --data-dir on start and snapshots them
// every --snapshot-interval. SIGTERM or SIGINT: stop taking calls, let in-flight ones
// finish within --shutdown-grace, snapshot every model, exit 0; exit 1 (with an error log
// line naming the models) when a model's final snapshot failed.
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "kernels/backend.h"
#include "server/common/log.h"
#include "server/core/registry.h"
#include "server/io/checkpoint_dir.h"
#include "server/io/checkpoint_store.h"
#include "server/io/snapshots.h"
#include "server/main/heap_trimmer.h"
#include "server/main/security.h"
#include "server/service/server.h"

namespace {

using paramd::common::Log;

// "8G", "512M", "64K" or plain bytes.
std::optional<size_t> ParseBytes(std::string text) {
  size_t multiplier = 1;
  if (!text.empty()) {
    switch (text.back()) {
      case 'K': case 'k': multiplier = size_t{1} << 10; break;
      case 'M': case 'm': multiplier = size_t{1} << 20; break;
      case 'G': case 'g': multiplier = size_t{1} << 30; break;
      case 'T': case 't': multiplier = size_t{1} << 40; break;
      default: break;
    }
    if (multiplier != 1) text.pop_back();
  }
  uint64_t value = 0;
  if (text.empty() || !absl::SimpleAtoi(text, &value) || value > SIZE_MAX / multiplier) {
    return std::nullopt;
  }
  return static_cast<size_t>(value) * multiplier;
}

// A cached free tensor block that no allocation took for this long goes back to the system.
constexpr int64_t kBlockCacheIdleNs = int64_t{5'000'000'000};

size_t DefaultMemoryLimit() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page_size <= 0) return 0;
  return static_cast<size_t>(pages) / 10 * 8 * static_cast<size_t>(page_size);
}

struct Flags {
  std::string listen = "127.0.0.1:50051";
  std::string data_dir = "paramd-data";
  std::string max_memory;
  std::string shutdown_grace = "10";
  std::string checkpoint_dir;
  std::string snapshot_interval = "300";
  std::string workers;
  std::string max_queued_calls = "64";
  std::string max_upload_size = "256G";
  std::string upload_expiry = "24h";
  std::string stream_idle_timeout = "60s";
  std::string max_transport_memory = "256M";
  std::string max_state_dict_keys = std::to_string(paramd::core::kDefaultMaxStateDictKeys);
  // Security (security.h, docs/daemon.md "Security").
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  std::string auth_tokens;
  std::string allow_insecure;  // a switch: "1" when given
};

struct FlagDef {
  const char* name;
  const char* value_name;  // nullptr: a switch, which takes no value
  const char* help;
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
     "when a save or upload starts (default 24h; 0: never).", &Flags::upload_expiry},
    {"max-transport-memory", "BYTES",
     "Most bytes gRPC may hold in receive buffers for all connections together (default "
     "256M; 0: no bound). Near it gRPC shrinks flow-control windows; past it it cancels "
     "streams with RESOURCE_EXHAUSTED, so one oversized message cannot be buffered whole. "
     "Below 128M concurrent bulk writers get cancelled too.",
     &Flags::max_transport_memory},
    {"stream-idle-timeout", "DURATION",
     "A tensor write stream (SetTensor, SetTensors, Register*, LoadStateDict) that sends no "
     "frame for this long (e.g. 60s, 500ms) is ended with DEADLINE_EXCEEDED, writes nothing "
     "and frees the memory its tensors reserved (default 60s; 0: never).",
     &Flags::stream_idle_timeout},
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
     "Re-read when the file changes and on SIGHUP; a malformed file keeps the old tokens.",
     &Flags::auth_tokens},
    {"allow-insecure", nullptr,
     "Serve beyond loopback (e.g. --listen 0.0.0.0:PORT) without "
     "both TLS and --auth-tokens. Without it paramd refuses to start so.",
     &Flags::allow_insecure},
};

void PrintHelp() {
  std::cout << "paramd: the paramd model-parameter server.\n\n"
               "usage: paramd [FLAGS]\n\n"
               "Serves paramd.v1.Models and paramd.v1.Parameters over gRPC, with the standard\n"
               "grpc.health.v1.Health service and server reflection. paramctl is its admin CLI.\n"
               "SIGTERM stops taking calls, lets in-flight ones finish, snapshots every model\n"
               "and exits 0 (1 when a final snapshot failed).\n\nflags:\n";
  for (const FlagDef& flag : kFlags) {
    std::cout << "  --" << flag.name << (flag.value_name ? " " : "")
              << (flag.value_name ? flag.value_name : "") << "\n      " << flag.help << "\n";
  }
  std::cout << "  --help\n      Print this text.\n";
}

// Parses `--name VALUE` and `--name=VALUE`. Returns an error message, or "" when fine.
std::string ParseFlags(int argc, char** argv, Flags& flags, bool& help) {
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
    const FlagDef* def = nullptr;
    for (const FlagDef& flag : kFlags) {
      if (name == flag.name) def = &flag;
    }
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
  }
  return "";
}

// The checkpoint store's flags; an error message, or "" when fine.
std::string ParseStoreOptions(const Flags& flags, paramd::io::CheckpointStore::Options& options) {
  if (auto parsed = ParseBytes(flags.max_upload_size); parsed && *parsed > 0) {
    options.max_upload_size = *parsed;
  } else {
    return absl::StrCat("--max-upload-size '", flags.max_upload_size,
                        "' is not a size like 256G, 512M or 1048576");
  }
  if (flags.upload_expiry == "0") {
    options.upload_expiry = absl::ZeroDuration();
  } else if (!absl::ParseDuration(flags.upload_expiry, &options.upload_expiry) ||
             options.upload_expiry <= absl::ZeroDuration()) {
    return absl::StrCat("--upload-expiry '", flags.upload_expiry,
                        "' is not a duration like 24h, 90m or 3600s (0: never)");
  }
  return "";
}

int Fail(const std::string& message) {
  Log("error", "paramd failed to start", {{"error", message}});
  std::cerr << "paramd: " << message << "\n";
  return 1;
}

// The daemon's numeric settings, read from their flags.
struct Settings {
  double shutdown_grace = 0;
  size_t max_memory = 0;
  int workers = 0;
  int max_queued_calls = 0;
  double snapshot_interval = 0;
  absl::Duration stream_idle_timeout;
  size_t max_transport_memory = 0;
  uint64_t max_state_dict_keys = 0;
};

// Fills `settings` from `flags`; the usage error for the first bad value, or "".
std::string ParseSettings(const Flags& flags, Settings& settings) {
  if (!absl::SimpleAtod(flags.shutdown_grace, &settings.shutdown_grace) ||
      settings.shutdown_grace < 0) {
    return absl::StrCat("--shutdown-grace '", flags.shutdown_grace,
                        "' is not a number of seconds");
  }
  settings.max_memory = DefaultMemoryLimit();
  if (!flags.max_memory.empty()) {
    auto parsed = ParseBytes(flags.max_memory);
    if (!parsed) {
      return absl::StrCat("--max-memory '", flags.max_memory,
                          "' is not a size like 8G, 512M or 1048576");
    }
    settings.max_memory = *parsed;
  }
  const unsigned cores = std::thread::hardware_concurrency();
  settings.workers = cores == 0 ? 2 : static_cast<int>(cores);
  if (!flags.workers.empty() && (!absl::SimpleAtoi(flags.workers, &settings.workers) ||
                                 settings.workers < 1 || settings.workers > 1024)) {
    return absl::StrCat("--workers '", flags.workers, "' is not a number from 1 to 1024");
  }
  if (!absl::SimpleAtoi(flags.max_queued_calls, &settings.max_queued_calls) ||
      settings.max_queued_calls < 0) {
    return absl::StrCat("--max-queued-calls '", flags.max_queued_calls,
                        "' is not a number of calls (0 or more)");
  }
  if (!absl::SimpleAtod(flags.snapshot_interval, &settings.snapshot_interval) ||
      settings.snapshot_interval < 0) {
    return absl::StrCat("--snapshot-interval '", flags.snapshot_interval,
                        "' is not a number of seconds");
  }
  if (auto parsed = ParseBytes(flags.max_transport_memory)) {
    settings.max_transport_memory = *parsed;
  } else {
    return absl::StrCat("--max-transport-memory '", flags.max_transport_memory,
                        "' is not a size like 1G, 256M or 1048576");
  }
  if (flags.stream_idle_timeout == "0") {
    settings.stream_idle_timeout = absl::ZeroDuration();
  } else if (!absl::ParseDuration(flags.stream_idle_timeout, &settings.stream_idle_timeout) ||
             settings.stream_idle_timeout <= absl::ZeroDuration()) {
    return absl::StrCat("--stream-idle-timeout '", flags.stream_idle_timeout,
                        "' is not a duration like 60s, 500ms or 2m (0: never)");
  }
  if (!absl::SimpleAtoi(flags.max_state_dict_keys, &settings.max_state_dict_keys) ||
      settings.max_state_dict_keys < 1) {
    return absl::StrCat("--max-state-dict-keys '", flags.max_state_dict_keys,
                        "' is not a number of keys (1 or more)");
  }
  return "";
}

// Snapshots every model that changed, logging what it wrote. Returns false when a model's
// snapshot failed (logged, naming the model).
bool Snapshot(paramd::io::Snapshots& snapshots, const char* why) {
  const bool shutdown = std::string(why) == "shutdown";
  auto taken = shutdown ? snapshots.Shutdown() : snapshots.Take({});
  if (!taken.ok()) {
    // Each failing model was logged by name already; the final one also gets a summary.
    if (shutdown) {
      Log("error", "final snapshot failed: models changed since their last snapshot are lost "
                   "or older after a restart",
          {{"error", std::string(taken.status().message())}});
    }
    return false;
  }
  int written = 0;
  for (const auto& entry : *taken) written += entry.written ? 1 : 0;
  if (written > 0 || shutdown) {
    Log("info", "snapshot taken",
        {{"reason", why}, {"models", std::to_string(taken->size())},
         {"written", std::to_string(written)}});
  }
  return true;
}

// Waits for one of `stop_signals`, snapshotting every `snapshot_interval` seconds meanwhile
// (never when it is 0); returns the signal.
int WaitForStop(const sigset_t& stop_signals, double snapshot_interval,
                paramd::io::Snapshots& snapshots) {
  int signal_number = 0;
  while (true) {
    if (snapshot_interval <= 0) {
      sigwait(&stop_signals, &signal_number);
      return signal_number;
    }
    timespec timeout;
    timeout.tv_sec = static_cast<time_t>(snapshot_interval);
    timeout.tv_nsec = static_cast<long>((snapshot_interval - timeout.tv_sec) * 1e9);
    signal_number = sigtimedwait(&stop_signals, nullptr, &timeout);
    if (signal_number > 0) return signal_number;
    Snapshot(snapshots, "interval");
  }
}

// Note [Stop signals]
// The stop signals are blocked in every thread paramd starts, and the main thread takes them
// with sigwait, so that a snapshot is written before the process ends. But libraries start
// threads of their own before main runs (OpenBLAS's pool, from a constructor), with every
// signal unblocked: a SIGTERM arriving while the main thread is busy (writing a periodic
// snapshot) would go to one of them and, with the default action, end the process with no
// final snapshot. A handler instead sends it on to the main thread, where it waits, blocked,
// for the next sigwait.
pid_t main_thread_id = 0;

void ForwardStopSignal(int signal_number) {
  const int saved = errno;
  syscall(SYS_tgkill, getpid(), main_thread_id, signal_number);
  errno = saved;
}

void ForwardStopSignalsToMainThread() {
  main_thread_id = static_cast<pid_t>(syscall(SYS_gettid));
  struct sigaction action {};
  action.sa_handler = ForwardStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  bool help = false;
  if (std::string error = ParseFlags(argc, argv, flags, help); !error.empty()) {
    std::cerr << "paramd: " << error << "\n";
    return 2;
  }
  if (help) {
    PrintHelp();
    return 0;
  }
  Settings settings;
  if (std::string error = ParseSettings(flags, settings); !error.empty()) {
    std::cerr << "paramd: " << error << "\n";
    return 2;
  }
  const double grace = settings.shutdown_grace;
  const size_t max_memory = settings.max_memory;
  const int workers = settings.workers;
  const int max_queued_calls = settings.max_queued_calls;
  const double snapshot_interval = settings.snapshot_interval;
  paramd::service::ServerOptions server_options{
      .listen = flags.listen, .workers = workers, .max_queued_calls = max_queued_calls};
  std::unique_ptr<paramd::service::Authenticator> auth;
  if (std::string error =
          paramd::main::ConfigureSecurity({flags.tls_cert, flags.tls_key, flags.tls_client_ca,
                                           flags.auth_tokens, !flags.allow_insecure.empty()},
                                          server_options, auth);
      !error.empty()) {
    return Fail(error);
  }

  // Block the stop signals in every thread; one thread waits for them below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ForwardStopSignalsToMainThread();  // Note [Stop signals]
  paramd::main::PrepareReloadSignal();

  if (auto cpu = paramd::kernels::GetBackend(paramd::Device::Cpu()); cpu.ok()) {
    (*cpu)->SetMemoryLimit(max_memory);
  }

  const std::filesystem::path data_dir = flags.data_dir;
  std::error_code error;
  std::filesystem::create_directories(data_dir, error);
  if (error) {
    return Fail(absl::StrCat("cannot create --data-dir '", data_dir.string(), "': ", error.message()));
  }

  auto checkpoint_dir = paramd::io::CheckpointDir::Open(
      flags.checkpoint_dir.empty() ? (data_dir / "checkpoints").string() : flags.checkpoint_dir);
  if (!checkpoint_dir.ok()) return Fail(std::string(checkpoint_dir.status().message()));
  if (int leftovers = checkpoint_dir->RemoveLeftovers(); leftovers > 0) {
    Log("warning", "removed unfinished saves",
        {{"files", std::to_string(leftovers)}, {"checkpoint_dir", checkpoint_dir->root()}});
  }

  paramd::io::CheckpointStore::Options store_options;
  if (std::string error = ParseStoreOptions(flags, store_options); !error.empty()) {
    std::cerr << "paramd: " << error << "\n";
    return 2;
  }
  paramd::core::ModelRegistry registry(settings.max_state_dict_keys);
  paramd::io::CheckpointStore checkpoints(*checkpoint_dir, &registry,
                                          paramd::io::FileSystem::Posix(), store_options);
  if (int expired = checkpoints.RemoveExpiredUploads(); expired > 0) {
    Log("warning", "removed expired uploads",
        {{"files", std::to_string(expired)}, {"checkpoint_dir", checkpoint_dir->root()}});
  }
  auto snapshots = paramd::io::Snapshots::Open(data_dir.string(), &registry);
  if (!snapshots.ok()) return Fail(std::string(snapshots.status().message()));
  const int restored = (*snapshots)->RestoreAll();

  server_options.checkpoints = &checkpoints;
  server_options.snapshots = snapshots->get();
  server_options.stream_idle_timeout = settings.stream_idle_timeout;
  server_options.max_transport_memory = settings.max_transport_memory;
  auto server = paramd::service::Server::Start(server_options, &registry);
  if (!server.ok()) return Fail(std::string(server.status().message()));
  paramd::main::Reloader reloader(auth.get(), server_options.tls.enabled());
  // Gives back what a burst of traffic or a refused message left free in the heap, and the
  // cached tensor blocks no write took for five seconds (docs/daemon.md, "Memory").
  paramd::kernels::Backend* cpu_backend = nullptr;
  if (auto cpu = paramd::kernels::GetBackend(paramd::Device::Cpu()); cpu.ok()) cpu_backend = *cpu;
  paramd::HeapTrimmer trimmer(absl::Seconds(1), size_t{32} << 20, [cpu_backend] {
    if (cpu_backend != nullptr) cpu_backend->ReleaseIdleCache(kBlockCacheIdleNs);
  });

  auto gpus = paramd::kernels::QueryGpus();
  Log("info", "paramd started",
      {{"listen", (*server)->address()},
       {"data_dir", data_dir.string()},
       {"checkpoint_dir", checkpoint_dir->root()},
       {"restored_models", std::to_string(restored)},
       {"max_memory", std::to_string(max_memory)},
       {"workers", std::to_string(workers)},
       {"max_queued_calls", std::to_string(max_queued_calls)},
       {"stream_idle_timeout", absl::FormatDuration(settings.stream_idle_timeout)},
       {"max_transport_memory", std::to_string(settings.max_transport_memory)},
       {"max_state_dict_keys", std::to_string(settings.max_state_dict_keys)},
       {"gpus", gpus.ok() ? std::to_string(gpus->size()) : "0"},
       {"pid", std::to_string(getpid())}});

  const int signal_number = WaitForStop(stop_signals, snapshot_interval, **snapshots);
  Log("info", "paramd stopping",
      {{"signal", signal_number == SIGTERM ? "SIGTERM" : "SIGINT"},
       {"grace_seconds", absl::StrCat(grace)}});
  (*server)->Shutdown(grace);
  (*server)->Wait();
  const bool saved = Snapshot(**snapshots, "shutdown");
  Log(saved ? "info" : "error", "paramd stopped",
      {{"models", std::to_string(registry.List().size())},
       {"final_snapshot", saved ? "ok" : "failed"}});
  return saved ? 0 : 1;
}
