#include "bench/bench_util.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"

namespace paramd::bench {
double Best(const std::vector<double>& seconds) {
  return seconds.empty() ? 0.0 : *std::min_element(seconds.begin(), seconds.end());
}

double Median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

void PinTo(int cpu) {
  cpu_set_t set;
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  CPU_ZERO(&set);
  CPU_SET(cpus > 1 ? cpu % cpus : 0, &set);
  sched_setaffinity(0, sizeof(set), &set);
}

void Unpin() {
  cpu_set_t set;
  CPU_ZERO(&set);
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  for (long cpu = 0; cpu < std::max(cpus, 1L); ++cpu) CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof(set), &set);
}

std::string LoadAverage() {
  std::ifstream file("/proc/loadavg");
  std::string one, five;
  file >> one >> five;
  return absl::StrCat(one, " (1 min), ", five, " (5 min)");
}

pid_t StartParamd(const std::string& binary, const std::string& dir, std::string* address) {
  const std::string log = absl::StrCat(dir, "/paramd.log");
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    PinTo(1);
    FILE* file = std::fopen(log.c_str(), "w");
    if (file != nullptr) dup2(fileno(file), STDERR_FILENO);
    const std::string data = absl::StrCat(dir, "/data");
    execl(binary.c_str(), binary.c_str(), "--listen", "127.0.0.1:0", "--data-dir", data.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  if (pid < 0) return -1;
  // paramd logs "listen=ADDRESS" once it serves; 30 s covers a cold start on a busy machine.
  for (int i = 0; i < 1500; ++i) {
    std::ifstream file(log);
    std::stringstream text;
    text << file.rdbuf();
    const std::string content = text.str();
    const size_t at = content.find("listen=");
    if (at != std::string::npos) {
      *address = content.substr(at + 7, content.find(' ', at) - at - 7);
      return pid;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

namespace {

// In a forked child: runs `argv`, or exits with 127 when it cannot.
[[noreturn]] void ExecOrExit(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  execv(args[0], args.data());
  _exit(127);
}

}  // namespace

void Settle(const std::string& dir) {
  const int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    syncfs(fd);
    close(fd);
  }
}

absl::StatusOr<std::string> Capture(const std::vector<std::string>& argv) {
  int fds[2];
  if (pipe(fds) != 0) return absl::InternalError("pipe failed");
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    close(fds[0]);
    dup2(fds[1], STDOUT_FILENO);
    ExecOrExit(argv);
  }
  close(fds[1]);
  std::string out;
  char buffer[4096];
  for (ssize_t n; (n = read(fds[0], buffer, sizeof(buffer))) > 0;) out.append(buffer, n);
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat(argv[0], " failed (status ", status, ")"));
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Conversation>> Conversation::Start(
    const std::vector<std::string>& argv) {
  int down[2], up[2];
  if (pipe(down) != 0) return absl::InternalError("pipe failed");
  if (pipe(up) != 0) {
    close(down[0]);
    close(down[1]);
    return absl::InternalError("pipe failed");
  }
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(down[0], STDIN_FILENO);
    dup2(up[1], STDOUT_FILENO);
    for (int fd : {down[0], down[1], up[0], up[1]}) close(fd);
    ExecOrExit(argv);
  }
  close(down[0]);
  close(up[1]);
  if (pid < 0) {
    close(down[1]);
    close(up[0]);
    return absl::InternalError("fork failed");
  }
  return std::unique_ptr<Conversation>(
      new Conversation(pid, fdopen(down[1], "w"), fdopen(up[0], "r")));
}

Conversation::~Conversation() {
  if (to_ != nullptr) std::fclose(to_);
  if (from_ != nullptr) std::fclose(from_);
  waitpid(pid_, nullptr, 0);
}

absl::StatusOr<std::string> Conversation::ReadLine() {
  char* line = nullptr;
  size_t capacity = 0;
  const ssize_t n = from_ != nullptr ? getline(&line, &capacity, from_) : -1;
  std::string text = n > 0 ? std::string(line, static_cast<size_t>(n)) : std::string();
  std::free(line);
  if (n <= 0) return absl::InternalError("the peer process exited");
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

absl::StatusOr<std::string> Conversation::Ask(const std::string& line) {
  if (to_ == nullptr || std::fprintf(to_, "%s\n", line.c_str()) < 0 || std::fflush(to_) != 0) {
    return absl::InternalError("could not write to the peer process");
  }
  return ReadLine();
}

std::optional<std::string> PeerPython(const std::string& setup_venv) {
  if (const char* python = std::getenv("PARAMD_PEER_PYTHON"); python != nullptr && *python != '\0') {
    return std::string(python);
  }
  // The path logic follows setup-venv's: its ready stamp says whether asking it is cheap.
  std::string venv;
  if (const char* env = std::getenv("PARAMD_INTEROP_VENV"); env != nullptr && *env != '\0') {
    venv = env;
  } else if (const char* cache = std::getenv("XDG_CACHE_HOME"); cache != nullptr && *cache != '\0') {
    venv = absl::StrCat(cache, "/paramd/interop-venv");
  } else if (const char* home = std::getenv("HOME"); home != nullptr) {
    venv = absl::StrCat(home, "/.cache/paramd/interop-venv");
  }
  if (venv.empty() || !std::filesystem::exists(venv + "/.paramd-ready-1")) return std::nullopt;
  absl::StatusOr<std::string> printed = Capture({"/bin/bash", setup_venv});
  if (!printed.ok()) return std::nullopt;
  std::string python = *printed;
  while (!python.empty() && (python.back() == '\n' || python.back() == '\r')) python.pop_back();
  if (python.find('\n') != std::string::npos) python = python.substr(python.rfind('\n') + 1);
  return python;
}

std::string SeedSpec(const std::string& directory, const std::string& name) {
  const std::string path = absl::StrCat(directory, "/", name, ".json");
  std::ifstream file(path);
  if (!file.is_open()) {
    std::fprintf(stderr, "cannot read %s\n", path.c_str());
    std::exit(1);
  }
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

std::string LargeMlpSpec(int width) {
  std::string children;
  for (int i = 0; i < 4; ++i) {
    absl::StrAppend(&children, i ? ", " : "", R"({"type": "Linear", "args": {"in_features": )",
                    width, R"(, "out_features": )", width, R"(}}, {"type": "ReLU"})");
  }
  return absl::StrCat(R"({"type": "Sequential", "children": [)", children, "]}");
}

}  // namespace paramd::bench
