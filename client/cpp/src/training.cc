// Client's read-only calls of paramd.v1.Training: listing optimizers and reading one's
// state_dict (paramctl's optimizers and optimizer-state).
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cpp/src/client_impl.h"

namespace paramd::client {
namespace {

HyperValue FromProto(const v1::HyperValue& value) {
  HyperValue out;
  switch (value.value_case()) {
    case v1::HyperValue::kBoolValue:
      out.type = HyperValue::Type::kBool;
      out.bool_value = value.bool_value();
      break;
    case v1::HyperValue::kIntValue:
      out.type = HyperValue::Type::kInt;
      out.int_value = value.int_value();
      break;
    case v1::HyperValue::kFloatValue:
      out.type = HyperValue::Type::kFloat;
      out.float_value = value.float_value();
      break;
    case v1::HyperValue::kTupleValue:
      out.type = HyperValue::Type::kTuple;
      out.tuple.assign(value.tuple_value().values().begin(), value.tuple_value().values().end());
      break;
    default:
      break;
  }
  return out;
}

OptimizerInfo FromProto(const v1::OptimizerInfo& info) {
  OptimizerInfo out;
  out.name = info.name();
  out.model = info.model();
  out.kind = info.kind();
  out.mode = info.mode();
  out.max_staleness = info.max_staleness();
  out.param_groups = info.param_groups();
  out.parameters = info.parameters();
  out.with_gradient = info.with_gradient();
  out.steps = info.steps();
  out.state_bytes = info.state_bytes();
  out.model_version = info.model_version();
  return out;
}

}  // namespace

absl::StatusOr<std::vector<OptimizerInfo>> Client::ListOptimizers(const std::string& model) const {
  v1::ListOptimizersRequest request;
  request.set_model(model);
  v1::ListOptimizersResponse response;
  PARAMD_RETURN_IF_ERROR(impl_->Unary([&](grpc::ClientContext* context) {
    return impl_->training->ListOptimizers(context, request, &response);
  }));
  std::vector<OptimizerInfo> out;
  for (const v1::OptimizerInfo& info : response.optimizers()) out.push_back(FromProto(info));
  return out;
}

absl::StatusOr<OptimizerState> Client::GetOptimizerState(const std::string& name) const {
  v1::GetOptimizerStateRequest request;
  request.set_optimizer(name);
  OptimizerState out;
  absl::Status framing;
  PARAMD_RETURN_IF_ERROR(impl_->ReadMessages<v1::OptimizerStateFrame>(
      /*unary_deadline=*/false,
      [&](grpc::ClientContext* context) {
        return impl_->training->GetOptimizerState(context, request);
      },
      [&](const v1::OptimizerStateFrame& frame) {
        if (!framing.ok()) return;
        if (frame.has_options()) {
          const v1::OptimizerStateHead& head = frame.options();
          out.optimizer = head.optimizer();
          out.kind = head.kind();
          out.model = head.model();
          for (const v1::ParamGroup& group : head.param_groups()) {
            OptimizerState::Group g;
            g.params.assign(group.params().begin(), group.params().end());
            g.param_names.assign(group.param_names().begin(), group.param_names().end());
            for (const v1::Hyperparameter& h : group.hyperparameters()) {
              g.hyperparameters.emplace_back(h.name(), FromProto(h.value()));
            }
            out.param_groups.push_back(std::move(g));
          }
        } else if (frame.has_header()) {
          HostTensor tensor;
          std::optional<DType> dtype = internal::FromProtoDType(frame.header().meta().dtype());
          if (!dtype) {
            framing = absl::InternalError(absl::StrCat(
                "the server sent state tensor '", frame.header().name(), "' of an unknown dtype"));
            return;
          }
          tensor.dtype = *dtype;
          tensor.shape.assign(frame.header().meta().shape().begin(),
                              frame.header().meta().shape().end());
          tensor.device = frame.header().meta().device();
          out.state.emplace_back(frame.header().name(), std::move(tensor));
        } else if (frame.has_chunk()) {
          if (out.state.empty() ||
              frame.chunk().offset() != out.state.back().second.data.size()) {
            framing = absl::InternalError("the server sent a state chunk out of order");
            return;
          }
          out.state.back().second.data += frame.chunk().data();
        }
      }));
  PARAMD_RETURN_IF_ERROR(framing);
  for (const auto& [key, tensor] : out.state) {
    if (tensor.data.size() != tensor.nbytes()) {
      return absl::InternalError(
          absl::StrCat("the server sent ", tensor.data.size(), " bytes of state tensor '", key,
                       "', which holds ", tensor.nbytes()));
    }
  }
  return out;
}

}  // namespace paramd::client
