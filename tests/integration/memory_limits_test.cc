// The real daemon under memory pressure from hostile clients: a write or Forward stream
// that sends a big tensor's header and then stalls does not keep its reservation past
// --stream-idle-timeout, and one oversized message is refused without the daemon keeping
// (or first buffering) the bytes it was sent.
#include <sys/mman.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "paramd/v1/inference.grpc.pb.h"
#include "tests/integration/daemon.h"
#include "tests/integration/specs.h"
#include "tests/integration/wire.h"

namespace paramd::testing {
namespace {

using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

constexpr int64_t kMiB = int64_t{1} << 20;

// A field of /proc/PID/status in bytes ("VmRSS", "VmHWM"); -1 when it cannot be read.
int64_t ProcStatusBytes(pid_t pid, const std::string& field) {
  std::ifstream file("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(file, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stoll(line.substr(field.size() + 1)) * 1024;
  }
  return -1;
}

v1::WriteFrame RegisterOptions(const std::string& model, const std::string& name) {
  v1::WriteFrame frame = OptionsFrame(model);
  frame.mutable_options()->set_name(name);
  return frame;
}

// Registers buffer `name` of `mib` MiB of float32 zeros on the root of `model`, streaming it
// in 1 MiB chunks built as they go; without `data` only its header, so that it fails (having
// reserved the memory, or not) and changes nothing.
grpc::Status RegisterZeros(v1::Parameters::Stub& stub, const std::string& model,
                           const std::string& name, int64_t mib, bool data = true) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::WriteResponse response;
  auto writer = stub.RegisterBuffer(&context, &response);
  bool open = writer->Write(RegisterOptions(model, name)) &&
              writer->Write(HeaderFrame(name, v1::FLOAT32, {mib * kMiB / 4}));
  const std::string chunk(kMiB, '\0');
  for (int64_t i = 0; open && data && i < mib; ++i) {
    open = writer->Write(ChunkFrame(i * kMiB, chunk));
  }
  if (open) writer->WritesDone();
  return writer->Finish();
}

class MemoryLimitsTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> args) {
    auto daemon = Daemon::Start(std::move(args));
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
    models_ = v1::Models::NewStub(daemon_->channel());
    parameters_ = v1::Parameters::NewStub(daemon_->channel());
  }

  uint64_t Version(const std::string& model) {
    grpc::ClientContext context;
    v1::DescribeModelRequest request;
    request.set_name(model);
    v1::ModelInfo info;
    EXPECT_TRUE(models_->DescribeModel(&context, request, &info).ok());
    return info.version();
  }

  grpc::Status Create(const std::string& name, const std::string& spec) {
    return CreateModel(*models_, name, spec);
  }

  // Another client's 160 MiB registration while a stream stalled since `since` holds its
  // reservation: tried until refused (once the daemon has read the stalled header) or for
  // 800 ms, the last answer returned.
  grpc::Status ProbeWhileStalled(Clock::time_point since) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    grpc::Status refused;
    while (Clock::now() - since < std::chrono::milliseconds(800)) {
      refused = RegisterZeros(*parameters_, "m", "probe", 160, /*data=*/false);
      if (refused.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return refused;
  }

  // Registers 160 MiB as `name`; a few tries cover the moment between a stalled stream's
  // answer and gRPC letting go of it.
  grpc::Status RegisterWhenFree(const std::string& name) {
    grpc::Status written;
    for (int attempt = 0; attempt < 50; ++attempt) {
      written = RegisterZeros(*parameters_, "m", name, 160);
      if (written.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return written;
  }

  grpc::Status ListModels() {
    grpc::ClientContext context;
    v1::ListModelsRequest request;
    v1::ListModelsResponse response;
    return models_->ListModels(&context, request, &response);
  }

  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<v1::Models::Stub> models_;
  std::unique_ptr<v1::Parameters::Stub> parameters_;
};

// Two 160 MiB tensors do not fit in 256 MiB: while a stalled stream holds one, every other
// write of that size is refused, until the idle timeout ends the stalled stream.
TEST_F(MemoryLimitsTest, StalledWriteStreamIsEndedAndFreesItsReservation) {
  Start({"--max-memory", "256M", "--stream-idle-timeout", "1s"});
  ASSERT_TRUE(Create("m", kMlpSpec).ok());
  const uint64_t version = Version("m");

  // Client A: options, the header of a 160 MiB buffer and one chunk of it, then nothing.
  grpc::ClientContext stalled_context;
  stalled_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(8));
  v1::WriteResponse stalled_response;
  auto stalled = parameters_->RegisterBuffer(&stalled_context, &stalled_response);
  ASSERT_TRUE(stalled->Write(RegisterOptions("m", "stalled")));
  ASSERT_TRUE(stalled->Write(HeaderFrame("stalled", v1::FLOAT32, {160 * kMiB / 4})));
  ASSERT_TRUE(stalled->Write(ChunkFrame(0, std::string(kMiB, '\1'))));
  const Clock::time_point stalled_since = Clock::now();

  // Client B is refused while A's reservation stands.
  const grpc::Status refused = ProbeWhileStalled(stalled_since);
  ASSERT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();

  // A's stream is ended by the daemon within the timeout plus the watchdog's tick.
  const grpc::Status ended = stalled->Finish();
  const auto waited = Clock::now() - stalled_since;
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << ended.error_message();
  EXPECT_THAT(ended.error_message(), HasSubstr("--stream-idle-timeout"));
  EXPECT_THAT(ended.error_message(), HasSubstr("nothing was written"));
  EXPECT_LT(waited, std::chrono::seconds(4));

  // Its memory is free again: B's write of the same size goes through.
  const grpc::Status written = RegisterWhenFree("written");
  ASSERT_TRUE(written.ok()) << written.error_message();

  // A changed nothing: B's registration is the only write since the start.
  EXPECT_EQ(Version("m"), version + 1);
  const WireRead state = StateDict(*parameters_, "m", "", /*metadata_only=*/true);
  ASSERT_TRUE(state.status.ok()) << state.status.error_message();
  std::vector<std::string> names;
  for (const WireTensor& tensor : state.tensors) names.push_back(tensor.name);
  EXPECT_THAT(names, ::testing::Contains("written"));
  EXPECT_THAT(names, ::testing::Not(::testing::Contains("stalled")));
  EXPECT_THAT(daemon_->Log(), HasSubstr("--stream-idle-timeout"));
}

// A Forward request stream is ended the same way: one that declares a 160 MiB input and
// then stalls holds that memory and a worker's admission only until the idle timeout.
TEST_F(MemoryLimitsTest, StalledForwardStreamIsEndedAndFreesItsInput) {
  Start({"--max-memory", "256M", "--stream-idle-timeout", "1s"});
  ASSERT_TRUE(Create("m", kMlpSpec).ok());
  const uint64_t version = Version("m");
  auto inference = v1::Inference::NewStub(daemon_->channel());
  grpc::ClientContext stalled_context;
  stalled_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(8));
  auto stalled = inference->Forward(&stalled_context);
  v1::ForwardRequest options;
  options.mutable_options()->set_model("m");
  ASSERT_TRUE(stalled->Write(options));
  v1::ForwardRequest input;
  v1::TensorHeader* header = input.mutable_header();
  header->set_name("input");
  header->mutable_meta()->set_dtype(v1::FLOAT32);
  header->mutable_meta()->add_shape(160 * kMiB / 4);
  header->mutable_meta()->add_shape(1);
  ASSERT_TRUE(stalled->Write(input));
  const Clock::time_point stalled_since = Clock::now();

  const grpc::Status refused = ProbeWhileStalled(stalled_since);
  ASSERT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();

  const grpc::Status ended = stalled->Finish();
  EXPECT_EQ(ended.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << ended.error_message();
  EXPECT_THAT(ended.error_message(), HasSubstr("--stream-idle-timeout"));
  EXPECT_THAT(ended.error_message(), HasSubstr("before the forward ran"));
  EXPECT_LT(Clock::now() - stalled_since, std::chrono::seconds(4));

  const grpc::Status written = RegisterWhenFree("written");
  ASSERT_TRUE(written.ok()) << written.error_message();
  EXPECT_EQ(Version("m"), version + 1);
}

// A tree's structure counts against --max-memory (Note [Structure memory] in
// server/core/expanded_size.h): tensor-free models of 40,000 modules each (about 46 MB of
// modules, slots and names) fit under 64 MiB one at a time, and the daemon's memory stays
// bounded however many are sent.
TEST_F(MemoryLimitsTest, ModuleStructureCountsAgainstTheMemoryLimit) {
  Start({"--max-memory", "64M"});
  std::string spec = R"({"type": "Sequential", "children": [)";
  for (int i = 0; i < 40000; ++i) spec += i > 0 ? R"(, {"type": "ReLU"})" : R"({"type": "ReLU"})";
  spec += "]}";
  ASSERT_TRUE(Create("a", spec).ok());
  for (int i = 0; i < 6; ++i) {
    const grpc::Status refused = Create("b", spec);
    EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
        << refused.error_message();
    EXPECT_THAT(refused.error_message(), HasSubstr("--max-memory"));
  }
  grpc::ClientContext context;
  v1::DescribeModelRequest describe;
  describe.set_name("b");
  v1::ModelInfo info;
  EXPECT_EQ(models_->DescribeModel(&context, describe, &info).error_code(),
            grpc::StatusCode::NOT_FOUND);
  // Before, every one of them was built and kept: about 35 MiB of resident memory each.
  EXPECT_LT(ProcStatusBytes(daemon_->pid(), "VmHWM"), int64_t{400} << 20);

  grpc::ClientContext delete_context;
  v1::DeleteModelRequest remove;
  remove.set_name("a");
  v1::DeleteModelResponse removed;
  ASSERT_TRUE(models_->DeleteModel(&delete_context, remove, &removed).ok());
  EXPECT_TRUE(Create("b", spec).ok());
}

constexpr size_t kMessageBytes = size_t{600} << 20;

void UnmapMessage(void* data) { munmap(data, kMessageBytes); }

// One message far over the receive limit, sent raw: refused with RESOURCE_EXHAUSTED, and
// the daemon's memory neither grows by the message's size nor stays grown.
TEST_F(MemoryLimitsTest, OversizedMessageIsRefusedWithoutKeepingItsBytes) {
  Start({"--max-transport-memory", "128M"});
  // Untouched anonymous memory reads as zeros and costs the client no resident memory.
  void* zeros = mmap(nullptr, kMessageBytes, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(zeros, MAP_FAILED);
  // Warm the daemon's connection first, so the baseline includes it.
  ASSERT_TRUE(ListModels().ok());
  const pid_t pid = daemon_->pid();
  const int64_t rss_before = ProcStatusBytes(pid, "VmRSS");
  ASSERT_GT(rss_before, 0);

  // gRPC owns the mapping from here: the client's transport may still be sending it (the
  // whole message was granted) after the call has ended.
  grpc::Slice slice(zeros, kMessageBytes, &UnmapMessage, zeros);
  const grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(15));
  grpc::GenericStub stub(daemon_->channel());
  grpc::Status status;
  absl::Notification done;
  stub.UnaryCall(&context, "/paramd.v1.Models/CreateModel", grpc::StubOptions(), &request,
                 &response, [&](grpc::Status s) {
                   status = std::move(s);
                   done.Notify();
                 });
  done.WaitForNotification();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();

  // Back within 64 MiB of where it was, within 5 s.
  const Clock::time_point answered = Clock::now();
  int64_t rss_after = ProcStatusBytes(pid, "VmRSS");
  while (rss_after - rss_before > 64 * kMiB && Clock::now() - answered < std::chrono::seconds(5)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    rss_after = ProcStatusBytes(pid, "VmRSS");
  }
  EXPECT_LE(rss_after - rss_before, 64 * kMiB) << "VmRSS " << rss_before << " -> " << rss_after;
  // And it never held the message: the peak stayed within the transport's bound (and a
  // little more for gRPC's own bookkeeping).
  const int64_t peak = ProcStatusBytes(pid, "VmHWM");
  EXPECT_LE(peak - rss_before, (128 + 64) * kMiB)
      << "VmHWM " << peak << ", VmRSS before " << rss_before;

  // The daemon still serves.
  EXPECT_TRUE(ListModels().ok());
}

}  // namespace
}  // namespace paramd::testing
