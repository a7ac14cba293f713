// The view the optimizer's element-wise work (gradient sums, averages) hands the kernels:
// a contiguous tensor as one flat dimension, whatever its shape.
#pragma once

#include "kernels/ops.h"
#include "server/core/tensor.h"

namespace paramd::core {

inline kernels::TensorView FlatView(const Tensor& tensor) {
  kernels::TensorView view;
  view.data = tensor.mutable_data();
  view.dtype = tensor.dtype();
  view.rank = 1;
  view.shape[0] = tensor.numel();
  view.strides[0] = 1;
  return view;
}

}  // namespace paramd::core
