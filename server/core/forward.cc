// The forward runner (runner.h) and Forward (forward.h): device placement, the tensor
// plumbing layers and program ops share, and the walk from module to module. Each built-in
// layer's forward lives in its family file (layers/); custom containers' forward programs
// in program.cc.
#include "server/core/forward.h"

#include <algorithm>
#include <optional>

#include "base/checked_math.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/backend.h"
#include "base/status_macros.h"
#include "server/core/layers/layer.h"
#include "server/core/program.h"
#include "server/core/runner.h"

namespace paramd::core {
namespace {

using kernels::Backend;
using kernels::OpKind;
using kernels::UnaryOp;

// The device of the first tensor in the tree, if any.
std::optional<Device> TreeDevice(const Module& module) {
  for (const auto& [name, parameter] : module.parameters()) {
    if (parameter != nullptr && parameter->data().defined()) return parameter->data().device();
  }
  for (const auto& [name, buffer] : module.buffers()) {
    if (buffer != nullptr && buffer->data().defined()) return buffer->data().device();
  }
  for (const auto& [name, child] : module.children()) {
    if (child == nullptr) continue;
    if (std::optional<Device> device = TreeDevice(*child)) return device;
  }
  return std::nullopt;
}

// `tensor`'s dtype, shape and strides, with `data` (const or not) as its data.
template <typename View>
View ViewWith(const Tensor& tensor, decltype(View::data) data) {
  View view;
  view.data = data;
  view.dtype = tensor.dtype();
  view.rank = static_cast<int>(tensor.dim());
  for (int d = 0; d < view.rank; ++d) {
    view.shape[d] = tensor.shape()[d];
    view.strides[d] = tensor.strides()[d];
  }
  return view;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Names and messages

absl::string_view ScalarTypeName(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "Float";
    case DType::kFloat64:
      return "Double";
    case DType::kFloat16:
      return "Half";
    case DType::kBFloat16:
      return "BFloat16";
    case DType::kInt64:
      return "Long";
    case DType::kInt32:
      return "Int";
    case DType::kInt16:
      return "Short";
    case DType::kInt8:
      return "Char";
    case DType::kUInt8:
      return "Byte";
    case DType::kBool:
      return "Bool";
  }
  return "Unknown";
}

std::string ModuleLabel(const std::string& path, const Module& module) {
  if (path.empty()) return absl::StrCat("the root module (", module.type(), ")");
  return absl::StrCat("module '", path, "' (", module.type(), ")");
}

std::string ChildPath(const std::string& path, absl::string_view name) {
  return path.empty() ? std::string(name) : absl::StrCat(path, ".", name);
}

absl::Status At(absl::string_view where, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(where, ": ", status.message()));
}

absl::Status TooManyDimensions() {
  return absl::UnimplementedError(
      absl::StrCat("tensors of more than ", kernels::kMaxRank, " dimensions are not supported"));
}

absl::StatusOr<int64_t> WrapDim(int64_t dim, int64_t rank) {
  const int64_t n = std::max<int64_t>(rank, 1);
  if (dim < -n || dim >= n) {
    return absl::InvalidArgumentError(
        absl::StrCat("Dimension out of range (expected to be in range of [", -n, ", ", n - 1,
                     "], but got ", dim, ")"));
  }
  return dim < 0 ? dim + n : dim;
}

DType PromoteTypes(DType a, DType b) {
  if (a == b) return a;
  const bool fa = IsFloatingPoint(a), fb = IsFloatingPoint(b);
  if (fa != fb) return fa ? a : b;
  if (fa) {
    if (a == DType::kFloat64 || b == DType::kFloat64) return DType::kFloat64;
    return DType::kFloat32;  // float32 with a 16-bit type, or float16 with bfloat16
  }
  if (a == DType::kBool) return b;
  if (b == DType::kBool) return a;
  return ElementSize(a) >= ElementSize(b) ? a : b;
}

// ---------------------------------------------------------------------------------------
// Views

Tensor ParameterOf(const Module& module, absl::string_view name) {
  const std::shared_ptr<Parameter>* slot = module.parameters().Find(name);
  return slot != nullptr && *slot != nullptr ? (*slot)->data() : Tensor();
}

kernels::ConstTensorView ConstView(const Tensor& tensor) {
  return ViewWith<kernels::ConstTensorView>(tensor, tensor.data());
}

kernels::TensorView MutableView(const Tensor& tensor) {
  return ViewWith<kernels::TensorView>(tensor, tensor.mutable_data());
}

Tensor Reshaped(const Tensor& tensor, Shape shape) {
  Shape strides = ContiguousStrides(shape);
  return Tensor(tensor.storage(), tensor.offset(), std::move(shape), std::move(strides),
                tensor.dtype());
}

Tensor Permuted(const Tensor& tensor, const std::vector<int64_t>& dims) {
  Shape shape, strides;
  for (int64_t d : dims) {
    shape.push_back(tensor.shape()[d]);
    strides.push_back(tensor.strides()[d]);
  }
  return Tensor(tensor.storage(), tensor.offset(), std::move(shape), std::move(strides),
                tensor.dtype());
}

// ---------------------------------------------------------------------------------------
// The walk

absl::StatusOr<Tensor> Runner::Call(const Module& module, const std::string& path,
                                    const Tensor& input, const ValueMap* extra) {
  if (options_.cancelled && options_.cancelled()) {
    return absl::CancelledError("the client cancelled the forward");
  }
  const LayerDef* layer = module.layer();
  if (layer == nullptr) return RunProgram(*this, module, path, input, extra);
  if (layer->is_container) {
    if (layer->forward == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          ModuleLabel(path, module), ": Module [", layer->type,
          "] is missing the required \"forward\" function; call its children from a forward "
          "program instead"));
    }
    return layer->forward(LayerCall{*this, module, path}, input);
  }
  return At(ModuleLabel(path, module), CallLayer(module, path, input));
}

absl::StatusOr<Tensor> Runner::CallLayer(const Module& module, const std::string& path,
                                         const Tensor& input) {
  if (input.dim() > kernels::kMaxRank) return TooManyDimensions();
  if (module.layer()->forward == nullptr) {
    return absl::UnimplementedError(
        absl::StrCat("forward of ", module.layer()->type, " is not supported"));
  }
  return module.layer()->forward(LayerCall{*this, module, path}, input);
}

absl::StatusOr<Tensor> Runner::CallFused(const Module& module, const std::string& path,
                                         const Tensor& input, UnaryOp epilogue) {
  return At(ModuleLabel(path, module),
            module.layer()->forward(LayerCall{*this, module, path, epilogue}, input));
}

bool Runner::Fusable(UnaryOp op) const {
  return backend_->Supports({.kind = OpKind::kGemm, .unary = op}).ok();
}

std::optional<UnaryOp> Runner::FusableActivation(const Module* next) const {
  if (next == nullptr || next->layer() == nullptr || next->layer()->gemm_epilogue == nullptr) {
    return std::nullopt;
  }
  const std::optional<UnaryOp> op = next->layer()->gemm_epilogue(*next);
  return op.has_value() && Fusable(*op) ? op : std::nullopt;
}

absl::StatusOr<Tensor> Runner::ToDevice(const Tensor& tensor) {
  if (tensor.device() == device_) return tensor;
  return ConvertTo(tensor, tensor.dtype(), device_);
}

std::vector<BufferUpdate> Runner::TakeUpdates() {
  update_index_.clear();
  return std::move(updates_);
}

// ---------------------------------------------------------------------------------------
// Tensors on the run's device

absl::StatusOr<Tensor> Runner::Empty(DType dtype, const Shape& shape) {
  return Tensor::Empty(dtype, shape, device_);
}

absl::StatusOr<Tensor> Runner::Contiguous(const Tensor& tensor) {
  if (tensor.is_contiguous()) return tensor;
  PARAMD_ASSIGN_OR_RETURN(Tensor out,
                          Tensor::Empty(tensor.dtype(), tensor.shape(), tensor.device()));
  PARAMD_RETURN_IF_ERROR(
      backend_->Convert({.input = ConstView(tensor), .output = MutableView(out)}));
  return out;
}

absl::StatusOr<Tensor> Runner::ConvertDType(const Tensor& tensor, DType dtype) {
  if (tensor.dtype() == dtype) return tensor;
  PARAMD_ASSIGN_OR_RETURN(Tensor out, Empty(dtype, tensor.shape()));
  PARAMD_RETURN_IF_ERROR(
      backend_->Convert({.input = ConstView(tensor), .output = MutableView(out)}));
  return out;
}

absl::StatusOr<Tensor> Runner::Scalar(DType dtype, double value) {
  // The value travels as the fill kernel's argument: on a GPU a Python number in a program
  // costs no host-to-device copy and no wait for the queue. A backend without Fill gets
  // the host copy.
  PARAMD_ASSIGN_OR_RETURN(Tensor out, Empty(dtype, {}));
  const absl::Status filled = backend_->Fill({.output = MutableView(out), .value = value});
  if (filled.code() != absl::StatusCode::kUnimplemented) {
    PARAMD_RETURN_IF_ERROR(filled);
    return out;
  }
  PARAMD_ASSIGN_OR_RETURN(Tensor host, Tensor::Full(dtype, {}, value));
  return ToDevice(host);
}

absl::StatusOr<Tensor> Runner::ApplyUnary(const Tensor& input, UnaryOp op) {
  if (op == UnaryOp::kIdentity) return input;
  PARAMD_ASSIGN_OR_RETURN(Tensor x, Contiguous(input));
  PARAMD_ASSIGN_OR_RETURN(Tensor out, Empty(x.dtype(), x.shape()));
  PARAMD_RETURN_IF_ERROR(
      backend_->Unary({.op = op, .input = ConstView(x), .output = MutableView(out)}));
  return out;
}

absl::StatusOr<Tensor> Runner::ApplyBinary(const Tensor& a_in, const Tensor& b_in,
                                           kernels::BinaryOp op) {
  const DType dtype = PromoteTypes(a_in.dtype(), b_in.dtype());
  PARAMD_ASSIGN_OR_RETURN(Tensor a, ConvertDType(a_in, dtype));
  PARAMD_ASSIGN_OR_RETURN(Tensor b, ConvertDType(b_in, dtype));
  const int64_t rank = std::max(a.dim(), b.dim());
  Shape shape(rank);
  kernels::ConstTensorView va, vb;
  va.data = a.data();
  vb.data = b.data();
  va.dtype = vb.dtype = dtype;
  va.rank = vb.rank = static_cast<int>(rank);
  if (rank > kernels::kMaxRank) {
    return absl::UnimplementedError(
        absl::StrCat("tensors of more than ", kernels::kMaxRank, " dimensions are not supported"));
  }
  for (int64_t d = 0; d < rank; ++d) {
    const int64_t da = d - (rank - a.dim()), db = d - (rank - b.dim());
    const int64_t sa = da >= 0 ? a.shape()[da] : 1, sb = db >= 0 ? b.shape()[db] : 1;
    if (sa != sb && sa != 1 && sb != 1) {
      return absl::InvalidArgumentError(absl::StrCat("The size of tensor a (", sa,
                                                     ") must match the size of tensor b (", sb,
                                                     ") at non-singleton dimension ", d));
    }
    shape[d] = sa == 1 ? sb : sa;
    va.shape[d] = vb.shape[d] = shape[d];
    va.strides[d] = (da >= 0 && sa != 1) ? a.strides()[da] : 0;
    vb.strides[d] = (db >= 0 && sb != 1) ? b.strides()[db] : 0;
  }
  PARAMD_ASSIGN_OR_RETURN(Tensor out, Empty(dtype, shape));
  PARAMD_RETURN_IF_ERROR(
      backend_->Binary({.op = op, .a = va, .b = vb, .output = MutableView(out)}));
  return out;
}

absl::StatusOr<Tensor> Runner::ApplySoftmax(const Tensor& input, std::optional<int64_t> dim,
                                            bool log) {
  // nn.functional._get_softmax_dim, for dim=None.
  const int64_t rank = input.dim();
  const int64_t chosen = dim.has_value() ? *dim : (rank == 0 || rank == 1 || rank == 3) ? 0 : 1;
  PARAMD_ASSIGN_OR_RETURN(const int64_t wrapped, WrapDim(chosen, rank));
  PARAMD_ASSIGN_OR_RETURN(Tensor x, Contiguous(input));
  PARAMD_ASSIGN_OR_RETURN(Tensor out, Empty(x.dtype(), x.shape()));
  PARAMD_RETURN_IF_ERROR(backend_->Softmax({.input = ConstView(x),
                                            .output = MutableView(out),
                                            .dim = static_cast<int>(wrapped),
                                            .log = log}));
  return out;
}

absl::StatusOr<Tensor> Runner::ApplyFlatten(const Tensor& input, int64_t start_dim,
                                            int64_t end_dim) {
  PARAMD_ASSIGN_OR_RETURN(const int64_t start, WrapDim(start_dim, input.dim()));
  PARAMD_ASSIGN_OR_RETURN(const int64_t end, WrapDim(end_dim, input.dim()));
  if (start > end) {
    return absl::InvalidArgumentError(
        "flatten() has invalid args: start_dim cannot come after end_dim");
  }
  if (input.dim() == 0) return Reshaped(input, {1});
  Shape shape(input.shape().begin(), input.shape().begin() + start);
  // The input's dimensions multiply to its numel, unless one is 0 and others are huge.
  const std::optional<int64_t> merged = CheckedProduct(
      absl::MakeConstSpan(input.shape()).subspan(start, static_cast<size_t>(end - start + 1)));
  if (!merged) {
    return absl::InvalidArgumentError(absl::StrCat(
        "flatten() of shape ", ShapeString(input.shape()), " overflows a dimension"));
  }
  shape.push_back(*merged);
  shape.insert(shape.end(), input.shape().begin() + end + 1, input.shape().end());
  PARAMD_ASSIGN_OR_RETURN(Tensor x, Contiguous(input));
  return Reshaped(x, std::move(shape));
}

absl::StatusOr<Tensor> Runner::ApplyView(const Tensor& input, const std::vector<int64_t>& requested,
                                         bool is_view) {
  const int64_t numel = input.numel();
  Shape shape(requested.begin(), requested.end());
  Shape given;  // every dimension but the inferred one
  std::optional<size_t> infer;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      if (infer.has_value())
        return absl::InvalidArgumentError("only one dimension can be inferred");
      infer = i;
    } else if (shape[i] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("invalid shape dimension ", shape[i]));
    } else {
      given.push_back(shape[i]);
    }
  }
  const std::string shape_text = absl::StrCat("[", absl::StrJoin(requested, ", "), "]");
  // A product past 63 bits cannot equal (or divide) any input's size.
  const std::optional<int64_t> product = CheckedProduct(given);
  if (!product) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape '", shape_text, "' is invalid for input of size ", numel));
  }
  const int64_t known = *product;
  if (infer.has_value()) {
    if (known == 0 || numel % known != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape '", shape_text, "' is invalid for input of size ", numel));
    }
    shape[*infer] = numel / known;
  } else if (known != numel) {
    return absl::InvalidArgumentError(
        absl::StrCat("shape '", shape_text, "' is invalid for input of size ", numel));
  }
  // An empty input may take dimensions whose contiguous strides would overflow.
  PARAMD_RETURN_IF_ERROR(CheckedNumel(shape).status());
  if (is_view && !input.is_contiguous()) {
    return absl::InvalidArgumentError(
        "view size is not compatible with input tensor's size and stride (at least one "
        "dimension spans across two contiguous subspaces). Use .reshape(...) instead.");
  }
  PARAMD_ASSIGN_OR_RETURN(Tensor x, Contiguous(input));
  return Reshaped(x, std::move(shape));
}

absl::StatusOr<Tensor> Runner::ApplyCat(const std::vector<Tensor>& inputs, int64_t dim_arg) {
  // As torch.cat, 1-D empty tensors are skipped whatever the others' shapes.
  const Tensor* reference = nullptr;
  DType dtype = inputs.front().dtype();
  for (size_t i = 0; i < inputs.size(); ++i) {
    if (i > 0) dtype = PromoteTypes(dtype, inputs[i].dtype());
    const bool legacy_empty = inputs[i].dim() == 1 && inputs[i].numel() == 0;
    if (reference == nullptr && !legacy_empty) reference = &inputs[i];
  }
  if (reference == nullptr) reference = &inputs.front();
  if (reference->dim() == 0) {
    return absl::InvalidArgumentError(
        "zero-dimensional tensor (at position 0) cannot be concatenated");
  }
  PARAMD_ASSIGN_OR_RETURN(const int64_t dim, WrapDim(dim_arg, reference->dim()));
  Shape shape = reference->shape();
  shape[dim] = 0;
  kernels::CatArgs args;
  std::vector<Tensor> converted;
  converted.reserve(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const Tensor& t = inputs[i];
    if (t.dim() == 1 && t.numel() == 0) continue;
    if (t.dim() != reference->dim()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Tensors must have same number of dimensions: got ", reference->dim(), " and ", t.dim()));
    }
    for (int64_t d = 0; d < t.dim(); ++d) {
      if (d != dim && t.shape()[d] != reference->shape()[d]) {
        return absl::InvalidArgumentError(
            absl::StrCat("Sizes of tensors must match except in dimension ", dim,
                         ". Expected size ", reference->shape()[d], " but got size ", t.shape()[d],
                         " for tensor number ", i, " in the list."));
      }
    }
    const std::optional<int64_t> total = CheckedAdd(shape[dim], t.shape()[dim]);
    if (!total) {
      return absl::InvalidArgumentError(
          absl::StrCat("cat(): the sizes along dimension ", dim, " add up past 63 bits"));
    }
    shape[dim] = *total;
    PARAMD_ASSIGN_OR_RETURN(Tensor c, ConvertDType(t, dtype));
    converted.push_back(c);
    args.inputs.push_back(ConstView(converted.back()));
  }
  PARAMD_ASSIGN_OR_RETURN(Tensor out, Empty(dtype, shape));
  args.dim = static_cast<int>(dim);
  args.output = MutableView(out);
  PARAMD_RETURN_IF_ERROR(backend_->Cat(args));
  return out;
}

absl::StatusOr<Tensor> Runner::ApplyDropout(const Tensor& input, double p) {
  if (!options_.training || p == 0.0) return input;
  PARAMD_ASSIGN_OR_RETURN(Tensor x, Contiguous(input));
  PARAMD_ASSIGN_OR_RETURN(Tensor out, Empty(x.dtype(), x.shape()));
  // Each dropout call in the pass draws from its own stream.
  const uint64_t seed = options_.seed + 0xD1B54A32D192ED03ull * ++dropout_calls_;
  PARAMD_RETURN_IF_ERROR(
      backend_->Dropout({.input = ConstView(x), .output = MutableView(out), .p = p, .seed = seed}));
  return out;
}

// ---------------------------------------------------------------------------------------
// Buffer updates

Tensor Runner::BufferValue(const Module& m, absl::string_view name, const Buffer** slot_out) {
  const std::shared_ptr<Buffer>* slot = m.buffers().Find(name);
  if (slot == nullptr || *slot == nullptr) {
    *slot_out = nullptr;
    return Tensor();
  }
  *slot_out = slot->get();
  auto it = update_index_.find(slot->get());
  return it != update_index_.end() ? updates_[it->second].value : (*slot)->data();
}

void Runner::RecordUpdate(const Buffer* buffer, std::string name, Tensor value) {
  auto [it, inserted] = update_index_.emplace(buffer, updates_.size());
  if (inserted) {
    updates_.push_back({std::move(name), std::move(value)});
  } else {
    updates_[it->second].value = std::move(value);
  }
}

absl::StatusOr<int64_t> Runner::ReadInt64(const Tensor& tensor) {
  int64_t value = 0;
  PARAMD_ASSIGN_OR_RETURN(Tensor as_long, ConvertDType(tensor, DType::kInt64));
  PARAMD_RETURN_IF_ERROR(backend_->CopyToHost(&value, as_long.data(), sizeof(value)));
  return value;
}

// ---------------------------------------------------------------------------------------
// Forward

absl::StatusOr<ForwardResult> Forward(const Module& root, absl::Span<const NamedTensor> inputs,
                                      const ForwardOptions& options) {
  const Tensor* input = nullptr;
  ValueMap extra;
  for (const NamedTensor& named : inputs) {
    if (!named.tensor.defined()) {
      return absl::InvalidArgumentError(absl::StrCat("input '", named.name, "' holds no tensor"));
    }
    if (named.name == "input") {
      if (input != nullptr) return absl::InvalidArgumentError("two inputs are named 'input'");
      input = &named.tensor;
    } else if (!extra.emplace(named.name, named.tensor).second) {
      return absl::InvalidArgumentError(absl::StrCat("two inputs are named '", named.name, "'"));
    }
  }
  if (input == nullptr) {
    return absl::InvalidArgumentError(
        "forward needs an input named 'input' (the positional argument of forward)");
  }
  if (!extra.empty() && root.layer() != nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        root.type(), ".forward takes one input ('input'); named inputs such as '",
        extra.begin()->first, "' are only for custom containers with a forward program"));
  }
  const Device device = TreeDevice(root).value_or(input->device());
  PARAMD_ASSIGN_OR_RETURN(Backend * backend, kernels::GetBackend(device));
  // Note [Work across threads] in kernels/backend.h: the pass starts clear of what an
  // earlier request on this thread left unreported, and waits for its queued work on every
  // exit, so that the caller may drop its pin on the model's tensors (another thread may
  // then free them) and publish the buffer updates.
  backend->DiscardDeferredErrors();
  Runner runner(backend, device, options);
  absl::StatusOr<Tensor> output = [&]() -> absl::StatusOr<Tensor> {
    PARAMD_ASSIGN_OR_RETURN(Tensor x, runner.ToDevice(*input));
    for (auto& [name, tensor] : extra) {
      PARAMD_ASSIGN_OR_RETURN(tensor, runner.ToDevice(tensor));
    }
    return runner.Call(root, "", x, extra.empty() ? nullptr : &extra);
  }();
  // An error of queued work (a bad embedding index on a GPU) comes from an op issued before
  // whatever stopped the pass, so it is the one reported, as the CPU would have.
  PARAMD_RETURN_IF_ERROR(runner.Finish());
  PARAMD_RETURN_IF_ERROR(output.status());
  ForwardResult result;
  result.outputs.push_back({"output", *std::move(output)});
  result.buffer_updates = runner.TakeUpdates();
  return result;
}

absl::StatusOr<ForwardResult> Forward(const Module& root, bool training,
                                      absl::Span<const NamedTensor> inputs) {
  return Forward(root, inputs, ForwardOptions{.training = training});
}

}  // namespace paramd::core
