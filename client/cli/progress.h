// A one-line progress bar for paramctl's transfers. It draws on stderr, so it never mixes
// with output, and only when stdout and stderr are both terminals and the transfer is
// larger than kMinBytes: scripts (stdout piped) and small calls see nothing. Used from one
// thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "paramd/client.h"

namespace paramd::cli {

class ProgressBar {
 public:
  // Transfers at most this large draw no bar.
  static constexpr uint64_t kMinBytes = uint64_t{4} << 20;

  explicit ProgressBar(std::string label);
  ~ProgressBar();  // ends the line if a bar was drawn

  // A callback for the client's options; valid while this object lives.
  client::ProgressCallback Callback();

  void Update(uint64_t done, uint64_t total);

 private:
  void Draw(uint64_t done, uint64_t total);

  std::string label_;
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
  // What was drawn last, and the latest Update (drawn or not).
  uint64_t last_done_ = 0;
  uint64_t last_total_ = 0;
  uint64_t latest_done_ = 0;
  uint64_t latest_total_ = 0;
};

}  // namespace paramd::cli
