#include "client/cli/progress.h"

#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_format.h"

namespace paramd::cli {
namespace {

constexpr int kBarWidth = 30;
constexpr auto kRedrawInterval = std::chrono::milliseconds(100);

std::string Mebibytes(uint64_t bytes) {
  return absl::StrFormat("%.1f MiB", static_cast<double>(bytes) / (1 << 20));
}

}  // namespace

ProgressBar::ProgressBar(std::string label)
    : label_(std::move(label)),
      enabled_(isatty(STDOUT_FILENO) == 1 && isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()) {}

ProgressBar::~ProgressBar() {
  if (!drawn_) return;
  // Redraws are throttled; show where the transfer ended.
  if (latest_done_ != last_done_ || latest_total_ != last_total_) {
    Draw(latest_done_, latest_total_);
  }
  std::fputc('\n', stderr);
}

client::ProgressCallback ProgressBar::Callback() {
  return [this](uint64_t done, uint64_t total) { Update(done, total); };
}

void ProgressBar::Update(uint64_t done, uint64_t total) {
  if (!enabled_ || total <= kMinBytes) return;
  latest_done_ = done;
  latest_total_ = total;
  const auto now = std::chrono::steady_clock::now();
  if (drawn_ && now - last_draw_ < kRedrawInterval) return;
  Draw(done, total);
}

void ProgressBar::Draw(uint64_t done, uint64_t total) {
  const double fraction = total == 0 ? 1.0 : static_cast<double>(done) / total;
  const int filled = static_cast<int>(fraction * kBarWidth);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0.0;
  std::string bar(filled, '#');
  bar.resize(kBarWidth, '.');
  std::fprintf(stderr, "\r%s [%s] %3d%%  %s / %s  %s/s\x1b[K", label_.c_str(), bar.c_str(),
               static_cast<int>(fraction * 100), Mebibytes(done).c_str(), Mebibytes(total).c_str(),
               Mebibytes(static_cast<uint64_t>(rate)).c_str());
  std::fflush(stderr);
  drawn_ = true;
  last_draw_ = std::chrono::steady_clock::now();
  last_done_ = done;
  last_total_ = total;
}

}  // namespace paramd::cli
