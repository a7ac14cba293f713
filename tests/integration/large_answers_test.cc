// Answers larger than one gRPC message, read with a client's default limits (the fixture's
// channel receives at most 4 MiB per message): a load's key lists stream in bounded messages,
// a long repr is cut in ModelInfo and streamed whole by GetRepr, ListModels pages. And a call
// that fails changes nothing while one that succeeds can say so (docs/wire.md, "Pages and
// streamed lists").
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "paramd/client.h"
#include "tests/integration/daemon.h"
#include "tests/integration/stub_fixture.h"
#include "tests/integration/specs.h"
#include "tests/integration/wire.h"

namespace paramd::testing {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr size_t kDefaultLimit = size_t{4} << 20;  // a gRPC client's receive limit
constexpr int kManyKeys = 25000;

// `count` keys of 200 bytes (25000 of them: 5 MB of names, past one message's 4 MiB), or of
// `bytes` bytes. The index comes first, so names, their order and their sorted order agree.
std::vector<std::string> LongKeys(int count = kManyKeys, size_t bytes = 200) {
  std::vector<std::string> keys;
  keys.reserve(count);
  for (int i = 0; i < count; ++i) {
    keys.push_back(absl::StrFormat("%05d_unexpected_%s", i, std::string(bytes - 17, 'k')));
  }
  return keys;
}

// The keys of the checkpoint test: 25000 of 200 bytes, again 5 MB of names (the safetensors
// header parse is O(n log n) in the number of names).
std::vector<std::string> CheckpointKeys() { return LongKeys(); }

// A model whose repr is `refs` + 1 copies of a Sequential of 1000 Identity modules (the refs
// share it, and repr prints a shared module at every path): about 21 KB per copy.
std::string WideReprSpec(int refs) {
  std::vector<std::string> children = {
      absl::StrCat(R"({"name": "body", "type": "Sequential", "children": [)",
                   absl::StrJoin(std::vector<std::string>(1000, R"({"type": "Identity"})"), ","),
                   "]}")};
  for (int i = 0; i < refs; ++i) {
    children.push_back(absl::StrCat(R"({"name": "copy)", i, R"(", "ref": "body"})"));
  }
  return absl::StrCat(R"({"type": "Wide", "children": [)", absl::StrJoin(children, ","), "]}");
}

// "Error(s) in loading state_dict for MLP:" with PyTorch's missing/unexpected lines.
std::string TorchLoadError(const std::vector<std::string>& missing,
                           const std::vector<std::string>& unexpected) {
  auto quoted = [](const std::vector<std::string>& keys) {
    return absl::StrJoin(keys, ", ", [](std::string* out, const std::string& key) {
      absl::StrAppend(out, "\"", key, "\"");
    });
  };
  return absl::StrCat("Error(s) in loading state_dict for MLP:\n\tMissing key(s) in state_dict: ",
                      quoted(missing), ". \n\tUnexpected key(s) in state_dict: ",
                      quoted(unexpected), ". ");
}

class LargeAnswersTest : public DaemonStubsTest {
 protected:

  grpc::Status Create(const std::string& name, const std::string& spec, v1::ModelInfo* info) {
    grpc::ClientContext context;
    v1::CreateModelRequest request;
    request.set_name(name);
    request.set_spec_json(spec);
    return models_->CreateModel(&context, request, info);
  }

  grpc::Status Describe(const std::string& name, v1::ModelInfo* info) {
    grpc::ClientContext context;
    v1::DescribeModelRequest request;
    request.set_name(name);
    return models_->DescribeModel(&context, request, info);
  }

  uint64_t Version(const std::string& name) {
    v1::ModelInfo info;
    EXPECT_TRUE(Describe(name, &info).ok());
    return info.version();
  }

  std::vector<float> W2() { return Floats(GetTensor(*parameters_, "mlp", "w2").tensors[0].data); }

  grpc::Status ListPage(int page_size, const std::string& token, v1::ListModelsResponse* page) {
    grpc::ClientContext context;
    v1::ListModelsRequest request;
    request.set_page_size(page_size);
    request.set_page_token(token);
    return models_->ListModels(&context, request, page);
  }

  // The write frames of a load into "mlp": w2 = [7], then every long key.
  std::vector<v1::WriteFrame> LoadFrames(bool strict) {
    std::vector<v1::WriteFrame> frames = {OptionsFrame("mlp")};
    frames[0].mutable_options()->set_non_strict(!strict);
    auto add = [&](const std::string& name, float value) {
      auto tensor = FloatTensorFrames(name, {1}, {value});
      frames.insert(frames.end(), tensor.begin(), tensor.end());
    };
    add("w2", 7.0f);
    for (const std::string& key : LongKeys()) add(key, 1.0f);
    return frames;
  }

  // A safetensors file in the checkpoint directory with CheckpointKeys(), then w2 = [7]
  // (names and offsets in the same order).
  void WriteLongKeysCheckpoint(const std::string& path) {
    std::vector<std::string> names = CheckpointKeys();
    names.push_back("w2");
    std::vector<std::string> fields;
    for (size_t i = 0; i < names.size(); ++i) {
      fields.push_back(absl::StrFormat(R"("%s":{"dtype":"F32","shape":[1],"data_offsets":[%d,%d]})",
                                       names[i], 4 * i, 4 * i + 4));
    }
    std::string header = absl::StrCat("{", absl::StrJoin(fields, ","), "}");
    header.append((8 - header.size() % 8) % 8, ' ');
    std::string data;
    for (size_t i = 0; i < names.size(); ++i) data += FloatBytes({i + 1 == names.size() ? 7.0f : 1.0f});
    std::string length(8, '\0');
    for (int b = 0; b < 8; ++b) length[b] = static_cast<char>((header.size() >> (8 * b)) & 0xff);
    std::ofstream(daemon_->checkpoint_dir() + "/" + path, std::ios::binary) << length << header
                                                                            << data;
  }
};

TEST_F(LargeAnswersTest, NonStrictLoadStateDictReturnsEveryLongKeyAndMovesOnce) {
  v1::ModelInfo info;
  ASSERT_TRUE(Create("mlp", kMlpSpec, &info).ok());
  v1::LoadStateDictResponse loaded;
  int messages = 0;
  grpc::Status status = LoadStateDict(*parameters_, LoadFrames(/*strict=*/false), &loaded, &messages);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GT(messages, 4);  // 5 MB of keys in messages of at most 1 MiB
  EXPECT_EQ(loaded.version(), info.version() + 1);
  EXPECT_EQ(Version("mlp"), info.version() + 1);
  EXPECT_THAT(loaded.missing_keys(),
              ElementsAre("linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"));
  const std::vector<std::string> unexpected(loaded.unexpected_keys().begin(),
                                            loaded.unexpected_keys().end());
  EXPECT_EQ(unexpected, LongKeys());
  EXPECT_TRUE(loaded.error_text().empty());
  EXPECT_THAT(W2(), ElementsAre(7.0f));
}

TEST_F(LargeAnswersTest, RefusedStrictLoadStateDictChangesNothingAndStreamsItsWholeText) {
  v1::ModelInfo info;
  ASSERT_TRUE(Create("mlp", kMlpSpec, &info).ok());
  v1::LoadStateDictResponse refused;
  grpc::Status status = LoadStateDict(*parameters_, LoadFrames(/*strict=*/true), &refused);
  ASSERT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              StartsWith("Error(s) in loading state_dict for MLP:\n\tMissing key(s)"));
  EXPECT_LT(status.error_message().size(), 4096u);
  const std::vector<std::string> missing = {"linear1.weight", "linear1.bias", "linear2.weight",
                                            "linear2.bias"};
  EXPECT_EQ(refused.error_text(), TorchLoadError(missing, LongKeys()));
  EXPECT_EQ(refused.version(), 0u);
  EXPECT_EQ(std::vector<std::string>(refused.missing_keys().begin(), refused.missing_keys().end()),
            missing);
  EXPECT_EQ(refused.unexpected_keys_size(), kManyKeys);
  EXPECT_EQ(Version("mlp"), info.version());
  EXPECT_THAT(W2(), ElementsAre(2.0f));
}

TEST_F(LargeAnswersTest, CheckpointLoadReturnsEveryLongKeyOrChangesNothing) {
  v1::ModelInfo info;
  ASSERT_TRUE(Create("mlp", kMlpSpec, &info).ok());
  WriteLongKeysCheckpoint("long.safetensors");
  v1::LoadRequest request;
  request.set_model("mlp");
  request.set_path("long.safetensors");

  v1::LoadResponse refused;
  grpc::ClientContext strict_context;
  grpc::Status status = LoadCheckpoint(*checkpoints_, &strict_context, request, &refused);
  ASSERT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_LT(status.error_message().size(), 4096u);
  const std::vector<std::string> missing = {"linear1.weight", "linear1.bias", "linear2.weight",
                                            "linear2.bias"};
  EXPECT_EQ(refused.error_text(), TorchLoadError(missing, CheckpointKeys()));
  EXPECT_EQ(Version("mlp"), info.version());
  EXPECT_THAT(W2(), ElementsAre(2.0f));

  request.set_non_strict(true);
  v1::LoadResponse loaded;
  grpc::ClientContext context;
  status = LoadCheckpoint(*checkpoints_, &context, request, &loaded);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(loaded.version(), info.version() + 1);
  EXPECT_EQ(Version("mlp"), info.version() + 1);
  EXPECT_FALSE(loaded.created());
  EXPECT_EQ(loaded.format(), v1::CHECKPOINT_FORMAT_SAFETENSORS);
  EXPECT_EQ(std::vector<std::string>(loaded.missing_keys().begin(), loaded.missing_keys().end()),
            missing);
  EXPECT_EQ(std::vector<std::string>(loaded.unexpected_keys().begin(),
                                     loaded.unexpected_keys().end()),
            CheckpointKeys());
  EXPECT_THAT(W2(), ElementsAre(7.0f));
}

TEST_F(LargeAnswersTest, GetReprOfAnUnknownModelIsNotFoundAndSendsNothing) {
  grpc::ClientContext context;
  v1::GetReprRequest request;
  request.set_name("nobody");
  auto reader = models_->GetRepr(&context, request);
  v1::ReprChunk chunk;
  EXPECT_FALSE(reader->Read(&chunk));
  const grpc::Status status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("nobody"));
}

TEST_F(LargeAnswersTest, CreateModelWithAHugeReprAnswersWithACutReprAndGetReprHasItAll) {
  v1::ModelInfo created;
  grpc::Status status = Create("wide", WideReprSpec(250), &created);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(created.repr_truncated());
  EXPECT_LE(created.repr().size(), size_t{1} << 20);

  grpc::ClientContext context;
  v1::GetReprRequest request;
  request.set_name("wide");
  auto reader = models_->GetRepr(&context, request);
  std::string whole;
  v1::ReprChunk chunk;
  while (reader->Read(&chunk)) {
    EXPECT_EQ(chunk.version(), created.version());
    whole += chunk.text();
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_GT(whole.size(), kDefaultLimit);
  EXPECT_THAT(whole, StartsWith("Wide(\n  (body): Sequential(\n    (0): Identity()"));
  EXPECT_EQ(whole.substr(0, created.repr().size()), created.repr());
  EXPECT_EQ(whole.back(), ')');

  v1::ModelInfo described;
  ASSERT_TRUE(Describe("wide", &described).ok());
  EXPECT_TRUE(described.repr_truncated());
  EXPECT_EQ(described.repr(), created.repr());
}

TEST_F(LargeAnswersTest, ListModelsPagesThroughMoreThanOneMessageOfModels) {
  // Six models of a 1 MiB (cut) repr each: 6 MiB of ModelInfo, and a few small ones.
  std::vector<std::string> names;
  for (int i = 0; i < 6; ++i) {
    v1::ModelInfo info;
    names.push_back(absl::StrCat("wide", i));
    ASSERT_TRUE(Create(names.back(), WideReprSpec(60), &info).ok());
  }
  for (const char* name : {"a-small", "z-small"}) {
    v1::ModelInfo info;
    ASSERT_TRUE(Create(name, kMlpSpec, &info).ok());
  }
  names.insert(names.begin(), "a-small");
  names.push_back("z-small");

  std::vector<std::string> listed;
  std::string token;
  int pages = 0;
  do {
    v1::ListModelsResponse page;
    grpc::Status status = ListPage(0, token, &page);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_LT(page.ByteSizeLong(), kDefaultLimit);
    for (const auto& info : page.models()) listed.push_back(info.name());
    token = page.next_page_token();
    ++pages;
  } while (!token.empty() && pages < 20);
  EXPECT_EQ(listed, names);
  EXPECT_GE(pages, 2);

  // page_size bounds a page; a model created behind the walk is not seen, one ahead is.
  v1::ListModelsResponse first;
  ASSERT_TRUE(ListPage(2, "", &first).ok());
  ASSERT_EQ(first.models_size(), 2);
  EXPECT_EQ(first.models(1).name(), "wide0");
  v1::ModelInfo info;
  ASSERT_TRUE(Create("0-before", kMlpSpec, &info).ok());
  ASSERT_TRUE(Create("wide0a", kMlpSpec, &info).ok());
  v1::ListModelsResponse second;
  ASSERT_TRUE(ListPage(1000, first.next_page_token(), &second).ok());
  ASSERT_GT(second.models_size(), 1);
  EXPECT_EQ(second.models(0).name(), "wide0a");
  EXPECT_EQ(second.models(1).name(), "wide1");
}

TEST_F(LargeAnswersTest, ListModelsRefusesABadPageSizeOrAnEditedToken) {
  v1::ModelInfo info;
  ASSERT_TRUE(Create("a", kMlpSpec, &info).ok());
  ASSERT_TRUE(Create("b", kMlpSpec, &info).ok());
  v1::ListModelsResponse page;
  ASSERT_TRUE(ListPage(1, "", &page).ok());
  ASSERT_FALSE(page.next_page_token().empty());
  std::string edited = page.next_page_token();
  edited[2] = edited[2] == 'A' ? 'B' : 'A';
  for (const std::string& token : {edited, std::string("garbage"),
                                   page.next_page_token().substr(1)}) {
    v1::ListModelsResponse refused;
    grpc::Status status = ListPage(0, token, &refused);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << token;
    EXPECT_THAT(status.error_message(), HasSubstr("next_page_token"));
  }
  v1::ListModelsResponse refused;
  grpc::Status status = ListPage(-1, "", &refused);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("page_size -1"));
  // Past the maximum counts as the maximum.
  ASSERT_TRUE(ListPage(1 << 30, "", &page).ok());
  EXPECT_EQ(page.models_size(), 2);
  EXPECT_TRUE(page.next_page_token().empty());
}

// Reads every message of a server stream into `messages`; the call's status. Each message
// is under a client's limit, and all of them together past it: one message could not have
// carried the answer.
template <typename Message, typename Reader>
grpc::Status ReadAll(Reader& reader, std::vector<Message>* messages) {
  size_t total = 0;
  for (Message message; reader->Read(&message);) {
    EXPECT_LT(message.ByteSizeLong(), kDefaultLimit);
    total += message.ByteSizeLong();
    messages->push_back(std::move(message));
  }
  const grpc::Status status = reader->Finish();
  if (status.ok()) {
    EXPECT_GT(total, kDefaultLimit);
  }
  return status;
}

// named_modules of a chain of 17 Sequentials that each hold the next level twice: 18
// modules, the Linear at the end reached along 131072 paths, so its entry alone lists 4.4 MB
// of other paths, and the level above it 2.1 MB: more than one message, even for one entry.
TEST_F(LargeAnswersTest, NamedModulesStreamsEveryPathOfAModulePastOneMessage) {
  v1::ModelInfo info;
  grpc::Status status = Create("chain", SharedChainSpec(17), &info);
  ASSERT_TRUE(status.ok()) << status.error_message();

  grpc::ClientContext context;
  v1::NamedModulesRequest request;
  request.set_model("chain");
  auto reader = parameters_->NamedModules(&context, request);
  std::vector<v1::NamedModulesResponse> messages;
  status = ReadAll(reader, &messages);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GT(messages.size(), 6u);  // 6.5 MB of names in messages of at most 1 MiB
  // Consecutive entries of one name continue one module.
  std::vector<v1::ModuleEntry> modules;
  for (const v1::NamedModulesResponse& message : messages) {
    EXPECT_EQ(message.version(), info.version());
    for (const v1::ModuleEntry& entry : message.modules()) {
      if (!modules.empty() && modules.back().name() == entry.name()) {
        EXPECT_EQ(entry.type(), modules.back().type());
        modules.back().MergeFrom(entry);
      } else {
        modules.push_back(entry);
      }
    }
  }
  ASSERT_EQ(modules.size(), 18u);
  std::string path;
  for (int level = 0; level <= 17; ++level) {
    EXPECT_EQ(modules[level].name(), path);
    EXPECT_EQ(modules[level].type(), level == 17 ? "Linear" : "Sequential");
    EXPECT_EQ(modules[level].shared_with_size(), (1 << level) - 1) << path;
    path += path.empty() ? "0" : ".0";
  }
  EXPECT_THAT(modules[17].parameters(), ElementsAre("weight", "bias"));
  EXPECT_EQ(modules[17].shared_with(0), "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1");
  EXPECT_EQ(modules[17].shared_with(131070), "1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1");

  // The C++ client merges the same way.
  auto client = client::Client::Connect(daemon_->address());
  ASSERT_TRUE(client.ok()) << client.status();
  auto listed = (*client)->Model("chain").NamedModules();
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->version, info.version());
  ASSERT_EQ(listed->modules.size(), 18u);
  for (int level = 0; level <= 17; ++level) {
    EXPECT_EQ(listed->modules[level].name, modules[level].name());
    EXPECT_EQ(listed->modules[level].shared_with.size(), (size_t{1} << level) - 1);
  }
  EXPECT_EQ(listed->modules[17].shared_with.back(), "1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1.1");
}

// 25000 files with 200-byte names: 5 MB of CheckpointFiles, listed in bounded messages.
TEST_F(LargeAnswersTest, CheckpointListStreamsMoreFilesThanOneMessageHolds) {
  std::vector<std::string> names;
  for (const std::string& key : LongKeys()) names.push_back(key + ".pt");
  for (const std::string& name : names) {
    std::ofstream(daemon_->checkpoint_dir() + "/" + name) << "x";
  }
  grpc::ClientContext context;
  auto reader = checkpoints_->List(&context, v1::ListCheckpointsRequest());
  std::vector<v1::ListCheckpointsResponse> messages;
  grpc::Status status = ReadAll(reader, &messages);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GT(messages.size(), 4u);
  std::vector<std::string> listed;
  for (const auto& message : messages) {
    for (const v1::CheckpointFile& file : message.files()) {
      listed.push_back(file.path());
      EXPECT_EQ(file.size(), 1u);
    }
  }
  EXPECT_EQ(listed, names);  // sorted by path, as the names are

  auto client = client::Client::Connect(daemon_->address());
  ASSERT_TRUE(client.ok()) << client.status();
  auto files = (*client)->ListCheckpoints();
  ASSERT_TRUE(files.ok()) << files.status();
  ASSERT_EQ(files->size(), names.size());
  EXPECT_EQ(files->back().path, names.back());
}

}  // namespace
}  // namespace paramd::testing
