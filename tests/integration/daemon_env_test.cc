// The daemon's settings from the environment (PARAMD_* variables, as containers and
// Kubernetes ConfigMaps set them) and --max-memory's default under a cgroup memory limit
// (server/main/flags.h, cgroup.h), read back from the start log line.
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/integration/daemon.h"

namespace paramd::testing {
namespace {

using ::testing::HasSubstr;

class DaemonEnvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/paramd-env-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    for (const char* name : {"PARAMD_MAX_MEMORY", "PARAMD_LISTN", "PARAMD_WORKERS",
                             "PARAMD_ALLOW_INSECURE", "PARAMD_CGROUP_ROOT", "PARAMD_TOKEN",
                             "PARAMD_SERVICE_HOST", "PARAMD_PORT_50051_TCP_ADDR"}) {
      unsetenv(name);
    }
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  // A fake cgroup tree under the test's directory with `file` holding `text`.
  std::string FakeCgroup(const std::string& file, const std::string& text) {
    const std::filesystem::path path = std::filesystem::path(dir_) / "cgroup" / file;
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path) << text;
    return dir_ + "/cgroup";
  }
  std::string dir_;
};

TEST_F(DaemonEnvTest, VariablesSetFlagsAndTheCommandLineWins) {
  setenv("PARAMD_MAX_MEMORY", "64M", 1);
  setenv("PARAMD_WORKERS", "3", 1);
  setenv("PARAMD_TOKEN", "a-client-setting", 1);  // paramctl's; the daemon ignores it
  // What Kubernetes sets for a Service named "paramd": ignored too.
  setenv("PARAMD_SERVICE_HOST", "10.0.0.7", 1);
  setenv("PARAMD_PORT_50051_TCP_ADDR", "10.0.0.7", 1);
  auto daemon = Daemon::Start();
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  EXPECT_THAT((*daemon)->Log(), HasSubstr("max_memory=67108864 max_memory_from=flag workers=3"));
  EXPECT_EQ((*daemon)->Stop(), 0);

  auto flagged = Daemon::Start({"--max-memory", "32M"});
  ASSERT_TRUE(flagged.ok()) << flagged.status();
  EXPECT_THAT((*flagged)->Log(), HasSubstr("max_memory=33554432 max_memory_from=flag workers=3"));
}

TEST_F(DaemonEnvTest, UnknownVariableStopsTheStartNamingIt) {
  setenv("PARAMD_LISTN", "0.0.0.0:50051", 1);
  auto daemon = Daemon::Start();
  ASSERT_FALSE(daemon.ok());
  EXPECT_THAT(daemon.status().message(), HasSubstr("unknown environment variable PARAMD_LISTN"));
  unsetenv("PARAMD_LISTN");

  setenv("PARAMD_ALLOW_INSECURE", "perhaps", 1);
  daemon = Daemon::Start();
  ASSERT_FALSE(daemon.ok());
  EXPECT_THAT(daemon.status().message(), HasSubstr("PARAMD_ALLOW_INSECURE='perhaps'"));
}

TEST_F(DaemonEnvTest, MaxMemoryDefaultsToTheCgroupLimitLessTheRestOfTheProcess) {
  // cgroup v2: memory.max of 4 GiB less a fifth of it (more than 256M of gRPC's buffers
  // and 256M for the rest).
  auto daemon = Daemon::Start({"--cgroup-root", FakeCgroup("memory.max", "4294967296\n")});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  EXPECT_THAT((*daemon)->Log(), HasSubstr("max_memory=3435973837 max_memory_from=cgroup"));
  EXPECT_EQ((*daemon)->Stop(), 0);

  // 1 GiB: less 256M of buffers and 256M for the rest.
  daemon = Daemon::Start({"--cgroup-root", FakeCgroup("memory.max", "1073741824\n")});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  EXPECT_THAT((*daemon)->Log(), HasSubstr("max_memory=536870912 max_memory_from=cgroup"));
  EXPECT_EQ((*daemon)->Stop(), 0);

  // "max": no limit, so physical memory decides.
  daemon = Daemon::Start({"--cgroup-root", FakeCgroup("memory.max", "max\n")});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  EXPECT_THAT((*daemon)->Log(), HasSubstr("max_memory_from=\"physical memory\""));
  EXPECT_EQ((*daemon)->Stop(), 0);

  // cgroup v1, set through the environment: memory.limit_in_bytes of 512 MiB; with 64M of
  // buffers that leaves 192M, and at least half of it goes to tensors.
  std::filesystem::remove_all(dir_ + "/cgroup");
  setenv("PARAMD_CGROUP_ROOT", FakeCgroup("memory/memory.limit_in_bytes", "536870912\n").c_str(),
         1);
  daemon = Daemon::Start({"--max-transport-memory", "64M"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  EXPECT_THAT((*daemon)->Log(), HasSubstr("max_memory=268435456 max_memory_from=cgroup"));
  EXPECT_EQ((*daemon)->Stop(), 0);

  // An explicit --max-memory beats the cgroup.
  daemon = Daemon::Start({"--max-memory", "1G"});
  ASSERT_TRUE(daemon.ok()) << daemon.status();
  EXPECT_THAT((*daemon)->Log(), HasSubstr("max_memory=1073741824 max_memory_from=flag"));
}

}  // namespace
}  // namespace paramd::testing
