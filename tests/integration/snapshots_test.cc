// Snapshots and restarts end to end against the real daemon: a model deleted while a
// snapshot runs, tensor names safetensors reserves, a final snapshot that fails, the
// temporary files of a snapshot killed half-way, and versions that never repeat across a
// SIGKILL (docs/daemon.md, "Shutdown, snapshots and restarts").
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "paramd/client.h"
#include "tests/integration/client_fixture.h"
#include "tests/integration/daemon.h"
#include "tests/integration/specs.h"

namespace paramd::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kSmallSpec[] =
    R"({"type": "Linear", "args": {"in_features": 2, "out_features": 1}})";

// `layers` x Linear(2048, 2048): 16 MiB of float32 each, so that a snapshot takes a while.
std::string BigSpec(int layers) {
  std::string children;
  for (int i = 0; i < layers; ++i) {
    absl::StrAppend(&children, i ? "," : "",
                    R"({"type": "Linear", "args": {"in_features": 2048, "out_features": 2048}})");
  }
  return absl::StrCat(R"({"type": "Sequential", "children": [)", children, "]}");
}

class SnapshotsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto daemon = Daemon::Start({"--snapshot-interval", "0"});
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
    Connect();
  }
  void Connect() {
    auto connected = client::Client::Connect(daemon_->address());
    ASSERT_TRUE(connected.ok()) << connected.status();
    client_ = *std::move(connected);
  }
  void Restart() {
    ASSERT_TRUE(daemon_->Restart({"--snapshot-interval", "0"}).ok());
    Connect();
  }
  std::string ModelsDir() const { return daemon_->data_dir() + "/models"; }
  // Waits (at most 60 s) until a snapshot temporary file of `model` exists.
  bool AwaitTemporaryOf(const std::string& model) {
    const std::string prefix = "." + model + ".safetensors.tmp-";
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      std::error_code error;
      for (const auto& entry : std::filesystem::directory_iterator(ModelsDir(), error)) {
        if (entry.path().filename().string().rfind(prefix, 0) == 0) return true;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return false;
  }
  uint64_t Version(const std::string& model) {
    auto info = client_->DescribeModel(model);
    EXPECT_TRUE(info.ok()) << info.status();
    return info.ok() ? info->version : 0;
  }

  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<client::Client> client_;
};

// Regression: the snapshot's write lock was taken again by the forget that followed the
// deletion (absl aborted the daemon on the self-deadlock).
TEST_F(SnapshotsTest, DeletingAModelWhileASnapshotRunsKeepsTheDaemonUp) {
  ASSERT_TRUE(client_->CreateModel("a", kSmallSpec).ok());
  ASSERT_TRUE(client_->CreateModel("b", BigSpec(4)).ok());
  auto snapshot = std::async(std::launch::async, [&] { return client_->Snapshot({}); });
  const bool caught = AwaitTemporaryOf("b");  // "a" is written, "b" is being written
  auto deleting = std::async(std::launch::async, [&] { return client_->DeleteModel("a"); });
  if (snapshot.wait_for(std::chrono::seconds(60)) != std::future_status::ready ||
      deleting.wait_for(std::chrono::seconds(60)) != std::future_status::ready) {
    ADD_FAILURE() << "Snapshot or DeleteModel hung: the daemon deadlocked";
    daemon_->Kill();
  }
  auto taken = snapshot.get();
  absl::Status deleted = deleting.get();
  ASSERT_TRUE(daemon_->running());
  ASSERT_TRUE(caught) << "the snapshot finished before the delete could overlap it";
  EXPECT_TRUE(deleted.ok()) << deleted;
  EXPECT_TRUE(taken.ok()) << taken.status();
  auto models = client_->ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  EXPECT_EQ(models->size(), 1u);
  EXPECT_FALSE(std::filesystem::exists(ModelsDir() + "/a.safetensors"));
  ASSERT_EQ(daemon_->Stop(), 0);
  Restart();
  EXPECT_FALSE(client_->DescribeModel("a").ok());
  EXPECT_TRUE(client_->DescribeModel("b").ok());
}

// register_buffer('__metadata__', t) is legal in PyTorch; safetensors reserves that key.
TEST_F(SnapshotsTest, ABufferNamedMetadataComesBackAfterARestart) {
  ASSERT_TRUE(client_->CreateModel("m", kSmallSpec).ok());
  ASSERT_TRUE(client_->Model("m").RegisterBuffer("", "__metadata__", Floats({2}, {3, -1})).ok());
  ASSERT_EQ(daemon_->Stop(), 0);
  EXPECT_THAT(daemon_->Log(), HasSubstr("msg=\"snapshot taken\" reason=shutdown models=1"));
  Restart();
  auto buffer = client_->Model("m").GetTensor("__metadata__");
  ASSERT_TRUE(buffer.ok()) << buffer.status();
  EXPECT_EQ(buffer->ToDoubles(), (std::vector<double>{3, -1}));
}

// Note [Stop signals] in server/main/paramd.cc: a SIGTERM that the kernel hands to a thread a
// library started before main (with every signal unblocked) still stops the daemon cleanly,
// with its final snapshot, instead of ending it by the signal's default action.
TEST_F(SnapshotsTest, AStopSignalTakenByAnyThreadStillEndsWithTheFinalSnapshot) {
  ASSERT_TRUE(client_->CreateModel("m", kSmallSpec).ok());
  ASSERT_TRUE(client_->Model("m").SetTensor("bias", Floats({1}, {7})).ok());
  // A thread of the daemon that does not block SIGTERM.
  pid_t open_thread = 0;
  const std::string tasks = "/proc/" + std::to_string(daemon_->pid()) + "/task";
  for (const auto& task : std::filesystem::directory_iterator(tasks)) {
    std::ifstream status(task.path() / "status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("SigBlk:", 0) != 0) continue;
      const uint64_t blocked = std::stoull(line.substr(7), nullptr, 16);
      if ((blocked & (uint64_t{1} << (SIGTERM - 1))) == 0) {
        open_thread = static_cast<pid_t>(std::stol(task.path().filename().string()));
      }
    }
  }
  if (open_thread == 0) GTEST_SKIP() << "every thread of the daemon blocks SIGTERM here";
  ASSERT_EQ(syscall(SYS_tgkill, daemon_->pid(), open_thread, SIGTERM), 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (daemon_->Log().find("msg=\"paramd stopped\"") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline && kill(daemon_->pid(), 0) == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(daemon_->Stop(), 0);
  EXPECT_THAT(daemon_->Log(), HasSubstr("msg=\"snapshot taken\" reason=shutdown models=1"));
  Restart();
  auto bias = client_->Model("m").GetTensor("bias");
  ASSERT_TRUE(bias.ok()) << bias.status();
  EXPECT_EQ(bias->ToDoubles(), (std::vector<double>{7}));
}

TEST_F(SnapshotsTest, AFailedFinalSnapshotIsAnErrorExitNamingTheModel) {
  ASSERT_TRUE(client_->CreateModel("m", kSmallSpec).ok());
  // The snapshot directory replaced by a plain file: every snapshot write fails.
  std::filesystem::rename(ModelsDir(), ModelsDir() + ".away");
  std::ofstream(ModelsDir()) << "in the way";
  EXPECT_EQ(daemon_->Stop(), 1);
  EXPECT_THAT(daemon_->Log(), HasSubstr("level=error msg=\"snapshot failed\" model=m"));
  EXPECT_THAT(daemon_->Log(), HasSubstr("msg=\"final snapshot failed"));
  std::filesystem::remove(ModelsDir());
  std::filesystem::rename(ModelsDir() + ".away", ModelsDir());
}

TEST_F(SnapshotsTest, TheTemporaryFileOfAKilledSnapshotIsRemovedAtStart) {
  ASSERT_TRUE(client_->CreateModel("big", BigSpec(8)).ok());
  std::thread snapshot([&] { (void)client_->Snapshot({}); });
  const bool caught = AwaitTemporaryOf("big");
  if (caught) daemon_->Kill();
  snapshot.join();
  ASSERT_TRUE(caught) << "the snapshot finished before it could be interrupted";
  Restart();
  EXPECT_THAT(daemon_->Log(), HasSubstr("msg=\"removed unfinished snapshot file\""));
  for (const auto& entry : std::filesystem::directory_iterator(ModelsDir())) {
    EXPECT_NE(entry.path().filename().string().front(), '.') << entry.path();
  }
}

TEST_F(SnapshotsTest, VersionsNeverRepeatAfterASigkillAndStayAfterACleanStop) {
  ASSERT_TRUE(client_->CreateModel("m", kSmallSpec).ok());
  ASSERT_TRUE(client_->Snapshot({"m"}).ok());
  uint64_t acknowledged = 0;
  for (int i = 0; i < 5; ++i) {
    auto written = client_->Model("m").SetTensor("bias", Floats({1}, {double(i)}));
    ASSERT_TRUE(written.ok()) << written.status();
    acknowledged = std::max(acknowledged, *written);
  }
  daemon_->Kill();
  Restart();
  EXPECT_THAT(daemon_->Log(), HasSubstr("stop=unclean"));
  const uint64_t restored = Version("m");
  EXPECT_GT(restored, acknowledged);
  auto written = client_->Model("m").SetTensor("bias", Floats({1}, {9}));
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_GT(*written, restored);
  ASSERT_EQ(daemon_->Stop(), 0);
  Restart();
  EXPECT_EQ(Version("m"), *written);
}

}  // namespace
}  // namespace paramd::testing
