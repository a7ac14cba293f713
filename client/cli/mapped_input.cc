#include "client/cli/mapped_input.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace paramd::cli {
namespace {

// The message a SIGBUS writes: built when a file is mapped, since a signal handler may only
// write(2) what is already there. Two buffers, so that the handler never reads one being
// rewritten.
constexpr size_t kMessageBytes = 1024;
char messages[2][kMessageBytes];
std::atomic<int> message_length[2] = {0, 0};
std::atomic<int> current_message{-1};

void SetBusErrorMessage(const std::string& path) {
  const int next = current_message.load() == 0 ? 1 : 0;
  std::string text = absl::StrCat(
      "paramctl: error [ABORTED]: '", path,
      "' changed while it was being sent (cut short by another program?); the write was cut "
      "off with it, so the daemon committed nothing\n");
  if (text.size() > kMessageBytes) {
    text = "paramctl: error [ABORTED]: the input file changed while it was being sent; the "
           "daemon committed nothing\n";
  }
  std::memcpy(messages[next], text.data(), text.size());
  message_length[next].store(static_cast<int>(text.size()));
  current_message.store(next);
}

void OnBusError(int) {
  const int which = current_message.load();
  if (which >= 0) {
    const ssize_t ignored = write(STDERR_FILENO, messages[which], message_length[which].load());
    (void)ignored;
  }
  _exit(1);
}

}  // namespace

absl::StatusOr<std::unique_ptr<MappedInput>> MappedInput::Map(int fd, const std::string& path,
                                                              uint64_t size) {
  if (size == 0) return std::unique_ptr<MappedInput>(new MappedInput(nullptr, 0));
  void* address = mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_PRIVATE, fd, 0);
  if (address == MAP_FAILED) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot read '", path, "'"));
  }
  SetBusErrorMessage(path);
  return std::unique_ptr<MappedInput>(
      new MappedInput(static_cast<const uint8_t*>(address), size));
}

MappedInput::~MappedInput() {
  if (data_ != nullptr) munmap(const_cast<uint8_t*>(data_), static_cast<size_t>(size_));
}

void MappedInput::ReleaseBehind(uint64_t position) {
  // In steps of kLag, so that the madvise(2) calls stay few.
  if (data_ == nullptr || position < released_ + 2 * kLag) return;
  static const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t end = std::min(position - kLag, size_) / page * page;
  if (end <= released_) return;
  // MAP_PRIVATE pages this process never wrote: dropping them unmaps them here only (the
  // page cache keeps them), and a later touch maps the same bytes in again.
  madvise(const_cast<uint8_t*>(data_) + released_, static_cast<size_t>(end - released_),
          MADV_DONTNEED);
  released_ = end;
}

void MappedInput::Release(uint64_t offset, uint64_t length) {
  if (data_ == nullptr || offset >= size_) return;
  const uint64_t from = offset / kFolioBytes * kFolioBytes;
  const uint64_t end = offset + std::min(length, size_ - offset);
  const uint64_t to = std::min(size_, (end + kFolioBytes - 1) / kFolioBytes * kFolioBytes);
  madvise(const_cast<uint8_t*>(data_) + from, static_cast<size_t>(to - from), MADV_DONTNEED);
}

void ExitCleanlyOnBusError() {
  struct sigaction action {};
  action.sa_handler = OnBusError;
  sigemptyset(&action.sa_mask);
  sigaction(SIGBUS, &action, nullptr);
}

}  // namespace paramd::cli
