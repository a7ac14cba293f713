// The table of built-in layers, and the helpers the family files share (builtin.h). The
// table is explicit rather than filled by static initialisers, so its order is fixed and
// nothing depends on link order.
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/core/layers/builtin.h"
#include "server/core/layers/layer.h"
#include "server/core/parameter.h"

namespace paramd::core {

const std::vector<const LayerDef*>& AllLayers() {
  // DESIGN.md section 6 order.
  static const auto* const layers = new std::vector<const LayerDef*>{
      &LinearLayer(),
      &Conv2dLayer(),
      &MaxPool2dLayer(),
      &AvgPool2dLayer(),
      &AdaptiveAvgPool2dLayer(),
      &BatchNorm1dLayer(),
      &BatchNorm2dLayer(),
      &LayerNormLayer(),
      &EmbeddingLayer(),
      &DropoutLayer(),
      &ReLULayer(),
      &GELULayer(),
      &SiLULayer(),
      &SigmoidLayer(),
      &TanhLayer(),
      &SoftmaxLayer(),
      &LogSoftmaxLayer(),
      &FlattenLayer(),
      &IdentityLayer(),
      &SequentialLayer(),
      &ModuleListLayer(),
      &ModuleDictLayer(),
  };
  return *layers;
}

const LayerDef* FindLayer(absl::string_view type) {
  for (const LayerDef* layer : AllLayers()) {
    if (layer->type == type) return layer;
  }
  return nullptr;
}

const nlohmann::ordered_json& ArgOf(const Module& module, absl::string_view name) {
  static const auto* const kNull = new nlohmann::ordered_json();
  const nlohmann::ordered_json& args = module.args();
  if (!args.is_object()) return *kNull;
  auto it = args.find(std::string(name));
  return it == args.end() ? *kNull : *it;
}

absl::Status CheckNoNegativeDimension(const Shape& shape) {
  for (int64_t dim : shape) {
    if (dim < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Trying to create tensor with negative dimension ", dim, ": ", ShapeString(shape)));
    }
  }
  return absl::OkStatus();
}

absl::Status RequireFloatingDType(const ArgReader& args, absl::string_view type, DType dtype) {
  if (IsFloatingPoint(dtype)) return absl::OkStatus();
  return args.Error("dtype", absl::StrCat(type,
                                          " initialises its parameters with random values "
                                          "and needs a floating-point dtype, got ",
                                          DTypeName(dtype)));
}

absl::Status AddParameter(Module& module, absl::string_view name, absl::StatusOr<Tensor> tensor) {
  if (!tensor.ok()) return tensor.status();
  return module.RegisterParameter(name, std::make_shared<Parameter>(*std::move(tensor)));
}

absl::Status AddBuffer(Module& module, absl::string_view name, absl::StatusOr<Tensor> tensor) {
  if (!tensor.ok()) return tensor.status();
  return module.RegisterBuffer(name, std::make_shared<Buffer>(*std::move(tensor)),
                               /*persistent=*/true);
}

}  // namespace paramd::core
