#include "server/service/reflection_service.h"

#include <atomic>
#include <memory>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "grpcpp/impl/server_builder_option.h"
#include "grpcpp/impl/server_builder_plugin.h"
#include "grpcpp/impl/server_initializer.h"
#include "grpcpp/support/server_callback.h"

namespace paramd::service {
namespace {

namespace rv1 = ::grpc::reflection::v1;
using ::google::protobuf::DescriptorPool;
using ::google::protobuf::FileDescriptor;

// Answers one reflection stream: one request read, then its response written, in turn. Each
// answer stands alone, as gRPC's v1alpha service's do: a file comes with all the files it
// imports, transitively, each once.
class ReflectionStream final
    : public grpc::ServerBidiReactor<rv1::ServerReflectionRequest, rv1::ServerReflectionResponse> {
 public:
  // `services` is null when a stream opens before the server has finished starting.
  explicit ReflectionStream(const std::vector<std::string>* services) : services_(services) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client is done
      Finish(grpc::Status::OK);
      return;
    }
    Answer();
    StartWrite(&response_);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::UNKNOWN, "the reflection response was not sent"));
      return;
    }
    StartRead(&request_);
  }

  void OnDone() override { delete this; }

 private:
  void Answer() {
    response_.Clear();
    response_.set_valid_host(request_.host());
    *response_.mutable_original_request() = request_;
    const DescriptorPool* pool = DescriptorPool::generated_pool();
    switch (request_.message_request_case()) {
      case rv1::ServerReflectionRequest::kFileByFilename:
        return SendFile(pool->FindFileByName(request_.file_by_filename()),
                        "file '" + request_.file_by_filename() + "' not found");
      case rv1::ServerReflectionRequest::kFileContainingSymbol:
        return SendFile(pool->FindFileContainingSymbol(request_.file_containing_symbol()),
                        "symbol '" + request_.file_containing_symbol() + "' not found");
      case rv1::ServerReflectionRequest::kFileContainingExtension: {
        const auto& wanted = request_.file_containing_extension();
        const auto* type = pool->FindMessageTypeByName(wanted.containing_type());
        const auto* extension = type == nullptr
                                    ? nullptr
                                    : pool->FindExtensionByNumber(type, wanted.extension_number());
        return SendFile(extension == nullptr ? nullptr : extension->file(),
                        "extension " + std::to_string(wanted.extension_number()) + " of '" +
                            wanted.containing_type() + "' not found");
      }
      case rv1::ServerReflectionRequest::kAllExtensionNumbersOfType: {
        const auto* type = pool->FindMessageTypeByName(request_.all_extension_numbers_of_type());
        if (type == nullptr) {
          return SendError(grpc::StatusCode::NOT_FOUND,
                           "type '" + request_.all_extension_numbers_of_type() + "' not found");
        }
        std::vector<const google::protobuf::FieldDescriptor*> extensions;
        pool->FindAllExtensions(type, &extensions);
        auto* numbers = response_.mutable_all_extension_numbers_response();
        numbers->set_base_type_name(type->full_name());
        for (const auto* extension : extensions) numbers->add_extension_number(extension->number());
        return;
      }
      case rv1::ServerReflectionRequest::kListServices: {
        if (services_ == nullptr) {
          return SendError(grpc::StatusCode::UNAVAILABLE,
                           "the server is still starting; list the services again");
        }
        auto* list = response_.mutable_list_services_response();
        for (const std::string& name : *services_) list->add_service()->set_name(name);
        return;
      }
      case rv1::ServerReflectionRequest::MESSAGE_REQUEST_NOT_SET:
        return SendError(grpc::StatusCode::INVALID_ARGUMENT,
                         "the reflection request names nothing; set one of its message_request "
                         "fields");
    }
  }

  // `file` first, then the files it imports, transitively, each once; NOT_FOUND with
  // `missing` when `file` is null.
  void SendFile(const FileDescriptor* file, const std::string& missing) {
    if (file == nullptr) return SendError(grpc::StatusCode::NOT_FOUND, missing);
    auto* files = response_.mutable_file_descriptor_response();
    std::unordered_set<std::string> sent;
    std::vector<const FileDescriptor*> pending = {file};
    while (!pending.empty()) {
      const FileDescriptor* next = pending.back();
      pending.pop_back();
      if (!sent.insert(next->name()).second) continue;
      google::protobuf::FileDescriptorProto proto;
      next->CopyTo(&proto);
      proto.SerializeToString(files->add_file_descriptor_proto());
      for (int i = 0; i < next->dependency_count(); ++i) pending.push_back(next->dependency(i));
    }
  }

  void SendError(grpc::StatusCode code, const std::string& message) {
    auto* error = response_.mutable_error_response();
    error->set_error_code(static_cast<int32_t>(code));
    error->set_error_message(message);
  }

  const std::vector<std::string>* services_;  // owned by the grpc::Server; may be null
  rv1::ServerReflectionRequest request_;
  rv1::ServerReflectionResponse response_;
};

class ReflectionV1Service final : public rv1::ServerReflection::CallbackService {
 public:
  // `services` is read only once the server has started (the plugin's Finish sets it).
  void SetServiceList(const std::vector<std::string>* services) { services_.store(services); }

  grpc::ServerBidiReactor<rv1::ServerReflectionRequest, rv1::ServerReflectionResponse>*
  ServerReflectionInfo(grpc::CallbackServerContext* /*context*/) override {
    return new ReflectionStream(services_.load());
  }

 private:
  std::atomic<const std::vector<std::string>*> services_{nullptr};
};

// Registers the service when the server is built and hands it the server's service list.
class ReflectionV1Plugin final : public grpc::ServerBuilderPlugin {
 public:
  std::string name() override { return "paramd_reflection_v1"; }
  void InitServer(grpc::ServerInitializer* si) override { si->RegisterService(service_); }
  void Finish(grpc::ServerInitializer* si) override {
    service_->SetServiceList(si->GetServiceList());
  }
  void ChangeArguments(const std::string& /*name*/, void* /*value*/) override {}

 private:
  std::shared_ptr<ReflectionV1Service> service_ = std::make_shared<ReflectionV1Service>();
};

class ReflectionV1Option final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments* /*args*/) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->push_back(std::make_unique<ReflectionV1Plugin>());
  }
};

}  // namespace

void AddReflectionV1(grpc::ServerBuilder& builder) {
  builder.SetOption(std::make_unique<ReflectionV1Option>());
}

}  // namespace paramd::service
