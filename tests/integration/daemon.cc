#include "tests/integration/daemon.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace paramd::testing {

std::string BinaryPath(const std::string& name) {
  if (name == "paramd") return PARAMD_BINARY;
  if (name == "paramctl") return PARAMCTL_BINARY;
  return name;
}

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(std::vector<std::string> extra_args) {
  std::unique_ptr<Daemon> daemon(new Daemon());
  char dir_template[] = "/tmp/paramd-test-XXXXXX";
  if (mkdtemp(dir_template) == nullptr) return absl::InternalError("mkdtemp failed");
  daemon->data_dir_ = absl::StrCat(dir_template, "/data");
  daemon->log_path_ = absl::StrCat(dir_template, "/paramd.log");
  absl::Status started = daemon->Spawn(std::move(extra_args));
  if (!started.ok()) return started;
  return daemon;
}

absl::Status Daemon::Restart(std::vector<std::string> extra_args) {
  if (pid_ > 0) Stop();
  return Spawn(std::move(extra_args));
}

absl::Status Daemon::Spawn(std::vector<std::string> extra_args) {
  std::vector<std::string> args = {PARAMD_BINARY, "--listen", "127.0.0.1:0", "--data-dir",
                                   data_dir_};
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  // The log of an earlier run stays; the new run's start line is searched after it.
  const size_t log_start = Log().size();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    FILE* log = std::fopen(log_path_.c_str(), "a");
    if (log != nullptr) dup2(fileno(log), STDERR_FILENO);
    std::vector<char*> argv;
    for (std::string& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(127);
  }
  pid_ = pid;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    const std::string log = Log();
    // The start line's ` listen=ADDRESS`, or `"listen":"ADDRESS"` with --log-format json.
    size_t at = log.find(" listen=", log_start);
    size_t skip = 8;
    char end_mark = ' ';
    if (at == std::string::npos) {
      at = log.find("\"listen\":\"", log_start);
      skip = 10;
      end_mark = '"';
    }
    const size_t end = at == std::string::npos ? at : log.find(end_mark, at + skip);
    if (end != std::string::npos) {
      address_ = log.substr(at + skip, end - at - skip);
      channel_ = grpc::CreateChannel(address_, grpc::InsecureChannelCredentials());
      return absl::OkStatus();
    }
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) {
      pid_ = -1;
      return absl::InternalError(absl::StrCat("paramd exited during start:\n", log));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return absl::DeadlineExceededError("paramd did not start within 30 s:\n" + Log());
}

void Daemon::Kill() {
  if (pid_ <= 0) return;
  channel_.reset();
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

std::string Daemon::Log() const {
  std::ifstream file(log_path_);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

int Daemon::Stop() {
  if (pid_ <= 0) return -1;
  channel_.reset();
  kill(pid_, SIGTERM);
  int status = 0;
  for (int i = 0; i < 300; ++i) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return -1;
}

Daemon::~Daemon() {
  const int status = Stop();
  // PARAMD_TEST_SHOW_LOG=1 prints the daemon's log when a test needs explaining.
  if (std::getenv("PARAMD_TEST_SHOW_LOG")) {
    std::fprintf(stderr, "paramd exit %d\n%s", status, Log().c_str());
  }
  std::error_code ignored;
  std::filesystem::remove_all(std::filesystem::path(log_path_).parent_path(), ignored);
}

}  // namespace paramd::testing
