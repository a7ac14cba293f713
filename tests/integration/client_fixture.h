// What the client-driven integration tests share: a fixture with a fresh paramd on a free
// loopback port and a client connected to it, and float32 tensors from literal values.
#pragma once

#include <memory>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "paramd/client.h"
#include "tests/integration/daemon.h"

namespace paramd::testing {

inline client::HostTensor Floats(std::vector<int64_t> shape, std::vector<double> values) {
  auto tensor = client::HostTensor::FromDoubles(client::DType::kFloat32, std::move(shape), values);
  EXPECT_TRUE(tensor.ok()) << tensor.status();
  return *tensor;
}

class DaemonClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto daemon = Daemon::Start();
    ASSERT_TRUE(daemon.ok()) << daemon.status();
    daemon_ = *std::move(daemon);
    auto connected = client::Client::Connect(daemon_->address());
    ASSERT_TRUE(connected.ok()) << connected.status();
    client_ = *std::move(connected);
  }
  void TearDown() override {
    client_.reset();
    daemon_.reset();
  }

  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<client::Client> client_;
};

}  // namespace paramd::testing
