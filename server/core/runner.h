// The runner of one forward pass (forward.h's Forward): the device and backend the pass
// runs on, the tensor plumbing that layers and forward-program ops share (device copies,
// contiguous copies, dtype conversion, element-wise ops, views), dropout streams, and the
// buffer updates of Note [Forward buffer updates]. It walks the tree through Call: a
// built-in layer runs its LayerDef's forward (layers/), a custom container its forward
// program (program.h).
//
// Ownership: tensors it returns are new storages or views of its inputs; it never writes
// a tensor of the module tree. Thread-safety: one Runner serves one pass on one thread;
// many passes may run at once, each with its own Runner.
// Internal to server/core: the rest of the server calls Forward.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "kernels/backend.h"
#include "server/core/forward.h"
#include "server/core/module.h"
#include "server/core/tensor.h"

namespace paramd::core {

// Named values of a forward program ("input", named inputs, each step's "out").
using ValueMap = absl::flat_hash_map<std::string, Tensor>;

// ---------------------------------------------------------------------------------------
// Names and messages

// The scalar type names PyTorch prints in its messages ("Float", "Long").
absl::string_view ScalarTypeName(DType dtype);
// "module 'fc1' (Linear)", or "the root module (MLP)" for the root.
std::string ModuleLabel(const std::string& path, const Module& module);
std::string ChildPath(const std::string& path, absl::string_view name);

// Prefixes `status` with where it happened, keeping its code.
absl::Status At(absl::string_view where, const absl::Status& status);
template <typename T>
absl::StatusOr<T> At(absl::string_view where, absl::StatusOr<T> value) {
  if (value.ok()) return value;
  return At(where, value.status());
}

// UNIMPLEMENTED for tensors of more dimensions than the kernels take.
absl::Status TooManyDimensions();

// ATen's maybe_wrap_dim: a 0-dim tensor has one wrappable dimension.
absl::StatusOr<int64_t> WrapDim(int64_t dim, int64_t rank);
// torch.result_type for two tensors of the dtypes paramd computes with.
DType PromoteTypes(DType a, DType b);

// ---------------------------------------------------------------------------------------
// Views

kernels::ConstTensorView ConstView(const Tensor& tensor);
kernels::TensorView MutableView(const Tensor& tensor);
// A view of contiguous `tensor` with another shape of the same element count.
Tensor Reshaped(const Tensor& tensor, Shape shape);
// A view with dimensions permuted; `dims` is a permutation.
Tensor Permuted(const Tensor& tensor, const std::vector<int64_t>& dims);
// The parameter `name` of `module`, or an undefined tensor for a None or absent slot.
Tensor ParameterOf(const Module& module, absl::string_view name);

// ---------------------------------------------------------------------------------------

class Runner {
 public:
  Runner(kernels::Backend* backend, Device device, const ForwardOptions& options)
      : backend_(backend), device_(device), options_(options) {}

  const Device& device() const { return device_; }
  kernels::Backend& backend() const { return *backend_; }
  // model.train() / model.eval() for this pass.
  bool training() const { return options_.training; }

  // Calls `module` (at `path`) on `input`; `extra` holds further named values for a
  // custom container's program. Errors of a built-in layer are prefixed by its label.
  absl::StatusOr<Tensor> Call(const Module& module, const std::string& path, const Tensor& input,
                              const ValueMap* extra = nullptr);
  // Runs the built-in layer `module` with `epilogue` fused into its GEMM (the layer has
  // fuses_epilogue), its errors prefixed by its label.
  absl::StatusOr<Tensor> CallFused(const Module& module, const std::string& path,
                                   const Tensor& input, kernels::UnaryOp epilogue);
  // Whether the backend fuses `op` as a GEMM epilogue.
  bool Fusable(kernels::UnaryOp op) const;
  // The activation `next` computes if a preceding GEMM may fuse it, and the backend can.
  std::optional<kernels::UnaryOp> FusableActivation(const Module* next) const;

  // Makes `tensor` live on the run's device, copying it there when it does not.
  absl::StatusOr<Tensor> ToDevice(const Tensor& tensor);
  absl::Status Finish() { return backend_->Synchronize(); }
  std::vector<BufferUpdate> TakeUpdates();

  // ---- Tensors on the run's device.
  absl::StatusOr<Tensor> Empty(DType dtype, const Shape& shape);
  absl::StatusOr<Tensor> Contiguous(const Tensor& tensor);
  absl::StatusOr<Tensor> ConvertDType(const Tensor& tensor, DType dtype);
  // A 0-dim tensor holding `value`.
  absl::StatusOr<Tensor> Scalar(DType dtype, double value);
  // The value of a one-element tensor, as int64.
  absl::StatusOr<int64_t> ReadInt64(const Tensor& tensor);

  // ---- Functions shared by layers and forward-program ops (PyTorch's text in errors).
  absl::StatusOr<Tensor> ApplyUnary(const Tensor& input, kernels::UnaryOp op);
  // torch.add / sub / mul / div with broadcasting and type promotion.
  absl::StatusOr<Tensor> ApplyBinary(const Tensor& a, const Tensor& b, kernels::BinaryOp op);
  absl::StatusOr<Tensor> ApplySoftmax(const Tensor& input, std::optional<int64_t> dim, bool log);
  absl::StatusOr<Tensor> ApplyFlatten(const Tensor& input, int64_t start_dim, int64_t end_dim);
  // Tensor.view / reshape with one inferred (-1) dimension.
  absl::StatusOr<Tensor> ApplyView(const Tensor& input, const std::vector<int64_t>& requested,
                                   bool is_view);
  absl::StatusOr<Tensor> ApplyCat(const std::vector<Tensor>& inputs, int64_t dim);
  // F.dropout: the identity in eval mode or with p == 0; each call draws its own stream.
  absl::StatusOr<Tensor> ApplyDropout(const Tensor& input, double p);

  // ---- Buffer updates (Note [Forward buffer updates]).
  // The buffer `name` of `module` as this pass sees it: its update earlier in the pass, if
  // any. `*slot_out` is the buffer object (null for a None or absent slot).
  Tensor BufferValue(const Module& module, absl::string_view name, const Buffer** slot_out);
  // Records `value` as the new value of `buffer`, reported under the dotted `name`.
  void RecordUpdate(const Buffer* buffer, std::string name, Tensor value);

 private:
  absl::StatusOr<Tensor> CallLayer(const Module& module, const std::string& path,
                                   const Tensor& input);

  kernels::Backend* backend_;
  Device device_;
  ForwardOptions options_;
  uint64_t dropout_calls_ = 0;
  std::vector<BufferUpdate> updates_;
  absl::flat_hash_map<const Buffer*, size_t> update_index_;
};

}  // namespace paramd::core
