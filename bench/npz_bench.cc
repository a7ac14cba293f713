// npz_bench: paramctl's .npz transfers against the wire, same machine, same run.
//
// `paramctl state-dict NAME --out FILE.npz` (replacing the file of the round before, and
// again to a free name) and `paramctl load-state-dict NAME FILE.npz` of one model (32
// float32 tensors, 512 MiB in all by default) timed as whole processes, as
// ratios to the raw pull and push of the same model through the C++ client library (the
// wire: StateDictInto and LoadStateDict from memory, after a warm-up round), the file in a
// warm page cache (read once, untimed: paramctl may have written it past the cache). The
// same for `paramctl get NAME KEY --out FILE.npy` and `paramctl set NAME KEY --in FILE.npy`
// of the largest tensor against GetTensor and SetTensor of it. Also each paramctl run's peak
// resident memory (ru_maxrss from wait4)
// against the largest tensor and against a bare `paramctl health`, and the time of that bare
// call (process start and connect), which every paramctl figure includes; and state-dict
// --out against the slower of the pull and the disk's direct writes. Ratios, not
// absolute times: the machine is shared and noisy; medians of the repetitions. paramd runs on
// CPU 1; the client side (this process, its pulls and pushes, every paramctl) on CPU 0, or
// wherever the kernel puts it with --clients-anywhere (for a machine with cores to spare,
// where paramctl's file work need not share one core with its transfer). This process keeps
// freed memory warm as paramctl and paramd do (base/warm_heap.h): the wire at its best.
//
//   npz_bench [--quick] [--reps N] [--mib TOTAL] [--tensors N] [--dir DIR] [--clients-anywhere]
//     (--quick: 32 MiB, for smoke runs; --dir: where the .npz goes, /tmp by default)
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/warm_heap.h"
#include "bench/bench_util.h"
#include "paramd/client.h"

namespace {

using paramd::bench::Clock;
using paramd::bench::Median;
using paramd::bench::PinTo;
using paramd::bench::Seconds;
constexpr uint64_t kMiB = uint64_t{1} << 20;

struct Run {
  bool ok = false;
  double seconds = 0;
  double max_rss_mib = 0;
  double cpu_seconds = 0;  // user + system, from wait4's rusage
};

// One paramctl process, its output discarded; timed from fork to exit.
Run RunOnce(const std::vector<std::string>& args) {
  std::vector<std::string> argv = args;
  std::vector<char*> c_argv;
  for (std::string& arg : argv) c_argv.push_back(arg.data());
  c_argv.push_back(nullptr);
  const auto t0 = Clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    const int null = open("/dev/null", O_WRONLY);
    if (null >= 0) dup2(null, STDOUT_FILENO);
    execv(c_argv[0], c_argv.data());
    _exit(127);
  }
  Run run;
  int status = 0;
  struct rusage usage {};
  if (pid < 0 || wait4(pid, &status, 0, &usage) != pid) return run;
  run.seconds = Seconds(Clock::now() - t0);
  run.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
  run.max_rss_mib = static_cast<double>(usage.ru_maxrss) / 1024.0;
  run.cpu_seconds = Seconds(std::chrono::seconds(usage.ru_utime.tv_sec) +
                            std::chrono::microseconds(usage.ru_utime.tv_usec) +
                            std::chrono::seconds(usage.ru_stime.tv_sec) +
                            std::chrono::microseconds(usage.ru_stime.tv_usec));
  return run;
}

// Runs paramctl from a process forked while this one was small: a process's peak RSS
// (ru_maxrss) counts the memory of the process it was forked from, so paramctl must not be
// forked from this one once it holds the model. Requests go down a pipe (arguments split
// by \x1f, one line each), answers come back up another ("ok seconds max_rss_mib
// cpu_seconds").
class Spawner {
 public:
  explicit Spawner(bool pin_clients) : pin_clients_(pin_clients) {}
  bool Start() {
    int down[2], up[2];
    if (pipe(down) != 0 || pipe(up) != 0) return false;
    std::fflush(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      close(down[1]);
      close(up[0]);
      if (pin_clients_) PinTo(0);  // where the client library's transfers run
      FILE* in = fdopen(down[0], "r");
      char* line = nullptr;
      size_t capacity = 0;
      while (in != nullptr && getline(&line, &capacity, in) > 0) {
        std::vector<std::string> args = absl::StrSplit(absl::StripTrailingAsciiWhitespace(line), '\x1f');
        const Run run = RunOnce(args);
        dprintf(up[1], "%d %.6f %.3f %.6f\n", run.ok ? 1 : 0, run.seconds, run.max_rss_mib,
                run.cpu_seconds);
      }
      _exit(0);
    }
    close(down[0]);
    close(up[1]);
    to_ = fdopen(down[1], "w");
    from_ = fdopen(up[0], "r");
    return pid_ > 0 && to_ != nullptr && from_ != nullptr;
  }
  ~Spawner() {
    if (to_ != nullptr) std::fclose(to_);
    if (from_ != nullptr) std::fclose(from_);
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
  }
  Run Paramctl(const std::string& address, const std::vector<std::string>& args) {
    std::vector<std::string> argv = {PARAMCTL_BINARY, "--server", address};
    argv.insert(argv.end(), args.begin(), args.end());
    std::fprintf(to_, "%s\n", absl::StrJoin(argv, "\x1f").c_str());
    std::fflush(to_);
    Run run;
    int ok = 0;
    if (std::fscanf(from_, "%d %lf %lf %lf", &ok, &run.seconds, &run.max_rss_mib,
                    &run.cpu_seconds) != 4) {
      return run;
    }
    run.ok = ok == 1;
    return run;
  }

 private:
  const bool pin_clients_;
  pid_t pid_ = -1;
  FILE* to_ = nullptr;
  FILE* from_ = nullptr;
};

// The file-system side alone, on this process's CPU: `total` bytes written in pieces to a
// fresh file replacing the last one, through the page cache or past it (O_DIRECT, as
// paramctl writes where it can: the disk's rate), or read back with pread (a warm page
// cache: what load-state-dict adds to a push). Seconds, or -1 on failure.
double WriteFresh(const std::string& path, uint64_t total, int flags, size_t piece) {
  void* memory = std::aligned_alloc(4096, piece);
  if (memory == nullptr) return -1;
  absl::Cleanup free_memory = [memory] { std::free(memory); };
  std::memset(memory, 0x5a, piece);
  const auto t0 = Clock::now();
  // Timed too: paramctl replaces the previous file, whose pages go then.
  std::remove(path.c_str());
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | flags, 0644);
  if (fd < 0) return -1;
  for (uint64_t done = 0; done < total; done += piece) {
    if (write(fd, memory, piece) != static_cast<ssize_t>(piece)) {
      close(fd);
      return -1;
    }
  }
  close(fd);
  return Seconds(Clock::now() - t0);
}

double ReadBack(const std::string& path) {
  std::string chunk(kMiB, '\0');
  const auto t0 = Clock::now();
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return -1;
  uint64_t at = 0;
  for (ssize_t n; (n = pread(fd, chunk.data(), chunk.size(), static_cast<off_t>(at))) > 0;) {
    at += static_cast<uint64_t>(n);
  }
  close(fd);
  return Seconds(Clock::now() - t0);
}

int Fail(const std::string& what, const absl::Status& status) {
  std::cerr << "npz_bench: " << what << ": " << status << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  paramd::KeepFreedMemoryWarm();
  bool quick = false;
  int reps = 3;
  uint64_t total_mib = 512;
  int tensors = 32;
  std::string dir = "/tmp";
  bool pin_clients = true;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") {
      quick = true;
      total_mib = 32;
    } else if (arg == "--reps" && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--mib" && i + 1 < argc) {
      total_mib = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--tensors" && i + 1 < argc) {
      tensors = std::max(1, std::atoi(argv[++i]));
    } else if (arg == "--dir" && i + 1 < argc) {
      dir = argv[++i];
    } else if (arg == "--clients-anywhere") {
      pin_clients = false;
    } else {
      std::cerr << "usage: npz_bench [--quick] [--reps N] [--mib TOTAL] [--tensors N] "
                   "[--dir DIR] [--clients-anywhere]\n";
      return 2;
    }
  }
  const int64_t numel = static_cast<int64_t>(total_mib * kMiB / 4 / tensors);
  const uint64_t tensor_bytes = static_cast<uint64_t>(numel) * 4;
  const uint64_t total = tensor_bytes * static_cast<uint64_t>(tensors);

  Spawner spawner(pin_clients);
  if (!spawner.Start()) {
    std::cerr << "npz_bench: could not start the paramctl spawner\n";
    return 1;
  }
  auto Paramctl = [&](const std::string& at, const std::vector<std::string>& args) {
    return spawner.Paramctl(at, args);
  };
  std::string scratch = dir + "/paramd-npz-bench-XXXXXX";
  std::string address;
  const pid_t paramd_pid = mkdtemp(scratch.data()) != nullptr
                               ? paramd::bench::StartParamd(PARAMD_BINARY, scratch, &address)
                               : -1;
  // This process and the paramctl runs it starts on CPU 0, paramd on CPU 1.
  if (pin_clients) PinTo(0);
  absl::Cleanup stop = [&] {
    if (paramd_pid > 0) {
      kill(paramd_pid, SIGTERM);
      waitpid(paramd_pid, nullptr, 0);
    }
    std::error_code ignored;
    std::filesystem::remove_all(scratch, ignored);
  };
  if (paramd_pid <= 0) {
    std::cerr << "npz_bench: could not start paramd\n";
    return 1;
  }
  auto client = paramd::client::Client::Connect(address);
  if (!client.ok()) return Fail("connect", client.status());
  std::string spec = R"({"type": "Net", "parameters": [)";
  for (int i = 0; i < tensors; ++i) {
    absl::StrAppend(&spec, i ? "," : "", R"({"name": "p)", i, R"(", "shape": [)", numel, "]}");
  }
  spec += "]}";
  auto created = (*client)->CreateModel("npz", spec);
  if (!created.ok()) return Fail("create", created.status());
  auto model = (*client)->Model("npz");
  const std::string npz = scratch + "/model.npz";
  const std::string npz_new = scratch + "/new.npz";
  const std::string npy = scratch + "/largest.npy";
  const std::string largest = "p0";  // every tensor is as large

  paramd::client::StateDictResult state;
  // One untimed round of each first: warm buffers, warm page cache for the file.
  if (absl::Status warm = model.StateDictInto(state); !warm.ok()) return Fail("warm-up", warm);
  if (auto warm = model.LoadStateDict(state.entries); !warm.ok()) return Fail("warm-up", warm.status());
  auto one = model.GetTensor(largest);
  if (!one.ok()) return Fail("warm-up", one.status());
  if (auto warm = model.SetTensor(largest, *one); !warm.ok()) return Fail("warm-up", warm.status());
  if (!Paramctl(address, {"state-dict", "npz", "--out", npz}).ok ||
      !Paramctl(address, {"load-state-dict", "npz", npz}).ok ||
      !Paramctl(address, {"get", "npz", largest, "--out", npy}).ok ||
      !Paramctl(address, {"set", "npz", largest, "--in", npy}).ok) {
    return Fail("paramctl warm-up", absl::InternalError("a paramctl run failed"));
  }

  std::vector<double> fresh_pull;
  std::vector<double> get_s, set_s, npy_out_s, npy_in_s, npy_out_rss, npy_in_rss;
  std::vector<double> pull, push, out_s, in_s, bare_s, out_rss, in_rss, bare_rss, write_s, read_s;
  std::vector<double> out_cpu;    // state-dict --out's CPU seconds
  std::vector<double> out_new_s;  // state-dict --out to a free name
  std::vector<double> direct_s;
  const std::string scratch_file = scratch + "/plain.bin";
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    if (absl::Status pulled = model.StateDictInto(state); !pulled.ok()) return Fail("pull", pulled);
    pull.push_back(Seconds(Clock::now() - t0));
    t0 = Clock::now();
    if (auto pushed = model.LoadStateDict(state.entries); !pushed.ok()) {
      return Fail("push", pushed.status());
    }
    push.push_back(Seconds(Clock::now() - t0));
    {
      // The same pull on a connection of its own, as each paramctl run has: a fresh
      // connection starts with small HTTP/2 windows.
      t0 = Clock::now();
      auto fresh = paramd::client::Client::Connect(address);
      if (!fresh.ok()) return Fail("connect", fresh.status());
      paramd::client::StateDictResult fresh_state;
      if (absl::Status pulled = (*fresh)->Model("npz").StateDictInto(fresh_state); !pulled.ok()) {
        return Fail("fresh pull", pulled);
      }
      fresh_pull.push_back(Seconds(Clock::now() - t0));
    }
    t0 = Clock::now();
    one = model.GetTensor(largest);
    if (!one.ok()) return Fail("get", one.status());
    get_s.push_back(Seconds(Clock::now() - t0));
    t0 = Clock::now();
    if (auto set = model.SetTensor(largest, *one); !set.ok()) return Fail("set", set.status());
    set_s.push_back(Seconds(Clock::now() - t0));
    // Every timed file write starts from a settled disk, so that none pays for the writeback
    // of the one before it.
    const Run bare = Paramctl(address, {"health"});
    paramd::bench::Settle(scratch);
    const Run out = Paramctl(address, {"state-dict", "npz", "--out", npz});
    ReadBack(npz);  // paramctl wrote it past the page cache: the reads start from a warm one
    const Run in = Paramctl(address, {"load-state-dict", "npz", npz});
    // The same to a name that is free: nothing to replace. The last one is removed untimed,
    // with its blocks (on a file system mounted with `discard` that waits for the device).
    std::remove(npz_new.c_str());
    paramd::bench::Settle(scratch);
    const Run out_new = Paramctl(address, {"state-dict", "npz", "--out", npz_new});
    paramd::bench::Settle(scratch);
    const Run npy_out = Paramctl(address, {"get", "npz", largest, "--out", npy});
    ReadBack(npy);
    const Run npy_in = Paramctl(address, {"set", "npz", largest, "--in", npy});
    if (!bare.ok || !out.ok || !out_new.ok || !in.ok || !npy_out.ok || !npy_in.ok) {
      return Fail("paramctl", absl::InternalError("a paramctl run failed"));
    }
    npy_out_s.push_back(npy_out.seconds);
    npy_out_rss.push_back(npy_out.max_rss_mib);
    npy_in_s.push_back(npy_in.seconds);
    npy_in_rss.push_back(npy_in.max_rss_mib);
    paramd::bench::Settle(scratch);
    write_s.push_back(WriteFresh(scratch_file, total, 0, kMiB));
    read_s.push_back(ReadBack(scratch_file));
    paramd::bench::Settle(scratch);
    direct_s.push_back(WriteFresh(scratch_file, total, O_DIRECT, 4 * kMiB));
    bare_s.push_back(bare.seconds);
    bare_rss.push_back(bare.max_rss_mib);
    out_s.push_back(out.seconds);
    out_rss.push_back(out.max_rss_mib);
    out_cpu.push_back(out.cpu_seconds);
    out_new_s.push_back(out_new.seconds);
    in_s.push_back(in.seconds);
    in_rss.push_back(in.max_rss_mib);
  }
  state = {};
  one = paramd::client::HostTensor{};

  const double gb = static_cast<double>(total) / 1e9;
  const double largest_mib = static_cast<double>(tensor_bytes) / kMiB;
  std::printf("model: %d float32 tensors of %.1f MiB (%.2f GB); %d reps, medians; load %s; "
              "paramd on CPU 1, clients %s%s\n",
              tensors, largest_mib, gb, reps, paramd::bench::LoadAverage().c_str(),
              pin_clients ? "on CPU 0" : "anywhere", quick ? " (quick)" : "");
  std::printf("| case | paramctl | wire (client library) | ratio (paramctl / wire rate) | "
              "paramctl peak RSS |\n");
  std::printf("| --- | --- | --- | --- | --- |\n");
  std::printf(
      "| state-dict --out FILE.npz (replacing one) | %.2f GB/s | %.2f GB/s (pull) | %.2f | %.0f "
      "MiB |\n",
      gb / Median(out_s), gb / Median(pull), Median(pull) / Median(out_s), Median(out_rss));
  std::printf(
      "| state-dict --out NEW.npz (a free name) | %.2f GB/s | %.2f GB/s (pull) | %.2f | |\n",
      gb / Median(out_new_s), gb / Median(pull), Median(pull) / Median(out_new_s));
  std::printf("| load-state-dict FILE.npz | %.2f GB/s | %.2f GB/s (push) | %.2f | %.0f MiB |\n",
              gb / Median(in_s), gb / Median(push), Median(push) / Median(in_s), Median(in_rss));
  const double tensor_gb = static_cast<double>(tensor_bytes) / 1e9;
  std::printf("| get --out FILE.npy (largest tensor) | %.2f GB/s | %.2f GB/s (GetTensor) | %.2f | "
              "%.0f MiB |\n",
              tensor_gb / Median(npy_out_s), tensor_gb / Median(get_s),
              Median(get_s) / Median(npy_out_s), Median(npy_out_rss));
  std::printf("| set --in FILE.npy (largest tensor) | %.2f GB/s | %.2f GB/s (SetTensor) | %.2f | "
              "%.0f MiB |\n",
              tensor_gb / Median(npy_in_s), tensor_gb / Median(set_s),
              Median(set_s) / Median(npy_in_s), Median(npy_in_rss));
  std::printf("| reference: pull on a fresh connection (into fresh memory) | %.2f GB/s | | %.2f | |\n",
              gb / Median(fresh_pull), Median(pull) / Median(fresh_pull));
  std::printf("| reference: write to a fresh file, 1 MiB writes | %.2f GB/s | | | |\n",
              gb / Median(write_s));
  std::printf("| reference: pread of that file, warm | %.2f GB/s | | | |\n", gb / Median(read_s));
  std::printf("| reference: write to a fresh file past the page cache, 4 MiB O_DIRECT writes "
              "(the disk) | %.2f GB/s | | %.2f | |\n",
              gb / Median(direct_s), Median(pull) / Median(direct_s));
  std::printf("| reference: pull + fresh-file write, one after the other | %.2f GB/s | | %.2f | |\n",
              gb / (Median(pull) + Median(write_s)),
              Median(pull) / (Median(pull) + Median(write_s)));
  std::printf("| paramctl health (start + connect) | %.0f ms | | | %.0f MiB |\n",
              Median(bare_s) * 1e3, Median(bare_rss));
  std::printf("peak RSS above a bare call: state-dict --out %+.0f MiB, load-state-dict %+.0f MiB, "
              "get --out .npy %+.0f MiB, set --in .npy %+.0f MiB; largest tensor %.1f MiB, "
              "model %.0f MiB\n",
              Median(out_rss) - Median(bare_rss), Median(in_rss) - Median(bare_rss),
              Median(npy_out_rss) - Median(bare_rss), Median(npy_in_rss) - Median(bare_rss),
              largest_mib, static_cast<double>(total) / kMiB);
  // Where the clients share one CPU, this says how much of it state-dict --out's file work
  // and receiving took together.
  std::printf("state-dict --out used %.2f s of CPU (user + system) in %.2f s; the pull alone "
              "took %.2f s\n",
              Median(out_cpu), Median(out_s), Median(pull));
  // An --out file has to reach the disk or the page cache, and on a VM whose fresh
  // page-cache pages are slow (Note [Past the page cache] in client/cli/file_sink.h) the disk
  // row can be slower than the pull: then it, not the wire, is what --out can reach.
  const double slower_s = std::max(Median(pull), Median(direct_s));
  std::printf("state-dict --out at %.2f of the slower of the pull and the disk (%.2f GB/s)\n",
              slower_s / Median(out_s), gb / slower_s);
  return 0;
}
