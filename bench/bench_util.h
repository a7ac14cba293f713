// What the benchmarks share: timing, CPU pinning, child processes (paramd itself, the
// Python peers) and the interop environment's interpreter. No gRPC here, so that gpu_bench
// builds on a machine with the kernels' dependencies alone; the raw gRPC server the wire
// benchmarks compare against is bench/raw_server.h.
#ifndef PARAMD_BENCH_BENCH_UTIL_H_
#define PARAMD_BENCH_BENCH_UTIL_H_

#include <sys/types.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace paramd::bench {

using Clock = std::chrono::steady_clock;

inline double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// The best of the repetitions: on a shared machine the slow runs measure the neighbours,
// not the code. 0 for none.
double Best(const std::vector<double>& seconds);
double Median(std::vector<double> values);

// Pins the calling process (and what it forks) to one CPU, modulo the CPUs present.
// LIMITS.md found loopback gRPC bimodal unless both ends are pinned.
void PinTo(int cpu);
// Lets the calling process run on every CPU again.
void Unpin();

// "/proc/loadavg"'s 1- and 5-minute figures, as text for the report.
std::string LoadAverage();

// Starts `binary` (paramd) pinned to CPU 1 on a free loopback port, with its data
// directory and log under `dir`; returns its pid, or -1, and writes its address.
pid_t StartParamd(const std::string& binary, const std::string& dir, std::string* address);

// Settles the disk of `dir` (syncfs) before a timed write, so that no writeback of an
// earlier step is billed to it.
void Settle(const std::string& dir);

// Runs a command and returns its standard output; standard error passes through.
absl::StatusOr<std::string> Capture(const std::vector<std::string>& argv);

// A child process spoken to a line at a time (a peer that imports its framework once and
// then runs one round per request, interleaved with the benchmark's own rounds).
class Conversation {
 public:
  // Starts `argv`; its standard error passes through.
  static absl::StatusOr<std::unique_ptr<Conversation>> Start(const std::vector<std::string>& argv);
  // Closes its input and waits for it to exit.
  ~Conversation();
  Conversation(const Conversation&) = delete;
  Conversation& operator=(const Conversation&) = delete;

  // The next line it prints, without its newline; an error once it has exited.
  absl::StatusOr<std::string> ReadLine();
  // Writes `line` and a newline to it, then reads its answer.
  absl::StatusOr<std::string> Ask(const std::string& line);

 private:
  Conversation(pid_t pid, FILE* to, FILE* from) : pid_(pid), to_(to), from_(from) {}

  pid_t pid_;
  FILE* to_;
  FILE* from_;
};

// The python the peers run with: $PARAMD_PEER_PYTHON when set (a machine's own PyTorch,
// as tests/gpu/run.sh uses on a lent GPU machine), else the interop environment's python if
// it has been made, asked of `setup_venv` (tests/interop/setup-venv). It is never made from
// here: that is a large download, so a benchmark without it skips its peers.
std::optional<std::string> PeerPython(const std::string& setup_venv);

// The text of the seed's model `name` (mlp, cnn) as `directory` (examples/specs) has it,
// forward programs included; exits with a message when it cannot be read.
std::string SeedSpec(const std::string& directory, const std::string& name);

// The spec of the large MLP: four Linear(width, width), each followed by a ReLU.
std::string LargeMlpSpec(int width);

}  // namespace paramd::bench

#endif  // PARAMD_BENCH_BENCH_UTIL_H_
