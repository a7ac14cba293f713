#include "server/main/library_logs.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "google/protobuf/stubs/logging.h"
#include "grpc/support/log.h"
#include "server/common/log.h"

namespace paramd::main {
namespace {

void ProtobufLog(google::protobuf::LogLevel level, const char* file, int line,
                 const std::string& message) {
  const char* name = level == google::protobuf::LOGLEVEL_INFO      ? "info"
                     : level == google::protobuf::LOGLEVEL_WARNING ? "warning"
                                                                   : "error";
  common::Log(name, message, {{"source", absl::StrCat("libprotobuf ", file, ":", line)}});
}

void GrpcLog(gpr_log_func_args* args) {
  const char* name = args->severity == GPR_LOG_SEVERITY_DEBUG  ? "debug"
                     : args->severity == GPR_LOG_SEVERITY_INFO ? "info"
                                                               : "error";
  common::Log(name, args->message, {{"source", absl::StrCat("grpc ", args->file, ":", args->line)}});
}

}  // namespace

void RouteLibraryLogs() {
  google::protobuf::SetLogHandler(&ProtobufLog);
  gpr_set_log_function(&GrpcLog);
}

}  // namespace paramd::main
