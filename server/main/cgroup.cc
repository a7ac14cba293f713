#include "server/main/cgroup.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace paramd::main {
namespace {

// v1 reports "no limit" as the largest page-aligned long; anything this large is none.
constexpr uint64_t kUnlimited = uint64_t{1} << 62;

std::optional<uint64_t> ReadLimit(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string text;
  if (!in || !std::getline(in, text)) return std::nullopt;
  uint64_t value = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &value) || value >= kUnlimited) {
    return std::nullopt;  // "max", or unlimited
  }
  return value;
}

// TOP/PATH and each folder above it, up to TOP itself.
std::vector<std::filesystem::path> UpTo(const std::filesystem::path& top,
                                        const std::string& cgroup_path) {
  std::vector<std::filesystem::path> dirs;
  std::filesystem::path relative = std::filesystem::path(cgroup_path).relative_path();
  while (true) {
    dirs.push_back(top / relative);
    if (relative.empty()) break;
    relative = relative.parent_path();
  }
  return dirs;
}

}  // namespace

std::optional<size_t> CgroupMemoryLimit(const std::string& root,
                                        const std::string& self_cgroup) {
  // Each line: ID:CONTROLLERS:PATH; v2's is 0::PATH, v1's memory controller names "memory".
  std::string v2_path = "/";
  std::string v1_path = "/";
  std::ifstream in(self_cgroup);
  for (std::string line; in && std::getline(in, line);) {
    std::vector<std::string> fields = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (fields.size() != 3) continue;
    if (fields[0] == "0" && fields[1].empty()) v2_path = fields[2];
    std::vector<std::string> controllers = absl::StrSplit(fields[1], ',');
    if (std::find(controllers.begin(), controllers.end(), "memory") != controllers.end()) {
      v1_path = fields[2];
    }
  }
  std::optional<uint64_t> smallest;
  auto consider = [&](const std::filesystem::path& file) {
    if (std::optional<uint64_t> limit = ReadLimit(file)) {
      smallest = smallest ? std::min(*smallest, *limit) : *limit;
    }
  };
  for (const auto& dir : UpTo(root, v2_path)) consider(dir / "memory.max");
  for (const auto& dir : UpTo(std::filesystem::path(root) / "memory", v1_path)) {
    consider(dir / "memory.limit_in_bytes");
  }
  if (!smallest) return std::nullopt;
  return static_cast<size_t>(*smallest);
}

}  // namespace paramd::main
