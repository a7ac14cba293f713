#include "server/core/registry.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/text.h"
#include "base/version_conflict.h"
#include "server/core/expanded_size.h"

namespace paramd::core {

absl::Status ValidateModelName(absl::string_view name, absl::string_view what) {
  const bool valid_chars = std::all_of(name.begin(), name.end(), [](char c) {
    return absl::ascii_isalnum(c) || c == '_' || c == '-' || c == '.';
  });
  if (name.empty() || name.size() > 128 || !valid_chars || name.front() == '.') {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid ", what, " name ", QuoteName(name),
                     "; use 1 to 128 letters, digits, '_', '-' or '.', not starting with '.'"));
  }
  return absl::OkStatus();
}

void ModelRegistry::SetVersionLease(std::shared_ptr<VersionLease> lease) {
  absl::MutexLock lock(&mu_);
  lease_ = std::move(lease);
}

absl::Status ModelRegistry::Add(std::shared_ptr<Model> model) {
  std::shared_ptr<VersionLease> lease;
  {
    absl::MutexLock lock(&mu_);
    lease = lease_;
  }
  // Note [Structure memory]: counted before the model is visible; a model that then fails
  // to go in gives it back as it goes.
  const uint64_t structure_bytes = model->Read([](const std::shared_ptr<Module>& root, uint64_t) {
    return CountExpandedSize(*root).structure_bytes;
  });
  PARAMD_RETURN_IF_ERROR(model->ChargeStructure(structure_bytes));
  // Attached before the model is visible, so that its first write already reserves; a
  // model that then fails to go in is dropped with its lease.
  if (lease != nullptr) model->set_version_lease(std::move(lease));
  absl::MutexLock lock(&mu_);
  const std::string name = model->name();
  if (!models_.emplace(name, std::move(model)).second) {
    return absl::AlreadyExistsError(absl::StrCat(
        "model ", QuoteName(name), " already exists; delete it first or choose another name"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Model>> ModelRegistry::Get(absl::string_view name) const {
  absl::MutexLock lock(&mu_);
  auto it = models_.find(name);
  if (it == models_.end()) {
    return absl::NotFoundError(
        absl::StrCat("model ", QuoteName(name), " not found; ListModels shows the loaded models"));
  }
  return it->second;
}

absl::Status ModelRegistry::Remove(absl::string_view name, std::optional<uint64_t> if_version) {
  absl::MutexLock lock(&mu_);
  auto it = models_.find(name);
  if (it == models_.end()) {
    return absl::NotFoundError(
        absl::StrCat("model ", QuoteName(name), " not found; ListModels shows the loaded models"));
  }
  if (if_version) {
    const uint64_t current = it->second->version();
    if (current != *if_version) {
      return VersionConflictError(absl::StrCat("model ", QuoteName(name), " is at version ",
                                               current, ", not ", *if_version, "; not deleted"),
                                  current);
    }
  }
  models_.erase(it);
  return absl::OkStatus();
}

std::vector<std::shared_ptr<Model>> ModelRegistry::List() const {
  std::vector<std::shared_ptr<Model>> models;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, model] : models_) models.push_back(model);
  }
  std::sort(models.begin(), models.end(),
            [](const auto& a, const auto& b) { return a->name() < b->name(); });
  return models;
}

}  // namespace paramd::core
