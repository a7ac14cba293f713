// The table of built-in layers, and the helpers the family files share (builtin.h). The
// table is explicit rather than filled by static initialisers, so its order is fixed and
// nothing depends on link order. A new layer adds its accessor's declaration and one entry
// (docs/adding-a-layer.md).
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/core/layers/builtin.h"
#include "server/core/layers/layer.h"
#include "server/core/parameter.h"

namespace paramd::core {

// Each built-in's accessor, defined in its family's file (layers/<family>.cc).
const LayerDef& LinearLayer();             // linear.cc
const LayerDef& Conv1dLayer();             // conv.cc
const LayerDef& Conv2dLayer();             // conv.cc
const LayerDef& MaxPool2dLayer();          // pooling.cc
const LayerDef& AvgPool2dLayer();          // pooling.cc
const LayerDef& AdaptiveAvgPool2dLayer();  // pooling.cc
const LayerDef& BatchNorm1dLayer();        // normalization.cc
const LayerDef& BatchNorm2dLayer();        // normalization.cc
const LayerDef& LayerNormLayer();          // normalization.cc
const LayerDef& EmbeddingLayer();          // embedding.cc
const LayerDef& DropoutLayer();            // dropout.cc
const LayerDef& ReLULayer();               // activation.cc
const LayerDef& GELULayer();               // activation.cc
const LayerDef& SiLULayer();               // activation.cc
const LayerDef& SigmoidLayer();            // activation.cc
const LayerDef& TanhLayer();               // activation.cc
const LayerDef& SoftmaxLayer();            // activation.cc
const LayerDef& LogSoftmaxLayer();         // activation.cc
const LayerDef& FlattenLayer();            // flatten.cc
const LayerDef& IdentityLayer();           // flatten.cc
const LayerDef& SequentialLayer();         // containers.cc
const LayerDef& ModuleListLayer();         // containers.cc
const LayerDef& ModuleDictLayer();         // containers.cc

const std::vector<const LayerDef*>& AllLayers() {
  // DESIGN.md section 6 order, Conv1d beside Conv2d.
  static const auto* const layers = new std::vector<const LayerDef*>{
      &LinearLayer(),
      &Conv1dLayer(),
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
