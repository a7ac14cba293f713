// Test harness: starts the real paramd binary on a free loopback port with a fresh data
// directory, and stops it (SIGTERM, then SIGKILL after a grace period) when destroyed.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/channel.h"

namespace paramd::testing {

class Daemon {
 public:
  // Starts paramd with `extra_args` and waits until its start log line names the port.
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(std::vector<std::string> extra_args = {});
  ~Daemon();

  const std::string& address() const { return address_; }
  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  const std::string& data_dir() const { return data_dir_; }
  // Everything the daemon wrote to stderr so far.
  std::string Log() const;
  // Sends SIGTERM and waits; returns the exit status (or -1 if killed by a signal).
  int Stop();
  // SIGKILL, as a crash or the OOM killer would: no shutdown, no snapshot.
  void Kill();
  // Starts paramd again on the same data directory (after Stop or Kill), with a new port
  // and `extra_args`; the log goes on in the same file.
  absl::Status Restart(std::vector<std::string> extra_args = {});
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  // The daemon's default checkpoint directory.
  std::string checkpoint_dir() const { return data_dir_ + "/checkpoints"; }

 private:
  Daemon() = default;
  absl::Status Spawn(std::vector<std::string> extra_args);
  pid_t pid_ = -1;
  std::string address_;
  std::string data_dir_;
  std::string log_path_;
  std::shared_ptr<grpc::Channel> channel_;
};

// The path of a built binary next to paramd (paramctl, ...), from the build's layout.
std::string BinaryPath(const std::string& name);

}  // namespace paramd::testing
