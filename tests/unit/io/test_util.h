// What the io tests share: byte and tensor helpers, and a fixture with a scratch directory
// of its own.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "server/core/tensor.h"

namespace paramd::io::test_util {

inline absl::Span<const uint8_t> AsSpan(const std::string& bytes) {
  return absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

inline void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

inline core::Tensor Make(DType dtype, core::Shape shape, std::vector<double> values) {
  absl::StatusOr<core::Tensor> tensor = core::Tensor::FromDoubles(dtype, std::move(shape), values);
  EXPECT_TRUE(tensor.ok()) << tensor.status();
  return *tensor;
}

inline core::Tensor Filled(int64_t n, double value) {
  absl::StatusOr<core::Tensor> tensor = core::Tensor::Full(DType::kFloat32, {n}, value);
  EXPECT_TRUE(tensor.ok()) << tensor.status();
  return *tensor;
}

// A tensor's bytes, as the checkpoint files hold them.
inline std::vector<uint8_t> Bytes(const core::Tensor& tensor) {
  absl::StatusOr<std::vector<uint8_t>> bytes = core::ToBytes(tensor);
  EXPECT_TRUE(bytes.ok()) << bytes.status();
  return bytes.ok() ? *bytes : std::vector<uint8_t>{};
}

// A fixture with a fresh directory for each test, removed afterwards.
class ScratchDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = (std::filesystem::temp_directory_path() / "paramd-io-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string PathOf(const std::string& name) const { return (dir_ / name).string(); }
  // The names in the directory, sorted; hidden files included.
  std::vector<std::string> Listing() const {
    std::vector<std::string> names;
    for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
      names.push_back(entry.path().filename().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  std::filesystem::path dir_;
};

}  // namespace paramd::io::test_util
