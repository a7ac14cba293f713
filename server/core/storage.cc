#include "server/core/storage.h"

#include "kernels/backend.h"
#include "base/status_macros.h"

namespace paramd::core {

absl::StatusOr<std::unique_ptr<MemoryReservation>> MemoryReservation::Make(const Device& device,
                                                                             size_t nbytes) {
  PARAMD_ASSIGN_OR_RETURN(kernels::Backend * backend, kernels::GetBackend(device));
  PARAMD_RETURN_IF_ERROR(backend->Reserve(nbytes));
  return std::unique_ptr<MemoryReservation>(new MemoryReservation(device, backend, nbytes));
}

MemoryReservation::~MemoryReservation() {
  if (remaining_ > 0) backend_->Unreserve(remaining_);
}

bool MemoryReservation::Grow(size_t nbytes) {
  if (!backend_->Reserve(nbytes).ok()) return false;
  remaining_ += nbytes;
  return true;
}

absl::StatusOr<std::shared_ptr<Storage>> Storage::Allocate(const Device& device, size_t nbytes,
                                                           MemoryReservation* reservation) {
  PARAMD_ASSIGN_OR_RETURN(kernels::Backend * backend, kernels::GetBackend(device));
  void* data = nullptr;
  if (reservation != nullptr && reservation->backend_ == backend &&
      reservation->remaining_ >= nbytes) {
    PARAMD_ASSIGN_OR_RETURN(data, backend->AllocateReserved(nbytes));
    reservation->remaining_ -= nbytes;
  } else {
    PARAMD_ASSIGN_OR_RETURN(data, backend->Allocate(nbytes));
  }
  return std::shared_ptr<Storage>(
      new Storage(device, data, nbytes, [backend, data, nbytes] { backend->Free(data, nbytes); },
                  /*wrapped=*/false));
}

std::shared_ptr<Storage> Storage::Wrap(const Device& device, void* data, size_t nbytes,
                                       std::function<void()> release) {
  return std::shared_ptr<Storage>(
      new Storage(device, data, nbytes, std::move(release), /*wrapped=*/true));
}

Storage::~Storage() {
  if (release_) release_();
}

}  // namespace paramd::core
