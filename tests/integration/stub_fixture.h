// What the raw-wire integration tests share: a fixture with a fresh paramd on a free loopback
// port and the generated stubs of its services, for tests that send exactly the frames a
// client in any language could (tests/integration/wire.h builds them).
#pragma once

#include <memory>
#include <utility>

#include "gtest/gtest.h"
#include "paramd/v1/checkpoints.grpc.pb.h"
#include "paramd/v1/models.grpc.pb.h"
#include "paramd/v1/parameters.grpc.pb.h"
#include "tests/integration/daemon.h"

namespace paramd::testing {

class DaemonStubsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto daemon = Daemon::Start();
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
    models_ = v1::Models::NewStub(daemon_->channel());
    parameters_ = v1::Parameters::NewStub(daemon_->channel());
    checkpoints_ = v1::Checkpoints::NewStub(daemon_->channel());
  }

  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<v1::Models::Stub> models_;
  std::unique_ptr<v1::Parameters::Stub> parameters_;
  std::unique_ptr<v1::Checkpoints::Stub> checkpoints_;
};

}  // namespace paramd::testing
