// PyTorch's module-tree traversals, with its exact order and de-duplication rules
// (pytorch-semantics.md sections 2 and 3): state_dict, named_modules, named_children,
// named_parameters, named_buffers, and the dotted-path lookups get_submodule,
// get_parameter and get_buffer.
//
// Thread-safety: these read the tree; the caller must keep writers out (Model does).
#pragma once

#include "absl/strings/string_view.h"
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "server/core/module.h"

namespace paramd::core {

template <typename T>
using Named = std::vector<std::pair<std::string, std::shared_ptr<T>>>;

struct StateDictEntry {
  std::string name;
  Tensor tensor;
  // The Parameter or Buffer object (state_dict(keep_vars=True)); two entries with the same
  // slot are the same tied parameter or a shared module's tensor reached by two paths.
  std::shared_ptr<TensorSlot> slot;
  bool is_parameter = false;
};

struct StateDict {
  std::vector<StateDictEntry> entries;
  // `state_dict()._metadata`: one (module prefix without its trailing dot, Module._version)
  // per visited module in pre-order, shared modules once per path.
  std::vector<std::pair<std::string, int>> metadata;
};

// Matches nn.Module.state_dict(prefix=prefix): own parameters, own persistent buffers, then
// children recursively; None slots skipped; no de-duplication.
StateDict GetStateDict(const Module& root, absl::string_view prefix = "");

// Matches nn.Module.named_modules(prefix=..., remove_duplicate=...): `(prefix, root)` first.
Named<Module> NamedModules(const std::shared_ptr<Module>& root, absl::string_view prefix = "",
                           bool remove_duplicate = true);
// Matches nn.Module.named_children(): direct children, None skipped, always de-duplicated.
Named<Module> NamedChildren(const Module& module);
// Matches nn.Module.named_parameters / named_buffers (named_buffers includes non-persistent
// buffers). A tensor object reached twice is listed once, under its first name, unless
// `remove_duplicate` is false.
Named<Parameter> NamedParameters(const std::shared_ptr<Module>& root, absl::string_view prefix = "",
                                 bool recurse = true, bool remove_duplicate = true);
Named<Buffer> NamedBuffers(const std::shared_ptr<Module>& root, absl::string_view prefix = "",
                           bool recurse = true, bool remove_duplicate = true);

// Bytes of tensor memory the tree holds: every parameter's and buffer's storage, each storage
// counted once however many tensors (tied, shared or views) reach it.
uint64_t StorageBytes(const std::shared_ptr<Module>& root);

// nn.Module.get_submodule / get_parameter / get_buffer by dotted path. NOT_FOUND with
// PyTorch's AttributeError text: "Linear has no attribute `foo`", "`weight` is not an
// nn.Module", "`bias` is not an nn.Parameter", "`x` is not a buffer". A None parameter
// slot is "not an nn.Parameter"; a None buffer slot returns null, as PyTorch returns None.
absl::StatusOr<std::shared_ptr<Module>> GetSubmodule(const std::shared_ptr<Module>& root,
                                                     absl::string_view target);
absl::StatusOr<std::shared_ptr<Parameter>> GetParameter(const std::shared_ptr<Module>& root,
                                                        absl::string_view target);
absl::StatusOr<std::shared_ptr<Buffer>> GetBuffer(const std::shared_ptr<Module>& root,
                                                  absl::string_view target);

}  // namespace paramd::core
