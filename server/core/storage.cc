#include "server/core/storage.h"

#include "kernels/backend.h"
#include "base/status_macros.h"

namespace paramd::core {

absl::StatusOr<std::shared_ptr<Storage>> Storage::Allocate(const Device& device, size_t nbytes) {
  PARAMD_ASSIGN_OR_RETURN(kernels::Backend * backend, kernels::GetBackend(device));
  PARAMD_ASSIGN_OR_RETURN(void* data, backend->Allocate(nbytes));
  return std::shared_ptr<Storage>(
      new Storage(device, data, nbytes, [backend, data, nbytes] { backend->Free(data, nbytes); }));
}

std::shared_ptr<Storage> Storage::Wrap(const Device& device, void* data, size_t nbytes,
                                       std::function<void()> release) {
  return std::shared_ptr<Storage>(new Storage(device, data, nbytes, std::move(release)));
}

Storage::~Storage() {
  if (release_) release_();
}

}  // namespace paramd::core
