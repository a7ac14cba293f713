// A private copy of a module tree's structure that shares every tensor storage: what a
// long read (a forward pass) holds so that it sees one model version while writers go on.
//
// Why a copy: a Model's writers publish by replacing the Tensor values held in the tree's
// Parameter and Buffer objects (and by changing registries) under the model's lock (Note
// [Snapshot publication] in model.h). Copying the Tensor values out pins their storages,
// but a forward pass walks modules and slots, so it needs those objects frozen too. The
// copy has its own Module, Parameter and Buffer objects and the same Storages; making it
// costs one small object per module and tensor, no tensor bytes.
//
// Thread-safety: call with the tree stable (inside Model::Read). The copy is owned by the
// caller and nothing else can reach it.
#pragma once

#include <memory>

#include "server/core/module.h"

namespace paramd::core {

// Copies `root`'s modules, parameters and buffers, keeping module sharing and parameter
// tying (one object at two paths stays one object in the copy), every registry's order,
// training flags, arguments and forward programs. Tensors are shared, not cloned.
std::shared_ptr<const Module> CopyTreeSharingTensors(const Module& root);

}  // namespace paramd::core
