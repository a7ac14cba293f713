// ExportSpec: the spec (spec.h) of a live module tree, so that checkpoints and snapshots can
// recreate a model whose tree changed after it was built (registered parameters and
// buffers, ties, None slots).
//
// The exported spec rebuilds the same tree: every module with its type and constructor
// args, every parameter and buffer slot in registration order with its shape, dtype,
// requires_grad and persistent flag, shared modules as `ref` and tied parameters as `tie`
// to the first path PyTorch's traversal meets them at, and custom containers' forward
// programs. Values are not part of a spec: entries ask for zeros, and the caller loads the
// state_dict into the rebuilt model. Non-persistent buffers therefore come back as zeros,
// as they would from a PyTorch checkpoint. Plain (unregistered) attributes are not kept.
//
// Pure function of the tree; the caller holds the tree stable (a Model::Read).
#pragma once

#include <memory>

#include "nlohmann/json.hpp"
#include "server/core/module.h"

namespace paramd::core {

nlohmann::ordered_json ExportSpec(const std::shared_ptr<Module>& root);

}  // namespace paramd::core
