// paramctl against the real daemon, as an operator would run it: every seed example end to
// end, JSON listings, .npy/.npz in and out, exit codes and the server's messages.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/integration/daemon.h"
#include "tests/integration/specs.h"
#include "tests/integration/training_wire.h"

namespace paramd::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

struct Result {
  int exit_code = -1;
  std::string out;
  std::string err;
};

std::string ReadFile(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

std::string Quote(const std::string& arg) {
  std::string quoted = "'";
  for (char c : arg) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  return quoted + "'";
}

class ParamctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto daemon = Daemon::Start();
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
    dir_ = daemon_->data_dir() + "/../work";
    ASSERT_EQ(std::system(("mkdir -p " + dir_).c_str()), 0);
  }

  // Runs paramctl with `args`; its standard input is empty, or a pipe from `cat piped` when
  // `piped` names a file.
  // The version `describe NAME --json` reports; -1 (and a failure) when describe fails.
  int64_t ModelVersion(const std::string& name) {
    Result described = Run({"describe", name, "--json"});
    EXPECT_EQ(described.exit_code, 0) << described.err;
    if (described.exit_code != 0) return -1;
    return nlohmann::json::parse(described.out)["version"].get<int64_t>();
  }

  Result Run(const std::vector<std::string>& args, const std::string& piped = "") {
    std::string command = Quote(BinaryPath("paramctl")) + " --server " + daemon_->address();
    for (const std::string& arg : args) command += " " + Quote(arg);
    command += " >" + dir_ + "/out 2>" + dir_ + "/err";
    command = piped.empty() ? command + " </dev/null" : "cat " + Quote(piped) + " | " + command;
    const int status = std::system(command.c_str());
    return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ReadFile(dir_ + "/out"),
            ReadFile(dir_ + "/err")};
  }

  // Runs paramctl as Run does (standard output discarded) and measures its peak resident
  // memory: ru_maxrss of the paramctl process itself, from wait4.
  struct Measured {
    int exit_code = -1;
    int64_t max_rss = 0;  // bytes
    std::string err;
  };
  Measured RunMeasured(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {BinaryPath("paramctl"), "--server", daemon_->address()};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> c_argv;
    for (std::string& arg : argv) c_argv.push_back(arg.data());
    c_argv.push_back(nullptr);
    const std::string err_path = dir_ + "/err";
    const pid_t pid = fork();
    if (pid == 0) {  // only async-signal-safe calls until exec
      const int out = open("/dev/null", O_WRONLY);
      const int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      if (out < 0 || err < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) _exit(126);
      execv(c_argv[0], c_argv.data());
      _exit(127);
    }
    Measured result;
    int status = 0;
    struct rusage usage {};
    if (pid < 0 || wait4(pid, &status, 0, &usage) != pid) return result;
    result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    result.max_rss = int64_t{usage.ru_maxrss} * 1024;
    result.err = ReadFile(err_path);
    return result;
  }

  std::string Spec(const std::string& name, const std::string& json) {
    const std::string path = dir_ + "/" + name + ".json";
    std::ofstream(path) << json;
    return path;
  }

  std::unique_ptr<Daemon> daemon_;
  std::string dir_;
};

TEST_F(ParamctlTest, HealthModelsCreateDescribeDelete) {
  EXPECT_EQ(Run({"health"}).exit_code, 0);
  Result created = Run({"create", "mlp", "--spec", Spec("mlp", kMlpSpec)});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  Result described = Run({"describe", "mlp"});
  EXPECT_THAT(described.out, HasSubstr("  (linear1): Linear(in_features=1, out_features=2, bias=True)"));
  EXPECT_THAT(described.out, HasSubstr("train"));
  Result models = Run({"models", "--json"});
  ASSERT_EQ(models.exit_code, 0);
  auto list = nlohmann::json::parse(models.out);
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0]["name"], "mlp");
  EXPECT_EQ(Run({"delete", "mlp"}).exit_code, 0);
  Result missing = Run({"describe", "mlp"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("model 'mlp' not found"));
  EXPECT_EQ(Run({"describe"}).exit_code, 2);  // usage error
  EXPECT_EQ(Run({"nonsense"}).exit_code, 2);
}

TEST_F(ParamctlTest, SeedMlpStateDictKeysAndGetPrintsLikePyTorch) {
  ASSERT_EQ(Run({"create", "mlp", "--spec", Spec("mlp", kMlpSpec)}).exit_code, 0);
  Result sd = Run({"state-dict", "mlp", "--json"});
  ASSERT_EQ(sd.exit_code, 0) << sd.err;
  auto entries = nlohmann::json::parse(sd.out);
  std::vector<std::string> names;
  for (const auto& entry : entries) {
    names.push_back(entry["name"]);
    for (const char* field : {"shape", "dtype", "device", "nbytes", "tied_with"}) {
      EXPECT_TRUE(entry.contains(field)) << field;
    }
  }
  EXPECT_THAT(names, ::testing::ElementsAre("w2", "linear1.weight", "linear1.bias",
                                            "linear2.weight", "linear2.bias"));
  Result get = Run({"get", "mlp", "w2"});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  EXPECT_EQ(get.out, "Parameter containing:\ntensor([2.], requires_grad=True)\n");
  Result params = Run({"params", "mlp"});
  EXPECT_THAT(params.out, HasSubstr("linear2.bias"));
  EXPECT_THAT(params.out, Not(HasSubstr("w1")));
}

TEST_F(ParamctlTest, SeedTyingSetRegionReadThroughTheOtherNameAndTie) {
  ASSERT_EQ(Run({"create", "net", "--spec", Spec("net", kSharedSpec)}).exit_code, 0);
  Result set = Run({"set", "net", "2.weight[0,0]", "--value", "100"});
  ASSERT_EQ(set.exit_code, 0) << set.err;
  EXPECT_THAT(set.out, HasSubstr("version 2"));
  Result get = Run({"get", "net", "4.weight[0,0]", "--json"});
  ASSERT_EQ(get.exit_code, 0) << get.err;
  EXPECT_THAT(get.out, HasSubstr("100"));
  Result sd = Run({"state-dict", "net"});
  EXPECT_THAT(sd.out, HasSubstr("4.weight"));
  Result all = Run({"params", "net", "--all", "--json"});
  EXPECT_EQ(nlohmann::json::parse(all.out).size(), 8u);
  Result dedup = Run({"params", "net", "--json"});
  EXPECT_EQ(nlohmann::json::parse(dedup.out).size(), 6u);
  Result stale = Run({"set", "net", "2.weight[0,0]", "--value", "1", "--if-version", "1"});
  EXPECT_EQ(stale.exit_code, 1);
  EXPECT_THAT(stale.err, HasSubstr("ABORTED"));

  Result tie = Run({"tie", "net", "6.weight", "--to", "0.weight"});
  EXPECT_EQ(tie.exit_code, 1);
  EXPECT_THAT(tie.err, HasSubstr("cannot tie '6.weight' of shape [1, 8] to '0.weight' of shape [8, 4]"));
  ASSERT_EQ(Run({"create", "lm", "--spec", Spec("lm", R"({"type": "LM", "children": [
      {"name": "embed", "type": "Embedding", "args": {"num_embeddings": 10, "embedding_dim": 4}},
      {"name": "head", "type": "Linear", "args": {"in_features": 4, "out_features": 10, "bias": false}}]})")})
                .exit_code,
            0);
  ASSERT_EQ(Run({"tie", "lm", "head.weight", "--to", "embed.weight"}).exit_code, 0);
  ASSERT_EQ(Run({"set", "lm", "embed.weight[2]", "--value", "[1, 2, 3, 4]"}).exit_code, 0);
  Result through = Run({"get", "lm", "head.weight[2]", "--json"});
  EXPECT_THAT(through.out, HasSubstr("1"));
  EXPECT_THAT(through.out, HasSubstr("4"));
}

TEST_F(ParamctlTest, NpyAndNpzRoundTripsAndLoadStateDictErrors) {
  ASSERT_EQ(Run({"create", "mlp", "--spec", Spec("mlp", kMlpSpec)}).exit_code, 0);
  ASSERT_EQ(Run({"create", "net", "--spec", Spec("net", kSharedSpec)}).exit_code, 0);
  const std::string npy = dir_ + "/w.npy";
  ASSERT_EQ(Run({"get", "mlp", "linear1.weight", "--out", npy}).exit_code, 0);
  ASSERT_EQ(Run({"set", "mlp", "linear2.weight", "--in", npy}).exit_code, 1);  // [2,1] into [1,2]
  ASSERT_EQ(Run({"register-param", "mlp", "", "extra", "--in", npy}).exit_code, 0);
  Result keys = Run({"state-dict", "mlp"});
  EXPECT_THAT(keys.out, HasSubstr("extra"));

  const std::string npz = dir_ + "/net.npz";
  ASSERT_EQ(Run({"state-dict", "net", "--out", npz}).exit_code, 0);
  Result same = Run({"load-state-dict", "net", npz});
  ASSERT_EQ(same.exit_code, 0) << same.err;
  EXPECT_THAT(same.out, HasSubstr("<All keys matched successfully>"));
  Result strict = Run({"load-state-dict", "mlp", npz});
  EXPECT_EQ(strict.exit_code, 1);
  // The registered root parameter `extra` comes right after w2, before any child's.
  EXPECT_THAT(strict.err, HasSubstr("Error(s) in loading state_dict for MLP:\n\tMissing key(s) in "
                                    "state_dict: \"w2\", \"extra\", \"linear1.weight\""));
  Result loose = Run({"load-state-dict", "mlp", npz, "--no-strict"});
  ASSERT_EQ(loose.exit_code, 0) << loose.err;
  EXPECT_THAT(loose.out, HasSubstr("_IncompatibleKeys(missing_keys=['w2'"));
}

// state-dict --out writes each chunk to the file as it arrives and load-state-dict sends
// the file chunk by chunk, so paramctl's memory does not grow with the model: 32 tensors of
// 8 MiB (256 MiB) pass through in what a bare call needs plus one tensor and a few chunks.
// Holding the state_dict whole (as paramctl once did, twice over) would add 256 MiB or more.
TEST_F(ParamctlTest, NpzTransfersStreamInBoundedClientMemory) {
  constexpr int kTensors = 32;
  constexpr int64_t kNumel = int64_t{2} << 20;  // float32: 8 MiB each
  std::string spec = R"({"type": "Net", "parameters": [)";
  for (int i = 0; i < kTensors; ++i) {
    spec += (i ? "," : "") + std::string(R"({"name": "p)") + std::to_string(i) +
            R"(", "shape": [)" + std::to_string(kNumel) + "]}";
  }
  spec += "]}";
  ASSERT_EQ(Run({"create", "big", "--spec", Spec("big", spec)}).exit_code, 0);
  const Measured bare = RunMeasured({"health"});
  ASSERT_EQ(bare.exit_code, 0) << bare.err;
  const std::string npz = dir_ + "/big.npz";
  const Measured out = RunMeasured({"state-dict", "big", "--out", npz});
  ASSERT_EQ(out.exit_code, 0) << out.err;
  const Measured in = RunMeasured({"load-state-dict", "big", npz});
  ASSERT_EQ(in.exit_code, 0) << in.err;
  // Every member written whole: its np.save header (128 bytes) and 8 MiB of data.
  std::ifstream file(npz, std::ios::binary | std::ios::ate);
  EXPECT_GT(static_cast<int64_t>(file.tellg()), kTensors * (kNumel * 4 + 128));

  // The promise: at most the largest tensor plus a few chunks over a bare call.
  const int64_t bound = bare.max_rss + kNumel * 4 + (int64_t{8} << 20);
  EXPECT_LT(out.max_rss, bound) << "state-dict --out peaked at " << out.max_rss
                                << " bytes; a bare call at " << bare.max_rss;
  EXPECT_LT(in.max_rss, bound) << "load-state-dict peaked at " << in.max_rss
                               << " bytes; a bare call at " << bare.max_rss;

  // The same file written again in one write(2), as a program holding it whole writes it:
  // the page cache then holds it in large folios, and a touch of one page of such a folio
  // maps in all of it (2 MiB here). Checking each member's header once took 2 MiB a member
  // (64 MiB in all) before any of it was let go.
  const std::string rewritten = dir_ + "/big-whole.npz";
  {
    // Gone before paramctl is forked: a child's peak RSS counts what it was forked from.
    const std::string whole = ReadFile(npz);
    const int fd = open(rewritten.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, whole.data(), whole.size()), static_cast<ssize_t>(whole.size()));
    close(fd);
  }
  const Measured again = RunMeasured({"load-state-dict", "big", rewritten});
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_LT(again.max_rss, bound) << "load-state-dict of the rewritten file peaked at "
                                  << again.max_rss << " bytes; a bare call at " << bare.max_rss;
}

// get --out FILE.npy and set --in FILE.npy stream the tensor between the wire and the file;
// what they write and read is still np.save's file, regions and bfloat16 included.
TEST_F(ParamctlTest, NpyGetOutAndSetInRoundTripRegionsAndBFloat16) {
  ASSERT_EQ(Run({"create", "net", "--spec", Spec("net", R"({"type": "Net", "parameters": [
      {"name": "w", "shape": [6, 4], "init": "randn"},
      {"name": "h", "shape": [5], "dtype": "bfloat16", "init": {"constant": 1.5}},
      {"name": "n", "shape": [3], "dtype": "int64", "requires_grad": false}]})")})
                .exit_code,
            0);
  const std::string w = dir_ + "/w.npy";
  Result got = Run({"get", "net", "w", "--out", w, "--json"});
  ASSERT_EQ(got.exit_code, 0) << got.err;
  auto meta = nlohmann::json::parse(got.out);
  EXPECT_EQ(meta["shape"], nlohmann::json::parse("[6, 4]"));
  EXPECT_EQ(meta["is_parameter"], true);
  EXPECT_EQ(meta["out"], w);
  EXPECT_FALSE(std::ifstream(w + ".part").good());
  // Back in, rows 1..3 from a region of it, then out again: the same bytes.
  Result set = Run({"set", "net", "w", "--in", w});
  ASSERT_EQ(set.exit_code, 0) << set.err;
  EXPECT_THAT(set.out, HasSubstr("version 2"));
  const std::string again = dir_ + "/again.npy";
  ASSERT_EQ(Run({"get", "net", "w", "--out", again}).exit_code, 0);
  EXPECT_EQ(ReadFile(again), ReadFile(w));

  const std::string rows = dir_ + "/rows.npy";
  Result region = Run({"get", "net", "w[1:3]", "--out", rows, "--json"});
  ASSERT_EQ(region.exit_code, 0) << region.err;
  EXPECT_EQ(nlohmann::json::parse(region.out)["is_parameter"], false);
  EXPECT_EQ(nlohmann::json::parse(region.out)["shape"], nlohmann::json::parse("[2, 4]"));
  ASSERT_EQ(Run({"set", "net", "w[4:6]", "--in", rows}).exit_code, 0);
  const std::string moved = dir_ + "/moved.npy";
  ASSERT_EQ(Run({"get", "net", "w[4:6]", "--out", moved}).exit_code, 0);
  EXPECT_EQ(ReadFile(moved), ReadFile(rows));
  Result wrong = Run({"set", "net", "w[0:1]", "--in", rows});  // [2, 4] into [1, 4]
  EXPECT_EQ(wrong.exit_code, 1);

  // bfloat16 is written widened to '<f4', as np.save of the float32 values would be: the
  // same file as the tensor fetched as float32.
  const std::string h = dir_ + "/h.npy";
  Result half = Run({"get", "net", "h", "--out", h});
  ASSERT_EQ(half.exit_code, 0) << half.err;
  EXPECT_THAT(half.out, HasSubstr("bfloat16) to " + h));
  const std::string h32 = dir_ + "/h32.npy";
  ASSERT_EQ(Run({"get", "net", "h", "--out", h32, "--dtype", "float32"}).exit_code, 0);
  EXPECT_EQ(ReadFile(h), ReadFile(h32));
  EXPECT_THAT(ReadFile(h), HasSubstr("'descr': '<f4'"));
  // The float32 file goes back into the bfloat16 tensor (copy_ converts).
  ASSERT_EQ(Run({"get", "net", "h[1:4]", "--out", dir_ + "/h_part.npy", "--dtype", "float32"})
                .exit_code,
            0);
  ASSERT_EQ(Run({"set", "net", "h[0:3]", "--in", dir_ + "/h_part.npy"}).exit_code, 0);
  Result h_values = Run({"get", "net", "h", "--json"});
  EXPECT_EQ(nlohmann::json::parse(h_values.out)["values"],
            nlohmann::json::parse("[1.5, 1.5, 1.5, 1.5, 1.5]"));
  // A wire dtype on a get --out narrows what is written: bfloat16 values, widened back.
  const std::string w16 = dir_ + "/w16.npy";
  ASSERT_EQ(Run({"get", "net", "w", "--out", w16, "--dtype", "bfloat16"}).exit_code, 0);
  EXPECT_THAT(ReadFile(w16), HasSubstr("'descr': '<f4'"));
  EXPECT_EQ(ReadFile(w16).size(), ReadFile(w).size());

  const std::string n = dir_ + "/n.npy";
  ASSERT_EQ(Run({"get", "net", "n", "--out", n}).exit_code, 0);
  EXPECT_THAT(ReadFile(n), HasSubstr("'descr': '<i8'"));
  ASSERT_EQ(Run({"set", "net", "n", "--in", n}).exit_code, 0);

  // A key that does not exist leaves no file behind, not even the part.
  const std::string none = dir_ + "/none.npy";
  EXPECT_EQ(Run({"get", "net", "missing", "--out", none}).exit_code, 1);
  EXPECT_FALSE(std::ifstream(none).good());
  EXPECT_FALSE(std::ifstream(none + ".part").good());
}

// get --out and set --in of one 256 MiB tensor hold a few chunks, never the tensor: their
// peak memory stays within 16 MiB of a bare call's (holding it whole would add 256 MiB).
TEST_F(ParamctlTest, NpyTransfersStreamInBoundedClientMemory) {
  constexpr int64_t kNumel = int64_t{64} << 20;  // float32: 256 MiB
  ASSERT_EQ(Run({"create", "big", "--spec",
                 Spec("big", R"({"type": "Net", "parameters": [{"name": "p", "shape": [)" +
                                 std::to_string(kNumel) + R"(], "init": "zeros"}]})")})
                .exit_code,
            0);
  const Measured bare = RunMeasured({"health"});
  ASSERT_EQ(bare.exit_code, 0) << bare.err;
  const std::string npy = dir_ + "/big.npy";
  const Measured out = RunMeasured({"get", "big", "p", "--out", npy});
  ASSERT_EQ(out.exit_code, 0) << out.err;
  const Measured in = RunMeasured({"set", "big", "p", "--in", npy});
  ASSERT_EQ(in.exit_code, 0) << in.err;
  std::ifstream file(npy, std::ios::binary | std::ios::ate);
  EXPECT_EQ(static_cast<int64_t>(file.tellg()), kNumel * 4 + 128);

  const int64_t bound = bare.max_rss + (int64_t{16} << 20);
  EXPECT_LT(out.max_rss, bound) << "get --out peaked at " << out.max_rss
                                << " bytes; a bare call at " << bare.max_rss;
  EXPECT_LT(in.max_rss, bound) << "set --in peaked at " << in.max_rss
                               << " bytes; a bare call at " << bare.max_rss;
}

// A cut .npy file is refused before anything is sent, and changes nothing; so is one whose
// header lies about its dtype or shape.
TEST_F(ParamctlTest, ACorruptNpyChangesNothing) {
  ASSERT_EQ(Run({"create", "mlp", "--spec", Spec("mlp", kMlpSpec)}).exit_code, 0);
  const std::string npy = dir_ + "/w.npy";
  ASSERT_EQ(Run({"get", "mlp", "linear1.weight", "--out", npy}).exit_code, 0);
  const std::string bytes = ReadFile(npy);
  const std::string cut = dir_ + "/cut.npy";
  std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() - 1);
  Result refused = Run({"set", "mlp", "linear1.weight", "--in", cut});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err, HasSubstr("truncated data"));
  EXPECT_THAT(refused.err, HasSubstr(cut));
  std::string lying = bytes;
  lying.replace(lying.find("'<f4'"), 5, "'<c8'");
  const std::string wrong = dir_ + "/wrong.npy";
  std::ofstream(wrong, std::ios::binary) << lying;
  Result dtype = Run({"set", "mlp", "linear1.weight", "--in", wrong});
  EXPECT_EQ(dtype.exit_code, 1);
  EXPECT_THAT(dtype.err, HasSubstr("'<c8' is not supported"));

  EXPECT_EQ(ModelVersion("mlp"), 1);
  const std::string again = dir_ + "/again.npy";
  ASSERT_EQ(Run({"get", "mlp", "linear1.weight", "--out", again}).exit_code, 0);
  EXPECT_EQ(ReadFile(again), bytes);
}

// A member found corrupt while it streams (its CRC-32 is known only at its end) cancels the
// load: the daemon commits nothing, not even the members before it.
TEST_F(ParamctlTest, ACorruptNpzCancelsTheLoadAndChangesNothing) {
  ASSERT_EQ(Run({"create", "mlp", "--spec", Spec("mlp", kMlpSpec)}).exit_code, 0);
  const std::string npz = dir_ + "/mlp.npz";
  Result saved = Run({"state-dict", "mlp", "--out", npz});
  ASSERT_EQ(saved.exit_code, 0) << saved.err;
  std::string bytes = ReadFile(npz);
  // The last data byte of the last member: just before the central directory.
  const size_t central = bytes.find("PK\x01\x02");
  ASSERT_NE(central, std::string::npos);
  bytes[central - 1] ^= 0x20;
  const std::string corrupt = dir_ + "/corrupt.npz";
  std::ofstream(corrupt, std::ios::binary) << bytes;

  Result loaded = Run({"load-state-dict", "mlp", corrupt});
  EXPECT_EQ(loaded.exit_code, 1);
  EXPECT_THAT(loaded.err, HasSubstr("CRC-32 mismatch"));
  EXPECT_THAT(loaded.err, HasSubstr(corrupt));
  const std::string again = dir_ + "/again.npz";
  Result after = Run({"state-dict", "mlp", "--out", again});
  ASSERT_EQ(after.exit_code, 0) << after.err;
  EXPECT_EQ(after.out.substr(after.out.find("version")), saved.out.substr(saved.out.find("version")));
  EXPECT_EQ(ReadFile(again), ReadFile(npz));
}

// Input that is not a regular file, or is one cut short at its first bytes, is named for
// what it is before anything is sent, not as a file missing its magic or a device error.
// A .npy arrives through a pipe too (read whole and checked before it is sent); an .npz,
// read from its end, does not.
TEST_F(ParamctlTest, InputThatIsADirectoryAPipeOrCutShortIsNamedForWhatItIs) {
  ASSERT_EQ(Run({"create", "mlp", "--spec", Spec("mlp", kMlpSpec)}).exit_code, 0);
  const std::string npy = dir_ + "/w.npy";
  ASSERT_EQ(Run({"get", "mlp", "linear1.weight", "--out", npy}).exit_code, 0);
  const std::string npz = dir_ + "/mlp.npz";
  ASSERT_EQ(Run({"state-dict", "mlp", "--out", npz}).exit_code, 0);

  const std::string longer = dir_ + "/longer.npy";
  std::ofstream(longer, std::ios::binary) << ReadFile(npy) << std::string(100000, 'x');
  Result trailing = Run({"set", "mlp", "linear1.weight", "--in", "/dev/stdin"}, longer);
  EXPECT_EQ(trailing.exit_code, 1);
  EXPECT_THAT(trailing.err, HasSubstr("/dev/stdin: trailing data: shape (2, 1) of '<f4' needs 8 "
                                      "bytes after the header but more follow"));
  Result piped = Run({"set", "mlp", "linear1.weight", "--in", "/dev/stdin"}, npy);
  EXPECT_EQ(piped.exit_code, 0) << piped.err;
  EXPECT_THAT(piped.out, HasSubstr("version 2"));
  Result piped_npz = Run({"load-state-dict", "mlp", "/dev/stdin"}, npz);
  EXPECT_EQ(piped_npz.exit_code, 1);
  EXPECT_THAT(piped_npz.err, HasSubstr("'/dev/stdin' is a pipe; load-state-dict needs a regular"));

  Result dir = Run({"set", "mlp", "linear1.weight", "--in", dir_});
  EXPECT_EQ(dir.exit_code, 1);
  EXPECT_THAT(dir.err, HasSubstr("'" + dir_ + "' is a directory; --in needs a .npy file"));
  Result dir_npz = Run({"load-state-dict", "mlp", dir_});
  EXPECT_EQ(dir_npz.exit_code, 1);
  EXPECT_THAT(dir_npz.err, HasSubstr("'" + dir_ +
                                     "' is a directory; load-state-dict needs an "
                                     ".npz file (a .safetensors or .pt checkpoint"));
  EXPECT_THAT(dir_npz.err, Not(HasSubstr("No such device")));

  const std::string magic = dir_ + "/magic.npy";
  std::ofstream(magic, std::ios::binary) << ReadFile(npy).substr(0, 6);
  Result cut = Run({"set", "mlp", "linear1.weight", "--in", magic});
  EXPECT_EQ(cut.exit_code, 1);
  EXPECT_THAT(cut.err, HasSubstr(magic + ": truncated: it ends after 6 bytes"));
  const std::string cut_npz = dir_ + "/cut.npz";
  std::ofstream(cut_npz, std::ios::binary) << ReadFile(npz).substr(0, 100);
  Result cut_archive = Run({"load-state-dict", "mlp", cut_npz});
  EXPECT_EQ(cut_archive.exit_code, 1);
  EXPECT_THAT(cut_archive.err, HasSubstr("the file is truncated or not a zip"));

  EXPECT_EQ(ModelVersion("mlp"), 2);
}

// Protobuf strings must be UTF-8: a tensor name or spec that is not would reach the daemon
// as an unparseable request after a protobuf error line. paramctl refuses it first, naming
// the file and where in it.
TEST_F(ParamctlTest, TextThatIsNotUtf8IsRefusedNamingTheFileBeforeAnythingIsSent) {
  ASSERT_EQ(Run({"create", "mlp", "--spec", Spec("mlp", kMlpSpec)}).exit_code, 0);
  const std::string npz = dir_ + "/mlp.npz";
  ASSERT_EQ(Run({"state-dict", "mlp", "--out", npz}).exit_code, 0);
  std::string bytes = ReadFile(npz);
  // linear1.weight's member name, in its local header and in the central directory.
  for (size_t at = bytes.find("linear1.weight"); at != std::string::npos;
       at = bytes.find("linear1.weight", at + 1)) {
    bytes[at + 1] = '\xff';
  }
  const std::string bad = dir_ + "/bad.npz";
  std::ofstream(bad, std::ios::binary) << bytes;
  Result loaded = Run({"load-state-dict", "mlp", bad, "--no-strict"});
  EXPECT_EQ(loaded.exit_code, 1);
  // Member 2: kMlpSpec's state_dict holds w1 first.
  EXPECT_THAT(loaded.err, HasSubstr("member 2 of '" + bad +
                                    "' has a name that is not UTF-8 "
                                    "(bytes 6c ff 6e 65 61 72 31"));
  EXPECT_THAT(loaded.err, Not(HasSubstr("libprotobuf")));

  const std::string spec = dir_ + "/binary.json";
  std::ofstream(spec, std::ios::binary) << std::string("\0\xff\xfe{}", 5);
  Result created = Run({"create", "b", "--spec", spec});
  EXPECT_EQ(created.exit_code, 1);
  EXPECT_THAT(created.err,
              HasSubstr("spec file '" + spec + "' is not UTF-8: byte 0xff at offset 1"));
  EXPECT_THAT(created.err, Not(HasSubstr("libprotobuf")));
  Result load = Run({"load", "c", "x.pt", "--spec", spec});
  EXPECT_EQ(load.exit_code, 1);
  EXPECT_THAT(load.err, HasSubstr("is not UTF-8: byte 0xff at offset 1"));

  EXPECT_EQ(ModelVersion("mlp"), 1);
}

// Arguments that travel as protobuf text (names, keys, server paths, flag values) are
// refused before anything is sent when they are not UTF-8; before, protobuf logged an error
// and the daemon answered UNIMPLEMENTED with no message. Local file names are bytes, as the
// file system has them, and work whatever they hold.
TEST_F(ParamctlTest, ArgumentsThatAreNotUtf8AreRefusedButLocalFileNamesAreBytes) {
  ASSERT_EQ(Run({"create", "mlp", "--spec", Spec("mlp", kMlpSpec)}).exit_code, 0);
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"describe", "m\xff"},
                                             {"get", "mlp", "w\xff"},
                                             {"save", "mlp", "p\xff.pt"},
                                             {"state-dict", "mlp", "--prefix", "a\xc3"},
                                             {"download", "x\xfe.pt", dir_ + "/local"}}) {
    Result refused = Run(args);
    EXPECT_EQ(refused.exit_code, 2) << args[0];
    EXPECT_THAT(refused.err, HasSubstr("is not UTF-8 (bytes ")) << args[0];
    EXPECT_THAT(refused.err, Not(HasSubstr("libprotobuf"))) << args[0];
    EXPECT_THAT(refused.err, Not(HasSubstr("UNIMPLEMENTED"))) << args[0];
  }
  EXPECT_THAT(Run({"describe", "m\xff"}).err,
              HasSubstr("argument 1 is not UTF-8 (bytes 6d ff; byte 1 starts no UTF-8 character)"));

  const std::string npz = dir_ + "/mlp\xff.npz";
  Result out = Run({"state-dict", "mlp", "--out", npz});
  ASSERT_EQ(out.exit_code, 0) << out.err;
  Result in = Run({"load-state-dict", "mlp", npz});
  EXPECT_EQ(in.exit_code, 0) << in.err;
  ASSERT_EQ(Run({"save", "mlp", "mlp.pt"}).exit_code, 0);
  Result downloaded = Run({"download", "mlp.pt", dir_ + "/got\xff.pt"});
  EXPECT_EQ(downloaded.exit_code, 0) << downloaded.err;
  Result uploaded = Run({"upload", dir_ + "/got\xff.pt", "again.pt"});
  EXPECT_EQ(uploaded.exit_code, 0) << uploaded.err;
}

// A spec travels in one request. paramctl refuses one too large for the daemon's 4 MiB
// message limit with its size and the limit, and one at its own limit reaches the daemon
// and builds: the limit leaves room for the rest of the request.
TEST_F(ParamctlTest, ASpecPastTheMessageLimitIsRefusedWithItsSizeAndTheLimit) {
  const size_t limit = 4 * 1024 * 1024 - 64 * 1024;
  std::string json = kMlpSpec;
  json.resize(limit, ' ');
  Result fits = Run({"create", "mlp", "--spec", Spec("fits", json)});
  EXPECT_EQ(fits.exit_code, 0) << fits.err;
  json.push_back(' ');
  const std::string over = Spec("over", json);
  Result refused = Run({"create", "big", "--spec", over});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_THAT(refused.err, HasSubstr("spec file '" + over +
                                     "' is 4128769 bytes; a spec may be "
                                     "at most 4128768 bytes"));
  EXPECT_THAT(refused.err, HasSubstr("requests of up to 4194304 bytes"));
  EXPECT_THAT(refused.err, Not(HasSubstr("larger than max")));
  Result load = Run({"load", "big", "x.pt", "--spec", over});
  EXPECT_EQ(load.exit_code, 1);
  EXPECT_THAT(load.err, HasSubstr("is 4128769 bytes; a spec may be at most 4128768 bytes"));
}

mode_t FileType(const std::string& path) {
  struct stat info {};
  return lstat(path.c_str(), &info) == 0 ? (info.st_mode & S_IFMT) : 0;
}

// Reads a FIFO on a thread of its own while a command writes it. The read end is open
// before the command starts (so its open does not wait), and Finish drains what is left
// once the command is done: a command that never wrote the FIFO leaves it empty, and
// cannot hang the test.
class FifoReader {
 public:
  explicit FifoReader(const std::string& path)
      : fd_(open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC)) {
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        Drain();
        usleep(1000);
      }
      Drain();
    });
  }
  ~FifoReader() {
    if (thread_.joinable()) Finish();
  }
  std::string Finish() {
    stop_.store(true);
    thread_.join();
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
    return got_;
  }

 private:
  void Drain() {
    char buffer[65536];
    ssize_t n;
    while (fd_ >= 0 && (n = read(fd_, buffer, sizeof buffer)) > 0) {
      got_.append(buffer, static_cast<size_t>(n));
    }
  }

  int fd_;
  std::atomic<bool> stop_{false};
  std::string got_;
  std::thread thread_;
};

// --out follows a symlink (the link stays, its target gets the file) and writes straight
// into a FIFO, as np.save does; replacing either by a renamed regular file lost the data.
TEST_F(ParamctlTest, OutFollowsSymlinksAndWritesIntoFifos) {
  ASSERT_EQ(Run({"create", "mlp", "--spec", Spec("mlp", kMlpSpec)}).exit_code, 0);
  ASSERT_EQ(Run({"get", "mlp", "linear1.weight", "--out", dir_ + "/plain.npy"}).exit_code, 0);
  ASSERT_EQ(Run({"state-dict", "mlp", "--out", dir_ + "/plain.npz"}).exit_code, 0);
  ASSERT_EQ(Run({"save", "mlp", "mlp.pt"}).exit_code, 0);
  ASSERT_EQ(Run({"download", "mlp.pt", dir_ + "/plain.pt"}).exit_code, 0);
  const std::string npy = ReadFile(dir_ + "/plain.npy");
  const std::string pt = ReadFile(dir_ + "/plain.pt");
  ASSERT_EQ(npy.rfind("\x93NUMPY", 0), 0u);

  ASSERT_EQ(std::system(("mkdir -p " + dir_ + "/real && echo keep >" + dir_ +
                         "/real/target.npy && ln -s real/target.npy " + dir_ +
                         "/link.npy && ln -s real/new.pt " + dir_ + "/dangling.pt")
                            .c_str()),
            0);
  Result linked = Run({"get", "mlp", "linear1.weight", "--out", dir_ + "/link.npy"});
  ASSERT_EQ(linked.exit_code, 0) << linked.err;
  EXPECT_EQ(FileType(dir_ + "/link.npy"), S_IFLNK);
  EXPECT_EQ(ReadFile(dir_ + "/real/target.npy"), npy);
  EXPECT_EQ(FileType(dir_ + "/real/target.npy.part"), 0u);
  Result dangling = Run({"download", "mlp.pt", dir_ + "/dangling.pt"});
  ASSERT_EQ(dangling.exit_code, 0) << dangling.err;
  EXPECT_EQ(FileType(dir_ + "/dangling.pt"), S_IFLNK);
  EXPECT_EQ(ReadFile(dir_ + "/real/new.pt"), pt);

  const std::string fifo = dir_ + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0644), 0);
  for (const std::vector<std::string>& command :
       {std::vector<std::string>{"get", "mlp", "linear1.weight", "--out", fifo},
        std::vector<std::string>{"download", "mlp.pt", fifo},
        std::vector<std::string>{"state-dict", "mlp", "--out", fifo}}) {
    FifoReader reader(fifo);
    Result wrote = Run(command);
    const std::string got = reader.Finish();
    EXPECT_EQ(wrote.exit_code, 0) << command[0] << ": " << wrote.err;
    EXPECT_EQ(FileType(fifo), S_IFIFO) << command[0];
    EXPECT_EQ(FileType(fifo + ".part"), 0u) << command[0];
    if (command[0] == "get") {
      EXPECT_EQ(got, npy);
    }
    if (command[0] == "download") {
      EXPECT_EQ(got, pt);
    }
    if (command[0] == "state-dict") {
      // In order, with data descriptors: a zip archive all the same, read back below.
      ASSERT_GE(got.size(), 22u);
      EXPECT_EQ(got.rfind("PK\x03\x04", 0), 0u);
      std::ofstream(dir_ + "/from_fifo.npz", std::ios::binary) << got;
    }
  }
  Result loaded = Run({"load-state-dict", "mlp", dir_ + "/from_fifo.npz"});
  EXPECT_EQ(loaded.exit_code, 0) << loaded.err;
  EXPECT_THAT(loaded.out, HasSubstr("<All keys matched successfully>"));
}

// A device that refuses bytes (/dev/full's ENOSPC) is an error exit, and the node stays a
// device: it used to be replaced by a regular file and the command reported success.
TEST_F(ParamctlTest, OutToADeviceWritesIntoItAndReportsItsError) {
  ASSERT_EQ(Run({"create", "mlp", "--spec", Spec("mlp", kMlpSpec)}).exit_code, 0);
  ASSERT_EQ(Run({"save", "mlp", "mlp.pt"}).exit_code, 0);
  const std::string full = dir_ + "/full";
  if (mknod(full.c_str(), S_IFCHR | 0666, makedev(1, 7)) != 0) {
    GTEST_SKIP() << "cannot make a copy of /dev/full here (needs CAP_MKNOD)";
  }
  for (const std::vector<std::string>& command :
       {std::vector<std::string>{"get", "mlp", "linear1.weight", "--out", full},
        std::vector<std::string>{"state-dict", "mlp", "--out", full},
        std::vector<std::string>{"download", "mlp.pt", full}}) {
    Result wrote = Run(command);
    EXPECT_EQ(wrote.exit_code, 1) << command[0];
    EXPECT_THAT(wrote.err, HasSubstr("No space left on device")) << command[0];
    EXPECT_EQ(FileType(full), S_IFCHR) << command[0];
    EXPECT_EQ(FileType(full + ".part"), 0u) << command[0];
  }
}

// /dev/stdout is the descriptor, not a name to put a .part beside; the report goes to stderr
// so that it stays out of the data. Tested as /dev/fd/1, which paramctl treats the same: a
// regression run as root would rename a regular file over the machine's /dev/stdout.
TEST_F(ParamctlTest, OutToStdoutWritesTheFileAndReportsOnStderr) {
  ASSERT_EQ(Run({"create", "mlp", "--spec", Spec("mlp", kMlpSpec)}).exit_code, 0);
  ASSERT_EQ(Run({"get", "mlp", "linear1.weight", "--out", dir_ + "/plain.npy"}).exit_code, 0);
  Result piped = Run({"get", "mlp", "linear1.weight", "--out", "/dev/fd/1"});
  ASSERT_EQ(piped.exit_code, 0) << piped.err;
  EXPECT_EQ(piped.out, ReadFile(dir_ + "/plain.npy"));
  EXPECT_THAT(piped.err, HasSubstr("wrote linear1.weight"));
}

// A directory, a name ending in '/' and an empty name are refused before anything is
// fetched (the model need not exist), and leave no .part behind.
TEST_F(ParamctlTest, OutNamingADirectoryOrNothingIsRefusedFirst) {
  ASSERT_EQ(std::system(("mkdir -p " + dir_ + "/adir").c_str()), 0);
  Result dir = Run({"get", "nosuch", "w", "--out", dir_ + "/adir"});
  EXPECT_EQ(dir.exit_code, 1);
  EXPECT_THAT(dir.err, HasSubstr("'" + dir_ + "/adir' is a directory; name a file in it"));
  Result slash = Run({"state-dict", "nosuch", "--out", dir_ + "/adir/"});
  EXPECT_EQ(slash.exit_code, 1);
  EXPECT_THAT(slash.err, HasSubstr("names a directory (it ends with '/')"));
  Result download = Run({"download", "nosuch.pt", dir_ + "/adir"});
  EXPECT_EQ(download.exit_code, 1);
  EXPECT_THAT(download.err, HasSubstr("is a directory"));
  Result empty = Run({"get", "nosuch", "w", "--out", ""});
  EXPECT_EQ(empty.exit_code, 1);
  EXPECT_THAT(empty.err, HasSubstr("the output file name is empty"));
  EXPECT_EQ(FileType(dir_ + "/adir.part"), 0u);
  EXPECT_EQ(FileType(dir_ + "/adir/.part"), 0u);
  EXPECT_EQ(FileType(".part"), 0u);
}

// Ctrl-C or SIGTERM during get or state-dict --out removes the .part (never resumed, it
// used to stay forever), keeps the earlier file, and paramctl still dies by the signal.
TEST_F(ParamctlTest, ASignalDuringOutRemovesThePartFile) {
  constexpr int64_t kNumel = int64_t{64} << 20;  // float32: 256 MiB, long enough to catch
  ASSERT_EQ(Run({"create", "big", "--spec",
                 Spec("big", R"({"type": "Net", "parameters": [{"name": "p", "shape": [)" +
                                 std::to_string(kNumel) + R"(], "init": "zeros"}]})")})
                .exit_code,
            0);
  for (const auto& [signal, command] : std::vector<std::pair<int, std::vector<std::string>>>{
           {SIGINT, {"state-dict", "big", "--out", dir_ + "/big.npz"}},
           {SIGTERM, {"get", "big", "p", "--out", dir_ + "/big.npy"}}}) {
    const std::string out = command.back();
    std::ofstream(out) << "old";
    std::vector<std::string> argv = {BinaryPath("paramctl"), "--server", daemon_->address()};
    argv.insert(argv.end(), command.begin(), command.end());
    std::vector<char*> c_argv;
    for (std::string& arg : argv) c_argv.push_back(arg.data());
    c_argv.push_back(nullptr);
    const pid_t pid = fork();
    if (pid == 0) {  // only async-signal-safe calls until exec
      const int null = open("/dev/null", O_RDWR);
      if (null < 0 || dup2(null, 1) < 0 || dup2(null, 2) < 0) _exit(126);
      execv(c_argv[0], c_argv.data());
      _exit(127);
    }
    ASSERT_GT(pid, 0);
    const std::string part = out + ".part";
    struct stat info {};
    for (int i = 0; i < 20000 && stat(part.c_str(), &info) != 0; ++i) usleep(500);
    ASSERT_EQ(stat(part.c_str(), &info), 0) << command[0] << ": no part appeared";
    kill(pid, signal);
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status)) {
      GTEST_SKIP() << command[0] << " finished before the signal came";
    }
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == signal) << command[0] << ": " << status;
    EXPECT_EQ(FileType(part), 0u) << command[0];
    EXPECT_EQ(ReadFile(out), "old") << command[0];
  }
}

TEST_F(ParamctlTest, BuffersModulesModeAndDevice) {
  ASSERT_EQ(Run({"create", "bn", "--spec", Spec("bn", R"({"type": "Sequential", "children": [
      {"type": "BatchNorm1d", "args": {"num_features": 3}}]})")})
                .exit_code,
            0);
  EXPECT_THAT(Run({"buffers", "bn"}).out, HasSubstr("0.num_batches_tracked"));
  EXPECT_THAT(Run({"modules", "bn"}).out, HasSubstr("BatchNorm1d"));
  ASSERT_EQ(Run({"eval", "bn"}).exit_code, 0);
  EXPECT_THAT(Run({"describe", "bn"}).out, HasSubstr("eval"));
  ASSERT_EQ(Run({"train", "bn"}).exit_code, 0);
  Result cuda = Run({"to", "bn", "cuda"});
  EXPECT_EQ(cuda.exit_code, 1);
  EXPECT_THAT(cuda.err, HasSubstr("FAILED_PRECONDITION"));
  EXPECT_EQ(Run({"register-buffer", "bn", "0", "flag", "--in", dir_ + "/missing.npy"}).exit_code, 1);
}

TEST_F(ParamctlTest, SaveLoadCheckpointsUploadDownloadAndSnapshot) {
  ASSERT_EQ(Run({"create", "mlp", "--spec", Spec("mlp", kMlpSpec)}).exit_code, 0);
  Result saved = Run({"save", "mlp", "runs/mlp.pt"});
  ASSERT_EQ(saved.exit_code, 0) << saved.err;
  EXPECT_THAT(saved.out, HasSubstr("saved mlp version 1 to runs/mlp.pt (torch, "));
  EXPECT_THAT(saved.out, Not(HasSubstr("sha256")));
  Result json = Run({"--json", "save", "mlp", "runs/mlp.bin", "--format", "safetensors",
                     "--sha256"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_EQ(nlohmann::json::parse(json.out)["format"], "safetensors");
  EXPECT_EQ(nlohmann::json::parse(json.out)["sha256"].get<std::string>().size(), 64u);

  Result listed = Run({"--json", "checkpoints"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  auto files = nlohmann::json::parse(listed.out);
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0]["path"], "runs/mlp.bin");
  EXPECT_EQ(files[1]["path"], "runs/mlp.pt");
  EXPECT_EQ(files[1]["format"], "torch");

  Result loaded = Run({"load", "mlp", "runs/mlp.pt"});
  ASSERT_EQ(loaded.exit_code, 0) << loaded.err;
  EXPECT_THAT(loaded.out, HasSubstr("<All keys matched successfully>\nversion 2"));
  Result created = Run({"load", "copy", "runs/mlp.bin"});
  ASSERT_EQ(created.exit_code, 0) << created.err;
  EXPECT_THAT(created.out, HasSubstr("created model copy"));

  ASSERT_EQ(Run({"create", "net", "--spec", Spec("net", kSharedSpec)}).exit_code, 0);
  Result strict = Run({"load", "net", "runs/mlp.pt"});
  EXPECT_EQ(strict.exit_code, 1);
  EXPECT_THAT(strict.err, HasSubstr("Error(s) in loading state_dict for Sequential:"));
  Result loose = Run({"load", "net", "runs/mlp.pt", "--no-strict"});
  ASSERT_EQ(loose.exit_code, 0) << loose.err;
  EXPECT_THAT(loose.out, HasSubstr("_IncompatibleKeys(missing_keys=['0.weight'"));
  Result cuda = Run({"load", "mlp", "runs/mlp.pt", "--map-location", "cpu=cuda:0"});
  EXPECT_EQ(cuda.exit_code, 1);
  EXPECT_THAT(cuda.err, HasSubstr("map_location=torch.device('cpu')"));
  Result bad_map = Run({"load", "mlp", "runs/mlp.pt", "--map-location", "=cpu"});
  EXPECT_EQ(bad_map.exit_code, 2);
  Result outside = Run({"save", "mlp", "../mlp.pt"});
  EXPECT_EQ(outside.exit_code, 1);
  EXPECT_THAT(outside.err, HasSubstr("contains '..'"));

  Result downloaded = Run({"download", "runs/mlp.pt", dir_ + "/mlp.pt"});
  ASSERT_EQ(downloaded.exit_code, 0) << downloaded.err;
  EXPECT_EQ(ReadFile(dir_ + "/mlp.pt"), ReadFile(daemon_->checkpoint_dir() + "/runs/mlp.pt"));
  Result uploaded = Run({"upload", dir_ + "/mlp.pt", "back/mlp.pt"});
  ASSERT_EQ(uploaded.exit_code, 0) << uploaded.err;
  EXPECT_EQ(ReadFile(daemon_->checkpoint_dir() + "/back/mlp.pt"), ReadFile(dir_ + "/mlp.pt"));

  Result snapshot = Run({"snapshot", "mlp"});
  ASSERT_EQ(snapshot.exit_code, 0) << snapshot.err;
  EXPECT_EQ(snapshot.out, "snapshot of mlp at version 2\n");
  EXPECT_EQ(Run({"snapshot", "nobody"}).exit_code, 1);
}

// torch.save(net.state_dict(), 'mlp.params') writes torch's format whatever the name; so
// does paramctl save, unless the name ends in .safetensors. The listing reads formats from
// the files' contents, and a load finds the format the same way.
TEST_F(ParamctlTest, SaveWritesTorchFormatWhateverTheNameAndListingsReadContents) {
  ASSERT_EQ(Run({"create", "mlp", "--spec", Spec("mlp", kMlpSpec)}).exit_code, 0);
  Result saved = Run({"save", "mlp", "mlp.params"});
  ASSERT_EQ(saved.exit_code, 0) << saved.err;
  EXPECT_THAT(saved.out, HasSubstr("saved mlp version 1 to mlp.params (torch, "));
  EXPECT_EQ(ReadFile(daemon_->checkpoint_dir() + "/mlp.params").substr(0, 4), "PK\x03\x04");
  ASSERT_EQ(Run({"save", "mlp", "hf/pytorch_model.bin"}).exit_code, 0);
  ASSERT_EQ(Run({"save", "mlp", "st.safetensors"}).exit_code, 0);
  // A safetensors file under a torch-looking name, and a file of neither format.
  ASSERT_EQ(Run({"save", "mlp", "odd.pt", "--format", "safetensors"}).exit_code, 0);
  std::ofstream(daemon_->checkpoint_dir() + "/notes.txt") << "not a checkpoint";

  Result listed = Run({"--json", "checkpoints"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  std::map<std::string, std::string> formats;
  for (const auto& file : nlohmann::json::parse(listed.out)) {
    formats[file["path"].get<std::string>()] = file["format"].get<std::string>();
  }
  EXPECT_EQ(formats["mlp.params"], "torch");
  EXPECT_EQ(formats["hf/pytorch_model.bin"], "torch");
  EXPECT_EQ(formats["st.safetensors"], "safetensors");
  EXPECT_EQ(formats["odd.pt"], "safetensors");
  EXPECT_EQ(formats["notes.txt"], "");
  Result table = Run({"checkpoints"});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, HasSubstr("mlp.params"));

  Result loaded = Run({"--json", "load", "mlp", "mlp.params"});
  ASSERT_EQ(loaded.exit_code, 0) << loaded.err;
  EXPECT_EQ(nlohmann::json::parse(loaded.out)["format"], "torch");
  Result odd = Run({"--json", "load", "mlp", "odd.pt"});
  ASSERT_EQ(odd.exit_code, 0) << odd.err;
  EXPECT_EQ(nlohmann::json::parse(odd.out)["format"], "safetensors");
  Result copy = Run({"load", "copy", "hf/pytorch_model.bin"});
  ASSERT_EQ(copy.exit_code, 0) << copy.err;
  EXPECT_THAT(copy.out, HasSubstr("created model copy"));
}

TEST_F(ParamctlTest, ForwardPrintsTheOutputLikePyTorchAndTheVersion) {
  constexpr char kForwardMlp[] = R"({"type": "MLP", "children": [
     {"name": "linear1", "type": "Linear", "args": {"in_features": 1, "out_features": 2}},
     {"name": "relu", "type": "ReLU"},
     {"name": "linear2", "type": "Linear", "args": {"in_features": 2, "out_features": 1}}],
   "forward": ["linear1", "relu", "linear2"]})";
  ASSERT_EQ(Run({"create", "mlp", "--spec", Spec("mlp", kForwardMlp)}).exit_code, 0);
  ASSERT_EQ(Run({"set", "mlp", "linear1.weight", "--value", "[[1], [-1]]"}).exit_code, 0);
  ASSERT_EQ(Run({"set", "mlp", "linear1.bias", "--value", "[0.5, 0.25]"}).exit_code, 0);
  ASSERT_EQ(Run({"set", "mlp", "linear2.weight", "--value", "[[2, 3]]"}).exit_code, 0);
  ASSERT_EQ(Run({"set", "mlp", "linear2.bias", "--value", "[-1]"}).exit_code, 0);
  // The inputs as .npy and .npz files, made through paramctl itself.
  ASSERT_EQ(Run({"create", "inputs", "--spec",
                 Spec("inputs", R"({"type": "Inputs", "parameters": [{"name": "input",
                   "shape": [3, 1], "init": {"values": [1, -2, 0]}}]})")})
                .exit_code,
            0);
  const std::string npy = dir_ + "/x.npy", npz = dir_ + "/x.npz";
  ASSERT_EQ(Run({"get", "inputs", "input", "--out", npy}).exit_code, 0);
  ASSERT_EQ(Run({"state-dict", "inputs", "--out", npz}).exit_code, 0);

  Result printed = Run({"forward", "mlp", "--in", npy});
  ASSERT_EQ(printed.exit_code, 0) << printed.err;
  EXPECT_EQ(printed.out,
            "tensor([[2.0000],\n        [5.7500],\n        [0.7500]])\nversion 5\n");
  Result named = Run({"forward", "mlp", "--in", npz});
  ASSERT_EQ(named.exit_code, 0) << named.err;
  EXPECT_EQ(named.out, printed.out);

  Result json = Run({"forward", "mlp", "--in", npy, "--eval", "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  auto answer = nlohmann::json::parse(json.out);
  EXPECT_EQ(answer["version"], 5);
  EXPECT_EQ(answer["updated_version"], 0);
  EXPECT_EQ(answer["mode"], "eval");
  EXPECT_EQ(answer["shape"], nlohmann::json::parse("[3, 1]"));
  EXPECT_EQ(answer["values"], nlohmann::json::parse("[[2.0], [5.75], [0.75]]"));

  const std::string out = dir_ + "/y.npy";
  Result saved = Run({"forward", "mlp", "--in", npy, "--out", out});
  ASSERT_EQ(saved.exit_code, 0) << saved.err;
  EXPECT_THAT(saved.out, HasSubstr("wrote output ([3, 1], float32) to " + out));
  ASSERT_EQ(Run({"register-param", "inputs", "", "y", "--in", out}).exit_code, 0);
  EXPECT_THAT(Run({"get", "inputs", "y"}).out, HasSubstr("[5.7500]"));

  Result shape = Run({"forward", "mlp", "--in", dir_ + "/w.npy"});
  EXPECT_EQ(shape.exit_code, 1);  // no such file
  ASSERT_EQ(Run({"get", "mlp", "linear2.weight", "--out", dir_ + "/w.npy"}).exit_code, 0);
  shape = Run({"forward", "mlp", "--in", dir_ + "/w.npy"});
  EXPECT_EQ(shape.exit_code, 1);
  EXPECT_THAT(shape.err, HasSubstr("module 'linear1' (Linear): mat1 and mat2 shapes cannot be "
                                   "multiplied (1x2 and 1x2)"));
  EXPECT_EQ(Run({"forward", "mlp"}).exit_code, 2);
  EXPECT_EQ(Run({"forward", "mlp", "--in", npy, "--train", "--eval"}).exit_code, 2);
}

// Whitespace-separated fields of each line of a table.
std::vector<std::vector<std::string>> TableRows(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    rows.emplace_back();
    for (std::string field; fields >> field;) rows.back().push_back(field);
  }
  return rows;
}

TEST_F(ParamctlTest, OptimizersAndOptimizerStateShowWhatTorchsStateDictHolds) {
  ASSERT_EQ(Run({"create", "m", "--spec", Spec("linear", kLinear32Spec)}).exit_code, 0);
  ASSERT_EQ(Run({"create", "n", "--spec", Spec("linear", kLinear32Spec)}).exit_code, 0);
  auto training = v1::Training::NewStub(daemon_->channel());
  ASSERT_TRUE(CreateTwoGroupAdam(*training, "adam", "m").ok());
  ASSERT_TRUE(CreateAsynchronousSgd(*training, "sgd", "n", 2).ok());
  ASSERT_TRUE(PushLinearGradients(*training, "adam", 1).ok());
  ASSERT_TRUE(StepOptimizer(*training, "adam").ok());

  Result listed = Run({"optimizers"});
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  // Adam's state: exp_avg, exp_avg_sq and max_exp_avg_sq of 8 float32 elements; the
  // gradients stay after the step, as torch's step leaves p.grad.
  EXPECT_EQ(TableRows(listed.out),
            (std::vector<std::vector<std::string>>{
                {"NAME", "MODEL", "KIND", "MODE", "GROUPS", "PARAMS", "WITH_GRAD", "STEPS",
                 "STATE_BYTES"},
                {"adam", "m", "Adam", "manual", "2", "2", "2", "1", "96"},
                {"sgd", "n", "SGD", "asynchronous(2)", "1", "2", "0", "0", "0"}}));
  Result of_n = Run({"optimizers", "--model", "n"});
  ASSERT_EQ(of_n.exit_code, 0) << of_n.err;
  EXPECT_EQ(TableRows(of_n.out).size(), 2u);
  EXPECT_THAT(of_n.out, Not(HasSubstr("adam")));
  Result json = Run({"optimizers", "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  auto optimizers = nlohmann::json::parse(json.out);
  ASSERT_EQ(optimizers.size(), 2u);
  EXPECT_EQ(optimizers[0]["name"], "adam");
  EXPECT_EQ(optimizers[0]["steps"], 1);
  EXPECT_EQ(optimizers[1]["mode"], "asynchronous");
  EXPECT_EQ(optimizers[1]["max_staleness"], 2);

  // The param groups as torch 2.15 prints `optimizer.state_dict()["param_groups"][i]` for
  // Adam(..., lr=0.01, amsgrad=True) with named parameters (docs/training.md lists the keys).
  Result state = Run({"optimizer-state", "adam"});
  ASSERT_EQ(state.exit_code, 0) << state.err;
  EXPECT_EQ(state.out,
            "Adam optimizer 'adam' on model 'm'\n"
            "param_groups:\n"
            "  0: {'lr': 0.01, 'betas': (0.9, 0.999), 'eps': 1e-08, 'weight_decay': 0, "
            "'amsgrad': True, 'maximize': False, 'foreach': None, 'capturable': False, "
            "'differentiable': False, 'fused': None, 'decoupled_weight_decay': False, "
            "'params': [0], 'param_names': ['weight']}\n"
            "  1: {'lr': 0.1, 'weight_decay': 0.5, 'betas': (0.9, 0.999), 'eps': 1e-08, "
            "'amsgrad': True, 'maximize': False, 'foreach': None, 'capturable': False, "
            "'differentiable': False, 'fused': None, 'decoupled_weight_decay': False, "
            "'params': [1], 'param_names': ['bias']}\n"
            "state:\n"
            "  0 (weight): {'step': tensor(1.), 'exp_avg': float32[2, 3], "
            "'exp_avg_sq': float32[2, 3], 'max_exp_avg_sq': float32[2, 3]}\n"
            "  1 (bias): {'step': tensor(1.), 'exp_avg': float32[2], 'exp_avg_sq': float32[2], "
            "'max_exp_avg_sq': float32[2]}\n");
  Result state_json = Run({"optimizer-state", "adam", "--json"});
  ASSERT_EQ(state_json.exit_code, 0) << state_json.err;
  auto dict = nlohmann::json::parse(state_json.out);
  EXPECT_EQ(dict["state"]["1"]["step"]["value"], 1.0);
  EXPECT_EQ(dict["state"]["0"]["exp_avg"]["shape"], nlohmann::json::parse("[2, 3]"));
  EXPECT_EQ(dict["param_groups"][1]["weight_decay"], 0.5);
  EXPECT_EQ(dict["param_groups"][0]["betas"], nlohmann::json::parse("[0.9, 0.999]"));
  EXPECT_EQ(dict["param_groups"][0]["fused"], nullptr);

  // SGD without momentum keeps no state, as torch's.
  Result sgd = Run({"optimizer-state", "sgd"});
  ASSERT_EQ(sgd.exit_code, 0) << sgd.err;
  EXPECT_THAT(sgd.out, HasSubstr("  0: {'lr': 0.1, 'momentum': 0, 'dampening': 0, "
                                 "'weight_decay': 0, 'nesterov': False, 'maximize': False, "
                                 "'foreach': None, 'differentiable': False, 'fused': None, "
                                 "'params': [0, 1], 'param_names': ['weight', 'bias']}\n"));
  EXPECT_THAT(sgd.out, HasSubstr("\nstate: {}\n"));

  Result missing = Run({"optimizer-state", "nope"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.err, HasSubstr("optimizer 'nope' not found"));
  EXPECT_EQ(Run({"optimizer-state"}).exit_code, 2);
}

}  // namespace
}  // namespace paramd::testing
