// The metrics' own rules: the per-model label cap, the RPC families' labels (unknown methods
// folded, codes by name), and the call observer's reading of a message's model and version.
#include "server/service/metrics.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "paramd/v1/inference.pb.h"
#include "paramd/v1/models.pb.h"
#include "paramd/v1/parameters.pb.h"
#include "server/service/call_observer.h"

namespace paramd::service {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(ModelLabelsTest, TheFirstNNamesKeepTheirLabelAndTheRestFoldIntoOther) {
  ModelLabels labels(2);
  EXPECT_EQ(labels.Label("b"), "b");
  EXPECT_EQ(labels.Label("a"), "a");
  EXPECT_EQ(labels.Label("c"), "_other");
  EXPECT_EQ(labels.Label("b"), "b");  // a label, once given, stays
  EXPECT_EQ(labels.Label("c"), "_other");
  ModelLabels none(0);
  EXPECT_EQ(none.Label("a"), "_other");
}

TEST(MetricsTest, CallsAreCountedByServiceMethodAndCode) {
  core::ModelRegistry models;
  Metrics metrics({.max_models = 1, .max_memory = 1024}, &models);
  Metrics::Call call = metrics.StartCall("/paramd.v1.Models/CreateModel");
  call.Received(10);
  call.Sent(7);
  call.Finished(grpc::StatusCode::ALREADY_EXISTS, 0.002);
  // A path the daemon does not serve is one "_unknown" series, however many a client sends.
  metrics.StartCall("/evil.Service/A").Finished(grpc::StatusCode::UNIMPLEMENTED, 0.001);
  metrics.StartCall("/evil.Service/B").Finished(grpc::StatusCode::UNIMPLEMENTED, 0.001);
  metrics.ObserveForward("first", 0.01);
  metrics.ObserveForward("second", 0.01);
  metrics.ObserveCheckpoint(Metrics::CheckpointOp::kSave, 0.5, 4096);

  const std::string text = metrics.Render();
  EXPECT_THAT(text, HasSubstr("paramd_grpc_server_handled_total{grpc_code=\"ALREADY_EXISTS\","
                              "grpc_method=\"CreateModel\",grpc_service=\"paramd.v1.Models\"} 1"));
  EXPECT_THAT(text, HasSubstr("paramd_grpc_server_handling_seconds_count{grpc_code="
                              "\"ALREADY_EXISTS\",grpc_method=\"CreateModel\",grpc_service="
                              "\"paramd.v1.Models\"} 1"));
  EXPECT_THAT(text, HasSubstr("paramd_grpc_server_received_bytes_total{grpc_method="
                              "\"CreateModel\",grpc_service=\"paramd.v1.Models\"} 10"));
  EXPECT_THAT(text, HasSubstr("paramd_grpc_server_sent_bytes_total{grpc_method="
                              "\"CreateModel\",grpc_service=\"paramd.v1.Models\"} 7"));
  EXPECT_THAT(text, HasSubstr("paramd_grpc_server_handled_total{grpc_code=\"UNIMPLEMENTED\","
                              "grpc_method=\"_unknown\",grpc_service=\"_unknown\"} 2"));
  EXPECT_THAT(text, Not(HasSubstr("evil")));
  EXPECT_THAT(text, HasSubstr("paramd_forward_seconds_count{model=\"first\"} 1"));
  EXPECT_THAT(text, HasSubstr("paramd_forward_seconds_count{model=\"_other\"} 1"));
  EXPECT_THAT(text, HasSubstr("paramd_checkpoint_bytes_total{operation=\"save\"} 4096"));
  EXPECT_THAT(text, HasSubstr("paramd_checkpoint_seconds_count{operation=\"save\"} 1"));
  EXPECT_THAT(text, HasSubstr("paramd_memory_limit_bytes{device=\"cpu\"} 1024"));
  EXPECT_THAT(text, HasSubstr("paramd_models 0"));
  EXPECT_THAT(text, Not(HasSubstr("paramd_executor_workers")));  // no executor yet

  Executor executor(3, 5);
  metrics.SetExecutor(&executor);
  EXPECT_THAT(metrics.Render(), HasSubstr("paramd_executor_workers 3"));
  EXPECT_THAT(metrics.Render(), HasSubstr("paramd_executor_max_queued_calls 5"));
  metrics.SetExecutor(nullptr);
}

TEST(CallObserverTest, ReadsTheModelAndVersionOfAnyMessage) {
  v1::GetTensorRequest get;
  get.set_model("mlp");
  get.set_name("w2");  // a tensor's name is not the model's
  EXPECT_EQ(ModelOf(get), "mlp");
  v1::DescribeModelRequest describe;
  describe.set_name("net");
  EXPECT_EQ(ModelOf(describe), "net");
  v1::WriteFrame options;
  options.mutable_options()->set_model("lm");
  EXPECT_EQ(ModelOf(options), "lm");
  v1::WriteFrame chunk;
  chunk.mutable_chunk()->set_data("xyz");
  EXPECT_EQ(ModelOf(chunk), "");

  v1::ModelInfo info;
  info.set_version(7);
  EXPECT_EQ(VersionOf(info), 7u);
  v1::ForwardResponse start;
  start.mutable_start()->set_version(9);
  EXPECT_EQ(VersionOf(start), 9u);
  EXPECT_EQ(VersionOf(v1::ForwardResponse()), 0u);
}

}  // namespace
}  // namespace paramd::service
