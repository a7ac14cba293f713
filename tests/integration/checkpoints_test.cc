// The Checkpoints service end to end through the C++ client against the real daemon:
// save and load in both formats (pytorch-semantics.md §4, §5, §7, §9), creating models
// from files, map_location, confinement to the checkpoint directory, uploads and downloads
// that resume, snapshots and restarts, and a SIGKILL in the middle of a large save.
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "paramd/client.h"
#include "paramd/v1/checkpoints.grpc.pb.h"
#include "tests/integration/client_fixture.h"
#include "tests/integration/daemon.h"
#include "tests/integration/specs.h"

namespace paramd::testing {
namespace {

using client::DType;
using client::HostTensor;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteAll(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// Formats the daemon saves and loads, as the suffix names them.
class CheckpointsTest : public ::testing::TestWithParam<const char*> {
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
  std::string File(const std::string& stem) const { return stem + GetParam(); }
  std::map<std::string, std::vector<double>> Values(const std::string& model) {
    std::map<std::string, std::vector<double>> out;
    auto state = client_->Model(model).StateDict();
    EXPECT_TRUE(state.ok()) << state.status();
    if (state.ok()) {
      for (const auto& entry : state->entries) out[entry.name] = entry.tensor.ToDoubles();
    }
    return out;
  }

  // The other names of the same tensor object, as state_dict reports them.
  std::vector<std::string> TiedWith(const std::string& model, const std::string& key) {
    client::StateDictOptions options;
    options.metadata_only = true;
    auto state = client_->Model(model).StateDict(options);
    EXPECT_TRUE(state.ok()) << state.status();
    if (state.ok()) {
      for (const auto& entry : state->entries) {
        if (entry.name == key) return entry.tensor.tied_with;
      }
    }
    return {"<" + key + " not found>"};
  }

  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<client::Client> client_;
};

TEST_P(CheckpointsTest, SaveThenLoadRestoresEveryValue_PytorchSemantics4) {
  ASSERT_TRUE(client_->CreateModel("mlp", kMlpSpec).ok());
  auto mlp = client_->Model("mlp");
  ASSERT_TRUE(mlp.SetTensor("linear1.weight", Floats({2, 1}, {0.25, -4})).ok());
  const auto saved_values = Values("mlp");

  auto saved = client_->SaveCheckpoint("mlp", "runs/" + File("mlp"), {.sha256 = true});
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->version, 2u);
  EXPECT_EQ(saved->path, "runs/" + File("mlp"));
  const std::string on_disk = ReadAll(daemon_->checkpoint_dir() + "/runs/" + File("mlp"));
  EXPECT_EQ(saved->size, on_disk.size());
  EXPECT_EQ(saved->sha256.size(), 64u);
  // The digest a download checks what it received against.
  auto fetched = client_->Download("runs/" + File("mlp"), daemon_->data_dir() + "/fetched");
  ASSERT_TRUE(fetched.ok()) << fetched.status();
  EXPECT_EQ(fetched->sha256, saved->sha256);
  auto plain = client_->SaveCheckpoint("mlp", "runs/plain-" + File("mlp"));
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(plain->size, ReadAll(daemon_->checkpoint_dir() + "/runs/plain-" + File("mlp")).size());
  EXPECT_EQ(plain->sha256, "");  // not asked for

  ASSERT_TRUE(mlp.SetTensor("w2", Floats({1}, {-1})).ok());
  ASSERT_TRUE(mlp.SetTensor("linear2.bias", Floats({1}, {9})).ok());
  auto loaded = client_->LoadCheckpoint("mlp", "runs/" + File("mlp"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE(loaded->created);
  EXPECT_THAT(loaded->missing_keys, IsEmpty());
  EXPECT_THAT(loaded->unexpected_keys, IsEmpty());
  EXPECT_EQ(loaded->version, 5u);
  EXPECT_EQ(Values("mlp"), saved_values);

  auto files = client_->ListCheckpoints();
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_EQ(files->size(), 2u);  // and runs/plain-...
  EXPECT_EQ((*files)[0].path, "runs/" + File("mlp"));
  EXPECT_EQ((*files)[0].size, on_disk.size());
}

// Note [Loaded tensors own their memory]: a checkpoint rewritten in place after it was
// loaded (`cp new.pt net.pt` truncates it first) must not take the daemon down when the
// loaded models are next touched; it did, by SIGBUS, while models kept the file's mapping.
TEST_P(CheckpointsTest, AFileRewrittenInPlaceAfterItsLoadLeavesTheModelsWhole) {
  ASSERT_TRUE(client_->CreateModel("mlp", kMlpSpec).ok());
  ASSERT_TRUE(client_->Model("mlp").SetTensor("linear1.weight", Floats({2, 1}, {0.25, -4})).ok());
  ASSERT_TRUE(client_->SaveCheckpoint("mlp", File("src")).ok());
  ASSERT_TRUE(client_->LoadCheckpoint("copy", File("src")).ok());   // created from the file
  ASSERT_TRUE(client_->CreateModel("into", kMlpSpec).ok());
  ASSERT_TRUE(client_->LoadCheckpoint("into", File("src")).ok());   // loaded into a model
  const auto expected = Values("mlp");

  std::ofstream(daemon_->checkpoint_dir() + "/" + File("src"), std::ios::trunc) << "x";

  for (const std::string model : {"copy", "into"}) {
    EXPECT_EQ(Values(model), expected) << model;
    auto saved = client_->SaveCheckpoint(model, model + "-again" + GetParam());
    EXPECT_TRUE(saved.ok()) << model << ": " << saved.status();
    auto region = client_->Model(model).GetTensor("linear1.weight", client::Region{{1, 2}});
    ASSERT_TRUE(region.ok()) << model << ": " << region.status();
  }
  EXPECT_TRUE(client_->ListModels().ok());
  EXPECT_EQ(daemon_->Stop(), 0);
}

TEST_P(CheckpointsTest, LoadCreatesTheModelFromTheSpecTheFileCarries_PytorchSemantics9) {
  ASSERT_TRUE(client_->CreateModel("lm", kTiedEmbeddingSpec, "cpu", 3).ok());
  ASSERT_TRUE(client_->SaveCheckpoint("lm", File("lm")).ok());
  auto loaded = client_->LoadCheckpoint("copy", File("lm"));
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->created);
  EXPECT_EQ(Values("copy"), Values("lm"));
  auto info = client_->DescribeModel("copy");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->repr, client_->DescribeModel("lm")->repr);
  // Still tied: a write through one name is read through the other.
  auto copy = client_->Model("copy");
  ASSERT_TRUE(copy.SetTensor("embed.weight", Floats({1, 1}, {100}), client::Region{{0, 1}, {0, 1}})
                  .ok());
  auto head = copy.GetTensor("lm_head.weight");
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->ToDoubles()[0], 100);
  EXPECT_THAT(TiedWith("copy", "lm_head.weight"), ElementsAre("embed.weight"));
}

TEST_P(CheckpointsTest, SharedModulesSaveOnceAndComeBackShared_PytorchSemantics9) {
  ASSERT_TRUE(client_->CreateModel("net", kSharedSpec).ok());
  ASSERT_TRUE(client_->SaveCheckpoint("net", File("net")).ok());
  ASSERT_TRUE(client_->LoadCheckpoint("net2", File("net")).ok());
  EXPECT_EQ(Values("net2"), Values("net"));
  auto modules = client_->Model("net2").NamedModules();
  ASSERT_TRUE(modules.ok());
  ASSERT_GE(modules->modules.size(), 4u);
  EXPECT_THAT(modules->modules[3].shared_with, ElementsAre("4"));
}

TEST_P(CheckpointsTest, StrictLoadRefusesMismatchesWithPytorchsTextAndChangesNothing_PytorchSemantics4) {
  ASSERT_TRUE(client_->CreateModel("mlp", kMlpSpec).ok());
  ASSERT_TRUE(client_->CreateModel("net", kSharedSpec).ok());
  ASSERT_TRUE(client_->SaveCheckpoint("net", File("net")).ok());
  const auto before = Values("mlp");
  auto refused = client_->LoadCheckpoint("mlp", File("net"));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("Error(s) in loading state_dict for MLP:\n\tMissing key(s) in state_dict: "
                        "\"w2\", \"linear1.weight\""));
  EXPECT_EQ(Values("mlp"), before);
  EXPECT_EQ(client_->DescribeModel("mlp")->version, 1u);

  // The same keys with the wrong shapes: size mismatch even when not strict.
  ASSERT_TRUE(client_->CreateModel("other", R"({"type": "MLP", "parameters": [
      {"name": "w2", "shape": [1]}, {"name": "extra", "shape": [3]}], "children": [
      {"name": "linear1", "type": "Linear", "args": {"in_features": 1, "out_features": 2}}]})")
                  .ok());
  ASSERT_TRUE(client_->SaveCheckpoint("other", File("other")).ok());
  client::LoadCheckpointOptions loose;
  loose.strict = false;
  auto partial = client_->LoadCheckpoint("mlp", File("other"), loose);
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_THAT(partial->missing_keys, ElementsAre("linear2.weight", "linear2.bias"));
  EXPECT_THAT(partial->unexpected_keys, ElementsAre("extra"));
}

TEST_P(CheckpointsTest, ABareStateDictNeedsASpecToCreateAModel) {
  ASSERT_TRUE(client_->CreateModel("mlp", kMlpSpec).ok());
  ASSERT_TRUE(client_->SaveCheckpoint("mlp", File("mlp")).ok());
  client::LoadCheckpointOptions with_spec;
  with_spec.spec_json = kMlpSpec;
  // A spec is only for creating: refused for a model that exists.
  EXPECT_EQ(client_->LoadCheckpoint("mlp", File("mlp"), with_spec).status().code(),
            absl::StatusCode::kAlreadyExists);
  auto created = client_->LoadCheckpoint("fresh", File("mlp"), with_spec);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(created->created);
  EXPECT_EQ(Values("fresh"), Values("mlp"));
}

TEST_P(CheckpointsTest, MapLocationToCudaWithoutAGpuGivesPytorchsGuidance_PytorchSemantics5) {
  ASSERT_TRUE(client_->CreateModel("mlp", kMlpSpec).ok());
  ASSERT_TRUE(client_->SaveCheckpoint("mlp", File("mlp")).ok());
  client::LoadCheckpointOptions to_cuda;
  to_cuda.map_location = "cuda:0";
  auto refused = client_->LoadCheckpoint("mlp", File("mlp"), to_cuda);
  if (refused.ok()) GTEST_SKIP() << "this machine has a GPU";
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("please use torch.load with map_location=torch.device('cpu')"));
  client::LoadCheckpointOptions mapped;
  mapped.location_map = {{"cuda:1", "cuda:0"}};  // saved on the CPU: unmapped, kept
  EXPECT_TRUE(client_->LoadCheckpoint("mlp", File("mlp"), mapped).ok());
  mapped.location_map = {{"cpu", "cuda"}};
  EXPECT_EQ(client_->LoadCheckpoint("mlp", File("mlp"), mapped).status().code(),
            absl::StatusCode::kFailedPrecondition);
  client::LoadCheckpointOptions bad;
  bad.map_location = "gpu";
  EXPECT_EQ(client_->LoadCheckpoint("mlp", File("mlp"), bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Formats, CheckpointsTest, ::testing::Values(".safetensors", ".pt"),
                         [](const auto& info) {
                           return std::string(info.param[1] == 's' ? "Safetensors" : "Torch");
                         });

class CheckpointDirTest : public CheckpointsTest {};

TEST_F(CheckpointDirTest, PathsStayInsideTheCheckpointDirectory) {
  ASSERT_TRUE(client_->CreateModel("mlp", kMlpSpec).ok());
  const std::string outside = daemon_->data_dir() + "/outside";
  std::filesystem::create_directories(outside);
  std::filesystem::create_directory_symlink(outside,
                                            daemon_->checkpoint_dir() + "/escape");
  struct Case {
    std::string path;
    absl::StatusCode code;
  };
  for (const Case& c : std::vector<Case>{
           {"/tmp/x.safetensors", absl::StatusCode::kInvalidArgument},
           {"../x.safetensors", absl::StatusCode::kInvalidArgument},
           {"a/../../x.safetensors", absl::StatusCode::kInvalidArgument},
           {".hidden.safetensors", absl::StatusCode::kInvalidArgument},
           {"", absl::StatusCode::kInvalidArgument},
           {"escape/x.safetensors", absl::StatusCode::kPermissionDenied}}) {
    SCOPED_TRACE(c.path);
    EXPECT_EQ(client_->SaveCheckpoint("mlp", c.path).status().code(), c.code);
    EXPECT_NE(client_->LoadCheckpoint("mlp", c.path).status().code(), absl::StatusCode::kOk);
  }
  EXPECT_TRUE(std::filesystem::is_empty(outside));
  // Any other name is torch's format, as torch.save writes it whatever the name.
  auto bin = client_->SaveCheckpoint("mlp", "model.bin");
  ASSERT_TRUE(bin.ok()) << bin.status();
  EXPECT_EQ(bin->format, client::CheckpointFormat::kTorch);
  EXPECT_TRUE(client_->LoadCheckpoint("mlp", "model.bin").ok());
  EXPECT_EQ(client_->LoadCheckpoint("mlp", "missing.pt").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->SaveCheckpoint("nobody", "x.pt").status().code(),
            absl::StatusCode::kNotFound);
  auto download = client_->Download("escape/../../outside", daemon_->data_dir() + "/got");
  EXPECT_EQ(download.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(CheckpointDirTest, UploadAndDownloadRoundTripAndResume) {
  std::string bytes(3 * client::kChunkBytes + 12345, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<char>(i * 7 + i / 4096);
  const std::string local = daemon_->data_dir() + "/local.bin";
  WriteAll(local, bytes);

  auto uploaded = client_->Upload(local, "in/file.bin");
  ASSERT_TRUE(uploaded.ok()) << uploaded.status();
  EXPECT_EQ(uploaded->size, bytes.size());
  EXPECT_EQ(uploaded->resumed_from, 0u);
  EXPECT_EQ(ReadAll(daemon_->checkpoint_dir() + "/in/file.bin"), bytes);

  // A broken-off upload left its first part on the server: the next one resumes there.
  const size_t kept = client::kChunkBytes + 7;
  WriteAll(daemon_->checkpoint_dir() + "/in/.again.bin.upload", bytes.substr(0, kept));
  auto resumed = client_->Upload(local, "in/again.bin");
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->resumed_from, kept);
  EXPECT_EQ(ReadAll(daemon_->checkpoint_dir() + "/in/again.bin"), bytes);
  EXPECT_EQ(resumed->sha256, uploaded->sha256);

  // A kept part that is not this file's prefix fails the checksum; the server discards it
  // and the client starts again from 0, as the Python client does.
  WriteAll(daemon_->checkpoint_dir() + "/in/.bad.bin.upload", std::string(kept, 'x'));
  auto bad = client_->Upload(local, "in/bad.bin");
  ASSERT_TRUE(bad.ok()) << bad.status();
  EXPECT_EQ(bad->resumed_from, 0u);
  EXPECT_EQ(ReadAll(daemon_->checkpoint_dir() + "/in/bad.bin"), bytes);
  EXPECT_FALSE(std::filesystem::exists(daemon_->checkpoint_dir() + "/in/.bad.bin.upload"));

  const std::string fetched = daemon_->data_dir() + "/fetched.bin";
  auto downloaded = client_->Download("in/file.bin", fetched);
  ASSERT_TRUE(downloaded.ok()) << downloaded.status();
  EXPECT_EQ(ReadAll(fetched), bytes);
  EXPECT_EQ(downloaded->sha256, uploaded->sha256);

  // Rewritten in place at the same size, with the same mtime (as a rewrite within one tick
  // of the file clock leaves it), right after a download hashed it: the file looks
  // unchanged, and only the racy rule of Note [Kept digests] keeps the daemon from serving
  // the old digest, which the client would refuse as corrupt.
  const std::string served = daemon_->checkpoint_dir() + "/in/file.bin";
  const auto mtime = std::filesystem::last_write_time(served);
  std::string rewritten = bytes;
  std::reverse(rewritten.begin(), rewritten.end());
  WriteAll(served, rewritten);
  std::filesystem::last_write_time(served, mtime);
  const std::string refetched = daemon_->data_dir() + "/refetched.bin";
  auto redownloaded = client_->Download("in/file.bin", refetched);
  ASSERT_TRUE(redownloaded.ok()) << redownloaded.status();
  EXPECT_EQ(ReadAll(refetched), rewritten);
  EXPECT_NE(redownloaded->sha256, downloaded->sha256);
  WriteAll(served, bytes);

  WriteAll(fetched + ".part", bytes.substr(0, kept));
  std::filesystem::remove(fetched);
  auto continued = client_->Download("in/file.bin", fetched);
  ASSERT_TRUE(continued.ok()) << continued.status();
  EXPECT_EQ(continued->resumed_from, kept);
  EXPECT_EQ(ReadAll(fetched), bytes);
  EXPECT_FALSE(std::filesystem::exists(fetched + ".part"));

  // A part that was another file's beginning, or longer than the file: dropped, and the
  // download starts again from 0.
  for (const std::string& stale : {std::string(kept, 'x'), bytes + "tail"}) {
    WriteAll(fetched + ".part", stale);
    auto again = client_->Download("in/file.bin", fetched);
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(again->resumed_from, 0u);
    EXPECT_EQ(ReadAll(fetched), bytes);
    EXPECT_FALSE(std::filesystem::exists(fetched + ".part"));
  }
}

TEST_F(CheckpointDirTest, ModelsSurviveARestartWithTheirVersionsAndMode) {
  ASSERT_TRUE(client_->CreateModel("mlp", kMlpSpec).ok());
  ASSERT_TRUE(client_->CreateModel("lm", kTiedEmbeddingSpec).ok());
  ASSERT_TRUE(client_->CreateModel("gone", kMlpSpec).ok());
  ASSERT_TRUE(client_->Model("mlp").SetTensor("w2", Floats({1}, {-3})).ok());
  ASSERT_TRUE(client_->Model("mlp").SetMode(false).ok());
  ASSERT_TRUE(client_->DeleteModel("gone").ok());
  const auto mlp = Values("mlp");
  const auto lm = Values("lm");
  ASSERT_EQ(daemon_->Stop(), 0);  // SIGTERM snapshots every model
  EXPECT_THAT(daemon_->Log(), HasSubstr("msg=\"snapshot taken\" reason=shutdown models=2"));

  ASSERT_TRUE(daemon_->Restart({"--snapshot-interval", "0"}).ok());
  Connect();
  EXPECT_THAT(daemon_->Log(), HasSubstr("msg=\"model restored\" model=mlp version=3"));
  auto models = client_->ListModels();
  ASSERT_TRUE(models.ok());
  ASSERT_EQ(models->size(), 2u);
  EXPECT_EQ(Values("mlp"), mlp);
  EXPECT_EQ(Values("lm"), lm);
  auto info = client_->DescribeModel("mlp");
  EXPECT_EQ(info->version, 3u);
  EXPECT_FALSE(info->training);
  EXPECT_THAT(TiedWith("lm", "lm_head.weight"), ElementsAre("embed.weight"));

  // After a crash, what the last snapshot held comes back.
  auto taken = client_->Snapshot({"mlp"});
  ASSERT_TRUE(taken.ok()) << taken.status();
  auto acknowledged = client_->Model("mlp").SetTensor("w2", Floats({1}, {7}));
  ASSERT_TRUE(acknowledged.ok());
  daemon_->Kill();
  ASSERT_TRUE(daemon_->Restart({"--snapshot-interval", "0"}).ok());
  Connect();
  EXPECT_EQ(Values("mlp"), mlp);
  // The snapshot's values under a version past every one acknowledged before the kill, so
  // version 4 never names two states (Note [Version reservation]).
  EXPECT_GT(client_->DescribeModel("mlp")->version, *acknowledged);
}

// Note [SIGKILL mid-save]: the file a save replaces must survive the daemon dying in the
// middle of writing its successor, byte for byte, and the next start removes the
// half-written temporary file.
TEST_F(CheckpointDirTest, SigkillInTheMiddleOfALargeSaveKeepsThePreviousFile) {
  // 8 x Linear(2048, 2048): 128 MiB of float32, so that a save takes a while.
  std::string layers;
  for (int i = 0; i < 8; ++i) {
    absl::StrAppend(&layers, i ? "," : "",
                    R"({"type": "Linear", "args": {"in_features": 2048, "out_features": 2048}})");
  }
  ASSERT_TRUE(
      client_->CreateModel("big", absl::StrCat(R"({"type": "Sequential", "children": [)", layers,
                                               "]}"))
          .ok());
  for (const char* format : {"big.safetensors", "big.pt"}) {
    SCOPED_TRACE(format);
    ASSERT_TRUE(client_->SaveCheckpoint("big", format).ok());
    const std::string path = daemon_->checkpoint_dir() + "/" + format;
    const std::string previous = ReadAll(path);
    ASSERT_TRUE(client_->Model("big").SetTensor("0.bias", Floats({1}, {5}),
                                                client::Region{{0, 1}})
                    .ok());

    std::thread saver([&] { (void)client_->SaveCheckpoint("big", format); });
    // Kill it while the temporary file exists: writing or syncing, before the rename.
    bool killed = false;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (!killed && std::chrono::steady_clock::now() < deadline) {
      for (const auto& entry : std::filesystem::directory_iterator(daemon_->checkpoint_dir())) {
        const std::string name = entry.path().filename().string();
        if (name.rfind(std::string(".") + format + ".tmp-", 0) == 0) {
          daemon_->Kill();
          killed = true;
          break;
        }
      }
    }
    saver.join();
    ASSERT_TRUE(killed) << "the save finished before it could be interrupted";
    EXPECT_EQ(ReadAll(path), previous);

    ASSERT_TRUE(daemon_->Restart({"--snapshot-interval", "0"}).ok());
    Connect();
    EXPECT_THAT(daemon_->Log(), HasSubstr("msg=\"removed unfinished saves\" files=1"));
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(daemon_->checkpoint_dir())) {
      names.push_back(entry.path().filename().string());
    }
    EXPECT_THAT(names, ::testing::Contains(format));
    EXPECT_THAT(names, ::testing::Not(::testing::Contains(::testing::StartsWith("."))));
    // The model did not survive the kill (no snapshot was asked for): load it back.
    client::LoadCheckpointOptions none;
    auto loaded = client_->LoadCheckpoint("big", format, none);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_TRUE(loaded->created);
    auto bias = client_->Model("big").GetTensor("0.bias", client::Region{{0, 1}});
    ASSERT_TRUE(bias.ok());
    EXPECT_NE(bias->ToDoubles()[0], 5);
  }
}

// An upload stream of a header alone, as a careless or hostile client may send.
grpc::Status UploadHeaderOnly(v1::Checkpoints::Stub& stub, const std::string& path,
                              uint64_t total_size) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::UploadResponse response;
  auto writer = stub.Upload(&context, &response);
  v1::UploadRequest request;
  request.mutable_header()->set_path(path);
  request.mutable_header()->set_total_size(total_size);
  request.mutable_header()->set_sha256(std::string(64, '0'));
  writer->Write(request);
  writer->WritesDone();
  return writer->Finish();
}

TEST_F(CheckpointDirTest, UploadsLargerThanTheLimitOrTheFreeSpaceAreRefused) {
  auto stub = v1::Checkpoints::NewStub(daemon_->channel());
  const uint64_t tib = uint64_t{1} << 40;
  grpc::Status refused = UploadHeaderOnly(*stub, "huge/x.pt", tib);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(refused.error_message(), HasSubstr("(--max-upload-size); ask its operator"));

  struct statvfs fs;
  ASSERT_EQ(::statvfs(daemon_->checkpoint_dir().c_str(), &fs), 0);
  if (static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize >= tib) GTEST_SKIP() << "1 TiB free";
  ASSERT_TRUE(daemon_->Restart({"--snapshot-interval", "0", "--max-upload-size", "2T"}).ok());
  stub = v1::Checkpoints::NewStub(daemon_->channel());
  refused = UploadHeaderOnly(*stub, "huge/x.pt", tib);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("free space there"));
  EXPECT_TRUE(std::filesystem::is_empty(daemon_->checkpoint_dir()));
}

// An upload that ends before any of its bytes were kept (a header alone, a second header)
// leaves no empty partial file behind for --upload-expiry to find.
TEST_F(CheckpointDirTest, AnUploadThatKeptNoBytesLeavesNoPartialFile) {
  auto stub = v1::Checkpoints::NewStub(daemon_->channel());
  EXPECT_EQ(UploadHeaderOnly(*stub, "g.bin", 3000).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::UploadResponse response;
  auto writer = stub->Upload(&context, &response);
  v1::UploadRequest header;
  header.mutable_header()->set_path("h.bin");
  header.mutable_header()->set_total_size(3000);
  header.mutable_header()->set_sha256(std::string(64, '0'));
  writer->Write(header);
  writer->Write(header);
  writer->WritesDone();
  const grpc::Status twice = writer->Finish();
  EXPECT_EQ(twice.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(twice.error_message(), HasSubstr("an upload has one header, first"));
  EXPECT_TRUE(std::filesystem::is_empty(daemon_->checkpoint_dir()));
}

TEST_F(CheckpointDirTest, ReadsAndFailedWritesCreateNothing) {
  auto stub = v1::Checkpoints::NewStub(daemon_->channel());
  grpc::ClientContext context;
  v1::UploadStatusRequest request;
  request.set_path("a/b/c.pt");
  v1::UploadStatusResponse response;
  ASSERT_TRUE(stub->UploadStatus(&context, request, &response).ok());
  EXPECT_EQ(response.offset(), 0u);
  EXPECT_EQ(client_->SaveCheckpoint("nobody", "x/y.pt").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->LoadCheckpoint("m", "d/e.pt").status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(client_->ListCheckpoints().ok());
  EXPECT_TRUE(std::filesystem::is_empty(daemon_->checkpoint_dir()));
}

TEST_F(CheckpointDirTest, DeepPathsAreRefusedFastAndCreateNothing) {
  ASSERT_TRUE(client_->CreateModel("mlp", kMlpSpec).ok());
  std::string deep;
  for (int i = 0; i < 2000; ++i) absl::StrAppend(&deep, "d/");
  deep += "x.pt";
  auto stub = v1::Checkpoints::NewStub(daemon_->channel());
  const auto start = std::chrono::steady_clock::now();
  auto saved = client_->SaveCheckpoint("mlp", deep);
  EXPECT_EQ(saved.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(saved.status().message()),
              HasSubstr("is 4004 bytes long; at most 1024 are allowed"));
  EXPECT_EQ(client_->LoadCheckpoint("mlp", deep).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->Download(deep, daemon_->data_dir() + "/got").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(UploadHeaderOnly(*stub, deep, 1).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  grpc::ClientContext context;
  v1::UploadStatusRequest request;
  request.set_path(deep);
  v1::UploadStatusResponse response;
  EXPECT_EQ(stub->UploadStatus(&context, request, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  EXPECT_TRUE(std::filesystem::is_empty(daemon_->checkpoint_dir()));
}

TEST_F(CheckpointDirTest, ListShowsNoSymlinkLeadingOutside) {
  ASSERT_TRUE(client_->CreateModel("mlp", kMlpSpec).ok());
  ASSERT_TRUE(client_->SaveCheckpoint("mlp", "runs/mlp.pt").ok());
  const std::string outside = daemon_->data_dir() + "/outside";
  std::filesystem::create_directories(outside + "/tree");
  WriteAll(outside + "/passwd", "root:x:0:0:root:/root:/bin/bash\n");
  WriteAll(outside + "/tree/secret.pt", "secret");
  const std::string dir = daemon_->checkpoint_dir();
  std::filesystem::create_symlink("../../../../../../../../.." + outside + "/passwd",
                                  dir + "/runs/passwd");
  std::filesystem::create_directory_symlink(outside + "/tree", dir + "/tree");
  auto files = client_->ListCheckpoints();
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_EQ(files->size(), 1u);
  EXPECT_EQ((*files)[0].path, "runs/mlp.pt");
  EXPECT_EQ(client_->Download("runs/passwd", daemon_->data_dir() + "/got").status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(client_->Download("tree/secret.pt", daemon_->data_dir() + "/got").status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(CheckpointDirTest, NoErrorNamesAnAbsoluteServerPath) {
  ASSERT_TRUE(client_->CreateModel("mlp", kMlpSpec).ok());
  ASSERT_TRUE(client_->SaveCheckpoint("mlp", "runs/mlp.pt").ok());
  const std::string dir = daemon_->checkpoint_dir();
  const std::string temp = std::filesystem::path(daemon_->data_dir()).parent_path().string();
  WriteAll(dir + "/corrupt.pt", "not a zip file");
  WriteAll(dir + "/corrupt.safetensors", std::string(8, '\xff'));
  std::filesystem::create_symlink("loop.pt", dir + "/loop.pt");
  std::filesystem::create_symlink("loop", dir + "/loop");
  std::filesystem::create_directories(dir + "/.dir.pt.upload");
  std::filesystem::create_directories(dir + "/adir.pt");
  WriteAll(dir + "/file", "x");
  std::filesystem::create_directory_symlink(daemon_->data_dir(), dir + "/escape");
  auto stub = v1::Checkpoints::NewStub(daemon_->channel());
  std::vector<std::string> errors;
  auto note = [&](const absl::Status& status) {
    if (!status.ok()) errors.emplace_back(status.message());
  };
  for (const char* path : {"corrupt.pt", "corrupt.safetensors", "loop.pt", "loop/x.pt",
                          "adir.pt", "file/x.pt", "escape/x.pt", "missing.pt", "/abs.pt",
                          "../up.pt"}) {
    EXPECT_FALSE(client_->LoadCheckpoint("mlp", path).ok());
    note(client_->LoadCheckpoint("mlp", path).status());
    note(client_->LoadCheckpoint("new", path).status());
    note(client_->Download(path, daemon_->data_dir() + "/got").status());
    grpc::ClientContext context;
    v1::UploadStatusRequest request;
    request.set_path(path);
    v1::UploadStatusResponse response;
    const grpc::Status status = stub->UploadStatus(&context, request, &response);
    if (!status.ok()) errors.push_back(status.error_message());
    errors.push_back(UploadHeaderOnly(*stub, path, 10).error_message());
    // Last: a save over corrupt.pt or missing.pt succeeds.
    const absl::Status saved = client_->SaveCheckpoint("mlp", path).status();
    if (!saved.ok()) errors.emplace_back(saved.message());
  }
  errors.push_back(UploadHeaderOnly(*stub, "dir.pt", 10).error_message());
  EXPECT_GE(errors.size(), 50u);
  for (const std::string& error : errors) {
    EXPECT_THAT(error, ::testing::Not(HasSubstr(temp)));
  }
  EXPECT_THAT(errors[0], HasSubstr("'corrupt.pt'"));
}

TEST_F(CheckpointDirTest, ExpiredUploadsAreRemovedAtStart) {
  const std::string dir = daemon_->checkpoint_dir();
  WriteAll(dir + "/.old.pt.upload", "abandoned");
  WriteAll(dir + "/.new.pt.upload", "recent");
  std::filesystem::last_write_time(
      dir + "/.old.pt.upload",
      std::filesystem::file_time_type::clock::now() - std::chrono::hours(25));
  ASSERT_TRUE(daemon_->Restart({"--snapshot-interval", "0"}).ok());  // --upload-expiry 24h
  EXPECT_THAT(daemon_->Log(), HasSubstr("msg=\"removed expired uploads\" files=1"));
  EXPECT_FALSE(std::filesystem::exists(dir + "/.old.pt.upload"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/.new.pt.upload"));
}

}  // namespace
}  // namespace paramd::testing
