// Raw paramd.v1.Training calls for integration tests: creating optimizers, pushing
// deterministic gradients for a Linear(3, 2) model (`weight` [2, 3], `bias` [2]) and stepping,
// through the generated stub.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "paramd/v1/training.grpc.pb.h"

namespace paramd::testing {

inline constexpr char kLinear32Spec[] =
    R"({"type": "Linear", "args": {"in_features": 3, "out_features": 2}})";

inline v1::Hyperparameter FloatHyper(const std::string& name, double value) {
  v1::Hyperparameter h;
  h.set_name(name);
  h.mutable_value()->set_float_value(value);
  return h;
}

inline v1::Hyperparameter BoolHyper(const std::string& name, bool value) {
  v1::Hyperparameter h;
  h.set_name(name);
  h.mutable_value()->set_bool_value(value);
  return h;
}

// Adam(lr=0.01, amsgrad=True) in two param groups: [weight], and [bias] with lr=0.1 and
// weight_decay=0.5.
inline grpc::Status CreateTwoGroupAdam(v1::Training::Stub& stub, const std::string& name,
                                       const std::string& model) {
  v1::CreateOptimizerRequest request;
  request.set_name(name);
  request.set_model(model);
  request.set_kind("Adam");
  *request.add_defaults() = FloatHyper("lr", 0.01);
  *request.add_defaults() = BoolHyper("amsgrad", true);
  request.add_param_groups()->add_param_names("weight");
  v1::ParamGroup* bias = request.add_param_groups();
  bias->add_param_names("bias");
  *bias->add_hyperparameters() = FloatHyper("lr", 0.1);
  *bias->add_hyperparameters() = FloatHyper("weight_decay", 0.5);
  grpc::ClientContext context;
  v1::OptimizerInfo info;
  return stub.CreateOptimizer(&context, request, &info);
}

// SGD(lr=0.1), asynchronous with `max_staleness`.
inline grpc::Status CreateAsynchronousSgd(v1::Training::Stub& stub, const std::string& name,
                                          const std::string& model, uint64_t max_staleness) {
  v1::CreateOptimizerRequest request;
  request.set_name(name);
  request.set_model(model);
  request.set_kind("SGD");
  *request.add_defaults() = FloatHyper("lr", 0.1);
  request.set_mode("asynchronous");
  request.set_max_staleness(max_staleness);
  grpc::ClientContext context;
  v1::OptimizerInfo info;
  return stub.CreateOptimizer(&context, request, &info);
}

// Pushes gradients for `weight` and `bias` (only `only`, when given) derived from `seed`,
// naming `round`.
inline grpc::Status PushLinearGradients(v1::Training::Stub& stub, const std::string& optimizer,
                                        int seed, uint64_t round = 0,
                                        const std::string& only = "") {
  grpc::ClientContext context;
  v1::PushGradientsResponse response;
  auto writer = stub.PushGradients(&context, &response);
  v1::GradientFrame options;
  options.mutable_options()->set_optimizer(optimizer);
  options.mutable_options()->set_round(round);
  writer->Write(options);
  const std::vector<std::pair<std::string, std::vector<int64_t>>> params = {{"weight", {2, 3}},
                                                                             {"bias", {2}}};
  for (const auto& [name, shape] : params) {
    if (!only.empty() && name != only) continue;
    v1::GradientFrame header;
    header.mutable_header()->set_name(name);
    header.mutable_header()->mutable_meta()->set_dtype(v1::FLOAT32);
    int64_t numel = 1;
    for (int64_t d : shape) {
      header.mutable_header()->mutable_meta()->add_shape(d);
      numel *= d;
    }
    writer->Write(header);
    std::vector<float> values(numel);
    for (int64_t i = 0; i < numel; ++i) {
      values[i] = 0.1f * static_cast<float>((seed * 7 + i * 3) % 11) - 0.5f;
    }
    v1::GradientFrame chunk;
    chunk.mutable_chunk()->set_data(
        std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float)));
    writer->Write(chunk);
  }
  writer->WritesDone();
  return writer->Finish();
}

inline grpc::Status ZeroGrad(v1::Training::Stub& stub, const std::string& optimizer) {
  grpc::ClientContext context;
  v1::ZeroGradRequest request;
  request.set_optimizer(optimizer);
  v1::OptimizerInfo info;
  return stub.ZeroGrad(&context, request, &info);
}

inline grpc::Status StepOptimizer(v1::Training::Stub& stub, const std::string& optimizer) {
  grpc::ClientContext context;
  v1::StepRequest request;
  request.set_optimizer(optimizer);
  v1::StepResponse response;
  return stub.Step(&context, request, &response);
}

}  // namespace paramd::testing
