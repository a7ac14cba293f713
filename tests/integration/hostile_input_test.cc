// The real daemon fed hostile names and odd writes: a newline in a model name forges no log
// line, a megabyte name neither floods the log nor breaks the client's answer, and writes
// that carry nothing (an empty batch) or too much (a region on a registration) change
// nothing; failures found after a write stream was read are logged with the model it named.
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "paramd/v1/checkpoints.grpc.pb.h"
#include "tests/integration/daemon.h"
#include "tests/integration/stub_fixture.h"
#include "tests/integration/specs.h"
#include "tests/integration/wire.h"

namespace paramd::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

constexpr char kForged[] =
    "m\n2026-12-06T00:00:00.000Z level=error msg=\"paramd stopped\" FORGED=1";

class HostileInputTest : public DaemonStubsTest {
 protected:

  grpc::Status Create(const std::string& name, const std::string& spec) {
    return CreateModel(*models_, name, spec);
  }

  grpc::Status Save(const std::string& model, const std::string& path) {
    grpc::ClientContext context;
    v1::SaveRequest request;
    request.set_model(model);
    request.set_path(path);
    v1::SaveResponse response;
    return checkpoints_->Save(&context, request, &response);
  }

  uint64_t Version(const std::string& model) {
    grpc::ClientContext context;
    v1::DescribeModelRequest request;
    request.set_name(model);
    v1::ModelInfo info;
    EXPECT_TRUE(models_->DescribeModel(&context, request, &info).ok());
    return info.version();
  }

  grpc::Status Register(const std::vector<v1::WriteFrame>& frames, v1::WriteResponse* response) {
    return SendFrames([&](grpc::ClientContext* c,
                          v1::WriteResponse* r) { return parameters_->RegisterParameter(c, r); },
                      frames, response);
  }
};

TEST_F(HostileInputTest, NewlinesInNamesForgeNoLogLineAndHugeNamesStaySmall) {
  ASSERT_TRUE(Create("mlp", kMlpSpec).ok());
  const size_t log_before = daemon_->Log().size();

  const grpc::Status forged_create = Create(kForged, kMlpSpec);
  EXPECT_EQ(forged_create.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  const grpc::Status forged_save = Save(kForged, "x.pt");
  EXPECT_EQ(forged_save.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(forged_save.error_message(), HasSubstr("model 'm\\n2026-12-06T00:00:00.000Z"));

  // Ten saves naming a 1 MiB model: each answer is readable (not "Stream removed") and the
  // log grows by a few KiB, not by ten megabytes.
  const std::string huge(1 << 20, 'n');
  for (int i = 0; i < 10; ++i) {
    const grpc::Status saved = Save(huge, "x.pt");
    ASSERT_EQ(saved.error_code(), grpc::StatusCode::NOT_FOUND) << saved.error_message();
    EXPECT_THAT(saved.error_message(), HasSubstr("(1048576 bytes)"));
    EXPECT_THAT(saved.error_message(), HasSubstr("not found; ListModels shows the loaded models"));
    EXPECT_LT(saved.error_message().size(), 1024u);
  }
  // A 1 MiB model name at creation, a 10 KiB tensor name and checkpoint path: all answered
  // with a short message the client can read.
  const grpc::Status created = Create(huge, kMlpSpec);
  EXPECT_EQ(created.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(created.error_message(), HasSubstr("invalid model name"));
  v1::WriteResponse write;
  const grpc::Status set = SetTensors(
      *parameters_, {OptionsFrame("mlp"), HeaderFrame(std::string(10 << 10, 't'), v1::FLOAT32, {1}),
                     ChunkFrame(0, FloatBytes({1}))},
      &write);
  EXPECT_EQ(set.error_code(), grpc::StatusCode::NOT_FOUND) << set.error_message();
  EXPECT_LT(set.error_message().size(), 1024u);
  const grpc::Status path = Save("mlp", std::string(10 << 10, 'p') + "/x.pt");
  EXPECT_NE(path.error_code(), grpc::StatusCode::UNAVAILABLE) << path.error_message();
  EXPECT_NE(path.error_code(), grpc::StatusCode::OK);
  EXPECT_LT(path.error_message().size(), 2048u);

  const std::string log = daemon_->Log();
  EXPECT_LT(log.size() - log_before, 64u << 10);
  for (absl::string_view line : absl::StrSplit(log, '\n', absl::SkipEmpty())) {
    EXPECT_THAT(std::string(line), Not(StartsWith("2026-12-06T00:00:00.000Z"))) << "forged";
    // Each line's own level (after its timestamp) is the daemon's, never a forged error.
    const absl::string_view fields = line.substr(line.find(' ') + 1);
    EXPECT_THAT(std::string(fields), Not(StartsWith("level=error"))) << line.substr(0, 200);
  }
  EXPECT_THAT(log, HasSubstr("msg=\"save checkpoint\" model=\"m\\n2026-12-06T00:00:00.000Z "
                             "level=error msg=\\\"paramd stopped\\\" FORGED=1\" status=NOT_FOUND"));
  EXPECT_THAT(log, HasSubstr("...(1048576 bytes)"));
}

// An empty SetTensors writes nothing: no new version, and the answer is the current one.
TEST_F(HostileInputTest, EmptySetTensorsChangesNothingAndAnswersTheCurrentVersion) {
  ASSERT_TRUE(Create("mlp", kMlpSpec).ok());
  const uint64_t before = Version("mlp");
  v1::WriteResponse response;
  const grpc::Status status = SetTensors(*parameters_, {OptionsFrame("mlp")}, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.version(), before);
  EXPECT_EQ(Version("mlp"), before);
  // As any write, a stale if_version is ABORTED.
  const grpc::Status stale = SetTensors(*parameters_, {OptionsFrame("mlp", before + 5)}, &response);
  EXPECT_EQ(stale.error_code(), grpc::StatusCode::ABORTED) << stale.error_message();
  EXPECT_EQ(Version("mlp"), before);
}

// A registration takes a whole tensor; a region in its header is refused, not ignored.
TEST_F(HostileInputTest, RegisterParameterWithARegionIsRefusedAndChangesNothing) {
  ASSERT_TRUE(Create("mlp", kMlpSpec).ok());
  const uint64_t before = Version("mlp");
  v1::WriteFrame options = OptionsFrame("mlp");
  options.mutable_options()->set_name("extra");
  std::vector<v1::WriteFrame> frames = FloatTensorFrames("extra", {2}, {1, 2});
  v1::Range* range = frames[0].mutable_header()->mutable_region()->add_ranges();
  range->set_start(0);
  range->set_stop(1);
  frames.insert(frames.begin(), options);
  v1::WriteResponse response;
  const grpc::Status status = Register(frames, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("region"));
  EXPECT_EQ(Version("mlp"), before);
  EXPECT_EQ(GetTensor(*parameters_, "mlp", "extra").status.error_code(),
            grpc::StatusCode::NOT_FOUND);
  // Without the region the same registration goes through.
  frames[1].mutable_header()->clear_region();
  ASSERT_TRUE(Register(frames, &response).ok());
  EXPECT_EQ(response.version(), before + 1);
}

// A failure found once the stream was read (an unknown key) names the stream's model.
TEST_F(HostileInputTest, FailuresAfterTheStreamWasReadAreLoggedWithItsModel) {
  ASSERT_TRUE(Create("mlp", kMlpSpec).ok());
  v1::WriteResponse response;
  const grpc::Status status = SetTensors(
      *parameters_, [] {
        std::vector<v1::WriteFrame> frames = {OptionsFrame("mlp")};
        for (auto& f : FloatTensorFrames("linear9.weight", {1}, {1})) frames.push_back(f);
        return frames;
      }(),
      &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  const std::string log = daemon_->Log();
  EXPECT_THAT(log, HasSubstr("msg=\"set tensors\" model=mlp status=NOT_FOUND"));
  EXPECT_THAT(log, Not(HasSubstr("msg=\"set tensors\" model=\"\"")));
}

}  // namespace
}  // namespace paramd::testing
