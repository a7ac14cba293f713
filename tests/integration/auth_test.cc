// paramd's security end to end: the role table against every method the daemon serves,
// called with no token, a wrong token and each role's token, over TLS and mutual TLS; refused
// calls change nothing; the token file reloads (on change and SIGHUP) and a malformed
// rewrite keeps the old tokens; the loopback rule; paramctl's flags; tokens never logged.
// Certificates come from the openssl command line, in the test's temporary directory.
#include "server/service/auth.h"

#include <openssl/evp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "grpc/health/v1/health.pb.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpc/reflection/v1alpha/reflection.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "paramd/client.h"
#include "paramd/v1/checkpoints.pb.h"
#include "paramd/v1/inference.grpc.pb.h"
#include "paramd/v1/inference.pb.h"
#include "paramd/v1/models.pb.h"
#include "paramd/v1/parameters.pb.h"
#include "paramd/v1/training.pb.h"
#include "tests/integration/client_fixture.h"
#include "tests/integration/daemon.h"
#include "tests/integration/specs.h"

namespace paramd::testing {
namespace {

using service::Role;
using ::testing::HasSubstr;
using ::testing::Not;

std::string ReadFile(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

// Runs a shell command; its exit status and its output (stdout and stderr).
std::pair<int, std::string> Shell(const std::string& command) {
  FILE* pipe = popen(("( " + command + " ) 2>&1").c_str(), "r");
  std::string output;
  char buffer[4096];
  size_t n = 0;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

std::string Sha256(const std::string& token) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(token.data(), token.size(), digest, &length, EVP_sha256(), nullptr);
  return "sha256:" +
         absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(digest), length));
}

// A throwaway CA, a server certificate for 127.0.0.1 and localhost, and a client certificate.
struct Pki {
  std::string dir;
  std::string ca, server_cert, server_key, client_cert, client_key;  // paths

  static Pki Make(const std::string& dir) {
    Pki pki{dir,
            dir + "/ca.pem",
            dir + "/server.pem",
            dir + "/server.key",
            dir + "/client.pem",
            dir + "/client.key"};
    WriteFile(dir + "/server.ext",
              "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n");
    WriteFile(dir + "/client.ext", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n");
    const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string script = absl::StrCat(
        "cd ", dir, " && openssl req -x509 ", ec,
        " -keyout ca.key -out ca.pem -days 2 -subj /CN=paramd-test-ca", " && openssl req ", ec,
        " -keyout server.key -out server.csr -subj /CN=localhost",
        " && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial",
        " -out server.pem -days 2 -extfile server.ext", " && openssl req ", ec,
        " -keyout client.key -out client.csr -subj /CN=paramd-test-client",
        " && openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial",
        " -out client.pem -days 2 -extfile client.ext");
    auto [status, output] = Shell(script);
    EXPECT_EQ(status, 0) << output;
    return pki;
  }
};

// The credentials a call is made with, and the role the daemon gives each token.
struct Credential {
  std::string label;
  std::string token;         // empty: no authorization header
  std::optional<Role> role;  // nullopt: not a known token
};

const char* kReadToken = "read-token-3b6f0e";
const char* kWriteToken = "write-token-91ac44";
const char* kAdminToken = "admin-token-c2d8a7";
const char* kWrongToken = "wrong-token-000000";

std::vector<Credential> Credentials() {
  return {{"none", "", std::nullopt},
          {"wrong", kWrongToken, std::nullopt},
          {"read", kReadToken, Role::kRead},
          {"write", kWriteToken, Role::kWrite},
          {"admin", kAdminToken, Role::kAdmin}};
}

std::string TokenFile() {
  return absl::StrCat("# test tokens\n\nreader read ", Sha256(kReadToken), "\nwriter write ",
                      Sha256(kWriteToken), "\n  admin   admin ", Sha256(kAdminToken), "  \n");
}

std::string CodeName(grpc::StatusCode code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

bool Refused(grpc::StatusCode code) {
  return code == grpc::StatusCode::UNAUTHENTICATED || code == grpc::StatusCode::PERMISSION_DENIED;
}

// Calls `method` with one empty request message, whatever its kind (unary or streaming),
// cancelling it after its first answer (Health/Watch never ends on its own).
grpc::Status CallGeneric(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                         const std::string& token) {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
  grpc::CompletionQueue queue;
  void* tag = nullptr;
  bool ok = false;
  auto call = stub.PrepareCall(&context, method, &queue);
  call->StartCall(reinterpret_cast<void*>(1));
  queue.Next(&tag, &ok);
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  queue.Next(&tag, &ok);
  call->WritesDone(reinterpret_cast<void*>(3));
  queue.Next(&tag, &ok);
  grpc::ByteBuffer answer;
  call->Read(&answer, reinterpret_cast<void*>(4));
  queue.Next(&tag, &ok);
  if (ok) context.TryCancel();
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(5));
  queue.Next(&tag, &ok);
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  return status;
}

// Every method of every service the daemon lists over reflection, from the generated pool.
std::vector<std::string> ServedMethods(const std::shared_ptr<grpc::Channel>& channel) {
  // Link each service's generated code, so that its file is in the generated pool.
  (void)v1::CreateModelRequest::descriptor();
  (void)v1::StateDictRequest::descriptor();
  (void)v1::SaveRequest::descriptor();
  (void)v1::ForwardRequest::descriptor();
  (void)v1::CreateOptimizerRequest::descriptor();
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  (void)grpc::reflection::v1::ServerReflectionRequest::descriptor();
  (void)grpc::reflection::v1alpha::ServerReflectionRequest::descriptor();
  auto stub = grpc::reflection::v1::ServerReflection::NewStub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto stream = stub->ServerReflectionInfo(&context);
  grpc::reflection::v1::ServerReflectionRequest request;
  request.set_list_services("");
  EXPECT_TRUE(stream->Write(request));
  grpc::reflection::v1::ServerReflectionResponse response;
  EXPECT_TRUE(stream->Read(&response));
  stream->WritesDone();
  std::vector<std::string> methods;
  for (const auto& listed : response.list_services_response().service()) {
    const google::protobuf::ServiceDescriptor* service =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(listed.name());
    EXPECT_NE(service, nullptr) << listed.name()
                                << " is served but its generated code is not linked into "
                                   "this test: name one of its messages in ServedMethods";
    if (service == nullptr) continue;
    for (int i = 0; i < service->method_count(); ++i) {
      methods.push_back(absl::StrCat("/", service->full_name(), "/", service->method(i)->name()));
    }
  }
  EXPECT_TRUE(stream->Finish().ok());
  return methods;
}

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/paramd-auth-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
    pki_ = Pki::Make(dir_);
    tokens_ = dir_ + "/tokens";
    WriteFile(tokens_, TokenFile());
  }
  void TearDown() override {
    if (daemon_) {
      const std::string log = daemon_->Log();
      for (const char* token : {kReadToken, kWriteToken, kAdminToken, kWrongToken}) {
        EXPECT_THAT(log, Not(HasSubstr(token))) << "a token appeared in the daemon's log";
      }
      daemon_.reset();
    }
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  void StartDaemon(bool mutual, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--tls-cert",    pki_.server_cert, "--tls-key",
                                     pki_.server_key, "--auth-tokens",  tokens_};
    if (mutual) args.insert(args.end(), {"--tls-client-ca", pki_.ca});
    args.insert(args.end(), extra.begin(), extra.end());
    auto daemon = Daemon::Start(args);
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
  }

  client::ConnectOptions Options(const std::string& token, bool client_cert) const {
    client::ConnectOptions options;
    options.token = token;
    options.tls_root_ca_pem = ReadFile(pki_.ca);
    if (client_cert) {
      options.tls_cert_pem = ReadFile(pki_.client_cert);
      options.tls_key_pem = ReadFile(pki_.client_key);
    }
    return options;
  }

  std::shared_ptr<grpc::Channel> TlsChannel(bool client_cert) const {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFile(pki_.ca);
    if (client_cert) {
      ssl.pem_cert_chain = ReadFile(pki_.client_cert);
      ssl.pem_private_key = ReadFile(pki_.client_key);
    }
    return grpc::CreateChannel(daemon_->address(), grpc::SslCredentials(ssl));
  }

  std::unique_ptr<client::Client> Connect(const std::string& token, bool client_cert = false) {
    auto connected = client::Client::Connect(daemon_->address(), Options(token, client_cert));
    EXPECT_TRUE(connected.ok()) << connected.status();
    return connected.ok() ? *std::move(connected) : nullptr;
  }

  // Every served method with every credential: the code the role table promises.
  void CheckEveryMethod(bool mutual);

  std::string dir_;
  Pki pki_;
  std::string tokens_;
  std::unique_ptr<Daemon> daemon_;
};

void AuthTest::CheckEveryMethod(bool mutual) {
  StartDaemon(mutual);
  const std::shared_ptr<grpc::Channel> channel = TlsChannel(/*client_cert=*/mutual);
  const std::vector<std::string> methods = ServedMethods(channel);
  ASSERT_GE(methods.size(), 29u);
  std::set<std::string> served(methods.begin(), methods.end());
  for (const service::MethodRole& entry : service::MethodRoles()) {
    EXPECT_TRUE(served.count(std::string(entry.method)))
        << entry.method << " is in the role table but not served";
  }
  std::string table = absl::StrCat(mutual ? "mutual TLS" : "TLS", "\n", "method");
  for (const Credential& credential : Credentials())
    absl::StrAppend(&table, "\t", credential.label);
  for (const std::string& method : methods) {
    const std::optional<Role> needed = service::RequiredRole(method);
    EXPECT_TRUE(needed.has_value()) << method << " is served but missing from the role table "
                                    << "(server/service/auth.cc, Note [Role table])";
    if (!needed) continue;
    absl::StrAppend(&table, "\n", method, " [", service::RoleName(*needed), "]");
    for (const Credential& credential : Credentials()) {
      const grpc::Status status = CallGeneric(channel, method, credential.token);
      absl::StrAppend(&table, "\t", CodeName(status.error_code()));
      if (*needed == Role::kOpen) {
        EXPECT_FALSE(Refused(status.error_code())) << method << " " << credential.label;
      } else if (!credential.role) {
        EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
            << method << " " << credential.label << ": " << status.error_message();
      } else if (*credential.role < *needed) {
        EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
            << method << " " << credential.label << ": " << status.error_message();
        EXPECT_THAT(status.error_message(),
                    HasSubstr(absl::StrCat("needs role '", service::RoleName(*needed), "'")));
      } else {
        EXPECT_FALSE(Refused(status.error_code()))
            << method << " " << credential.label << ": " << status.error_message();
      }
    }
  }
  std::printf("%s\n", table.c_str());
}

TEST_F(AuthTest, EveryMethodOverTlsGetsTheCodeItsRoleSays) { CheckEveryMethod(false); }

TEST_F(AuthTest, EveryMethodOverMutualTlsGetsTheCodeItsRoleSays) {
  CheckEveryMethod(true);
  // Without a client certificate the handshake itself fails.
  const grpc::Status status =
      CallGeneric(TlsChannel(/*client_cert=*/false), "/grpc.health.v1.Health/Check", kAdminToken);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
}

TEST_F(AuthTest, RefusedCallsChangeNothing) {
  StartDaemon(/*mutual=*/false);
  std::unique_ptr<client::Client> admin = Connect(kAdminToken);
  ASSERT_TRUE(admin->CreateModel("m", kMlpSpec).ok());
  const uint64_t version = admin->DescribeModel("m")->version;
  const std::string local = dir_ + "/upload.bin";
  WriteFile(local, "some bytes");
  for (const Credential& credential : Credentials()) {
    if (credential.role == Role::kAdmin) continue;
    SCOPED_TRACE(credential.label);
    std::unique_ptr<client::Client> c = Connect(credential.token);
    client::RemoteModel m = c->Model("m");
    const bool may_write = credential.role == Role::kWrite;
    auto refused = [](const absl::Status& status) {
      EXPECT_TRUE(status.code() == absl::StatusCode::kUnauthenticated ||
                  status.code() == absl::StatusCode::kPermissionDenied)
          << status;
    };
    refused(c->CreateModel("x", kMlpSpec).status());
    refused(c->DeleteModel("m"));
    refused(m.MoveModel("cpu").status());
    refused(c->SaveCheckpoint("m", "saved.pt").status());
    refused(c->LoadCheckpoint("y", "saved.pt").status());
    refused(c->Upload(local, "uploaded.bin").status());
    refused(c->Snapshot().status());
    if (!may_write) {
      refused(m.SetTensor("w2", Floats({1}, {5})).status());
      refused(m.SetMode(false).status());
      refused(m.TieParameters("linear2.weight", "linear1.weight").status());
      refused(m.RegisterParameter("", "extra", Floats({1}, {1})).status());
      refused(m.LoadStateDict({{"w2", Floats({1}, {7})}}, {.strict = false}).status());
    }
  }
  auto models = admin->ListModels();
  ASSERT_TRUE(models.ok());
  ASSERT_EQ(models->size(), 1u);
  EXPECT_EQ((*models)[0].version, version);
  auto w2 = admin->Model("m").GetTensor("w2");
  ASSERT_TRUE(w2.ok());
  EXPECT_EQ(w2->ToDoubles(), std::vector<double>({2.0}));
  EXPECT_TRUE(std::filesystem::is_empty(daemon_->checkpoint_dir()));
  EXPECT_FALSE(std::filesystem::exists(daemon_->data_dir() + "/models/m"));
  // The same calls with the roles they need go through.
  std::unique_ptr<client::Client> writer = Connect(kWriteToken);
  EXPECT_TRUE(writer->Model("m").SetTensor("w2", Floats({1}, {5})).ok());
  EXPECT_TRUE(admin->SaveCheckpoint("m", "saved.pt").ok());
  EXPECT_EQ(admin->DescribeModel("m")->version, version + 1);
}

// A training-mode forward commits BatchNorm's running statistics as a new version: a write,
// which a `read` token may not make through Forward (Note [Forward role] in auth.cc).
TEST_F(AuthTest, TrainingModeForwardNeedsWriteAndAReadTokenChangesNothing) {
  StartDaemon(/*mutual=*/false);
  std::unique_ptr<client::Client> admin = Connect(kAdminToken);
  ASSERT_TRUE(admin->CreateModel("bn", kBatchNormSpec).ok());
  ASSERT_TRUE(admin->Model("bn").SetMode(false).ok());  // eval
  auto state = [&] {
    auto mean = admin->Model("bn").GetTensor("1.running_mean");
    EXPECT_TRUE(mean.ok()) << mean.status();
    return std::make_pair(admin->DescribeModel("bn")->version,
                          mean.ok() ? mean->ToDoubles() : std::vector<double>());
  };
  const auto before = state();
  const client::HostTensor x = Floats({4, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  client::ForwardOptions train, eval, model;
  train.mode = client::ForwardMode::kTrain;
  eval.mode = client::ForwardMode::kEval;

  std::unique_ptr<client::Client> reader = Connect(kReadToken);
  client::RemoteModel bn = reader->Model("bn");
  // Asked for explicitly, on an eval-mode model.
  auto refused = bn.Forward(x, train);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied) << refused.status();
  EXPECT_THAT(refused.status().message(),
              HasSubstr("/paramd.v1.Inference/Forward in training mode (FORWARD_MODE_TRAIN)"));
  EXPECT_THAT(refused.status().message(),
              HasSubstr("needs role 'write'; token 'reader' has role 'read'; ask for "
                        "FORWARD_MODE_EVAL"));
  EXPECT_EQ(state(), before);
  // Eval forwards stay open to it, asked for or the model's own mode.
  auto evaluated = bn.Forward(x, eval);
  ASSERT_TRUE(evaluated.ok()) << evaluated.status();
  EXPECT_EQ(evaluated->updated_version, 0u);
  EXPECT_TRUE(bn.Forward(x, model).ok());
  EXPECT_EQ(state(), before);

  // The model's own mode, training, with the mode left unset: refused as well.
  ASSERT_TRUE(admin->Model("bn").SetMode(true).ok());
  const auto training = state();
  refused = bn.Forward(x, model);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied) << refused.status();
  EXPECT_THAT(refused.status().message(), HasSubstr("runs model 'bn' in its training mode"));
  EXPECT_THAT(refused.status().message(), HasSubstr("ask for FORWARD_MODE_EVAL explicitly"));
  EXPECT_EQ(state(), training);
  EXPECT_TRUE(bn.Forward(x, eval).ok());
  EXPECT_EQ(state(), training);
  EXPECT_THAT(daemon_->Log(), HasSubstr("method=/paramd.v1.Inference/Forward token=reader"));

  // A `write` token commits, as before.
  auto trained = Connect(kWriteToken)->Model("bn").Forward(x, train);
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_EQ(trained->updated_version, training.first + 1);
  EXPECT_NE(state().second, training.second);
}

// An explicit training forward from a `read` token is refused as its options frame arrives:
// the daemon does not wait for (and hold) inputs it will not use.
TEST_F(AuthTest, AReadTokensTrainingForwardIsRefusedAtItsOptionsFrame) {
  StartDaemon(/*mutual=*/false);
  ASSERT_TRUE(Connect(kAdminToken)->CreateModel("bn", kBatchNormSpec).ok());
  auto stub = v1::Inference::NewStub(TlsChannel(/*client_cert=*/false));
  grpc::ClientContext context;
  context.AddMetadata("authorization", "Bearer " + std::string(kReadToken));
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  auto stream = stub->Forward(&context);
  v1::ForwardRequest first;
  first.mutable_options()->set_model("bn");
  first.mutable_options()->set_mode(v1::FORWARD_MODE_TRAIN);
  ASSERT_TRUE(stream->Write(first));
  // No input and no half-close: the answer comes all the same.
  v1::ForwardResponse answer;
  EXPECT_FALSE(stream->Read(&answer));
  const grpc::Status status = stream->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << status.error_message();
  EXPECT_THAT(status.error_message(), HasSubstr("in training mode (FORWARD_MODE_TRAIN)"));
}

// Waits up to `seconds` for `done`; the seconds it took, or -1.
template <typename Fn>
double WaitFor(double seconds, Fn done) {
  const auto start = std::chrono::steady_clock::now();
  while (true) {
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (done()) return elapsed;
    if (elapsed > seconds) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

TEST_F(AuthTest, TokenFileReloadsWhenRewrittenAndOnSighupKeepingOldTokensWhenMalformed) {
  WriteFile(tokens_, absl::StrCat("admin admin ", Sha256(kAdminToken), "\n"));
  StartDaemon(/*mutual=*/false);
  std::unique_ptr<client::Client> admin = Connect(kAdminToken);
  std::unique_ptr<client::Client> reader = Connect(kReadToken);
  ASSERT_EQ(reader->ListModels().status().code(), absl::StatusCode::kUnauthenticated);

  // Rewritten as Kubernetes does: a new file renamed over the old.
  WriteFile(tokens_ + ".new", TokenFile());
  std::filesystem::rename(tokens_ + ".new", tokens_);
  const double took = WaitFor(5, [&] { return reader->ListModels().ok(); });
  EXPECT_GE(took, 0);
  EXPECT_LT(took, 2.5) << "a rewritten token file took effect only after " << took << " s";

  // A malformed rewrite is refused, loudly, and the tokens in force stay.
  WriteFile(tokens_, absl::StrCat("reader read ", Sha256(kReadToken), "\nnot a token line\n"));
  EXPECT_GE(
      WaitFor(5,
              [&] { return daemon_->Log().find("TOKEN FILE NOT RELOADED") != std::string::npos; }),
      0);
  EXPECT_THAT(daemon_->Log(), HasSubstr("line 2"));
  EXPECT_TRUE(admin->ListModels().ok());
  EXPECT_TRUE(reader->ListModels().ok());

  // SIGHUP reads the file again at once, and the daemon goes on serving.
  WriteFile(tokens_, absl::StrCat("reader read ", Sha256(kReadToken), "\n"));
  ASSERT_EQ(kill(daemon_->pid(), SIGHUP), 0);
  EXPECT_GE(
      WaitFor(3, [&] { return daemon_->Log().find("SIGHUP: reloading") != std::string::npos; }), 0);
  EXPECT_GE(WaitFor(3,
                    [&] {
                      return admin->ListModels().status().code() ==
                             absl::StatusCode::kUnauthenticated;
                    }),
            0);
  EXPECT_TRUE(reader->ListModels().ok());
  EXPECT_TRUE(daemon_->running());
}

TEST_F(AuthTest, RenewedCertificateFilesTakeEffectWithoutRestart) {
  StartDaemon(/*mutual=*/false);
  const std::string rotated = dir_ + "/rotated";
  std::filesystem::create_directory(rotated);
  const Pki next = Pki::Make(rotated);  // a new CA and a server certificate signed by it
  // True when a fresh connection trusting `ca` gets an answer (the call is cancelled after it).
  auto answered = [&](const std::string& ca) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFile(ca);
    const grpc::StatusCode code =
        CallGeneric(grpc::CreateChannel(daemon_->address(), grpc::SslCredentials(ssl)),
                    "/grpc.health.v1.Health/Check", "")
            .error_code();
    EXPECT_TRUE(code == grpc::StatusCode::OK || code == grpc::StatusCode::CANCELLED ||
                code == grpc::StatusCode::UNAVAILABLE)
        << CodeName(code);
    return code != grpc::StatusCode::UNAVAILABLE;
  };
  ASSERT_TRUE(answered(pki_.ca));
  ASSERT_FALSE(answered(next.ca));
  // Replaced in place, as a Kubernetes Secret is: no signal, no restart.
  std::filesystem::copy_file(next.server_key, pki_.server_key + ".new");
  std::filesystem::copy_file(next.server_cert, pki_.server_cert + ".new");
  std::filesystem::rename(pki_.server_key + ".new", pki_.server_key);
  std::filesystem::rename(pki_.server_cert + ".new", pki_.server_cert);
  EXPECT_GE(WaitFor(5, [&] { return answered(next.ca); }), 0)
      << "the renewed certificate was not served within 5 s";
  EXPECT_FALSE(answered(pki_.ca));
}

TEST_F(AuthTest, MalformedTokenFileStopsTheStartNamingTheLine) {
  WriteFile(tokens_,
            absl::StrCat("# ok\nreader read ", Sha256(kReadToken), "\nw writer sha256:12\n"));
  auto [status, output] =
      Shell(absl::StrCat(BinaryPath("paramd"), " --listen 127.0.0.1:0", " --data-dir ", dir_,
                         "/data --auth-tokens ", tokens_));
  EXPECT_NE(status, 0);
  EXPECT_THAT(output, HasSubstr(absl::StrCat("token file '", tokens_, "' line 3")));
}

// One hash on two lines would give one token two roles, the last line's winning.
TEST_F(AuthTest, TokenFileListingOneHashTwiceStopsTheStartNamingBothLines) {
  WriteFile(tokens_, absl::StrCat("dashboard read ", Sha256(kReadToken), "\nops admin ",
                                  Sha256(kReadToken), "\n"));
  // `timeout`: a daemon that accepted the file would serve until stopped (exit 124).
  auto [status, output] =
      Shell(absl::StrCat("timeout 20 ", BinaryPath("paramd"), " --listen 127.0.0.1:0",
                         " --data-dir ", dir_, "/data --auth-tokens ", tokens_));
  EXPECT_EQ(status, 1) << output;
  EXPECT_THAT(output,
              HasSubstr(absl::StrCat(
                  "token file '", tokens_,
                  "' line 2: token 'ops' has the same hash as token 'dashboard' on line 1")));
}

// A token file that cannot serve (a directory, no tokens at all, unreadable) stops the
// start rather than leaving a daemon that refuses every call.
TEST_F(AuthTest, TokenFileThatIsADirectoryEmptyOrUnreadableStopsTheStart) {
  const std::string directory = dir_ + "/tokens.d";
  std::filesystem::create_directory(directory);
  const std::string empty = dir_ + "/empty";
  WriteFile(empty, "# nobody yet\n\n");
  std::vector<std::pair<std::string, std::string>> cases = {
      {directory, "Is a directory; --auth-tokens names the token file itself"},
      {empty, "lists no tokens"},
  };
  // Permissions do not stop root.
  if (geteuid() != 0) {
    const std::string unreadable = dir_ + "/unreadable";
    WriteFile(unreadable, TokenFile());
    std::filesystem::permissions(unreadable, std::filesystem::perms::none);
    cases.push_back({unreadable, "Permission denied"});
  }
  for (const auto& [path, why] : cases) {
    SCOPED_TRACE(path);
    auto [status, output] =
        Shell(absl::StrCat("timeout 20 ", BinaryPath("paramd"), " --listen 127.0.0.1:0",
                           " --data-dir ", dir_, "/data --auth-tokens ", path));
    EXPECT_EQ(status, 1) << output;
    EXPECT_THAT(output, HasSubstr(absl::StrCat("the token file '", path, "' (--auth-tokens)")));
    EXPECT_THAT(output, HasSubstr(why));
  }
}

TEST_F(AuthTest, ListeningBeyondLoopbackNeedsTlsAndTokensOrAllowInsecure) {
  auto [status, output] = Shell(
      absl::StrCat(BinaryPath("paramd"), " --listen 0.0.0.0:0", " --data-dir ", dir_, "/data"));
  EXPECT_NE(status, 0);
  EXPECT_THAT(output, HasSubstr("refusing to listen on '0.0.0.0:0'"));
  EXPECT_THAT(output, HasSubstr("--allow-insecure"));
  // TLS alone is not enough either.
  std::tie(status, output) =
      Shell(absl::StrCat(BinaryPath("paramd"), " --listen 0.0.0.0:0 --data-dir ", dir_,
                         "/data --tls-cert ", pki_.server_cert, " --tls-key ", pki_.server_key));
  EXPECT_NE(status, 0);
  EXPECT_THAT(output, HasSubstr("bearer tokens (--auth-tokens)"));

  auto insecure = Daemon::Start({"--listen", "0.0.0.0:0", "--allow-insecure"});
  ASSERT_TRUE(insecure.ok()) << insecure.status();
  EXPECT_THAT((*insecure)->Log(), HasSubstr("INSECURE"));
  const std::string port = (*insecure)->address().substr((*insecure)->address().rfind(':'));
  auto plain = client::Client::Connect("127.0.0.1" + port);
  ASSERT_TRUE(plain.ok());
  EXPECT_TRUE((*plain)->Health().ok());
  EXPECT_TRUE((*plain)->ListModels().ok());
  plain->reset();
  insecure->reset();

  // With both, no warning; localhost counts as loopback.
  StartDaemon(/*mutual=*/false, {"--listen", "0.0.0.0:0"});
  EXPECT_THAT(daemon_->Log(), Not(HasSubstr("INSECURE")));
  auto local = Daemon::Start({"--listen", "localhost:0"});
  EXPECT_TRUE(local.ok()) << local.status();
}

// The kubelet's gRPC probes speak neither TLS nor tokens: --health-listen serves the health
// service alone, in plaintext, beside a mutual-TLS port with tokens.
TEST_F(AuthTest, HealthListenServesHealthAloneInPlaintext) {
  StartDaemon(/*mutual=*/true, {"--health-listen", "127.0.0.1:0"});
  const std::string log = daemon_->Log();
  const size_t at = log.find(" health=");
  ASSERT_NE(at, std::string::npos) << log;
  const std::string health_address = log.substr(at + 8, log.find(' ', at + 1) - at - 8);
  ASSERT_THAT(health_address, ::testing::StartsWith("127.0.0.1:"));
  auto plain = client::Client::Connect(health_address, client::ConnectOptions{});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_TRUE((*plain)->Health().ok()) << (*plain)->Health();
  // Nothing else is served there, with or without a token.
  auto listed = (*plain)->ListModels();
  EXPECT_EQ(listed.status().code(), absl::StatusCode::kUnimplemented) << listed.status();
  auto channel = grpc::CreateChannel(health_address, grpc::InsecureChannelCredentials());
  EXPECT_EQ(CallGeneric(channel, "/paramd.v1.Models/ListModels", kAdminToken).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  // Nor reflection, which would list every service's descriptors to anyone.
  for (const char* reflection : {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                 "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"}) {
    const grpc::Status status = CallGeneric(channel, reflection, "");
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNIMPLEMENTED)
        << reflection << ": " << CodeName(status.error_code()) << " " << status.error_message();
  }
  // The main port serves both, to a caller with TLS.
  for (const char* reflection : {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                 "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"}) {
    const grpc::Status status = CallGeneric(TlsChannel(/*client_cert=*/true), reflection, "");
    EXPECT_NE(status.error_code(), grpc::StatusCode::UNIMPLEMENTED) << reflection;
  }
  // The main port still wants TLS: a plaintext health check there fails.
  auto main_plain = grpc::CreateChannel(daemon_->address(), grpc::InsecureChannelCredentials());
  EXPECT_EQ(CallGeneric(main_plain, "/grpc.health.v1.Health/Check", "").error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(daemon_->Stop(), 0);
}

TEST_F(AuthTest, ParamctlSendsTokenAndTls) {
  StartDaemon(/*mutual=*/true);
  const std::string paramctl = BinaryPath("paramctl");
  auto [status, output] = Shell(absl::StrCat(paramctl, " hash-token ", kReadToken));
  EXPECT_EQ(status, 0);
  EXPECT_EQ(output, Sha256(kReadToken) + "\n");
  std::tie(status, output) =
      Shell(absl::StrCat("echo ", kReadToken, " | ", paramctl, " hash-token"));
  EXPECT_EQ(output, Sha256(kReadToken) + "\n");

  const std::string tls =
      absl::StrCat(paramctl, " --server ", daemon_->address(), " --tls-ca ", pki_.ca,
                   " --tls-cert ", pki_.client_cert, " --tls-key ", pki_.client_key);
  std::tie(status, output) = Shell(absl::StrCat(tls, " --token ", kReadToken, " models"));
  EXPECT_EQ(status, 0) << output;
  std::tie(status, output) = Shell(absl::StrCat("PARAMD_TOKEN=", kReadToken, " ", tls, " models"));
  EXPECT_EQ(status, 0) << output;
  std::tie(status, output) = Shell(absl::StrCat("env -u PARAMD_TOKEN ", tls, " models"));
  EXPECT_EQ(status, 1);
  EXPECT_THAT(output, HasSubstr("UNAUTHENTICATED"));
  std::tie(status, output) = Shell(absl::StrCat(tls, " --token ", kReadToken, " delete m"));
  EXPECT_EQ(status, 1);
  EXPECT_THAT(output, HasSubstr("needs role 'admin'"));
}

}  // namespace
}  // namespace paramd::testing
