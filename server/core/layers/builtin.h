// The built-in layer definitions, one accessor per type, and the helpers their family files
// share. Internal to server/core: the rest of the server finds layers through FindLayer.
// Thread-safe: every definition is created once on first use and never changes.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "nlohmann/json.hpp"
#include "server/core/layers/layer.h"
#include "server/core/module.h"
#include "server/core/tensor.h"

namespace paramd::core {

// linear.cc
const LayerDef& LinearLayer();
// conv.cc
const LayerDef& Conv2dLayer();
// pooling.cc
const LayerDef& MaxPool2dLayer();
const LayerDef& AvgPool2dLayer();
const LayerDef& AdaptiveAvgPool2dLayer();
// normalization.cc
const LayerDef& BatchNorm1dLayer();
const LayerDef& BatchNorm2dLayer();
const LayerDef& LayerNormLayer();
// embedding.cc
const LayerDef& EmbeddingLayer();
// dropout.cc
const LayerDef& DropoutLayer();
// activation.cc
const LayerDef& ReLULayer();
const LayerDef& GELULayer();
const LayerDef& SiLULayer();
const LayerDef& SigmoidLayer();
const LayerDef& TanhLayer();
const LayerDef& SoftmaxLayer();
const LayerDef& LogSoftmaxLayer();
// flatten.cc
const LayerDef& FlattenLayer();
const LayerDef& IdentityLayer();
// containers.cc
const LayerDef& SequentialLayer();
const LayerDef& ModuleListLayer();
const LayerDef& ModuleDictLayer();

// Note [ArgReader sequences]
// ArgReader::IntOrTuple reads PyTorch's `int or tuple` arguments. Two readings go beyond
// a fixed-size pair:
//  - `count == 0` accepts a list of any length (LayerNorm's normalized_shape); a bare int
//    comes back as one element.
//  - With a null fallback the argument is Optional: an absent or null value comes back as
//    an empty vector, and a null list element (AdaptiveAvgPool2d's `(None, 7)`) comes back
//    as kNoneSize. Each caller decides whether None is legal where it appears.
inline constexpr int64_t kNoneSize = std::numeric_limits<int64_t>::min();

// The normalised argument `name` of a built-in module, or null when it is absent (a module
// built some other way than through its LayerDef).
const nlohmann::ordered_json& ArgOf(const Module& module, absl::string_view name);

// torch.empty's check, with its text: "Trying to create tensor with negative dimension -1:
// [2, -1]".
absl::Status CheckNoNegativeDimension(const Shape& shape);

// Layers whose default init draws random values need a floating-point dtype, as
// torch.nn.init's uniform_/normal_ do.
absl::Status RequireFloatingDType(const ArgReader& args, absl::string_view type, DType dtype);

// Registers a new Parameter holding `tensor` (or its error).
absl::Status AddParameter(Module& module, absl::string_view name, absl::StatusOr<Tensor> tensor);
// Registers a new persistent Buffer holding `tensor` (or its error).
absl::Status AddBuffer(Module& module, absl::string_view name, absl::StatusOr<Tensor> tensor);

}  // namespace paramd::core
