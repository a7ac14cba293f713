// CheckpointStore: confinement of every path a client names, save and create-or-load with
// the version each one answers, resumable uploads and their one-at-a-time rule, downloads
// and their kept digests, and saves that fail at any file step.
#include "server/io/checkpoint_store.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/statvfs.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "server/core/spec.h"
#include "server/io/fault_injecting_file_system.h"
#include "server/io/sha256.h"
#include "tests/unit/io/test_util.h"

namespace paramd::io {
namespace {

using test_util::ReadFile;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kSpec[] = R"({"type": "Linear", "args": {"in_features": 2, "out_features": 1}})";

class CheckpointStoreTest : public test_util::ScratchDirTest {
 protected:
  void SetUp() override {
    ScratchDirTest::SetUp();
    std::filesystem::create_directories(dir_ / "ckpt");
    std::filesystem::create_directories(dir_ / "outside");
    store_ = MakeStore({});
  }

  std::unique_ptr<CheckpointStore> MakeStore(CheckpointStore::Options options) {
    absl::StatusOr<CheckpointDir> directory = CheckpointDir::Open(PathOf("ckpt"));
    EXPECT_TRUE(directory.ok()) << directory.status();
    return std::make_unique<CheckpointStore>(*directory, &registry_, fs_, options);
  }

  // Everything below the checkpoint directory, relative to it, hidden names included.
  std::vector<std::string> Tree() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(dir_ / "ckpt")) {
      names.push_back(std::filesystem::relative(entry.path(), dir_ / "ckpt").string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  uint64_t FreeBytes() const {
    struct statvfs fs;
    EXPECT_EQ(::statvfs(PathOf("ckpt").c_str(), &fs), 0);
    return static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
  }

  // Creates model `name` and writes it `writes` times, so it is at version 1 + writes.
  std::shared_ptr<core::Model> AddModel(const std::string& name, int writes = 0) {
    auto root = core::BuildModuleFromText(kSpec, 1);
    EXPECT_TRUE(root.ok()) << root.status();
    auto model = std::make_shared<core::Model>(name, *root, Device::Cpu());
    EXPECT_TRUE(registry_.Add(model).ok());
    for (int i = 0; i < writes; ++i) {
      EXPECT_TRUE(model->SetTensor("bias", {}, test_util::Filled(1, i), {}).ok());
    }
    return model;
  }

  static std::string Hex(const std::string& bytes) { return Sha256Hex(test_util::AsSpan(bytes)); }

  core::ModelRegistry registry_;
  FaultInjectingFileSystem fs_{FileSystem::Posix()};
  std::unique_ptr<CheckpointStore> store_;
};

TEST_F(CheckpointStoreTest, EveryEntryPointConfinesPathsToTheDirectory) {
  AddModel("m");
  std::filesystem::create_directory_symlink(dir_ / "outside", dir_ / "ckpt" / "escape");
  test_util::WriteFile(PathOf("outside/secret.safetensors"), "not yours");
  struct Case {
    std::string path;
    absl::StatusCode code;
    std::string message;
  };
  const Case cases[] = {
      {"/etc/passwd.pt", absl::StatusCode::kInvalidArgument, "is absolute"},
      {"../outside/a.pt", absl::StatusCode::kInvalidArgument, "contains '..'"},
      {".hidden.pt", absl::StatusCode::kInvalidArgument, "has a hidden name"},
      {"runs/a.pt/", absl::StatusCode::kInvalidArgument, "names a directory, not a file"},
      {"escape/secret.safetensors", absl::StatusCode::kPermissionDenied,
       "leads outside the checkpoint directory"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.path);
    absl::StatusOr<CheckpointStore::Saved> saved = store_->Save({.model = "m", .path = c.path});
    EXPECT_EQ(saved.status().code(), c.code);
    EXPECT_THAT(std::string(saved.status().message()), HasSubstr(c.message));
    absl::StatusOr<CheckpointStore::Loaded> loaded = store_->Load({.model = "m", .path = c.path});
    EXPECT_EQ(loaded.status().code(), c.code);
    absl::StatusOr<CheckpointStore::Download> download = store_->OpenDownload(c.path, 0);
    EXPECT_EQ(download.status().code(), c.code);
    auto upload =
        store_->StartUpload({.path = c.path, .total_size = 1, .sha256 = std::string(64, '0')});
    EXPECT_EQ(upload.status().code(), c.code);
    EXPECT_EQ(store_->UploadOffset(c.path).status().code(), c.code);
  }
  EXPECT_EQ(ReadFile(PathOf("outside/secret.safetensors")), "not yours");
  EXPECT_FALSE(std::filesystem::exists(PathOf("outside/a.pt")));
}

TEST_F(CheckpointStoreTest, SaveRecordsThePinnedVersionAndItsDigest) {
  AddModel("m", /*writes=*/2);
  absl::StatusOr<CheckpointStore::Saved> saved =
      store_->Save({.model = "m", .path = "runs/m.pt", .sha256 = true});
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->format, CheckpointFormat::kTorch);  // from the suffix
  EXPECT_EQ(saved->version, 3u);
  const std::string bytes = ReadFile(PathOf("ckpt/runs/m.pt"));
  EXPECT_EQ(saved->size, bytes.size());
  EXPECT_EQ(saved->sha256, Hex(bytes));

  EXPECT_EQ(store_->Save({.model = "nope", .path = "n.pt"}).status().code(),
            absl::StatusCode::kNotFound);
  absl::StatusOr<std::vector<CheckpointStore::Listed>> files = store_->List();
  ASSERT_TRUE(files.ok());
  ASSERT_EQ(files->size(), 1u);
  EXPECT_EQ((*files)[0].file.path, "runs/m.pt");
  EXPECT_EQ((*files)[0].format, CheckpointFormat::kTorch);

  // Without the digest asked for: the size, no digest, and a download still carries the
  // file's (each torch file has its own serialization id, so the bytes differ from m.pt's).
  saved = store_->Save({.model = "m", .path = "runs/plain.pt"});
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->sha256, "");
  const std::string plain = ReadFile(PathOf("ckpt/runs/plain.pt"));
  EXPECT_EQ(saved->size, plain.size());
  absl::StatusOr<CheckpointStore::Download> download = store_->OpenDownload("runs/plain.pt", 0);
  ASSERT_TRUE(download.ok()) << download.status();
  EXPECT_EQ(download->sha256, Hex(plain));
}

// torch.save writes its format whatever the name: so does a save that names no format,
// unless the name ends in .safetensors; the listing and a load tell formats by content.
TEST_F(CheckpointStoreTest, SaveWritesTorchForAnyNameButSafetensorsAndListSniffsContents) {
  AddModel("m", /*writes=*/1);
  absl::StatusOr<CheckpointStore::Saved> saved = store_->Save({.model = "m", .path = "m.params"});
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->format, CheckpointFormat::kTorch);
  EXPECT_EQ(ReadFile(PathOf("ckpt/m.params")).substr(0, 4), "PK\x03\x04");
  ASSERT_TRUE(store_->Save({.model = "m", .path = "pytorch_model.bin"}).ok());
  ASSERT_TRUE(store_->Save({.model = "m", .path = "st.safetensors"}).ok());
  // Contents, not names: a safetensors file under a .pt name, and a file of neither kind.
  ASSERT_TRUE(store_->Save({.model = "m", .path = "odd.pt", .format = CheckpointFormat::kSafetensors})
                  .ok());
  test_util::WriteFile(PathOf("ckpt/notes.txt"), "not a checkpoint");
  absl::StatusOr<std::vector<CheckpointStore::Listed>> files = store_->List();
  ASSERT_TRUE(files.ok()) << files.status();
  std::map<std::string, std::optional<CheckpointFormat>> formats;
  for (const auto& listed : *files) formats[listed.file.path] = listed.format;
  EXPECT_EQ(formats["m.params"], CheckpointFormat::kTorch);
  EXPECT_EQ(formats["pytorch_model.bin"], CheckpointFormat::kTorch);
  EXPECT_EQ(formats["st.safetensors"], CheckpointFormat::kSafetensors);
  EXPECT_EQ(formats["odd.pt"], CheckpointFormat::kSafetensors);
  EXPECT_EQ(formats["notes.txt"], std::nullopt);

  absl::StatusOr<CheckpointStore::Loaded> loaded = store_->Load({.model = "m", .path = "odd.pt"});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->format, CheckpointFormat::kSafetensors);
  loaded = store_->Load({.model = "m", .path = "m.params"});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->format, CheckpointFormat::kTorch);
}

TEST_F(CheckpointStoreTest, LoadCreatesAtTheFilesVersionOrLoadsIntoTheModel) {
  std::shared_ptr<core::Model> model = AddModel("m", /*writes=*/4);
  ASSERT_TRUE(store_->Save({.model = "m", .path = "m.safetensors"}).ok());

  // A new model from the file's own spec keeps the file's version.
  absl::StatusOr<CheckpointStore::Loaded> created =
      store_->Load({.model = "copy", .path = "m.safetensors"});
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(created->created);
  EXPECT_EQ(created->version, 5u);
  EXPECT_EQ(created->format, CheckpointFormat::kSafetensors);
  ASSERT_TRUE(registry_.Get("copy").ok());

  // A spec of the request's own starts a new history.
  created = store_->Load({.model = "fresh", .path = "m.safetensors", .spec_json = kSpec});
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->version, 1u);

  // Into an existing model: its next version.
  absl::StatusOr<CheckpointStore::Loaded> loaded =
      store_->Load({.model = "m", .path = "m.safetensors"});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE(loaded->created);
  EXPECT_EQ(loaded->version, 6u);
  EXPECT_EQ(model->version(), 6u);

  loaded = store_->Load({.model = "m", .path = "m.safetensors", .if_version = 2});
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kAborted);
}

TEST_F(CheckpointStoreTest, LoadRefusesConflictingOrMissingSpecs) {
  AddModel("m");
  ASSERT_TRUE(store_->Save({.model = "m", .path = "m.safetensors"}).ok());
  absl::StatusOr<CheckpointStore::Loaded> loaded =
      store_->Load({.model = "m", .path = "m.safetensors", .spec_json = kSpec});
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(loaded.status().message(),
            "model 'm' exists; a spec is only for creating a model: drop it to load into the "
            "model, or delete the model first");

  SaveInput bare;
  bare.state_dict = core::GetStateDict(*core::BuildModuleFromText(kSpec, 0).value());
  ASSERT_TRUE(
      SaveCheckpoint(PathOf("ckpt/bare.safetensors"), CheckpointFormat::kSafetensors, bare).ok());
  loaded = store_->Load({.model = "new", .path = "bare.safetensors"});
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(loaded.status().message()),
              HasSubstr("is a bare state_dict without a model spec"));

  loaded = store_->Load({.model = "m",
                         .path = "m.safetensors",
                         .map_location = "cpu",
                         .location_map = {{"cuda:0", "cpu"}}});
  EXPECT_EQ(loaded.status().message(),
            "give map_location as one location or as a mapping, not both");
  EXPECT_EQ(store_->Load({.model = "bad/name", .path = "m.safetensors"}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(CheckpointStoreTest, AnUploadBrokenOffResumesWhereItsKeptBytesEnd) {
  const std::string bytes(1000, 'x');
  const CheckpointStore::UploadHeader header{
      .path = "up/file.pt", .total_size = bytes.size(), .sha256 = Hex(bytes)};
  {
    auto upload = store_->StartUpload(header);
    ASSERT_TRUE(upload.ok()) << upload.status();
    ASSERT_TRUE((*upload)->Append(bytes.substr(0, 400)).ok());
    const absl::Status broke = (*upload)->BreakOff();
    EXPECT_EQ(broke.code(), absl::StatusCode::kCancelled);
    EXPECT_EQ(broke.message(),
              "the upload of 'up/file.pt' broke off after 400 bytes; they are kept: resume from "
              "offset 400");
  }
  EXPECT_EQ(store_->UploadOffset("up/file.pt").value(), 400u);

  CheckpointStore::UploadHeader wrong = header;
  wrong.offset = 300;
  absl::StatusOr<std::unique_ptr<CheckpointStore::Upload>> refused = store_->StartUpload(wrong);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("upload of 'up/file.pt': 400 bytes of this upload are kept"));

  CheckpointStore::UploadHeader resume = header;
  resume.offset = 400;
  resume.sha256 = absl::AsciiStrToUpper(header.sha256);  // either case
  auto upload = store_->StartUpload(resume);
  ASSERT_TRUE(upload.ok()) << upload.status();
  ASSERT_TRUE((*upload)->Append(bytes.substr(400)).ok());
  absl::StatusOr<WrittenFile> written = (*upload)->Finish();
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->sha256, header.sha256);
  EXPECT_EQ(ReadFile(PathOf("ckpt/up/file.pt")), bytes);
  EXPECT_EQ(store_->UploadOffset("up/file.pt").value(), 0u);

  absl::StatusOr<CheckpointStore::Download> download = store_->OpenDownload("up/file.pt", 0);
  ASSERT_TRUE(download.ok()) << download.status();
  EXPECT_EQ(download->sha256, header.sha256);
  EXPECT_EQ(download->file->size(), bytes.size());
  EXPECT_TRUE(download->modified_unix.has_value());
  EXPECT_EQ(store_->OpenDownload("up/file.pt", 1001).status().message(),
            "offset 1001 is past the end of 'up/file.pt' (1000 bytes)");
}

TEST_F(CheckpointStoreTest, OneUploadOfAPathAtATime) {
  const std::string bytes = "abc";
  const CheckpointStore::UploadHeader header{
      .path = "a.pt", .total_size = bytes.size(), .sha256 = Hex(bytes)};
  auto first = store_->StartUpload(header);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = store_->StartUpload(header);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(second.status().message(), "'a.pt' is being uploaded by another call; retry later");
  // Another path is free meanwhile.
  EXPECT_TRUE(store_->StartUpload({.path = "b.pt", .total_size = 1, .sha256 = Hex("b")}).ok());
  first->reset();  // ending the first, however it ended, frees the path
  EXPECT_TRUE(store_->StartUpload(header).ok());
}

TEST_F(CheckpointStoreTest, UploadErrorsNameTheFile) {
  EXPECT_EQ(
      store_->StartUpload({.path = "a.pt", .total_size = 3, .sha256 = "abc"}).status().message(),
      "the upload header needs the file's SHA-256 as 64 hex digits (sha256sum prints it)");
  auto upload = store_->StartUpload({.path = "a.pt", .total_size = 3, .sha256 = Hex("xyz")});
  ASSERT_TRUE(upload.ok());
  ASSERT_TRUE((*upload)->Append("abc").ok());
  absl::StatusOr<WrittenFile> written = (*upload)->Finish();
  EXPECT_EQ(written.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(written.status().message()), HasSubstr("upload of 'a.pt': "));
  EXPECT_FALSE(std::filesystem::exists(PathOf("ckpt/a.pt")));
  EXPECT_EQ(store_->UploadOffset("a.pt").value(), 0u);  // the bytes were dropped
}

TEST_F(CheckpointStoreTest, AnUploadFailingAtAnyStepLeavesTheTargetAlone) {
  test_util::WriteFile(PathOf("ckpt/a.pt"), "old");
  const std::string bytes(100, 'n');
  const CheckpointStore::UploadHeader header{
      .path = "a.pt", .total_size = bytes.size(), .sha256 = Hex(bytes)};
  for (int64_t step = 0; step < 5; ++step) {  // open, append, sync, close, rename
    SCOPED_TRACE(step);
    fs_.FailFromStep(step);
    absl::Status status = [&]() -> absl::Status {
      auto upload = store_->StartUpload(header);
      if (!upload.ok()) return upload.status();
      if (absl::Status appended = (*upload)->Append(bytes); !appended.ok()) return appended;
      return (*upload)->Finish().status();
    }();
    EXPECT_TRUE(fs_.injected());
    EXPECT_THAT(std::string(status.message()), HasSubstr("upload of 'a.pt': "));
    EXPECT_EQ(ReadFile(PathOf("ckpt/a.pt")), "old");
  }
}

TEST_F(CheckpointStoreTest, ASaveFailingAtAnyStepKeepsThePreviousFile) {
  AddModel("m");
  fs_.FailFromStep(-1);
  ASSERT_TRUE(store_->Save({.model = "m", .path = "m.safetensors"}).ok());
  const std::string previous = ReadFile(PathOf("ckpt/m.safetensors"));
  const int64_t steps = fs_.steps();
  ASSERT_TRUE(registry_.Get("m").value()->SetTensor("bias", {}, test_util::Filled(1, 7), {}).ok());
  for (int64_t step = 0; step + 1 < steps; ++step) {  // the last, a directory sync, is after
    SCOPED_TRACE(step);
    fs_.FailFromStep(step);
    EXPECT_FALSE(store_->Save({.model = "m", .path = "m.safetensors"}).ok());
    EXPECT_EQ(ReadFile(PathOf("ckpt/m.safetensors")), previous);
  }
  for (const auto& entry : std::filesystem::directory_iterator(dir_ / "ckpt")) {
    EXPECT_EQ(entry.path().filename().string(), "m.safetensors");  // no temporary left
  }
}

TEST_F(CheckpointStoreTest, AnUploadLargerThanTheLimitOrTheFreeSpaceIsRefused) {
  // Over --max-upload-size (256 GiB by default).
  auto refused = store_->StartUpload(
      {.path = "big/x.pt", .total_size = uint64_t{1} << 40, .sha256 = Hex("x")});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(refused.status().message(),
            "upload of 'big/x.pt': its total_size of 1099511627776 bytes is over this daemon's "
            "limit of 274877906944 bytes (--max-upload-size); ask its operator to raise the "
            "limit, or send a smaller file");

  // Within the limit but more than the file system has free.
  store_ = MakeStore({.max_upload_size = UINT64_MAX});
  const uint64_t free = FreeBytes();
  refused = store_->StartUpload(
      {.path = "big/x.pt", .total_size = 2 * free + (uint64_t{1} << 30), .sha256 = Hex("x")});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.status().message()),
              HasSubstr("free space there (remove checkpoints no longer needed) and retry"));

  // Bytes that uploads in flight still need count as taken.
  auto first = store_->StartUpload(
      {.path = "big/a.pt", .total_size = free / 4 * 3, .sha256 = Hex("x")});
  ASSERT_TRUE(first.ok()) << first.status();
  refused = store_->StartUpload(
      {.path = "big/b.pt", .total_size = free / 4 * 3, .sha256 = Hex("x")});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("held for uploads in progress"));
  first->reset();
  // The refused ones created nothing, and the first, which kept no bytes, left nothing.
  EXPECT_THAT(Tree(), ::testing::IsEmpty());
}

TEST_F(CheckpointStoreTest, ReadsAndFailedWritesCreateNoDirectories) {
  AddModel("m");
  EXPECT_EQ(store_->UploadOffset("a/b/c.pt").value(), 0u);
  EXPECT_EQ(store_->Save({.model = "nope", .path = "x/y.pt"}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Load({.model = "m", .path = "d/e.pt"}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->OpenDownload("d/e.pt", 0).status().code(), absl::StatusCode::kNotFound);
  fs_.FailFromStep(1);  // the first append
  EXPECT_FALSE(store_->Save({.model = "m", .path = "f/g/h.safetensors"}).ok());
  fs_.FailFromStep(-1);
  {
    auto upload = store_->StartUpload({.path = "h/i.pt", .total_size = 3, .sha256 = Hex("xyz")});
    ASSERT_TRUE(upload.ok()) << upload.status();
    ASSERT_TRUE((*upload)->Append("abc").ok());
    EXPECT_EQ((*upload)->Finish().status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_THAT(Tree(), IsEmpty());

  // An upload that broke off keeps its bytes, and so the directory they are in.
  {
    auto upload = store_->StartUpload({.path = "k/l.pt", .total_size = 3, .sha256 = Hex("abc")});
    ASSERT_TRUE(upload.ok()) << upload.status();
    ASSERT_TRUE((*upload)->Append("a").ok());
    EXPECT_EQ((*upload)->BreakOff().code(), absl::StatusCode::kCancelled);
  }
  EXPECT_THAT(Tree(), ::testing::ElementsAre("k", "k/.l.pt.upload"));
  ASSERT_TRUE(store_->Save({.model = "m", .path = "k/n/m.pt"}).ok());
  EXPECT_THAT(Tree(), ::testing::ElementsAre("k", "k/.l.pt.upload", "k/n", "k/n/m.pt"));
}

TEST_F(CheckpointStoreTest, PartialUploadsUntouchedPastTheExpiryAreRemoved) {
  store_ = MakeStore({.upload_expiry = absl::Hours(1)});
  auto age = [&](const std::string& partial) {
    std::filesystem::last_write_time(PathOf("ckpt/" + partial),
                                     std::filesystem::file_time_type::clock::now() -
                                         std::chrono::hours(2));
  };
  // Partial files abandoned by uploads two hours ago and just now.
  std::filesystem::create_directories(dir_ / "ckpt" / "old");
  test_util::WriteFile(PathOf("ckpt/old/.a.pt.upload"), "a");
  age("old/.a.pt.upload");
  test_util::WriteFile(PathOf("ckpt/.fresh.pt.upload"), "a");
  EXPECT_EQ(store_->UploadOffset("old/a.pt").value(), 1u);

  // A write that starts sweeps (at most once a minute).
  auto busy = store_->StartUpload({.path = "busy.pt", .total_size = 3, .sha256 = Hex("abc")});
  ASSERT_TRUE(busy.ok()) << busy.status();
  ASSERT_TRUE((*busy)->Append("a").ok());
  EXPECT_EQ(store_->UploadOffset("old/a.pt").value(), 0u);
  EXPECT_EQ(store_->UploadOffset("fresh.pt").value(), 1u);

  // An upload in flight keeps its partial file however old it looks.
  age(".busy.pt.upload");
  EXPECT_EQ(store_->RemoveExpiredUploads(), 0);
  EXPECT_TRUE(std::filesystem::exists(PathOf("ckpt/.busy.pt.upload")));
  busy->reset();
  EXPECT_EQ(store_->RemoveExpiredUploads(), 1);  // abandoned now
  EXPECT_FALSE(std::filesystem::exists(PathOf("ckpt/.busy.pt.upload")));

  // An expiry of zero keeps them forever.
  age(".fresh.pt.upload");
  EXPECT_EQ(MakeStore({.upload_expiry = absl::ZeroDuration()})->RemoveExpiredUploads(), 0);
  EXPECT_EQ(store_->UploadOffset("fresh.pt").value(), 1u);
  EXPECT_EQ(store_->RemoveExpiredUploads(), 1);
}

TEST_F(CheckpointStoreTest, DeepAndLongPathsAreRefusedBeforeAnyFileOperation) {
  AddModel("m");
  std::string deep;
  for (int i = 0; i < 2000; ++i) absl::StrAppend(&deep, "d/");
  deep += "x.pt";
  std::string too_many;  // 33 components in 70 bytes
  for (int i = 0; i < 32; ++i) absl::StrAppend(&too_many, "d/");
  too_many += "x.pt";
  const std::string cases[] = {deep, too_many, std::string(201, 'n') + ".pt",
                               std::string(1022, 'n') + ".pt"};
  const char* const messages[] = {
      "is 4004 bytes long; at most 1024 are allowed", "has more than 32 components",
      "has a name of 204 bytes; at most 200 are allowed", "is 1025 bytes long"};
  for (size_t i = 0; i < std::size(cases); ++i) {
    const std::string& path = cases[i];
    SCOPED_TRACE(path.substr(0, 40));
    const auto start = std::chrono::steady_clock::now();
    absl::Status saved = store_->Save({.model = "m", .path = path}).status();
    EXPECT_EQ(saved.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(saved.message()), HasSubstr(messages[i]));
    EXPECT_LE(saved.message().size(), 400u);  // the path is shown shortened
    EXPECT_EQ(store_->Load({.model = "m", .path = path}).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->OpenDownload(path, 0).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->UploadOffset(path).status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(store_->StartUpload({.path = path, .total_size = 1, .sha256 = Hex("x")})
                  .status()
                  .code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(200));
  }
  // 32 components and 200-byte names are fine.
  std::string deepest;
  for (int i = 0; i < 31; ++i) absl::StrAppend(&deepest, std::string(20, 'd'), "/");
  deepest += std::string(197, 'n') + ".pt";
  ASSERT_LE(deepest.size(), 1024u);
  EXPECT_THAT(Tree(), IsEmpty());
  absl::StatusOr<CheckpointStore::Saved> saved = store_->Save({.model = "m", .path = deepest});
  EXPECT_TRUE(saved.ok()) << saved.status();
}

TEST_F(CheckpointStoreTest, ListFollowsNoSymlinkOutOfTheDirectory) {
  AddModel("m");
  ASSERT_TRUE(store_->Save({.model = "m", .path = "runs/m.pt"}).ok());
  test_util::WriteFile(PathOf("outside/passwd"), "root:x:0:0");
  std::filesystem::create_directories(dir_ / "outside" / "tree");
  test_util::WriteFile(PathOf("outside/tree/secret.pt"), "secret");
  std::filesystem::create_symlink(dir_ / "outside" / "passwd", dir_ / "ckpt" / "passwd.pt");
  std::filesystem::create_symlink("../../outside/passwd", dir_ / "ckpt" / "runs" / "rel.pt");
  std::filesystem::create_directory_symlink(dir_ / "outside" / "tree", dir_ / "ckpt" / "tree");
  std::filesystem::create_symlink("nowhere.pt", dir_ / "ckpt" / "dangling.pt");
  std::filesystem::create_symlink("runs/m.pt", dir_ / "ckpt" / "latest.pt");  // inside: fine
  absl::StatusOr<std::vector<CheckpointStore::Listed>> files = store_->List();
  ASSERT_TRUE(files.ok()) << files.status();
  std::vector<std::string> paths;
  for (const CheckpointStore::Listed& listed : *files) paths.push_back(listed.file.path);
  EXPECT_THAT(paths, ::testing::ElementsAre("latest.pt", "runs/m.pt"));
  EXPECT_EQ((*files)[0].file.size, (*files)[1].file.size);
  // And none of them can be read either.
  for (const char* path : {"passwd.pt", "runs/rel.pt", "tree/secret.pt"}) {
    EXPECT_EQ(store_->OpenDownload(path, 0).status().code(), absl::StatusCode::kPermissionDenied)
        << path;
  }
}

TEST_F(CheckpointStoreTest, ErrorsNameNoAbsolutePath) {
  AddModel("m");
  const std::string root = std::filesystem::canonical(dir_).string();
  std::vector<absl::Status> errors;
  test_util::WriteFile(PathOf("ckpt/corrupt.pt"), "not a zip file");
  errors.push_back(store_->Load({.model = "m", .path = "corrupt.pt"}).status());
  test_util::WriteFile(PathOf("ckpt/corrupt.safetensors"), "\\xff\\xff");
  errors.push_back(store_->Load({.model = "new", .path = "corrupt.safetensors"}).status());
  std::filesystem::create_symlink("loop.pt", dir_ / "ckpt" / "loop.pt");
  errors.push_back(store_->Load({.model = "m", .path = "loop.pt"}).status());
  errors.push_back(store_->OpenDownload("loop.pt", 0).status());
  std::filesystem::create_symlink("loop", dir_ / "ckpt" / "loop");
  errors.push_back(store_->Save({.model = "m", .path = "loop/x.pt"}).status());
  errors.push_back(store_->UploadOffset("loop/x.pt").status());
  std::filesystem::create_directories(dir_ / "ckpt" / ".dir.pt.upload");
  errors.push_back(
      store_->StartUpload({.path = "dir.pt", .total_size = 1, .sha256 = Hex("x")}).status());
  fs_.FailFromStep(0);
  errors.push_back(store_->Save({.model = "m", .path = "s/m.safetensors"}).status());
  errors.push_back(
      store_->StartUpload({.path = "u.pt", .total_size = 1, .sha256 = Hex("x")}).status());
  fs_.FailFromStep(-1);
  for (const absl::Status& error : errors) {
    EXPECT_FALSE(error.ok());
    EXPECT_THAT(std::string(error.message()), ::testing::Not(HasSubstr(root)));
    EXPECT_THAT(std::string(error.message()), ::testing::Not(HasSubstr(dir_.string())));
  }
  EXPECT_THAT(std::string(errors[0].message()), HasSubstr("corrupt.pt"));
}

}  // namespace
}  // namespace paramd::io
