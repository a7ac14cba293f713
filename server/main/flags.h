// paramd's flags: the command line, and PARAMD_* environment variables for every flag not
// given there (PARAMD_DATA_DIR for --data-dir), as containers and Kubernetes ConfigMaps set
// them. docs/daemon.md lists them.
// Thread-safety: plain functions on values; main calls them once.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "server/core/registry.h"

namespace paramd::main {

// Every flag's text as given (or its default); settings.h-style parsing happens in main.
struct Flags {
  std::string listen = "127.0.0.1:50051";
  std::string data_dir = "paramd-data";
  std::string max_memory;
  std::string max_gpu_memory;
  std::string shutdown_grace = "10";
  std::string checkpoint_dir;
  std::string snapshot_interval = "300";
  std::string workers;
  std::string max_queued_calls = "64";
  std::string max_upload_size = "256G";
  std::string upload_expiry = "24h";
  std::string stream_idle_timeout = "60s";
  std::string sync_round_timeout = "60s";
  std::string keepalive_min_interval = "10s";
  std::string max_transport_memory = "256M";
  std::string max_state_dict_keys = std::to_string(core::kDefaultMaxStateDictKeys);
  // Security (security.h, docs/daemon.md "Security").
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  std::string auth_tokens;
  std::string allow_insecure;  // a switch: "1" when given
  std::string health_listen;
  // Observability (docs/metrics.md, docs/daemon.md "Logs").
  std::string metrics_listen;
  std::string metrics_max_models = "100";
  std::string log_format = "text";
  std::string cgroup_root = "/sys/fs/cgroup";  // hidden; cgroup.h
};


// The environment variable that sets --`flag`: "data-dir" -> "PARAMD_DATA_DIR".
std::string EnvironmentName(const std::string& flag);

// Reads `argv` (`--name VALUE`, `--name=VALUE`, `--switch`), then fills every flag the
// command line did not give from its PARAMD_* variable in `environment` ("NAME=VALUE"
// strings; a command-line flag wins; an empty variable counts as unset; a switch takes
// 1/true/yes or 0/false/no). A PARAMD_* variable that is neither a flag's nor one that
// paramd's clients and test tools read (PARAMD_SERVER, PARAMD_TOKEN, ...) nor one of the
// service-link variables Kubernetes sets for a Service named "paramd" (PARAMD_SERVICE_HOST,
// PARAMD_PORT_...) is an error naming it, so a misspelt setting never goes unnoticed. Returns the usage error, or "".
std::string ParseFlags(int argc, char** argv, const std::vector<std::string>& environment,
                       Flags& flags, bool& help);

void PrintHelp(std::ostream& out);

}  // namespace paramd::main
