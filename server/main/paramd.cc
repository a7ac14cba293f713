// paramd: the model-parameter server daemon.
//
//   paramd --listen 127.0.0.1:50051 --data-dir DIR --max-memory 8G
//
// Serves paramd.v1.Models, Parameters and Checkpoints, grpc.health.v1.Health and server
// reflection. Restores the models (and their optimizers) snapshotted in --data-dir on start
// and snapshots them every --snapshot-interval. SIGTERM or SIGINT: stop taking calls, let
// in-flight ones finish within --shutdown-grace, snapshot every model, exit 0; exit 1 (with
// an error log line naming the models) when a model's final snapshot failed.
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "kernels/backend.h"
#include "server/common/log.h"
#include "server/core/registry.h"
#include "server/io/checkpoint_dir.h"
#include "server/io/checkpoint_store.h"
#include "server/io/data_dir_lock.h"
#include "server/io/snapshots.h"
#include "server/main/cgroup.h"
#include "server/main/flags.h"
#include "server/main/heap_trimmer.h"
#include "server/main/library_logs.h"
#include "server/main/metrics_endpoint.h"
#include "server/main/security.h"
#include "server/service/server.h"

namespace {

using paramd::common::Log;
using paramd::main::Flags;

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

// --max-memory's default. Without a cgroup limit: 80% of physical memory. Under a cgroup
// memory limit (a container's, a pod's, a systemd unit's) the kernel kills the whole process
// at the limit, so the tensors get what is left after the rest of the process: gRPC's
// buffers (`max_transport_memory`), and about 256 MiB for the code, idle per-thread buffers
// and the heap's slack (docs/daemon.md "Memory"), and at least a fifth of the limit; half
// the limit when that leaves less. `source`: "cgroup" or "physical memory".
size_t DefaultMemoryLimit(const std::string& cgroup_root, size_t max_transport_memory,
                          std::string& source) {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page_size = sysconf(_SC_PAGESIZE);
  const size_t physical = pages > 0 && page_size > 0
                              ? static_cast<size_t>(pages) * static_cast<size_t>(page_size)
                              : 0;
  const std::optional<size_t> cgroup = paramd::main::CgroupMemoryLimit(cgroup_root);
  if (!cgroup || (physical > 0 && *cgroup >= physical)) {
    source = "physical memory";
    return physical / 10 * 8;
  }
  source = "cgroup";
  const size_t reserve = std::max(*cgroup / 5, max_transport_memory + (size_t{256} << 20));
  return reserve < *cgroup / 2 ? *cgroup - reserve : *cgroup / 2;
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
  std::string max_memory_source;  // "flag", "cgroup" or "physical memory"
  size_t max_gpu_memory = 0;
  int workers = 0;
  int max_queued_calls = 0;
  double snapshot_interval = 0;
  absl::Duration stream_idle_timeout;
  absl::Duration sync_round_timeout;
  absl::Duration keepalive_min_interval;
  size_t max_transport_memory = 0;
  uint64_t max_state_dict_keys = 0;
  size_t metrics_max_models = 0;
  paramd::common::LogFormat log_format = paramd::common::LogFormat::kText;
};

// Fills `settings` from `flags`; the usage error for the first bad value, or "".
std::string ParseSettings(const Flags& flags, Settings& settings) {
  if (!absl::SimpleAtod(flags.shutdown_grace, &settings.shutdown_grace) ||
      settings.shutdown_grace < 0) {
    return absl::StrCat("--shutdown-grace '", flags.shutdown_grace,
                        "' is not a number of seconds");
  }
  if (auto parsed = ParseBytes(flags.max_transport_memory)) {
    settings.max_transport_memory = *parsed;
  } else {
    return absl::StrCat("--max-transport-memory '", flags.max_transport_memory,
                        "' is not a size like 1G, 256M or 1048576");
  }
  settings.max_memory = DefaultMemoryLimit(flags.cgroup_root, settings.max_transport_memory,
                                           settings.max_memory_source);
  if (!flags.max_memory.empty()) {
    settings.max_memory_source = "flag";
    auto parsed = ParseBytes(flags.max_memory);
    if (!parsed) {
      return absl::StrCat("--max-memory '", flags.max_memory,
                          "' is not a size like 8G, 512M or 1048576");
    }
    settings.max_memory = *parsed;
  }
  if (!flags.max_gpu_memory.empty()) {
    auto parsed = ParseBytes(flags.max_gpu_memory);
    if (!parsed) {
      return absl::StrCat("--max-gpu-memory '", flags.max_gpu_memory,
                          "' is not a size like 8G, 512M or 1048576");
    }
    settings.max_gpu_memory = *parsed;
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
  if (flags.stream_idle_timeout == "0") {
    settings.stream_idle_timeout = absl::ZeroDuration();
  } else if (!absl::ParseDuration(flags.stream_idle_timeout, &settings.stream_idle_timeout) ||
             settings.stream_idle_timeout <= absl::ZeroDuration()) {
    return absl::StrCat("--stream-idle-timeout '", flags.stream_idle_timeout,
                        "' is not a duration like 60s, 500ms or 2m (0: never)");
  }
  if (flags.sync_round_timeout == "0") {
    settings.sync_round_timeout = absl::ZeroDuration();
  } else if (!absl::ParseDuration(flags.sync_round_timeout, &settings.sync_round_timeout) ||
             settings.sync_round_timeout <= absl::ZeroDuration()) {
    return absl::StrCat("--sync-round-timeout '", flags.sync_round_timeout,
                        "' is not a duration like 60s, 500ms or 5m (0: never)");
  }
  if (!absl::SimpleAtoi(flags.max_state_dict_keys, &settings.max_state_dict_keys) ||
      settings.max_state_dict_keys < 1) {
    return absl::StrCat("--max-state-dict-keys '", flags.max_state_dict_keys,
                        "' is not a number of keys (1 or more)");
  }
  if (!absl::ParseDuration(flags.keepalive_min_interval, &settings.keepalive_min_interval) ||
      settings.keepalive_min_interval < absl::ZeroDuration()) {
    return absl::StrCat("--keepalive-min-interval '", flags.keepalive_min_interval,
                        "' is not a duration like 10s, 500ms or 1m");
  }
  if (!absl::SimpleAtoi(flags.metrics_max_models, &settings.metrics_max_models)) {
    return absl::StrCat("--metrics-max-models '", flags.metrics_max_models,
                        "' is not a number of models (0 or more)");
  }
  if (flags.log_format == "json") {
    settings.log_format = paramd::common::LogFormat::kJson;
  } else if (flags.log_format != "text") {
    return absl::StrCat("--log-format '", flags.log_format, "' is not text or json");
  }
  return "";
}

// Removes the partial files of uploads left too long (docs/checkpoints.md), logging how many.
void RemoveExpiredUploads(paramd::io::CheckpointStore& checkpoints) {
  if (int expired = checkpoints.RemoveExpiredUploads(); expired > 0) {
    Log("warning", "removed expired uploads",
        {{"files", std::to_string(expired)},
         {"checkpoint_dir", checkpoints.directory().root()}});
  }
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

// Reads the flags (command line, then PARAMD_* variables) and their values; the exit code
// when the daemon must not start (usage error: 2, --help: 0).
std::optional<int> ReadFlags(int argc, char** argv, Flags& flags, Settings& settings) {
  bool help = false;
  std::vector<std::string> environment;
  for (char** entry = environ; *entry != nullptr; ++entry) environment.emplace_back(*entry);
  std::string error = paramd::main::ParseFlags(argc, argv, environment, flags, help);
  if (error.empty() && help) {
    paramd::main::PrintHelp(std::cout);
    return 0;
  }
  if (error.empty()) error = ParseSettings(flags, settings);
  if (error.empty()) return std::nullopt;
  std::cerr << "paramd: " << error << "\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  Settings settings;
  if (std::optional<int> exit_code = ReadFlags(argc, argv, flags, settings)) return *exit_code;
  paramd::common::SetLogFormat(settings.log_format);
  // JSON only: the text format keeps the libraries' own lines as they always were.
  if (settings.log_format == paramd::common::LogFormat::kJson) paramd::main::RouteLibraryLogs();
  paramd::service::ServerOptions server_options{
      .listen = flags.listen, .health_listen = flags.health_listen,
      .workers = settings.workers, .max_queued_calls = settings.max_queued_calls};
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
    (*cpu)->SetMemoryLimit(settings.max_memory);
  }
  paramd::kernels::SetGpuMemoryLimit(settings.max_gpu_memory);

  const std::filesystem::path data_dir = flags.data_dir;
  // Held until the process ends (Note [One daemon a data directory]).
  auto data_dir_lock = paramd::io::DataDirLock::Acquire(data_dir.string());
  if (!data_dir_lock.ok()) return Fail(std::string(data_dir_lock.status().message()));

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
  paramd::core::OptimizerRegistry optimizers;
  paramd::io::CheckpointStore checkpoints(
      *checkpoint_dir, &registry, paramd::io::FileSystem::Posix(), store_options, &optimizers);
  RemoveExpiredUploads(checkpoints);
  auto snapshots =
      paramd::io::Snapshots::Open(data_dir.string(), &registry, paramd::io::FileSystem::Posix(),
                                  &optimizers, settings.sync_round_timeout);
  if (!snapshots.ok()) return Fail(std::string(snapshots.status().message()));
  const int restored = (*snapshots)->RestoreAll();

  server_options.checkpoints = &checkpoints;
  server_options.snapshots = snapshots->get();
  server_options.optimizers = &optimizers;
  server_options.stream_idle_timeout = settings.stream_idle_timeout;
  server_options.sync_round_timeout = settings.sync_round_timeout;
  server_options.keepalive_min_interval = settings.keepalive_min_interval;
  server_options.max_transport_memory = settings.max_transport_memory;
  paramd::service::Metrics metrics(
      {.max_models = settings.metrics_max_models, .max_memory = settings.max_memory}, &registry);
  server_options.metrics = &metrics;
  auto server = paramd::service::Server::Start(server_options, &registry);
  if (!server.ok()) return Fail(std::string(server.status().message()));
  auto metrics_endpoint = paramd::main::MetricsEndpoint::Start(flags.metrics_listen, metrics);
  if (!metrics_endpoint.ok()) return Fail(std::string(metrics_endpoint.status().message()));
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
       {"health", (*server)->health_address()},
       {"data_dir", data_dir.string()},
       {"checkpoint_dir", checkpoint_dir->root()},
       {"restored_models", std::to_string(restored)},
       {"max_memory", std::to_string(settings.max_memory)},
       {"max_memory_from", settings.max_memory_source},
       {"workers", std::to_string(settings.workers)},
       {"max_queued_calls", std::to_string(settings.max_queued_calls)},
       {"max_gpu_memory", std::to_string(settings.max_gpu_memory)},
       {"stream_idle_timeout", absl::FormatDuration(settings.stream_idle_timeout)},
       {"sync_round_timeout", absl::FormatDuration(settings.sync_round_timeout)},
       {"keepalive_min_interval", absl::FormatDuration(settings.keepalive_min_interval)},
       {"max_transport_memory", std::to_string(settings.max_transport_memory)},
       {"max_state_dict_keys", std::to_string(settings.max_state_dict_keys)},
       {"metrics", *metrics_endpoint ? (*metrics_endpoint)->address() : "off"},
       {"gpus", gpus.ok() ? std::to_string(gpus->size()) : "0"},
       {"pid", std::to_string(getpid())}});

  const int signal_number = WaitForStop(stop_signals, settings.snapshot_interval, **snapshots);
  Log("info", "paramd stopping",
      {{"signal", signal_number == SIGTERM ? "SIGTERM" : "SIGINT"},
       {"grace_seconds", absl::StrCat(settings.shutdown_grace)}});
  (*server)->Shutdown(settings.shutdown_grace);
  (*server)->Wait();
  metrics_endpoint->reset();  // no scrape may outlive what it reads
  const bool saved = Snapshot(**snapshots, "shutdown");
  Log(saved ? "info" : "error", "paramd stopped",
      {{"models", std::to_string(registry.List().size())},
       {"final_snapshot", saved ? "ok" : "failed"}});
  return saved ? 0 : 1;
}
