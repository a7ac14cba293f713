#include "kernels/cuda/cuda_status.h"

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace paramd::kernels::cuda {
namespace {

// Devices beyond this index share the last slot; no machine paramd runs on has that many.
constexpr int kMaxDevices = 64;

struct HealthTable {
  absl::Mutex mu;
  std::string first_error[kMaxDevices] ABSL_GUARDED_BY(mu);
};

HealthTable& Health() {
  static HealthTable* const table = new HealthTable;
  return *table;
}

int Slot(int device) { return device < 0 ? 0 : (device < kMaxDevices ? device : kMaxDevices - 1); }

void MarkUnhealthy(int device, const std::string& message) {
  HealthTable& table = Health();
  absl::MutexLock lock(&table.mu);
  std::string& slot = table.first_error[Slot(device)];
  if (slot.empty()) slot = message;
}

// The path from the repository root ("kernels/cuda/x.cc"), not the build machine's.
absl::string_view SourcePath(const char* file) {
  absl::string_view path(file);
  const size_t at = path.rfind("kernels/");
  return at == absl::string_view::npos ? path : path.substr(at);
}

std::string Where(const char* call, const char* file, int line, int device) {
  return absl::StrCat(call, device >= 0 ? absl::StrCat(" on cuda:", device) : std::string(),
                      " at ", SourcePath(file), ":", line);
}

absl::StatusCode CodeOf(cudaError_t error) {
  switch (error) {
    case cudaErrorMemoryAllocation:
      return absl::StatusCode::kResourceExhausted;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorInvalidDevice:
    case cudaErrorDevicesUnavailable:
    case cudaErrorNoKernelImageForDevice:
    case cudaErrorUnsupportedPtxVersion:
    case cudaErrorSystemDriverMismatch:
    case cudaErrorCompatNotSupportedOnDevice:
    case cudaErrorInitializationError:
      return absl::StatusCode::kFailedPrecondition;
    default:
      return absl::StatusCode::kInternal;
  }
}

}  // namespace

bool IsStickyError(cudaError_t error) {
  switch (error) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchTimeout:
    case cudaErrorECCUncorrectable:
    case cudaErrorAssert:
      return true;
    default:
      return false;
  }
}

absl::Status CudaStatus(cudaError_t error, const char* call, const char* file, int line,
                        int device) {
  if (error == cudaSuccess) return absl::OkStatus();
  std::string message = absl::StrCat(Where(call, file, line, device), ": ",
                                     cudaGetErrorName(error), " (", cudaGetErrorString(error), ")");
  if (IsStickyError(error)) {
    MarkUnhealthy(device, message);
    absl::StrAppend(&message, "; the device is unusable until paramd restarts");
  } else {
    // Clears the runtime's last-error slot (Note [Sticky CUDA errors]).
    cudaGetLastError();
  }
  if (error == cudaErrorMemoryAllocation) {
    absl::StrAppend(&message, "; free models on this device or lower --max-memory");
  }
  return absl::Status(CodeOf(error), message);
}

absl::Status CublasStatus(cublasStatus_t status, const char* call, const char* file, int line,
                          int device) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const std::string message =
      absl::StrCat(Where(call, file, line, device), ": ", cublasGetStatusName(status), " (",
                   cublasGetStatusString(status), ")");
  switch (status) {
    case CUBLAS_STATUS_ALLOC_FAILED:
      return absl::ResourceExhaustedError(message);
    case CUBLAS_STATUS_NOT_SUPPORTED:
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return absl::UnimplementedError(message);
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return absl::FailedPreconditionError(message);
    case CUBLAS_STATUS_INVALID_VALUE:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status DeviceHealth(int device) {
  HealthTable& table = Health();
  absl::MutexLock lock(&table.mu);
  const std::string& first = table.first_error[Slot(device)];
  if (first.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "device cuda:", device, " is unhealthy since ", first,
      "; restart paramd to use it again, or use another device"));
}

}  // namespace paramd::kernels::cuda
