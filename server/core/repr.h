// The text `repr(module)` gives in PyTorch (nn.Module.__repr__, with ModuleList's
// compression of repeated children). Reads the tree only; the caller keeps writers out.
#pragma once

#include <string>

#include "server/core/module.h"

namespace paramd::core {

// nn.Module.__repr__: the type name, the layer's extra_repr, then `(name): child` lines
// indented by two spaces. A None child prints `(name): None`; a module shared at two paths
// prints at both. A built-in ModuleList prints runs of identical children once, as
// `(0-2): 3 x Linear(...)` (PyTorch 2.0 and later).
std::string Repr(const Module& module);

}  // namespace paramd::core
