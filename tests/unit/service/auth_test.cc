// The token file's format and the role table's lookups (auth.h); calls against the real
// daemon are in tests/integration/auth_test.cc.
#include "server/service/auth.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace paramd::service {
namespace {

using ::testing::HasSubstr;

const std::string kHash(64, 'a');

TEST(TokenFile, ParsesCommentsBlankLinesAndSpacing) {
  auto tokens = ParseTokenFile("# comment\n\n  alice   admin\tsha256:" + kHash +
                                   "  \n# another\nbob read sha256:" + std::string(64, 'B') + "\n",
                               "tokens");
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  ASSERT_EQ(tokens->size(), 2u);
  EXPECT_EQ((*tokens)[0].name, "alice");
  EXPECT_EQ((*tokens)[0].role, Role::kAdmin);
  EXPECT_EQ((*tokens)[1].role, Role::kRead);
  EXPECT_EQ((*tokens)[1].sha256_hex, std::string(64, 'b'));  // stored lowercase
  EXPECT_TRUE(ParseTokenFile("", "tokens")->empty());
}

TEST(TokenFile, MalformedLinesAreNamed) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"alice admin\n", "line 1: expected 3 fields, found 2"},
      {"# c\nalice root sha256:" + kHash, "line 2: unknown role 'root'"},
      {"alice read md5:" + kHash, "line 1: the hash is not sha256: and 64 hex digits"},
      {"alice read sha256:" + std::string(63, 'a'), "line 1: the hash"},
      {"alice read sha256:" + std::string(64, 'g'), "line 1: the hash"},
      {"alice read sha256:" + kHash + "\nalice admin sha256:" + kHash,
       "line 2: token name 'alice' is used twice, first on line 1"},
      {"alice read sha256:" + kHash + "\n# c\nbob admin sha256:" + std::string(64, 'A'),
       "line 3: token 'bob' has the same hash as token 'alice' on line 1"},
  };
  for (const auto& [text, message] : cases) {
    auto tokens = ParseTokenFile(text, "/etc/tokens");
    ASSERT_FALSE(tokens.ok()) << text;
    EXPECT_EQ(tokens.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(tokens.status().message(), HasSubstr("token file '/etc/tokens' " + message));
  }
}

TEST(TokenFile, HashIsSha256OfTheToken) {
  // printf %s abc | sha256sum
  EXPECT_EQ(HashToken("abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(RoleTable, RolesAreOrderedAndUnknownMethodsHaveNone) {
  EXPECT_LT(Role::kOpen, Role::kRead);
  EXPECT_LT(Role::kRead, Role::kWrite);
  EXPECT_LT(Role::kWrite, Role::kAdmin);
  EXPECT_EQ(RequiredRole("/paramd.v1.Models/CreateModel"), Role::kAdmin);
  EXPECT_EQ(RequiredRole("/paramd.v1.Parameters/SetTensor"), Role::kWrite);
  EXPECT_EQ(RequiredRole("/paramd.v1.Inference/Forward"), Role::kRead);
  EXPECT_EQ(RequiredRole("/grpc.health.v1.Health/Check"), Role::kOpen);
  EXPECT_EQ(RequiredRole("/paramd.v1.Models/Nope"), std::nullopt);
  EXPECT_EQ(RequiredRole("/paramd.v1.Models/CreateModelX"), std::nullopt);
}

TEST(Authenticator, ReloadKeepsTheOldTokensWhenTheNewFileIsMalformed) {
  const std::string path =
      (std::filesystem::temp_directory_path() / ("paramd-auth-unit-" + std::to_string(getpid())))
          .string();
  std::ofstream(path) << "alice read " << HashToken("t1") << "\n";
  auto auth = Authenticator::Open(path);
  ASSERT_TRUE(auth.ok()) << auth.status();
  EXPECT_EQ((*auth)->size(), 1u);
  EXPECT_FALSE((*auth)->Reload(/*force=*/false));  // unchanged
  std::ofstream(path) << "alice read " << HashToken("t1") << "\nbroken\n";
  EXPECT_FALSE((*auth)->Reload(/*force=*/true));
  EXPECT_EQ((*auth)->size(), 1u);
  std::ofstream(path) << "alice read " << HashToken("t1") << "\nbob admin " << HashToken("t2")
                      << "\n";
  EXPECT_TRUE((*auth)->Reload(/*force=*/true));
  EXPECT_EQ((*auth)->size(), 2u);
  std::filesystem::remove(path);
  EXPECT_FALSE(Authenticator::Open(path).ok());
}

TEST(Authenticator, DirectoryAndEmptyFilesAreRefusedAtOpenAndOnReload) {
  const std::string dir =
      (std::filesystem::temp_directory_path() / ("paramd-auth-dir-" + std::to_string(getpid())))
          .string();
  std::filesystem::create_directory(dir);
  auto opened = Authenticator::Open(dir);
  ASSERT_FALSE(opened.ok());
  EXPECT_THAT(opened.status().message(), HasSubstr("Is a directory"));
  const std::string path = dir + "/tokens";
  std::ofstream(path) << "# no tokens\n";
  opened = Authenticator::Open(path);
  ASSERT_FALSE(opened.ok());
  EXPECT_THAT(opened.status().message(), HasSubstr("lists no tokens"));
  std::ofstream(path) << "alice read " << HashToken("t1") << "\n";
  auto auth = Authenticator::Open(path);
  ASSERT_TRUE(auth.ok()) << auth.status();
  std::ofstream(path, std::ios::trunc).flush();  // as a rewrite in place looks half way
  EXPECT_FALSE((*auth)->Reload(/*force=*/true));
  EXPECT_EQ((*auth)->size(), 1u);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace paramd::service
