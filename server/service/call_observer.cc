#include "server/service/call_observer.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/common/log.h"

namespace paramd::service {
namespace {

using google::protobuf::FieldDescriptor;
using google::protobuf::Message;
using grpc::experimental::InterceptionHookPoints;

// A raw message is parsed for its model or version only when it is this small: the first
// frame of a tensor stream is its options or start frame, never tensor data.
constexpr size_t kMaxInspectedBytes = 64 << 10;

// Note [Messages behind void*]: gRPC hands an interceptor a call's message as a void* to the
// object the handler reads or writes: a grpc::ByteBuffer for raw methods, else the
// generated message of the method's type. The prototype of that type has the same layout, so
// the distance from its most-derived object to its Message part is the message's too.
const Message* MessageAt(const void* object, const Message* prototype) {
  const char* whole = static_cast<const char*>(dynamic_cast<const void*>(prototype));
  const std::ptrdiff_t offset = reinterpret_cast<const char*>(prototype) - whole;
  return reinterpret_cast<const Message*>(static_cast<const char*>(object) + offset);
}

// A small raw message parsed as `prototype`'s type; null when too large or malformed.
std::unique_ptr<Message> Parse(const grpc::ByteBuffer& buffer, const Message* prototype) {
  if (prototype == nullptr || buffer.Length() > kMaxInspectedBytes) return nullptr;
  grpc::Slice slice;
  if (!buffer.TrySingleSlice(&slice).ok() && !buffer.DumpToSingleSlice(&slice).ok()) {
    return nullptr;
  }
  std::unique_ptr<Message> message(prototype->New());
  if (!message->ParseFromArray(slice.begin(), static_cast<int>(slice.size()))) return nullptr;
  return message;
}

const FieldDescriptor* SingularField(const Message& message, const char* name,
                                     FieldDescriptor::CppType type) {
  const FieldDescriptor* field = message.GetDescriptor()->FindFieldByName(name);
  if (field == nullptr || field->is_repeated() || field->cpp_type() != type) return nullptr;
  return field;
}

std::string StringField(const Message& message, const char* name) {
  const FieldDescriptor* field = SingularField(message, name, FieldDescriptor::CPPTYPE_STRING);
  return field == nullptr ? "" : message.GetReflection()->GetString(message, field);
}

uint64_t Uint64Field(const Message& message, const char* name) {
  const FieldDescriptor* field = SingularField(message, name, FieldDescriptor::CPPTYPE_UINT64);
  return field == nullptr ? 0 : message.GetReflection()->GetUInt64(message, field);
}

// The first non-empty answer of `read` on the set singular message fields of `message`.
template <typename T, typename Read>
T OneDown(const Message& message, Read read) {
  const google::protobuf::Descriptor* descriptor = message.GetDescriptor();
  const google::protobuf::Reflection* reflection = message.GetReflection();
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const FieldDescriptor* field = descriptor->field(i);
    if (field->is_repeated() || field->cpp_type() != FieldDescriptor::CPPTYPE_MESSAGE ||
        !reflection->HasField(message, field)) {
      continue;
    }
    T found = read(reflection->GetMessage(message, field));
    if (found != T{}) return found;
  }
  return T{};
}

class CallObserver final : public grpc::experimental::Interceptor {
 public:
  CallObserver(grpc::experimental::ServerRpcInfo* info, const ObservedMethod* method,
               const Metrics::Call* call, const Authenticator* auth)
      : info_(info), method_(method), call_(call), auth_(auth), start_(absl::Now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE)) {
      Received(methods->GetRecvMessage());
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      Sending(methods);
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      Finished(methods->GetSendStatus());
    }
    methods->Proceed();
  }

 private:
  void Received(const void* object) {
    if (object == nullptr || method_ == nullptr) return;
    size_t bytes = 0;
    if (method_->raw) {
      const auto& buffer = *static_cast<const grpc::ByteBuffer*>(object);
      bytes = buffer.Length();
      if (!received_any_) {
        if (auto message = Parse(buffer, method_->request)) model_ = ModelOf(*message);
      }
    } else if (method_->request != nullptr) {
      const Message* message = MessageAt(object, method_->request);
      bytes = message->ByteSizeLong();
      if (!received_any_) model_ = ModelOf(*message);
    } else {
      return;
    }
    received_any_ = true;
    if (call_) call_->Received(bytes);
  }

  void Sending(grpc::experimental::InterceptorBatchMethods* methods) {
    if (!sent_any_ && method_ != nullptr) {
      if (const void* object = methods->GetSendMessage(); object != nullptr) {
        if (method_->raw) {
          if (auto message =
                  Parse(*static_cast<const grpc::ByteBuffer*>(object), method_->response)) {
            version_ = VersionOf(*message);
          }
        } else if (method_->response != nullptr) {
          version_ = VersionOf(*MessageAt(object, method_->response));
        }
      }
    }
    sent_any_ = true;
    // Serializes the message now instead of after the interceptors: the same work, once.
    if (const grpc::ByteBuffer* serialized = methods->GetSerializedSendMessage();
        serialized != nullptr && call_) {
      call_->Sent(serialized->Length());
    }
  }

  void Finished(const grpc::Status& status) {
    const absl::Duration duration = absl::Now() - start_;
    if (call_) call_->Finished(status.error_code(), absl::ToDoubleSeconds(duration));
    // Successful reads and tensor writes are not logged: a training loop makes too many.
    const bool logged = method_ == nullptr || method_->role == Role::kAdmin;
    if (status.ok() && !logged) return;
    grpc::ServerContextBase* context = info_->server_context();
    common::Log(status.ok() ? "info" : "warning", "call",
                {{"method", info_->method() == nullptr ? "" : info_->method()},
                 {"peer", context == nullptr ? "" : context->peer()},
                 {"token", auth_ == nullptr || context == nullptr ? "-"
                                                                  : auth_->TokenName(*context)},
                 {"model", model_},
                 {"version", version_ == 0 ? "" : absl::StrCat(version_)},
                 {"duration_ms", absl::StrFormat("%.3f", absl::ToDoubleMilliseconds(duration))},
                 {"status", std::string(StatusCodeName(status.error_code()))}});
  }

  grpc::experimental::ServerRpcInfo* const info_;
  const ObservedMethod* const method_;  // null for a method the daemon does not serve
  const Metrics::Call* const call_;     // null without metrics
  const Authenticator* const auth_;
  const absl::Time start_;
  bool received_any_ = false;
  bool sent_any_ = false;
  std::string model_;
  uint64_t version_ = 0;
};

}  // namespace

std::string ModelOf(const Message& request) {
  if (std::string model = StringField(request, "model"); !model.empty()) return model;
  if (std::string name = StringField(request, "name"); !name.empty()) return name;
  return OneDown<std::string>(request,
                              [](const Message& inner) { return StringField(inner, "model"); });
}

uint64_t VersionOf(const Message& response) {
  if (uint64_t version = Uint64Field(response, "version"); version != 0) return version;
  return OneDown<uint64_t>(response,
                           [](const Message& inner) { return Uint64Field(inner, "version"); });
}

CallObserverFactory::CallObserverFactory(Metrics* metrics, const Authenticator* auth,
                                         absl::Span<const absl::string_view> raw_methods)
    : auth_(auth) {
  if (metrics != nullptr) unknown_ = metrics->StartCall("");
  const google::protobuf::DescriptorPool* pool = google::protobuf::DescriptorPool::generated_pool();
  google::protobuf::MessageFactory* factory = google::protobuf::MessageFactory::generated_factory();
  for (const MethodRole& entry : MethodRoles()) {
    ObservedMethod& method = methods_[entry.method];
    method.role = entry.role;
    if (metrics != nullptr) method.metrics = metrics->StartCall(entry.method);
    for (absl::string_view raw : raw_methods) method.raw = method.raw || raw == entry.method;
    // "/pkg.Service/Method" is "pkg.Service.Method" in the descriptor pool.
    const std::string full = absl::StrReplaceAll(entry.method.substr(1), {{"/", "."}});
    if (const auto* descriptor = pool->FindMethodByName(full)) {
      method.request = factory->GetPrototype(descriptor->input_type());
      method.response = factory->GetPrototype(descriptor->output_type());
    }
  }
}

grpc::experimental::Interceptor* CallObserverFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  const char* name = info->method();
  auto it = name == nullptr ? methods_.end() : methods_.find(name);
  if (it == methods_.end()) {
    return new CallObserver(info, nullptr, unknown_ ? &*unknown_ : nullptr, auth_);
  }
  const ObservedMethod& method = it->second;
  return new CallObserver(info, &method, method.metrics ? &*method.metrics : nullptr, auth_);
}

}  // namespace paramd::service
