// checkpoint_bench: paramd's checkpoint saves and loads against the disk's own ceilings and
// against torch and safetensors, on the same machine, directory and tensor sizes, same run.
//
// A float32 state_dict of 64 tensors (1 GiB by default) is saved with SaveCheckpoint in both
// formats (atomic write: temporary file, fsync, rename, directory fsync) and read back with
// ReadCheckpoint from a file evicted from the page cache, then one float of every 4 KiB page
// of every tensor is read so that the whole file really comes off the disk. Ceilings: write()
// of the same bytes in 4 MiB pieces + fsync, and pread() of the evicted file in 4 MiB pieces
// into memory that is already faulted in. Reference rows show the pieces of the gaps: a plain
// mapping of the file touched the same way, a .pt load without its CRC check, and the CRC
// alone. Each load runs in a forked child that reports its peak RSS above its own baseline,
// so the parent's tensors do not count. The peers run in bench/checkpoint_peers.py under the
// interop environment's python (tests/interop/setup-venv), one round of theirs after each of
// paramd's, so that both meet the disk in the same state. Best of the repetitions after one
// untimed round; ratios, not absolute times: the machine is shared and noisy.
//
//   checkpoint_bench [--quick] [--reps N] [--dir D] [--python P]
//     --quick: 64 MiB in all, for smoke runs; --dir: where the scratch directory goes
//     (default $TMPDIR, else /tmp); --python: the peers' interpreter (default: the interop
//     environment when it has been made; the peers are skipped otherwise).
#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "base/zip/zip.h"
#include "bench/bench_util.h"
#include "nlohmann/json.hpp"
#include "base/status_macros.h"
#include "server/core/parameter.h"
#include "server/core/tensor.h"
#include "server/io/checkpoint.h"
#include "server/io/torch_checkpoint.h"

namespace {

using paramd::bench::Best;
using paramd::bench::Clock;
using paramd::bench::PinTo;
using paramd::bench::Seconds;
using Json = nlohmann::json;
namespace io = paramd::io;
namespace zip = paramd::zip;
namespace core = paramd::core;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr size_t kPiece = 4 * kMiB;
constexpr size_t kPage = 4096;
constexpr int kTensors = 64;

absl::Status Errno(absl::string_view what) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(errno)));
}

// ext4 on the VM's disk here; tmpfs would make "cold" meaningless, so it is named.
std::string FileSystemOf(const std::string& dir) {
  struct statfs fs;
  if (statfs(dir.c_str(), &fs) != 0) return "unknown";
  switch (static_cast<unsigned long>(fs.f_type)) {
    case 0xEF53: return "ext4, on disk";
    case 0x58465342: return "xfs, on disk";
    case 0x9123683E: return "btrfs, on disk";
    case 0x01021994: return "tmpfs: in memory, cold figures are meaningless";
    case 0x794C7630: return "overlayfs";
    default: return absl::StrCat("filesystem 0x", absl::Hex(fs.f_type));
  }
}

// Drops the file's pages from the page cache. The file must have been fsynced (dirty pages
// stay) and no process may map it (mapped pages stay).
absl::Status Evict(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno(absl::StrCat("open ", path));
  fdatasync(fd);
  const int err = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  close(fd);
  if (err != 0) return absl::InternalError(absl::StrCat("posix_fadvise: ", std::strerror(err)));
  return absl::OkStatus();
}

// The fraction of the file's pages in the page cache (mincore), to check that Evict worked.
double ResidentFraction(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  struct stat st;
  fstat(fd, &st);
  const size_t size = static_cast<size_t>(st.st_size);
  void* map = size > 0 ? mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0) : MAP_FAILED;
  close(fd);
  if (map == MAP_FAILED) return -1;
  std::vector<unsigned char> pages((size + kPage - 1) / kPage);
  double fraction = -1;
  if (mincore(map, size, pages.data()) == 0) {
    size_t resident = 0;
    for (unsigned char page : pages) resident += page & 1;
    fraction = static_cast<double>(resident) / static_cast<double>(pages.size());
  }
  munmap(map, size);
  return fraction;
}

uint64_t FileSize(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

// The ceiling for saves: the same bytes, write() in 4 MiB pieces, then fsync.
absl::Status RawWrite(const std::string& path, const core::StateDict& state) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Errno(absl::StrCat("create ", path));
  absl::Cleanup closer = [fd] { close(fd); };
  for (const core::StateDictEntry& entry : state.entries) {
    const auto* data = static_cast<const uint8_t*>(entry.tensor.data());
    const size_t size = entry.tensor.nbytes();
    for (size_t at = 0; at < size;) {
      const ssize_t n = write(fd, data + at, std::min(kPiece, size - at));
      if (n < 0) return Errno("write");
      at += static_cast<size_t>(n);
    }
  }
  if (fsync(fd) != 0) return Errno("fsync");
  return absl::OkStatus();
}

// The ceiling for loads: pread() in 4 MiB pieces into `buffer`, which is already faulted in
// (first touch of fresh memory would otherwise dominate: LIMITS.md).
absl::StatusOr<double> RawRead(const std::string& path, std::vector<uint8_t>& buffer) {
  const auto t0 = Clock::now();
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Errno(absl::StrCat("open ", path));
  absl::Cleanup closer = [fd] { close(fd); };
  for (size_t at = 0; at < buffer.size();) {
    const ssize_t n = pread(fd, buffer.data() + at, std::min(kPiece, buffer.size() - at),
                            static_cast<off_t>(at));
    if (n < 0) return Errno("pread");
    if (n == 0) return absl::InternalError("short file");
    at += static_cast<size_t>(n);
  }
  return Seconds(Clock::now() - t0);
}

// Reads one float of every 4 KiB page of the tensor, and its last: enough to bring every
// page of a mapped file into memory, and the same touch the peers make.
float TouchPages(const core::Tensor& tensor) {
  const int64_t numel = tensor.numel();
  if (numel == 0) return 0;
  const auto* data = static_cast<const float*>(tensor.data());
  constexpr int64_t kStride = kPage / sizeof(float);
  float sum = 0;
  for (int64_t i = 0; i < numel; i += kStride) sum += data[i];
  return sum + data[numel - 1];
}

// What a load child reports through its pipe.
struct LoadReport {
  bool ok = false;
  double load_s = 0;   // ReadCheckpoint (or the mapping) alone
  double touch_s = 0;  // load_s plus the touch
  long rss_after_load_kib = 0;  // peak RSS above the child's baseline
  long rss_after_touch_kib = 0;
  char error[512] = {};
};

long MaxRssKiB() {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss;
}

// Runs `load` in a forked child and returns what it reports. `load` returns the loaded
// state (kept alive until the touch is done) and its touch.
using Touch = std::function<float()>;
using Loader = std::function<absl::StatusOr<Touch>()>;

absl::StatusOr<LoadReport> InChild(const Loader& load) {
  int fds[2];
  if (pipe(fds) != 0) return Errno("pipe");
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return Errno("fork");
  if (pid == 0) {
    close(fds[0]);
    LoadReport report;
    // The child starts with the parent's resident pages (copy-on-write): its peak RSS so
    // far is that, and only growth above it is the load's.
    const long baseline = MaxRssKiB();
    const auto t0 = Clock::now();
    absl::StatusOr<Touch> touch = load();
    report.load_s = Seconds(Clock::now() - t0);
    report.rss_after_load_kib = MaxRssKiB() - baseline;
    if (touch.ok()) {
      volatile float sink = (*touch)();
      (void)sink;
      report.touch_s = Seconds(Clock::now() - t0);
      report.rss_after_touch_kib = MaxRssKiB() - baseline;
      report.ok = true;
    } else {
      std::snprintf(report.error, sizeof(report.error), "%s", touch.status().ToString().c_str());
    }
    const ssize_t written = write(fds[1], &report, sizeof(report));
    _exit(written == sizeof(report) ? 0 : 1);
  }
  close(fds[1]);
  LoadReport report;
  const ssize_t got = read(fds[0], &report, sizeof(report));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (got != sizeof(report)) return absl::InternalError("the load child died");
  if (!report.ok) return absl::InternalError(report.error);
  return report;
}

// ReadCheckpoint checks a .pt's CRCs on two threads here (zip::Reader::VerifyCrcs), and
// both stay on the one CPU the peers have: like with like. Let onto the second CPU, which
// the rest of the benchmark leaves idle, the same load took 0.5-2.6 s for 1 GiB instead of
// 0.50-0.62 s pinned, with its user time (the first touch of new pages, which this VM's
// host serves) 0.8-2.4 s instead of 0.1-0.25 s.
Loader ParamdLoad(const std::string& path) {
  return [path]() -> absl::StatusOr<Touch> {
    auto checkpoint = std::make_shared<io::Checkpoint>();
    PARAMD_ASSIGN_OR_RETURN(*checkpoint, io::ReadCheckpoint(path));
    return Touch([checkpoint] {
      float sum = 0;
      for (const io::CheckpointTensor& entry : checkpoint->entries) sum += TouchPages(entry.tensor);
      return sum;
    });
  };
}

// ReadCheckpoint of a .pt checks every record's CRC-32 before it returns, which reads the
// whole file; this is the same read without the check, to show its share.
Loader TorchLoadWithoutCrc(const std::string& path) {
  return [path]() -> absl::StatusOr<Touch> {
    io::TorchReadOptions options;
    options.verify_crc = false;
    auto checkpoint = std::make_shared<io::TorchCheckpoint>();
    PARAMD_ASSIGN_OR_RETURN(*checkpoint, io::ReadTorchCheckpoint(path, options));
    return Touch([checkpoint] {
      float sum = 0;
      for (const io::TorchCheckpointEntry& entry : checkpoint->entries) {
        sum += TouchPages(entry.tensor);
      }
      return sum;
    });
  };
}

// The mapping ReadCheckpoint makes (mmap PROT_READ, MAP_PRIVATE) of the whole file, touched
// the same way: the ceiling for a mapped load. madvise hints (SEQUENTIAL, WILLNEED) made no
// difference here, where the disk's read_ahead_kb is 8192.
Loader MappedLoad(const std::string& path) {
  return [path]() -> absl::StatusOr<Touch> {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Errno(absl::StrCat("open ", path));
    struct stat st;
    fstat(fd, &st);
    const size_t size = static_cast<size_t>(st.st_size);
    void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return Errno("mmap");
    // The child exits without unmapping: the mapping lives as long as the touch needs it.
    return Touch([map, size] {
      const auto* bytes = static_cast<const uint8_t*>(map);
      float sum = 0;
      for (size_t at = 0; at < size; at += kPage) sum += bytes[at];
      return sum + bytes[size - 1];
    });
  };
}

// Throughput in GB/s of `bytes` in `seconds`, as text.
std::string Rate(double bytes, double seconds) {
  return seconds > 0 ? absl::StrFormat("%.2f GB/s", bytes / 1e9 / seconds) : "-";
}

std::string Multiple(double kib, double file_bytes) {
  return absl::StrFormat("%.2fx", kib * 1024.0 / file_bytes);
}

int Fail(absl::string_view what, const absl::Status& status) {
  std::cerr << "checkpoint_bench: " << what << ": " << status << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  int reps = 3;
  std::string parent;
  std::optional<std::string> python;
  for (int i = 1; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--reps") == 0 && has_value) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--dir") == 0 && has_value) {
      parent = argv[++i];
    } else if (std::strcmp(argv[i], "--python") == 0 && has_value) {
      python = argv[++i];
    } else {
      std::cerr << "usage: checkpoint_bench [--quick] [--reps N] [--dir D] [--python P]\n";
      return 2;
    }
  }
  if (parent.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    parent = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
  }
  const uint64_t total = quick ? 64 * kMiB : 1024 * kMiB;
  const int64_t numel = static_cast<int64_t>(total / kTensors / sizeof(float));
  const double bytes = static_cast<double>(total);
  // Everything on one CPU, the peers included (they inherit it), so that the comparison is
  // like with like: a .pt load's CRC threads share it (ParamdLoad); only the hashed save's
  // SHA-256 thread may use a second CPU, as it does in the daemon.
  PinTo(0);
  const std::string load_before = paramd::bench::LoadAverage();

  std::string dir = parent + "/paramd-ckpt-bench-XXXXXX";
  if (mkdtemp(dir.data()) == nullptr) return Fail("mkdtemp", Errno(dir));
  absl::Cleanup remove = [&] {
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  };

  // The same tensors torch and safetensors get from checkpoint_peers.py: 64 float32 vectors,
  // the i-th filled with i + 1 (and so already faulted in).
  io::SaveInput input;
  input.version = 1;
  for (int i = 0; i < kTensors; ++i) {
    auto tensor = core::Tensor::Full(paramd::DType::kFloat32, {numel}, i + 1.0);
    if (!tensor.ok()) return Fail("tensor", tensor.status());
    input.state_dict.entries.push_back(core::StateDictEntry{
        absl::StrCat("layers.", i, ".weight"), *tensor,
        std::make_shared<core::Parameter>(*tensor), /*is_parameter=*/true});
  }
  std::vector<uint8_t> buffer(total, 1);  // the read ceiling's destination, faulted in

  const std::string raw_path = dir + "/raw.bin";
  const std::string st_path = dir + "/paramd.safetensors";
  const std::string pt_path = dir + "/paramd.pt";
  const std::string pt_hashed_path = dir + "/paramd-hashed.pt";
  std::vector<double> raw_write, raw_cold, raw_warm, save_st, save_pt, save_pt_hashed, crc_s;
  std::vector<LoadReport> load_st, load_pt, load_pt_no_crc, mapped;
  volatile uint32_t crc_sink = 0;
  double worst_resident = 0;
  auto evict = [&](const std::string& path) -> absl::Status {
    PARAMD_RETURN_IF_ERROR(Evict(path));
    worst_resident = std::max(worst_resident, ResidentFraction(path));
    return absl::OkStatus();
  };
  auto load = [&](const std::string& path, const Loader& loader,
                  std::vector<LoadReport>& into) -> absl::Status {
    PARAMD_RETURN_IF_ERROR(evict(path));
    PARAMD_ASSIGN_OR_RETURN(LoadReport report, InChild(loader));
    into.push_back(report);
    return absl::OkStatus();
  };

  // Each write replaces its own file, removed just before it is timed, so that it reuses the
  // page-cache memory its previous version freed: fresh memory is slow to touch in this VM
  // (LIMITS.md), and a write that took never-used pages measured that instead of the code.
  // One untimed round first, for the same reason.
  auto write = [&](const std::string& path, const std::function<absl::Status()>& save,
                   std::vector<double>* into) -> absl::Status {
    unlink(path.c_str());
    paramd::bench::Settle(dir);
    const auto t0 = Clock::now();
    PARAMD_RETURN_IF_ERROR(save());
    if (into != nullptr) into->push_back(Seconds(Clock::now() - t0));
    return absl::OkStatus();
  };
  auto raw_write_step = [&] { return RawWrite(raw_path, input.state_dict); };
  // What Checkpoints.Save does: the size and identity of the new file kept, no digest.
  auto save_step = [&](const std::string& path, io::CheckpointFormat format) {
    io::WrittenFile written;
    written.hash = false;
    return io::SaveCheckpoint(path, format, input, io::FileSystem::Posix(), &written);
  };
  auto save_st_step = [&] { return save_step(st_path, io::CheckpointFormat::kSafetensors); };
  auto save_pt_step = [&] { return save_step(pt_path, io::CheckpointFormat::kTorch); };
  // What Checkpoints.Save does with return_sha256: the same save, hashing the file (SHA-256)
  // as it is written, on a second thread; so this one step may use every CPU.
  auto save_pt_hashed_step = [&] {
    io::WrittenFile written;
    paramd::bench::Unpin();
    absl::Status status = io::SaveCheckpoint(pt_hashed_path, io::CheckpointFormat::kTorch, input,
                                             io::FileSystem::Posix(), &written);
    PinTo(0);
    return status;
  };
  // The peers run in a process of their own (torch imported once), one round after each of
  // paramd's: this VM's disk drifts by a factor of two between minutes, and peers measured
  // after all of paramd's rounds met another disk.
  std::unique_ptr<paramd::bench::Conversation> peer;
  std::vector<Json> peer_rounds;
  Json peers;
  std::string peers_note;
  if (!python) python = paramd::bench::PeerPython(PARAMD_SETUP_VENV);
  if (!python) {
    peers_note = "peers: skipped (no torch: tests/interop/setup-venv makes the environment)";
  } else {
    signal(SIGPIPE, SIG_IGN);  // a peer that died is an error from Ask, not this process's end
    absl::StatusOr<std::unique_ptr<paramd::bench::Conversation>> started =
        paramd::bench::Conversation::Start(
            {*python, PARAMD_PEERS_SCRIPT, absl::StrCat(total), dir});
    absl::StatusOr<std::string> header =
        started.ok() ? (*started)->ReadLine() : absl::StatusOr<std::string>(started.status());
    if (header.ok()) peers = Json::parse(*header, nullptr, /*allow_exceptions=*/false);
    if (!header.ok()) {
      peers_note = absl::StrCat("peers: skipped (", header.status().message(), ")");
    } else if (peers.is_discarded() || !peers.is_object()) {
      peers_note = absl::StrCat("peers: skipped (unreadable output: ", header->substr(0, 200), ")");
    } else if (peers.contains("skipped")) {
      peers_note = absl::StrCat("peers: skipped (",
                                peers.value("skipped", std::string("no reason given")), ")");
    } else {
      peer = *std::move(started);
    }
    if (peer == nullptr) peers = Json();
  }
  for (int r = -1; r < reps; ++r) {
    const bool timed = r >= 0;
    if (absl::Status s = write(raw_path, raw_write_step, timed ? &raw_write : nullptr); !s.ok()) {
      return Fail("raw write", s);
    }
    if (absl::Status s = write(st_path, save_st_step, timed ? &save_st : nullptr); !s.ok()) {
      return Fail("save safetensors", s);
    }
    if (absl::Status s = write(pt_path, save_pt_step, timed ? &save_pt : nullptr); !s.ok()) {
      return Fail("save torch", s);
    }
    if (absl::Status s =
            write(pt_hashed_path, save_pt_hashed_step, timed ? &save_pt_hashed : nullptr);
        !s.ok()) {
      return Fail("save torch with its digest", s);
    }
    if (!timed) continue;

    // The CRC-32 that a .pt save computes over every record (and a .pt load checks).
    auto t0 = Clock::now();
    uint32_t crc = 0;
    for (const core::StateDictEntry& entry : input.state_dict.entries) {
      crc = zip::Crc32(absl::MakeConstSpan(static_cast<const uint8_t*>(entry.tensor.data()),
                                           entry.tensor.nbytes()),
                       crc);
    }
    crc_s.push_back(Seconds(Clock::now() - t0));
    crc_sink = crc_sink ^ crc;

    if (absl::Status s = evict(raw_path); !s.ok()) return Fail("evict", s);
    auto raw = RawRead(raw_path, buffer);
    if (!raw.ok()) return Fail("raw read", raw.status());
    raw_cold.push_back(*raw);
    raw = RawRead(raw_path, buffer);
    if (!raw.ok()) return Fail("raw read", raw.status());
    raw_warm.push_back(*raw);

    if (absl::Status s = load(st_path, ParamdLoad(st_path), load_st); !s.ok()) {
      return Fail("load safetensors", s);
    }
    // ReadCheckpoint's load last: after the reference load alone (headers read out of order
    // through the mapping) the next save's write() calls into the page cache, after the file is
    // removed, ran three to six times slower (Linux 6.18), which billed the save for the
    // reference's pattern.
    if (absl::Status s = load(pt_path, TorchLoadWithoutCrc(pt_path), load_pt_no_crc); !s.ok()) {
      return Fail("load torch without CRC", s);
    }
    if (absl::Status s = load(pt_path, ParamdLoad(pt_path), load_pt); !s.ok()) {
      return Fail("load torch", s);
    }
    if (absl::Status s = load(st_path, MappedLoad(st_path), mapped); !s.ok()) {
      return Fail("mapped read", s);
    }
    if (peer != nullptr) {
      absl::StatusOr<std::string> answer = peer->Ask("round");
      if (!answer.ok()) return Fail("peer round", answer.status());
      Json round = Json::parse(*answer, nullptr, /*allow_exceptions=*/false);
      if (round.is_discarded() || !round.is_object()) {
        return Fail("peer round", absl::InternalError("unreadable: " + answer->substr(0, 200)));
      }
      peer_rounds.push_back(std::move(round));
    }
  }
  peer.reset();
  const uint64_t st_size = FileSize(st_path);
  const uint64_t pt_size = FileSize(pt_path);
  auto best = [](const std::vector<LoadReport>& reports, double LoadReport::*field) {
    std::vector<double> values;
    for (const LoadReport& report : reports) values.push_back(report.*field);
    return Best(values);
  };
  auto peak = [](const std::vector<LoadReport>& reports, long LoadReport::*field) {
    long most = 0;
    for (const LoadReport& report : reports) most = std::max(most, report.*field);
    return static_cast<double>(most);
  };

  // Each peer figure as paramd's: the best (least) time of the rounds, the largest RSS.
  for (const Json& round : peer_rounds) {
    for (const auto& [key, value] : round.items()) {
      if (!value.is_number()) continue;
      const double v = value.get<double>();
      const bool largest = absl::StrContains(key, "_rss_") || key == "worst_resident" ||
                           absl::EndsWith(key, "_file_bytes");
      if (!peers.contains(key)) {
        peers[key] = v;
      } else {
        peers[key] = largest ? std::max(peers[key].get<double>(), v)
                             : std::min(peers[key].get<double>(), v);
      }
    }
  }
  if (!peers.is_null()) {
    worst_resident = std::max(worst_resident, peers.value("worst_resident", 0.0));
  }

  std::printf("%s: %d x %lld MiB float32 (%.2f GB), best of %d, all on CPU 0\n",
              quick ? "quick" : "full", kTensors, static_cast<long long>(total / kTensors / kMiB),
              bytes / 1e9, reps);
  std::printf("scratch: %s (%s); after each eviction at most %.1f%% of a file stayed cached\n",
              dir.c_str(), FileSystemOf(dir).c_str(), 100 * worst_resident);
  std::printf("load average: %s before, %s after\n\n", load_before.c_str(), paramd::bench::LoadAverage().c_str());

  const double ceiling_write = Best(raw_write);
  const double ceiling_cold = Best(raw_cold);
  std::printf("| case | paramd | ceiling | ratio (paramd / ceiling throughput) |\n");
  std::printf("| --- | --- | --- | --- |\n");
  for (auto [what, mine] :
       {std::pair{"save safetensors (as Checkpoints.Save)", Best(save_st)},
        std::pair{"save torch .pt (as Checkpoints.Save)", Best(save_pt)},
        std::pair{"save torch .pt + SHA-256 (as Checkpoints.Save with return_sha256)",
                  Best(save_pt_hashed)}}) {
    std::printf("| %s | %s | %s (write + fsync) | %.2f |\n", what, Rate(bytes, mine).c_str(),
                Rate(bytes, ceiling_write).c_str(), ceiling_write / mine);
  }
  for (auto [what, reports] : {std::pair{"safetensors", &load_st}, std::pair{"torch .pt", &load_pt}}) {
    std::printf("| load %s, cold: mapped, lazy | %.1f ms | | |\n", what,
                1e3 * best(*reports, &LoadReport::load_s));
    const double touched = best(*reports, &LoadReport::touch_s);
    std::printf("| load + touch %s, cold | %s | %s (cold pread) | %.2f |\n", what,
                Rate(bytes, touched).c_str(), Rate(bytes, ceiling_cold).c_str(),
                ceiling_cold / touched);
  }
  for (auto [what, reports] :
       {std::pair{"load + touch .pt without the CRC check (verify_crc = false)", &load_pt_no_crc},
        std::pair{"mmap of the .safetensors + touch (the mapped-load ceiling)", &mapped}}) {
    const double touched = best(*reports, &LoadReport::touch_s);
    std::printf("| reference: %s, cold | %s | %s (cold pread) | %.2f |\n", what,
                Rate(bytes, touched).c_str(), Rate(bytes, ceiling_cold).c_str(),
                ceiling_cold / touched);
  }
  std::printf("| reference: CRC-32 of the tensors (ISA-L, as .pt saves and loads use) | %s | | |\n",
              Rate(bytes, Best(crc_s)).c_str());
  std::printf("| reference: pread, warm | | %s | |\n", Rate(bytes, Best(raw_warm)).c_str());

  if (!peers.is_null()) {
    std::printf("\npeers: torch %s, safetensors %s; saves end with flush + os.fsync of the file "
                "(no rename, no directory fsync); loads are cold and touched the same way; a "
                "round of theirs after each of paramd's\n\n",
                peers.value("torch", "?").c_str(), peers.value("safetensors", "?").c_str());
    std::printf("| case | paramd | peer | ratio (paramd / peer throughput) |\n");
    std::printf("| --- | --- | --- | --- |\n");
    struct Row {
      const char* what;
      double mine;
      const char* peer_name;
      const char* key;
    };
    const Row rows[] = {
        {"save .pt", Best(save_pt), "torch.save", "torch_save_s"},
        {"load + touch .pt", best(load_pt, &LoadReport::touch_s), "torch.load", "torch_load_touch_s"},
        {"load + touch .pt", best(load_pt, &LoadReport::touch_s), "torch.load(mmap=True)",
         "torch_load_mmap_touch_s"},
        {"save safetensors", Best(save_st), "save_file", "st_save_s"},
        {"load + touch safetensors", best(load_st, &LoadReport::touch_s), "load_file",
         "st_load_touch_s"},
    };
    for (const Row& row : rows) {
      const double theirs = peers.value(row.key, 0.0);
      std::printf("| %s | %s | %s (%s) | %.2f |\n", row.what, Rate(bytes, row.mine).c_str(),
                  Rate(bytes, theirs).c_str(), row.peer_name, theirs / row.mine);
    }
  } else {
    std::printf("\n%s\n", peers_note.c_str());
  }

  std::printf("\n| load (peak RSS above the child's baseline, / file size) | after load | after "
              "touch |\n");
  std::printf("| --- | --- | --- |\n");
  std::printf("| paramd ReadCheckpoint safetensors | %s | %s |\n",
              Multiple(peak(load_st, &LoadReport::rss_after_load_kib), st_size).c_str(),
              Multiple(peak(load_st, &LoadReport::rss_after_touch_kib), st_size).c_str());
  std::printf("| paramd ReadCheckpoint .pt | %s | %s |\n",
              Multiple(peak(load_pt, &LoadReport::rss_after_load_kib), pt_size).c_str(),
              Multiple(peak(load_pt, &LoadReport::rss_after_touch_kib), pt_size).c_str());
  if (!peers.is_null()) {
    for (auto [what, prefix] : {std::pair{"torch.load", "torch_load"},
                                std::pair{"torch.load(mmap=True)", "torch_load_mmap"},
                                std::pair{"safetensors load_file", "st_load"}}) {
      const double file = peers.value(absl::StrCat(prefix, "_file_bytes"), 1.0);
      std::printf("| %s | %s | %s |\n", what,
                  Multiple(peers.value(absl::StrCat(prefix, "_rss_load_kib"), 0.0), file).c_str(),
                  Multiple(peers.value(absl::StrCat(prefix, "_rss_touch_kib"), 0.0), file).c_str());
    }
  }
  return 0;
}
