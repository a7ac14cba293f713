// Parameter and Buffer: objects with identity that hold a tensor, as torch.nn.Parameter and
// a registered buffer do. Tying is two registry slots holding one shared_ptr<Parameter>;
// writing through either name is seen through the other because there is one object.
//
// Thread-safety: none of its own. A Model serialises writers and lets readers copy the
// tensor value under its lock (Note [Snapshot publication] in model.h).
#pragma once

#include <cstdint>
#include <memory>

#include "server/core/tensor.h"

namespace paramd::core {

class TensorSlot {
 public:
  explicit TensorSlot(Tensor data) : data_(std::move(data)) {}
  virtual ~TensorSlot() = default;

  const Tensor& data() const { return data_; }
  // Replaces the tensor; `version` is the model version that made the change.
  void set_data(Tensor data, uint64_t version) {
    data_ = std::move(data);
    version_ = version;
  }
  // The model version that last wrote this tensor (0: since creation).
  uint64_t version() const { return version_; }

 private:
  Tensor data_;
  uint64_t version_ = 0;
};

class Parameter final : public TensorSlot {
 public:
  explicit Parameter(Tensor data, bool requires_grad = true)
      : TensorSlot(std::move(data)), requires_grad_(requires_grad) {}
  bool requires_grad() const { return requires_grad_; }
  void set_requires_grad(bool value) { requires_grad_ = value; }

 private:
  bool requires_grad_;
};

class Buffer final : public TensorSlot {
 public:
  explicit Buffer(Tensor data) : TensorSlot(std::move(data)) {}
};

}  // namespace paramd::core
