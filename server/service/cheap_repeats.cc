#include "server/service/cheap_repeats.h"

namespace paramd::service {

uint64_t CheapRepeats::CheapVersion(const std::shared_ptr<core::Model>& model,
                                    const std::string& signature) const {
  absl::MutexLock lock(&mu_);
  const auto it = entries_.find(model->name());
  if (it == entries_.end() || it->second.model.lock() != model ||
      it->second.signature != signature) {
    return 0;
  }
  return it->second.version;
}

void CheapRepeats::Record(const std::shared_ptr<core::Model>& model, uint64_t version,
                          const std::string& signature, absl::Duration took) {
  absl::MutexLock lock(&mu_);
  if (took > kCheapForward) {
    entries_.erase(model->name());
    return;
  }
  if (entries_.size() >= kMaxEntries && !entries_.contains(model->name())) entries_.clear();
  entries_[model->name()] = Entry{model, version, signature};
}

}  // namespace paramd::service
