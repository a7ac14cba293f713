#include "server/service/status_trailer.h"

#include <string>

#include "absl/strings/match.h"
#include "base/version_conflict.h"
#include "grpcpp/support/status.h"
#include "server/service/status_util.h"

namespace paramd::service {
namespace {

class CurrentVersionTrailer : public grpc::experimental::Interceptor {
 public:
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      const std::string& details = status.error_details();
      if (absl::StartsWith(details, kCurrentVersionDetail)) {
        methods->GetSendTrailingMetadata()->emplace(
            std::string(kCurrentVersionKey), details.substr(kCurrentVersionDetail.size()));
        methods->ModifySendStatus(grpc::Status(status.error_code(), status.error_message()));
      }
    }
    methods->Proceed();
  }
};

}  // namespace

grpc::experimental::Interceptor* CurrentVersionTrailerFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* /*info*/) {
  return new CurrentVersionTrailer();
}

}  // namespace paramd::service
