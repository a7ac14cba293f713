#include "server/core/forward.h"

#include <algorithm>
#include <array>
#include <optional>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/backend.h"
#include "base/status_macros.h"
#include "server/core/layers/builtin.h"

namespace paramd::core {
namespace {

using json = nlohmann::json;
using kernels::Backend;
using kernels::OpKind;
using kernels::OpQuery;
using kernels::UnaryOp;

// ---------------------------------------------------------------------------------------
// Names and messages

// The scalar type names PyTorch prints in its messages ("Float", "Long").
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

// Prefixes `status` with where it happened, keeping its code.
absl::Status At(absl::string_view where, const absl::Status& status) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(where, ": ", status.message()));
}

template <typename T>
absl::StatusOr<T> At(absl::string_view where, absl::StatusOr<T> value) {
  if (value.ok()) return value;
  return At(where, value.status());
}

// "[2, 3]" as PyTorch prints an IntArrayRef.
std::string Sizes(absl::Span<const int64_t> shape) { return ShapeString(shape); }

// ATen's maybe_wrap_dim: a 0-dim tensor has one wrappable dimension.
absl::StatusOr<int64_t> WrapDim(int64_t dim, int64_t rank) {
  const int64_t n = std::max<int64_t>(rank, 1);
  if (dim < -n || dim >= n) {
    return absl::InvalidArgumentError(
        absl::StrCat("Dimension out of range (expected to be in range of [", -n, ", ", n - 1,
                     "], but got ", dim, ")"));
  }
  return dim < 0 ? dim + n : dim;
}

// torch.result_type for two tensors of the dtypes paramd computes with.
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
// Arguments of built-in modules (normalised by layers/)

std::array<int64_t, 2> PairArg(const Module& module, absl::string_view name, int64_t fallback) {
  const nlohmann::ordered_json& value = ArgOf(module, name);
  if (value.is_number_integer()) return {value.get<int64_t>(), value.get<int64_t>()};
  if (value.is_array() && value.size() == 2 && value[0].is_number_integer() &&
      value[1].is_number_integer()) {
    return {value[0].get<int64_t>(), value[1].get<int64_t>()};
  }
  return {fallback, fallback};
}

int64_t IntArg(const Module& module, absl::string_view name, int64_t fallback) {
  const nlohmann::ordered_json& value = ArgOf(module, name);
  return value.is_number_integer() ? value.get<int64_t>() : fallback;
}

std::optional<int64_t> OptionalIntArg(const Module& module, absl::string_view name) {
  const nlohmann::ordered_json& value = ArgOf(module, name);
  if (value.is_number_integer()) return value.get<int64_t>();
  return std::nullopt;
}

double FloatArg(const Module& module, absl::string_view name, double fallback) {
  const nlohmann::ordered_json& value = ArgOf(module, name);
  return value.is_number() ? value.get<double>() : fallback;
}

bool BoolArg(const Module& module, absl::string_view name, bool fallback) {
  const nlohmann::ordered_json& value = ArgOf(module, name);
  return value.is_boolean() ? value.get<bool>() : fallback;
}

std::string StringArg(const Module& module, absl::string_view name, std::string fallback) {
  const nlohmann::ordered_json& value = ArgOf(module, name);
  return value.is_string() ? value.get<std::string>() : fallback;
}

Tensor ParameterOf(const Module& module, absl::string_view name) {
  const std::shared_ptr<Parameter>* slot = module.parameters().Find(name);
  return slot != nullptr && *slot != nullptr ? (*slot)->data() : Tensor();
}

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

kernels::ConstTensorView ConstView(const Tensor& tensor) {
  return ViewWith<kernels::ConstTensorView>(tensor, tensor.data());
}

kernels::TensorView MutableView(const Tensor& tensor) {
  return ViewWith<kernels::TensorView>(tensor, tensor.mutable_data());
}

// A view of contiguous `tensor` with another shape of the same element count.
Tensor Reshaped(const Tensor& tensor, Shape shape) {
  Shape strides = ContiguousStrides(shape);
  return Tensor(tensor.storage(), tensor.offset(), std::move(shape), std::move(strides),
                tensor.dtype());
}

// A view with dimensions permuted; `dims` is a permutation.
Tensor Permuted(const Tensor& tensor, const std::vector<int64_t>& dims) {
  Shape shape, strides;
  for (int64_t d : dims) {
    shape.push_back(tensor.shape()[d]);
    strides.push_back(tensor.strides()[d]);
  }
  return Tensor(tensor.storage(), tensor.offset(), std::move(shape), std::move(strides),
                tensor.dtype());
}

// ATen's pooling_output_shape.
int64_t PoolingOutputShape(int64_t size, int64_t kernel, int64_t pad, int64_t stride,
                           int64_t dilation, bool ceil_mode) {
  const int64_t numerator =
      size + 2 * pad - dilation * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  // Rounds toward negative infinity, as ATen's div_rtn.
  int64_t out = numerator / stride;
  if ((numerator % stride != 0) && ((numerator < 0) != (stride < 0))) --out;
  out += 1;
  if (ceil_mode && (out - 1) * stride >= size + pad) --out;
  return out;
}

// ---------------------------------------------------------------------------------------
// The forward program's ops

enum class ArgType { kInt, kIntList, kNumber, kString, kBool, kIntOrNull };

struct ProgramArg {
  absl::string_view name;
  ArgType type;
  bool required = false;
};

struct ProgramOp {
  absl::string_view name;
  int min_inputs;
  int max_inputs;  // -1: any number
  std::vector<ProgramArg> args;
};

const std::vector<ProgramOp>& ProgramOps() {
  static const auto* const ops = new std::vector<ProgramOp>{
      {"relu", 1, 1, {{"inplace", ArgType::kBool}}},
      {"gelu", 1, 1, {{"approximate", ArgType::kString}}},
      {"silu", 1, 1, {{"inplace", ArgType::kBool}}},
      {"sigmoid", 1, 1, {}},
      {"tanh", 1, 1, {}},
      {"identity", 1, 1, {}},
      {"contiguous", 1, 1, {}},
      {"softmax", 1, 1, {{"dim", ArgType::kIntOrNull}}},
      {"log_softmax", 1, 1, {{"dim", ArgType::kIntOrNull}}},
      {"flatten", 1, 1, {{"start_dim", ArgType::kInt}, {"end_dim", ArgType::kInt}}},
      {"view", 1, 1, {{"shape", ArgType::kIntList, true}}},
      {"reshape", 1, 1, {{"shape", ArgType::kIntList, true}}},
      {"transpose", 1, 1, {{"dim0", ArgType::kInt, true}, {"dim1", ArgType::kInt, true}}},
      {"permute", 1, 1, {{"dims", ArgType::kIntList, true}}},
      {"unsqueeze", 1, 1, {{"dim", ArgType::kInt, true}}},
      {"squeeze", 1, 1, {{"dim", ArgType::kIntOrNull}}},
      {"add", 1, 2, {{"other", ArgType::kNumber}, {"alpha", ArgType::kNumber}}},
      {"sub", 1, 2, {{"other", ArgType::kNumber}, {"alpha", ArgType::kNumber}}},
      {"mul", 1, 2, {{"other", ArgType::kNumber}}},
      {"div", 1, 2, {{"other", ArgType::kNumber}}},
      {"cat", 1, -1, {{"dim", ArgType::kInt}}},
      {"dropout", 1, 1, {{"p", ArgType::kNumber}}},
  };
  return *ops;
}

const ProgramOp* FindProgramOp(absl::string_view name) {
  for (const ProgramOp& op : ProgramOps()) {
    if (op.name == name) return &op;
  }
  return nullptr;
}

bool HasType(const json& value, ArgType type) {
  switch (type) {
    case ArgType::kInt:
      return value.is_number_integer();
    case ArgType::kNumber:
      return value.is_number();
    case ArgType::kString:
      return value.is_string();
    case ArgType::kBool:
      return value.is_boolean();
    case ArgType::kIntOrNull:
      return value.is_null() || value.is_number_integer();
    case ArgType::kIntList:
      if (!value.is_array()) return false;
      for (const json& item : value) {
        if (!item.is_number_integer()) return false;
      }
      return true;
  }
  return false;
}

absl::string_view TypeWords(ArgType type) {
  switch (type) {
    case ArgType::kInt:
      return "an integer";
    case ArgType::kNumber:
      return "a number";
    case ArgType::kString:
      return "a string";
    case ArgType::kBool:
      return "true or false";
    case ArgType::kIntOrNull:
      return "an integer or null";
    case ArgType::kIntList:
      return "a list of integers";
  }
  return "a value";
}

// The inputs a step names: absent (the previous output), a name, or a list of names.
absl::StatusOr<std::vector<std::string>> StepInputNames(const json& step) {
  auto it = step.find("in");
  if (it == step.end()) return std::vector<std::string>{};
  if (it->is_string()) return std::vector<std::string>{it->get<std::string>()};
  if (it->is_array() && !it->empty()) {
    std::vector<std::string> names;
    for (const json& item : *it) {
      if (!item.is_string()) {
        return absl::InvalidArgumentError(
            absl::StrCat("'in' must be a value name or a list of names, got ", it->dump()));
      }
      names.push_back(item.get<std::string>());
    }
    return names;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("'in' must be a value name or a non-empty list of names, got ", it->dump()));
}

absl::Status ValidateStep(const json& step, const Module& module) {
  if (step.is_string()) {
    const std::shared_ptr<Module>* child = module.children().Find(step.get<std::string>());
    if (child == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(module.type(), " has no child '", step.get<std::string>(), "'"));
    }
    return absl::OkStatus();
  }
  if (!step.is_object()) {
    return absl::InvalidArgumentError("a step is a child's name or an object");
  }
  for (const auto& [key, value] : step.items()) {
    if (key != "call" && key != "op" && key != "args" && key != "in" && key != "out") {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown field '", key, "'; expected one of call, op, args, in, out"));
    }
  }
  if (step.contains("call") == step.contains("op")) {
    return absl::InvalidArgumentError("a step has exactly one of 'call' (a child) or 'op'");
  }
  PARAMD_ASSIGN_OR_RETURN(const std::vector<std::string> inputs, StepInputNames(step));
  if (auto out = step.find("out"); out != step.end() && !out->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'out' must be a value name, got ", out->dump()));
  }
  if (step.contains("call")) {
    const json& call = step["call"];
    if (!call.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("'call' must be a child's name, got ", call.dump()));
    }
    if (module.children().Find(call.get<std::string>()) == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(module.type(), " has no child '", call.get<std::string>(), "'"));
    }
    if (step.contains("args")) {
      return absl::InvalidArgumentError("a 'call' step takes no 'args'");
    }
    if (inputs.size() > 1) {
      return absl::InvalidArgumentError("a 'call' step takes one input");
    }
    return absl::OkStatus();
  }
  const json& name = step["op"];
  if (!name.is_string()) {
    return absl::InvalidArgumentError(absl::StrCat("'op' must be a string, got ", name.dump()));
  }
  const ProgramOp* op = FindProgramOp(name.get<std::string>());
  if (op == nullptr) {
    std::vector<absl::string_view> names;
    for (const ProgramOp& known : ProgramOps()) names.push_back(known.name);
    return absl::InvalidArgumentError(absl::StrCat("unknown op '", name.get<std::string>(),
                                                   "'; the ops are ", absl::StrJoin(names, ", ")));
  }
  const int count = inputs.empty() ? 1 : static_cast<int>(inputs.size());
  if (count < op->min_inputs || (op->max_inputs >= 0 && count > op->max_inputs)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "op '", op->name, "' takes ",
        op->max_inputs < 0                 ? absl::StrCat("at least ", op->min_inputs)
        : op->min_inputs == op->max_inputs ? absl::StrCat(op->min_inputs)
                                           : absl::StrCat(op->min_inputs, " or ", op->max_inputs),
        " input(s), got ", count));
  }
  static const json kNoArgs = json::object();
  const json* args = &kNoArgs;
  if (auto it = step.find("args"); it != step.end()) {
    if (!it->is_object()) {
      return absl::InvalidArgumentError(absl::StrCat("'args' must be an object, got ", it->dump()));
    }
    args = &*it;
  }
  for (const auto& [key, value] : args->items()) {
    auto known = std::find_if(op->args.begin(), op->args.end(),
                              [&key = key](const ProgramArg& arg) { return arg.name == key; });
    if (known == op->args.end()) {
      std::vector<absl::string_view> names;
      for (const ProgramArg& arg : op->args) names.push_back(arg.name);
      return absl::InvalidArgumentError(
          absl::StrCat("op '", op->name, "' has no argument '", key, "'",
                       names.empty() ? "; it takes none"
                                     : absl::StrCat("; it takes ", absl::StrJoin(names, ", "))));
    }
    if (!HasType(value, known->type)) {
      return absl::InvalidArgumentError(absl::StrCat("op '", op->name, "' argument '", key,
                                                     "' must be ", TypeWords(known->type), ", got ",
                                                     value.dump()));
    }
  }
  for (const ProgramArg& arg : op->args) {
    if (arg.required && !args->contains(std::string(arg.name))) {
      return absl::InvalidArgumentError(
          absl::StrCat("op '", op->name, "' needs the argument '", arg.name, "'"));
    }
  }
  if (op->name == "gelu" && args->contains("approximate")) {
    const std::string approximate = (*args)["approximate"].get<std::string>();
    if (approximate != "none" && approximate != "tanh") {
      return absl::InvalidArgumentError(
          absl::StrCat("approximate argument must be either none or tanh."));
    }
  }
  if ((op->name == "add" || op->name == "sub" || op->name == "mul" || op->name == "div")) {
    const bool has_other = args->contains("other");
    if (has_other == (count == 2)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "op '", op->name, "' takes two inputs, or one input and the argument 'other'"));
    }
  }
  if (op->name == "dropout" && args->contains("p")) {
    const double p = (*args)["p"].get<double>();
    if (!(p >= 0.0 && p <= 1.0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "dropout probability has to be between 0 and 1, but got ", (*args)["p"].dump()));
    }
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------
// The runner: one forward pass.

class Runner {
 public:
  Runner(Backend* backend, Device device, const ForwardOptions& options)
      : backend_(backend), device_(device), options_(options) {}

  const Device& device() const { return device_; }

  // Calls `module` (at `path`) on `input`; `extra` holds further named values for a
  // custom container's program.
  absl::StatusOr<Tensor> Call(const Module& module, const std::string& path, const Tensor& input,
                              const absl::flat_hash_map<std::string, Tensor>* extra = nullptr) {
    const LayerDef* layer = module.layer();
    if (layer == nullptr) return RunProgram(module, path, input, extra);
    const absl::string_view type = layer->type;
    if (type == "Sequential") return RunSequential(module, path, input);
    if (type == "ModuleList" || type == "ModuleDict") {
      return absl::InvalidArgumentError(absl::StrCat(
          ModuleLabel(path, module), ": Module [", type,
          "] is missing the required \"forward\" function; call its children from a forward "
          "program instead"));
    }
    return At(ModuleLabel(path, module), CallLayer(module, path, input, UnaryOp::kIdentity));
  }

  // Makes `tensor` live on the run's device, copying it there when it does not.
  absl::StatusOr<Tensor> ToDevice(const Tensor& tensor) {
    if (tensor.device() == device_) return tensor;
    return ConvertTo(tensor, tensor.dtype(), device_);
  }

  absl::Status Finish() { return backend_->Synchronize(); }

  std::vector<BufferUpdate> TakeUpdates() {
    update_index_.clear();
    return std::move(updates_);
  }

 private:
  // -------------------------------------------------------------------------------------
  // Tensor helpers on the run's device.

  absl::StatusOr<Tensor> Empty(DType dtype, const Shape& shape) {
    return Tensor::Empty(dtype, shape, device_);
  }

  absl::StatusOr<Tensor> Contiguous(const Tensor& tensor) {
    if (tensor.is_contiguous()) return tensor;
    PARAMD_ASSIGN_OR_RETURN(Tensor out,
                            Tensor::Empty(tensor.dtype(), tensor.shape(), tensor.device()));
    PARAMD_RETURN_IF_ERROR(
        backend_->Convert({.input = ConstView(tensor), .output = MutableView(out)}));
    return out;
  }

  absl::StatusOr<Tensor> ConvertDType(const Tensor& tensor, DType dtype) {
    if (tensor.dtype() == dtype) return tensor;
    PARAMD_ASSIGN_OR_RETURN(Tensor out, Empty(dtype, tensor.shape()));
    PARAMD_RETURN_IF_ERROR(
        backend_->Convert({.input = ConstView(tensor), .output = MutableView(out)}));
    return out;
  }

  absl::StatusOr<Tensor> Scalar(DType dtype, double value) {
    PARAMD_ASSIGN_OR_RETURN(Tensor host, Tensor::Full(dtype, {}, value));
    return ToDevice(host);
  }

  absl::StatusOr<Tensor> ApplyUnary(const Tensor& input, UnaryOp op) {
    if (op == UnaryOp::kIdentity) return input;
    PARAMD_ASSIGN_OR_RETURN(Tensor x, Contiguous(input));
    PARAMD_ASSIGN_OR_RETURN(Tensor out, Empty(x.dtype(), x.shape()));
    PARAMD_RETURN_IF_ERROR(
        backend_->Unary({.op = op, .input = ConstView(x), .output = MutableView(out)}));
    return out;
  }

  // torch.add / sub / mul / div with broadcasting and type promotion.
  absl::StatusOr<Tensor> ApplyBinary(const Tensor& a_in, const Tensor& b_in, kernels::BinaryOp op) {
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
      return absl::UnimplementedError(absl::StrCat("tensors of more than ", kernels::kMaxRank,
                                                   " dimensions are not supported"));
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

  absl::StatusOr<Tensor> ApplySoftmax(const Tensor& input, std::optional<int64_t> dim, bool log) {
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

  absl::StatusOr<Tensor> ApplyFlatten(const Tensor& input, int64_t start_dim, int64_t end_dim) {
    PARAMD_ASSIGN_OR_RETURN(const int64_t start, WrapDim(start_dim, input.dim()));
    PARAMD_ASSIGN_OR_RETURN(const int64_t end, WrapDim(end_dim, input.dim()));
    if (start > end) {
      return absl::InvalidArgumentError(
          "flatten() has invalid args: start_dim cannot come after end_dim");
    }
    if (input.dim() == 0) return Reshaped(input, {1});
    Shape shape(input.shape().begin(), input.shape().begin() + start);
    int64_t merged = 1;
    for (int64_t d = start; d <= end; ++d) merged *= input.shape()[d];
    shape.push_back(merged);
    shape.insert(shape.end(), input.shape().begin() + end + 1, input.shape().end());
    PARAMD_ASSIGN_OR_RETURN(Tensor x, Contiguous(input));
    return Reshaped(x, std::move(shape));
  }

  // Tensor.view / reshape with one inferred (-1) dimension.
  absl::StatusOr<Tensor> ApplyView(const Tensor& input, const std::vector<int64_t>& requested,
                                   bool is_view) {
    const int64_t numel = input.numel();
    Shape shape(requested.begin(), requested.end());
    int64_t known = 1;
    std::optional<size_t> infer;
    for (size_t i = 0; i < shape.size(); ++i) {
      if (shape[i] == -1) {
        if (infer.has_value())
          return absl::InvalidArgumentError("only one dimension can be inferred");
        infer = i;
      } else if (shape[i] < 0) {
        return absl::InvalidArgumentError(absl::StrCat("invalid shape dimension ", shape[i]));
      } else {
        known *= shape[i];
      }
    }
    const std::string shape_text = absl::StrCat("[", absl::StrJoin(requested, ", "), "]");
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
    if (is_view && !input.is_contiguous()) {
      return absl::InvalidArgumentError(
          "view size is not compatible with input tensor's size and stride (at least one "
          "dimension spans across two contiguous subspaces). Use .reshape(...) instead.");
    }
    PARAMD_ASSIGN_OR_RETURN(Tensor x, Contiguous(input));
    return Reshaped(x, std::move(shape));
  }

  absl::StatusOr<Tensor> ApplyCat(const std::vector<Tensor>& inputs, int64_t dim_arg) {
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
        return absl::InvalidArgumentError(
            absl::StrCat("Tensors must have same number of dimensions: got ", reference->dim(),
                         " and ", t.dim()));
      }
      for (int64_t d = 0; d < t.dim(); ++d) {
        if (d != dim && t.shape()[d] != reference->shape()[d]) {
          return absl::InvalidArgumentError(
              absl::StrCat("Sizes of tensors must match except in dimension ", dim,
                           ". Expected size ", reference->shape()[d], " but got size ",
                           t.shape()[d], " for tensor number ", i, " in the list."));
        }
      }
      shape[dim] += t.shape()[dim];
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

  absl::StatusOr<Tensor> ApplyDropout(const Tensor& input, double p) {
    if (!options_.training || p == 0.0) return input;
    PARAMD_ASSIGN_OR_RETURN(Tensor x, Contiguous(input));
    PARAMD_ASSIGN_OR_RETURN(Tensor out, Empty(x.dtype(), x.shape()));
    // Each dropout call in the pass draws from its own stream.
    const uint64_t seed = options_.seed + 0xD1B54A32D192ED03ull * ++dropout_calls_;
    PARAMD_RETURN_IF_ERROR(backend_->Dropout(
        {.input = ConstView(x), .output = MutableView(out), .p = p, .seed = seed}));
    return out;
  }

  // -------------------------------------------------------------------------------------
  // Built-in layers. Errors carry PyTorch's text; Call adds the module's path.

  absl::StatusOr<Tensor> CallLayer(const Module& m, const std::string& path, const Tensor& x,
                                   UnaryOp epilogue) {
    const absl::string_view type = m.layer()->type;
    if (x.dim() > kernels::kMaxRank) {
      return absl::UnimplementedError(absl::StrCat("tensors of more than ", kernels::kMaxRank,
                                                   " dimensions are not supported"));
    }
    if (type == "Linear") return Linear(m, x, epilogue);
    if (type == "Conv2d") return Conv2d(m, x);
    if (type == "MaxPool2d") return MaxPool2d(m, x);
    if (type == "AvgPool2d") return AvgPool2d(m, x);
    if (type == "AdaptiveAvgPool2d") return AdaptiveAvgPool2d(m, x);
    if (type == "BatchNorm1d" || type == "BatchNorm2d") return BatchNorm(m, path, x);
    if (type == "LayerNorm") return LayerNorm(m, x);
    if (type == "Embedding") return Embedding(m, x);
    if (type == "Dropout") return ApplyDropout(x, FloatArg(m, "p", 0.5));
    if (type == "ReLU") return ApplyUnary(x, UnaryOp::kReLU);
    if (type == "GELU") {
      return ApplyUnary(
          x, StringArg(m, "approximate", "none") == "tanh" ? UnaryOp::kGELUTanh : UnaryOp::kGELU);
    }
    if (type == "SiLU") return ApplyUnary(x, UnaryOp::kSiLU);
    if (type == "Sigmoid") return ApplyUnary(x, UnaryOp::kSigmoid);
    if (type == "Tanh") return ApplyUnary(x, UnaryOp::kTanh);
    if (type == "Softmax") return ApplySoftmax(x, OptionalIntArg(m, "dim"), false);
    if (type == "LogSoftmax") return ApplySoftmax(x, OptionalIntArg(m, "dim"), true);
    if (type == "Flatten")
      return ApplyFlatten(x, IntArg(m, "start_dim", 1), IntArg(m, "end_dim", -1));
    if (type == "Identity") return x;
    return absl::UnimplementedError(absl::StrCat("forward of ", type, " is not supported"));
  }

  absl::StatusOr<Tensor> Linear(const Module& m, const Tensor& input, UnaryOp epilogue) {
    const Tensor weight = ParameterOf(m, "weight");
    const Tensor bias = ParameterOf(m, "bias");
    if (!weight.defined() || weight.dim() != 2) {
      return absl::InvalidArgumentError("weight must be a 2-D tensor");
    }
    const int64_t out_features = weight.shape()[0], in_features = weight.shape()[1];
    if (input.dim() == 0) {
      return absl::InvalidArgumentError(
          "both arguments to linear need to be at least 1D, but they are 0D and 2D");
    }
    const int64_t last = input.shape().back();
    const int64_t rows = last == 0 ? 0 : input.numel() / last;
    if (last != in_features) {
      return absl::InvalidArgumentError(
          absl::StrCat("mat1 and mat2 shapes cannot be multiplied (", input.dim() == 1 ? 1 : rows,
                       "x", last, " and ", in_features, "x", out_features,
                       "); expected an input of shape [*, ", in_features, "]"));
    }
    if (input.dtype() != weight.dtype()) {
      return absl::InvalidArgumentError(
          absl::StrCat("mat1 and mat2 must have the same dtype, but got ",
                       ScalarTypeName(input.dtype()), " and ", ScalarTypeName(weight.dtype())));
    }
    if (bias.defined() && (bias.numel() != out_features || bias.dtype() != weight.dtype())) {
      return absl::InvalidArgumentError(
          absl::StrCat("bias must hold ", out_features, " values of the weight's dtype"));
    }
    PARAMD_ASSIGN_OR_RETURN(Tensor x, Contiguous(input));
    PARAMD_ASSIGN_OR_RETURN(Tensor w, Contiguous(weight));
    Shape shape = x.shape();
    shape.back() = out_features;
    PARAMD_ASSIGN_OR_RETURN(Tensor out, Empty(x.dtype(), shape));
    const int64_t m_rows = in_features == 0 ? out.numel() / std::max<int64_t>(out_features, 1)
                                            : x.numel() / in_features;
    PARAMD_RETURN_IF_ERROR(backend_->Gemm({.dtype = x.dtype(),
                                           .m = m_rows,
                                           .n = out_features,
                                           .k = in_features,
                                           .a = x.data(),
                                           .lda = std::max<int64_t>(in_features, 1),
                                           .b = w.data(),
                                           .ldb = std::max<int64_t>(in_features, 1),
                                           .trans_b = true,
                                           .bias = bias.defined() ? bias.data() : nullptr,
                                           .c = out.mutable_data(),
                                           .ldc = std::max<int64_t>(out_features, 1),
                                           .epilogue = epilogue}));
    return out;
  }

  absl::StatusOr<Tensor> Conv2d(const Module& m, const Tensor& input) {
    const Tensor weight = ParameterOf(m, "weight");
    const Tensor bias = ParameterOf(m, "bias");
    if (!weight.defined() || weight.dim() != 4) {
      return absl::InvalidArgumentError("weight must be a 4-D tensor");
    }
    if (input.dim() != 3 && input.dim() != 4) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: ",
          Sizes(input.shape())));
    }
    const bool batched = input.dim() == 4;
    Tensor x4 = input;
    if (!batched) {
      Shape shape = input.shape();
      shape.insert(shape.begin(), 1);
      Shape strides = input.strides();
      strides.insert(strides.begin(), input.numel());
      x4 = Tensor(input.storage(), input.offset(), shape, strides, input.dtype());
    }
    const int64_t groups = IntArg(m, "groups", 1);
    const int64_t channels = x4.shape()[1];
    if (channels != weight.shape()[1] * groups) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Given groups=", groups, ", weight of size ", Sizes(weight.shape()), ", expected input",
          Sizes(x4.shape()), " to have ", weight.shape()[1] * groups, " channels, but got ",
          channels, " channels instead"));
    }
    if (input.dtype() != weight.dtype()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Input type (", ScalarTypeName(input.dtype()), ") and weight type (",
                       ScalarTypeName(weight.dtype()), ") should be the same"));
    }
    const std::string padding_mode = StringArg(m, "padding_mode", "zeros");
    if (padding_mode != "zeros") {
      return absl::UnimplementedError(absl::StrCat("padding_mode='", padding_mode,
                                                   "' is not supported by paramd's forward; "
                                                   "use padding_mode='zeros'"));
    }
    const std::array<int64_t, 2> stride = PairArg(m, "stride", 1);
    const std::array<int64_t, 2> dilation = PairArg(m, "dilation", 1);
    const std::array<int64_t, 2> kernel = {weight.shape()[2], weight.shape()[3]};
    std::array<int64_t, 2> pad_begin = PairArg(m, "padding", 0), pad_end = pad_begin;
    const nlohmann::ordered_json& padding = ArgOf(m, "padding");
    if (padding.is_string()) {
      for (int d = 0; d < 2; ++d) {
        // 'same' puts the odd leftover pixel after, as F.conv2d does.
        const int64_t total =
            padding.get<std::string>() == "same" ? dilation[d] * (kernel[d] - 1) : 0;
        pad_begin[d] = total / 2;
        pad_end[d] = total - total / 2;
      }
    }
    const int64_t height = x4.shape()[2], width = x4.shape()[3];
    const int64_t padded_h = height + pad_begin[0] + pad_end[0];
    const int64_t padded_w = width + pad_begin[1] + pad_end[1];
    const int64_t span_h = dilation[0] * (kernel[0] - 1) + 1;
    const int64_t span_w = dilation[1] * (kernel[1] - 1) + 1;
    if (padded_h < span_h || padded_w < span_w) {
      return absl::InvalidArgumentError(
          absl::StrCat("Calculated padded input size per channel: (", padded_h, " x ", padded_w,
                       "). Kernel size: (", span_h, " x ", span_w,
                       "). Kernel size can't be greater than actual input size"));
    }
    const int64_t out_h = (padded_h - span_h) / stride[0] + 1;
    const int64_t out_w = (padded_w - span_w) / stride[1] + 1;
    const int64_t out_channels = weight.shape()[0];
    PARAMD_ASSIGN_OR_RETURN(Tensor x, Contiguous(x4));
    PARAMD_ASSIGN_OR_RETURN(Tensor w, Contiguous(weight));
    PARAMD_ASSIGN_OR_RETURN(Tensor out,
                            Empty(x.dtype(), {x.shape()[0], out_channels, out_h, out_w}));
    if (out.numel() > 0) {
      kernels::Conv2dArgs args{.input = ConstView(x),
                               .weight = ConstView(w),
                               .bias = bias.defined() ? bias.data() : nullptr,
                               .output = MutableView(out),
                               .groups = groups};
      for (int d = 0; d < 2; ++d) {
        args.stride[d] = stride[d];
        args.padding[d] = pad_begin[d];
        args.dilation[d] = dilation[d];
      }
      PARAMD_RETURN_IF_ERROR(backend_->Conv2d(args));
    }
    if (!batched) return Reshaped(out, {out_channels, out_h, out_w});
    return out;
  }

  // The [N*C, H, W] check and output shape every 2-D pool shares.
  absl::Status CheckPoolInput(const Tensor& x) {
    bool ok = x.dim() == 3 || x.dim() == 4;
    for (int64_t d = x.dim() == 4 ? 1 : 0; ok && d < x.dim(); ++d) ok = x.shape()[d] != 0;
    if (!ok) {
      return absl::InvalidArgumentError(
          "non-empty 3D or 4D (batch mode) tensor expected for input");
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Shape> PoolOutputShape(const Tensor& x, const std::array<int64_t, 2>& kernel,
                                        const std::array<int64_t, 2>& stride,
                                        const std::array<int64_t, 2>& padding,
                                        const std::array<int64_t, 2>& dilation, bool ceil_mode) {
    const int64_t h = x.shape()[x.dim() - 2], w = x.shape()[x.dim() - 1];
    const int64_t out_h =
        PoolingOutputShape(h, kernel[0], padding[0], stride[0], dilation[0], ceil_mode);
    const int64_t out_w =
        PoolingOutputShape(w, kernel[1], padding[1], stride[1], dilation[1], ceil_mode);
    const int64_t planes = x.shape()[x.dim() - 3];
    if (out_h < 1 || out_w < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Given input size: (", planes, "x", h, "x", w, "). Calculated output size: (", planes,
          "x", out_h, "x", out_w, "). Output size is too small"));
    }
    Shape shape = x.shape();
    shape[x.dim() - 2] = out_h;
    shape[x.dim() - 1] = out_w;
    return shape;
  }

  absl::StatusOr<Tensor> MaxPool2d(const Module& m, const Tensor& input) {
    if (BoolArg(m, "return_indices", false)) {
      return absl::UnimplementedError(
          "return_indices=True is not supported by paramd's forward (it returns a tuple)");
    }
    PARAMD_RETURN_IF_ERROR(CheckPoolInput(input));
    const std::array<int64_t, 2> kernel = PairArg(m, "kernel_size", 1);
    const std::array<int64_t, 2> stride = PairArg(m, "stride", 0);
    const std::array<int64_t, 2> s = {stride[0] == 0 ? kernel[0] : stride[0],
                                      stride[1] == 0 ? kernel[1] : stride[1]};
    const std::array<int64_t, 2> padding = PairArg(m, "padding", 0);
    const std::array<int64_t, 2> dilation = PairArg(m, "dilation", 1);
    PARAMD_ASSIGN_OR_RETURN(const Shape shape, PoolOutputShape(input, kernel, s, padding, dilation,
                                                               BoolArg(m, "ceil_mode", false)));
    PARAMD_ASSIGN_OR_RETURN(Tensor x, Contiguous(input));
    PARAMD_ASSIGN_OR_RETURN(Tensor out, Empty(x.dtype(), shape));
    if (out.numel() == 0) return out;
    kernels::MaxPool2dArgs args{.input = ConstView(x), .output = MutableView(out)};
    for (int d = 0; d < 2; ++d) {
      args.kernel[d] = kernel[d];
      args.stride[d] = s[d];
      args.padding[d] = padding[d];
      args.dilation[d] = dilation[d];
    }
    PARAMD_RETURN_IF_ERROR(backend_->MaxPool2d(args));
    return out;
  }

  absl::StatusOr<Tensor> AvgPool2d(const Module& m, const Tensor& input) {
    PARAMD_RETURN_IF_ERROR(CheckPoolInput(input));
    const std::array<int64_t, 2> kernel = PairArg(m, "kernel_size", 1);
    const std::array<int64_t, 2> stride = PairArg(m, "stride", 0);
    const std::array<int64_t, 2> s = {stride[0] == 0 ? kernel[0] : stride[0],
                                      stride[1] == 0 ? kernel[1] : stride[1]};
    const std::array<int64_t, 2> padding = PairArg(m, "padding", 0);
    PARAMD_ASSIGN_OR_RETURN(const Shape shape, PoolOutputShape(input, kernel, s, padding, {1, 1},
                                                               BoolArg(m, "ceil_mode", false)));
    PARAMD_ASSIGN_OR_RETURN(Tensor x, Contiguous(input));
    PARAMD_ASSIGN_OR_RETURN(Tensor out, Empty(x.dtype(), shape));
    if (out.numel() == 0) return out;
    kernels::AvgPool2dArgs args{
        .input = ConstView(x),
        .output = MutableView(out),
        .count_include_pad = BoolArg(m, "count_include_pad", true),
        .divisor_override = OptionalIntArg(m, "divisor_override").value_or(0)};
    for (int d = 0; d < 2; ++d) {
      args.kernel[d] = kernel[d];
      args.stride[d] = s[d];
      args.padding[d] = padding[d];
    }
    PARAMD_RETURN_IF_ERROR(backend_->AvgPool2d(args));
    return out;
  }

  absl::StatusOr<Tensor> AdaptiveAvgPool2d(const Module& m, const Tensor& input) {
    if (input.dim() != 3 && input.dim() != 4) {
      return absl::InvalidArgumentError(absl::StrCat(
          "adaptive_avg_pool2d(): Expected 3D or 4D tensor, but got ", Sizes(input.shape())));
    }
    for (int64_t d = 1; d < input.dim(); ++d) {
      if (input.shape()[d] == 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "adaptive_avg_pool2d(): Expected input to have non-zero size for non-batch "
            "dimensions, but input has sizes ",
            Sizes(input.shape()), " with dimension ", d, " being empty"));
      }
    }
    // Each element is a size or None (keep the input's size).
    const nlohmann::ordered_json& value = ArgOf(m, "output_size");
    Shape shape = input.shape();
    for (int d = 0; d < 2; ++d) {
      const nlohmann::ordered_json& item = value.is_array() && value.size() == 2 ? value[d] : value;
      if (item.is_number_integer()) shape[input.dim() - 2 + d] = item.get<int64_t>();
    }
    PARAMD_ASSIGN_OR_RETURN(Tensor x, Contiguous(input));
    PARAMD_ASSIGN_OR_RETURN(Tensor out, Empty(x.dtype(), shape));
    if (out.numel() == 0) return out;
    PARAMD_RETURN_IF_ERROR(
        backend_->AdaptiveAvgPool2d({.input = ConstView(x), .output = MutableView(out)}));
    return out;
  }

  // The buffer `name` as this pass sees it: its update earlier in the pass, if any.
  Tensor BufferValue(const Module& m, absl::string_view name, const Buffer** slot_out) {
    const std::shared_ptr<Buffer>* slot = m.buffers().Find(name);
    if (slot == nullptr || *slot == nullptr) {
      *slot_out = nullptr;
      return Tensor();
    }
    *slot_out = slot->get();
    auto it = update_index_.find(slot->get());
    return it != update_index_.end() ? updates_[it->second].value : (*slot)->data();
  }

  void RecordUpdate(const Buffer* buffer, std::string name, Tensor value) {
    auto [it, inserted] = update_index_.emplace(buffer, updates_.size());
    if (inserted) {
      updates_.push_back({std::move(name), std::move(value)});
    } else {
      updates_[it->second].value = std::move(value);
    }
  }

  absl::StatusOr<int64_t> ReadInt64(const Tensor& tensor) {
    int64_t value = 0;
    PARAMD_ASSIGN_OR_RETURN(Tensor as_long, ConvertDType(tensor, DType::kInt64));
    PARAMD_RETURN_IF_ERROR(backend_->CopyToHost(&value, as_long.data(), sizeof(value)));
    return value;
  }

  absl::StatusOr<Tensor> BatchNorm(const Module& m, const std::string& path, const Tensor& input) {
    // _check_input_dim of BatchNorm1d / BatchNorm2d.
    if (m.layer()->type == "BatchNorm1d" && input.dim() != 2 && input.dim() != 3) {
      return absl::InvalidArgumentError(
          absl::StrCat("expected 2D or 3D input (got ", input.dim(), "D input)"));
    }
    if (m.layer()->type == "BatchNorm2d" && input.dim() != 4) {
      return absl::InvalidArgumentError(
          absl::StrCat("expected 4D input (got ", input.dim(), "D input)"));
    }
    const Buffer *mean_slot = nullptr, *var_slot = nullptr, *count_slot = nullptr;
    const Tensor running_mean = BufferValue(m, "running_mean", &mean_slot);
    const Tensor running_var = BufferValue(m, "running_var", &var_slot);
    const Tensor num_batches = BufferValue(m, "num_batches_tracked", &count_slot);
    const Tensor weight = ParameterOf(m, "weight");
    const Tensor bias = ParameterOf(m, "bias");
    const bool training = options_.training;
    const bool track = BoolArg(m, "track_running_stats", true);
    const std::optional<double> momentum = ArgOf(m, "momentum").is_number()
                                               ? std::optional<double>(FloatArg(m, "momentum", 0.1))
                                               : std::nullopt;
    const int64_t channels = input.shape()[1];

    // _BatchNorm.forward: count the batch, choose the averaging factor.
    double factor = momentum.value_or(0.0);
    std::optional<Tensor> new_count;
    if (training && track && num_batches.defined()) {
      PARAMD_ASSIGN_OR_RETURN(const int64_t count, ReadInt64(num_batches));
      PARAMD_ASSIGN_OR_RETURN(Tensor next, Scalar(DType::kInt64, static_cast<double>(count + 1)));
      if (num_batches.dtype() != DType::kInt64) {
        PARAMD_ASSIGN_OR_RETURN(next, ConvertDType(next, num_batches.dtype()));
      }
      new_count = Reshaped(next, num_batches.shape());
      if (!momentum.has_value()) factor = 1.0 / static_cast<double>(count + 1);
    }
    const bool use_batch_stats = training || (!running_mean.defined() && !running_var.defined());
    // Running statistics are passed unless training without tracking them.
    const bool pass_running = !training || track;
    const Tensor mean_in = pass_running ? running_mean : Tensor();
    const Tensor var_in = pass_running ? running_var : Tensor();

    // F.batch_norm's checks, in ATen's order and text.
    if (use_batch_stats) {
      int64_t size_prods = input.shape()[0];
      for (int64_t d = 2; d < input.dim(); ++d) size_prods *= input.shape()[d];
      if (size_prods == 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("Expected more than 1 value per channel when training, got input size ",
                         TorchSizeString(input.shape())));
      }
    }
    for (const auto& [name, tensor] :
         {std::pair<const char*, const Tensor*>{"running_mean", &mean_in},
          {"running_var", &var_in},
          {"weight", &weight},
          {"bias", &bias}}) {
      if (tensor->defined() && tensor->numel() != channels) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, " should contain ", channels, " elements not ", tensor->numel()));
      }
      if (tensor->defined() && tensor->dtype() != input.dtype()) {
        return absl::InvalidArgumentError(absl::StrCat("expected ", name, " to have dtype ",
                                                       ScalarTypeName(input.dtype()), ", got ",
                                                       ScalarTypeName(tensor->dtype())));
      }
    }
    PARAMD_ASSIGN_OR_RETURN(Tensor x, Contiguous(input));
    PARAMD_ASSIGN_OR_RETURN(Tensor out, Empty(x.dtype(), x.shape()));
    kernels::BatchNormArgs args{.input = ConstView(x),
                                .output = MutableView(out),
                                .weight = weight.defined() ? weight.data() : nullptr,
                                .bias = bias.defined() ? bias.data() : nullptr,
                                .running_mean = mean_in.defined() ? mean_in.data() : nullptr,
                                .running_var = var_in.defined() ? var_in.data() : nullptr,
                                .use_batch_stats = use_batch_stats,
                                .momentum = factor,
                                .eps = FloatArg(m, "eps", 1e-5)};
    Tensor new_mean, new_var;
    const bool update = training && use_batch_stats && mean_in.defined() && var_in.defined();
    if (update) {
      PARAMD_ASSIGN_OR_RETURN(new_mean, Empty(running_mean.dtype(), running_mean.shape()));
      PARAMD_ASSIGN_OR_RETURN(new_var, Empty(running_var.dtype(), running_var.shape()));
      args.new_running_mean = new_mean.mutable_data();
      args.new_running_var = new_var.mutable_data();
    }
    if (out.numel() > 0) PARAMD_RETURN_IF_ERROR(backend_->BatchNorm(args));
    if (update) {
      RecordUpdate(mean_slot, ChildPath(path, "running_mean"), new_mean);
      RecordUpdate(var_slot, ChildPath(path, "running_var"), new_var);
    }
    if (new_count.has_value()) {
      RecordUpdate(count_slot, ChildPath(path, "num_batches_tracked"), *new_count);
    }
    return out;
  }

  absl::StatusOr<Tensor> LayerNorm(const Module& m, const Tensor& input) {
    std::vector<int64_t> normalized;
    const nlohmann::ordered_json& value = ArgOf(m, "normalized_shape");
    if (value.is_array()) {
      for (const auto& item : value) normalized.push_back(item.get<int64_t>());
    } else if (value.is_number_integer()) {
      normalized.push_back(value.get<int64_t>());
    }
    const int64_t k = static_cast<int64_t>(normalized.size());
    bool ok = input.dim() >= k;
    for (int64_t i = 0; ok && i < k; ++i) ok = input.shape()[input.dim() - k + i] == normalized[i];
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Given normalized_shape=", Sizes(normalized), ", expected input with shape [*",
          k > 0 ? ", " : "", absl::StrJoin(normalized, ", "), "], but got input of size",
          Sizes(input.shape())));
    }
    const Tensor weight = ParameterOf(m, "weight");
    const Tensor bias = ParameterOf(m, "bias");
    int64_t size = 1;
    for (int64_t n : normalized) size *= n;
    for (const Tensor* t : {&weight, &bias}) {
      if (t->defined() && t->dtype() != input.dtype()) {
        return absl::InvalidArgumentError(absl::StrCat("expected scalar type ",
                                                       ScalarTypeName(input.dtype()), " but found ",
                                                       ScalarTypeName(t->dtype())));
      }
    }
    PARAMD_ASSIGN_OR_RETURN(Tensor x, Contiguous(input));
    PARAMD_ASSIGN_OR_RETURN(Tensor out, Empty(x.dtype(), x.shape()));
    if (out.numel() == 0) return out;
    PARAMD_RETURN_IF_ERROR(
        backend_->LayerNorm({.input = ConstView(x),
                             .output = MutableView(out),
                             .normalized_size = size,
                             .weight = weight.defined() ? weight.data() : nullptr,
                             .bias = bias.defined() ? bias.data() : nullptr,
                             .eps = FloatArg(m, "eps", 1e-5)}));
    return out;
  }

  absl::StatusOr<Tensor> Embedding(const Module& m, const Tensor& input) {
    if (input.dtype() != DType::kInt64 && input.dtype() != DType::kInt32) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Expected tensor for argument #1 'indices' to have one of the following scalar types: "
          "Long, Int; but got torch.",
          ScalarTypeName(input.dtype()),
          "Tensor instead (while checking arguments for embedding)"));
    }
    if (!ArgOf(m, "max_norm").is_null() && ArgOf(m, "max_norm").is_number()) {
      return absl::UnimplementedError(
          "max_norm is not supported by paramd's forward: PyTorch renormalises the weight in "
          "place during forward; renormalise it on the client and set max_norm=None");
    }
    const Tensor weight = ParameterOf(m, "weight");
    if (!weight.defined() || weight.dim() != 2) {
      return absl::InvalidArgumentError("weight must be 2-D");
    }
    PARAMD_ASSIGN_OR_RETURN(Tensor indices, Contiguous(input));
    PARAMD_ASSIGN_OR_RETURN(Tensor w, Contiguous(weight));
    Shape shape = indices.shape();
    shape.push_back(weight.shape()[1]);
    if (static_cast<int64_t>(shape.size()) > kernels::kMaxRank) {
      return absl::UnimplementedError(absl::StrCat("tensors of more than ", kernels::kMaxRank,
                                                   " dimensions are not supported"));
    }
    PARAMD_ASSIGN_OR_RETURN(Tensor out, Empty(weight.dtype(), shape));
    PARAMD_RETURN_IF_ERROR(backend_->Embedding(
        {.weight = ConstView(w), .indices = ConstView(indices), .output = MutableView(out)}));
    return out;
  }

  // -------------------------------------------------------------------------------------
  // Containers

  // The activation a Linear may fuse as its epilogue when `next` is that module.
  std::optional<UnaryOp> FusableActivation(const Module* next) const {
    if (next == nullptr || next->layer() == nullptr) return std::nullopt;
    UnaryOp op;
    if (next->layer()->type == "ReLU") {
      op = UnaryOp::kReLU;
    } else if (next->layer()->type == "GELU") {
      op = StringArg(*next, "approximate", "none") == "tanh" ? UnaryOp::kGELUTanh : UnaryOp::kGELU;
    } else {
      return std::nullopt;
    }
    return Fusable(op) ? std::optional<UnaryOp>(op) : std::nullopt;
  }

  bool Fusable(UnaryOp op) const {
    return backend_->Supports({.kind = OpKind::kGemm, .unary = op}).ok();
  }

  static bool IsLinear(const Module* module) {
    return module != nullptr && module->layer() != nullptr && module->layer()->type == "Linear";
  }

  absl::StatusOr<Tensor> RunSequential(const Module& m, const std::string& path,
                                       const Tensor& input) {
    std::vector<std::pair<std::string, const Module*>> children;
    for (const auto& [name, child] : m.children()) {
      if (child != nullptr) children.emplace_back(name, child.get());
    }
    Tensor value = input;
    for (size_t i = 0; i < children.size(); ++i) {
      const auto& [name, child] = children[i];
      const std::string child_path = ChildPath(path, name);
      // Linear then ReLU/GELU: one GEMM with the activation fused where the backend can.
      if (IsLinear(child) && i + 1 < children.size()) {
        if (std::optional<UnaryOp> op = FusableActivation(children[i + 1].second)) {
          PARAMD_ASSIGN_OR_RETURN(value,
                                  At(ModuleLabel(child_path, *child), Linear(*child, value, *op)));
          ++i;
          continue;
        }
      }
      PARAMD_ASSIGN_OR_RETURN(value, Call(*child, child_path, value));
    }
    return value;
  }

  absl::StatusOr<Tensor> RunProgram(const Module& m, const std::string& path, const Tensor& input,
                                    const absl::flat_hash_map<std::string, Tensor>* extra) {
    const json& program = m.forward_program();
    if (!program.is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(
          ModuleLabel(path, m), ": Module [", m.type(),
          "] is missing the required \"forward\" function; give its spec a \"forward\" program"));
    }
    absl::flat_hash_map<std::string, Tensor> values;
    if (extra != nullptr) values = *extra;
    values["input"] = input;
    Tensor current = input;
    for (size_t i = 0; i < program.size(); ++i) {
      const json& step = program[i];
      const std::string where = absl::StrCat(ModuleLabel(path, m), ", forward step ", i);
      PARAMD_RETURN_IF_ERROR(At(where, ValidateStep(step, m)));
      // A Linear call whose unnamed output feeds straight into relu/gelu fuses with it.
      if (i + 1 < program.size()) {
        PARAMD_ASSIGN_OR_RETURN(std::optional<Tensor> fused,
                                TryFusedStep(m, path, step, program[i + 1], values, current));
        if (fused.has_value()) {
          current = *std::move(fused);
          const json& next = program[i + 1];
          if (auto out = next.find("out"); out != next.end())
            values[out->get<std::string>()] = current;
          ++i;
          continue;
        }
      }
      PARAMD_ASSIGN_OR_RETURN(std::vector<Tensor> inputs, StepInputs(step, values, current, where));
      Tensor result;
      if (step.is_string() || step.contains("call")) {
        const std::string name =
            step.is_string() ? step.get<std::string>() : step["call"].get<std::string>();
        const std::shared_ptr<Module>& child = *m.children().Find(name);
        if (child == nullptr) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, ": 'NoneType' object is not callable (child '", name, "' is None)"));
        }
        PARAMD_ASSIGN_OR_RETURN(result, Call(*child, ChildPath(path, name), inputs.front()));
      } else {
        static const json kNoArgs = json::object();
        const json& args = step.contains("args") ? step["args"] : kNoArgs;
        PARAMD_ASSIGN_OR_RETURN(
            result, At(absl::StrCat(where, " (op '", step["op"].get<std::string>(), "')"),
                       RunOp(step["op"].get<std::string>(), args, inputs)));
      }
      current = result;
      if (step.is_object()) {
        if (auto out = step.find("out"); out != step.end())
          values[out->get<std::string>()] = current;
      }
    }
    return current;
  }

  absl::StatusOr<std::vector<Tensor>> StepInputs(
      const json& step, const absl::flat_hash_map<std::string, Tensor>& values,
      const Tensor& current, absl::string_view where) {
    std::vector<std::string> names;
    if (step.is_object()) {
      PARAMD_ASSIGN_OR_RETURN(names, StepInputNames(step));
    }
    if (names.empty()) return std::vector<Tensor>{current};
    std::vector<Tensor> inputs;
    for (const std::string& name : names) {
      auto it = values.find(name);
      if (it == values.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": reads the value '", name,
                         "', which no earlier step wrote ('out') and no input supplies"));
      }
      inputs.push_back(it->second);
    }
    return inputs;
  }

  // Runs `step` (a Linear call with no named output) and `next` (relu or gelu reading it)
  // as one fused GEMM; nullopt when the pair does not qualify.
  absl::StatusOr<std::optional<Tensor>> TryFusedStep(
      const Module& m, const std::string& path, const json& step, const json& next,
      const absl::flat_hash_map<std::string, Tensor>& values, const Tensor& current) {
    std::string name;
    if (step.is_string()) {
      name = step.get<std::string>();
    } else if (step.is_object() && step.contains("call") && !step.contains("out") &&
               step["call"].is_string()) {
      name = step["call"].get<std::string>();
    } else {
      return std::optional<Tensor>();
    }
    if (!next.is_object() || !next.contains("op") || next.contains("in") ||
        !next["op"].is_string()) {
      return std::optional<Tensor>();
    }
    const std::string op = next["op"].get<std::string>();
    std::optional<UnaryOp> epilogue;
    if (op == "relu") {
      epilogue = UnaryOp::kReLU;
    } else if (op == "gelu") {
      const json* args = next.contains("args") ? &next["args"] : nullptr;
      const std::string approximate =
          args != nullptr && args->contains("approximate") && (*args)["approximate"].is_string()
              ? (*args)["approximate"].get<std::string>()
              : "none";
      if (approximate == "none") epilogue = UnaryOp::kGELU;
      if (approximate == "tanh") epilogue = UnaryOp::kGELUTanh;
    }
    if (!epilogue.has_value() || !Fusable(*epilogue) || !ValidateStep(next, m).ok()) {
      return std::optional<Tensor>();
    }
    const std::shared_ptr<Module>* child = m.children().Find(name);
    if (child == nullptr || !IsLinear(child->get())) return std::optional<Tensor>();
    std::vector<std::string> names;
    if (step.is_object()) {
      PARAMD_ASSIGN_OR_RETURN(names, StepInputNames(step));
    }
    Tensor input = current;
    if (!names.empty()) {
      auto it = values.find(names.front());
      if (it == values.end()) return std::optional<Tensor>();  // the plain path reports it
      input = it->second;
    }
    const std::string child_path = ChildPath(path, name);
    PARAMD_ASSIGN_OR_RETURN(
        Tensor out, At(ModuleLabel(child_path, **child), Linear(**child, input, *epilogue)));
    return std::optional<Tensor>(std::move(out));
  }

  // One op of a forward program; `args` were checked by ValidateStep.
  absl::StatusOr<Tensor> RunOp(const std::string& op, const json& args,
                               const std::vector<Tensor>& in) {
    auto int_arg = [&](const char* name, int64_t fallback) {
      return args.contains(name) ? args[name].get<int64_t>() : fallback;
    };
    auto list_arg = [&](const char* name) {
      std::vector<int64_t> values;
      if (args.contains(name)) {
        for (const json& item : args[name]) values.push_back(item.get<int64_t>());
      }
      return values;
    };
    const Tensor& x = in.front();
    for (const Tensor& t : in) {
      if (t.dim() > kernels::kMaxRank) {
        return absl::UnimplementedError(absl::StrCat("tensors of more than ", kernels::kMaxRank,
                                                     " dimensions are not supported"));
      }
    }
    if (op == "relu") return ApplyUnary(x, UnaryOp::kReLU);
    if (op == "gelu") {
      const bool tanh = args.contains("approximate") && args["approximate"] == "tanh";
      return ApplyUnary(x, tanh ? UnaryOp::kGELUTanh : UnaryOp::kGELU);
    }
    if (op == "silu") return ApplyUnary(x, UnaryOp::kSiLU);
    if (op == "sigmoid") return ApplyUnary(x, UnaryOp::kSigmoid);
    if (op == "tanh") return ApplyUnary(x, UnaryOp::kTanh);
    if (op == "identity") return x;
    if (op == "contiguous") return Contiguous(x);
    if (op == "softmax" || op == "log_softmax") {
      std::optional<int64_t> dim;
      if (args.contains("dim") && args["dim"].is_number_integer()) dim = args["dim"].get<int64_t>();
      return ApplySoftmax(x, dim, op == "log_softmax");
    }
    if (op == "flatten") return ApplyFlatten(x, int_arg("start_dim", 0), int_arg("end_dim", -1));
    if (op == "view" || op == "reshape") return ApplyView(x, list_arg("shape"), op == "view");
    if (op == "transpose") {
      PARAMD_ASSIGN_OR_RETURN(const int64_t d0, WrapDim(int_arg("dim0", 0), x.dim()));
      PARAMD_ASSIGN_OR_RETURN(const int64_t d1, WrapDim(int_arg("dim1", 0), x.dim()));
      if (x.dim() == 0) return x;
      std::vector<int64_t> dims(x.dim());
      for (int64_t d = 0; d < x.dim(); ++d) dims[d] = d;
      std::swap(dims[d0], dims[d1]);
      return Permuted(x, dims);
    }
    if (op == "permute") {
      const std::vector<int64_t> requested = list_arg("dims");
      if (static_cast<int64_t>(requested.size()) != x.dim()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "permute(sparse_coo): number of dimensions in the tensor input does not match the "
            "length of the desired ordering of dimensions i.e. input.dim() = ",
            x.dim(), " is not equal to len(dims) = ", requested.size()));
      }
      std::vector<int64_t> dims;
      std::vector<bool> seen(x.dim(), false);
      for (int64_t d : requested) {
        PARAMD_ASSIGN_OR_RETURN(const int64_t w, WrapDim(d, x.dim()));
        if (seen[w])
          return absl::InvalidArgumentError("permute(): duplicate dims are not allowed.");
        seen[w] = true;
        dims.push_back(w);
      }
      return Permuted(x, dims);
    }
    if (op == "unsqueeze") {
      PARAMD_ASSIGN_OR_RETURN(const int64_t dim, WrapDim(int_arg("dim", 0), x.dim() + 1));
      PARAMD_ASSIGN_OR_RETURN(Tensor c, Contiguous(x));
      Shape shape = c.shape();
      shape.insert(shape.begin() + dim, 1);
      return Reshaped(c, shape);
    }
    if (op == "squeeze") {
      PARAMD_ASSIGN_OR_RETURN(Tensor c, Contiguous(x));
      Shape shape;
      if (args.contains("dim") && args["dim"].is_number_integer()) {
        PARAMD_ASSIGN_OR_RETURN(const int64_t dim, WrapDim(args["dim"].get<int64_t>(), x.dim()));
        shape = c.shape();
        if (x.dim() > 0 && shape[dim] == 1) shape.erase(shape.begin() + dim);
      } else {
        for (int64_t size : c.shape()) {
          if (size != 1) shape.push_back(size);
        }
      }
      return Reshaped(c, shape);
    }
    if (op == "add" || op == "sub" || op == "mul" || op == "div") {
      const kernels::BinaryOp kind = op == "add"   ? kernels::BinaryOp::kAdd
                                     : op == "sub" ? kernels::BinaryOp::kSub
                                     : op == "mul" ? kernels::BinaryOp::kMul
                                                   : kernels::BinaryOp::kDiv;
      Tensor other;
      if (in.size() == 2) {
        other = in[1];
      } else {
        // A Python number takes the tensor's dtype (a float tensor stays float).
        const DType dtype = IsFloatingPoint(x.dtype()) ? x.dtype() : DType::kFloat32;
        PARAMD_ASSIGN_OR_RETURN(other, Scalar(dtype, args["other"].get<double>()));
      }
      if (args.contains("alpha") && args["alpha"].get<double>() != 1.0) {
        PARAMD_ASSIGN_OR_RETURN(Tensor alpha, Scalar(other.dtype(), args["alpha"].get<double>()));
        PARAMD_ASSIGN_OR_RETURN(other, ApplyBinary(other, alpha, kernels::BinaryOp::kMul));
      }
      return ApplyBinary(x, other, kind);
    }
    if (op == "cat") return ApplyCat(in, int_arg("dim", 0));
    if (op == "dropout") {
      const double p = args.contains("p") ? args["p"].get<double>() : 0.5;
      return ApplyDropout(x, p);
    }
    return absl::InvalidArgumentError(absl::StrCat("unknown op '", op, "'"));
  }

  Backend* backend_;
  Device device_;
  ForwardOptions options_;
  uint64_t dropout_calls_ = 0;
  std::vector<BufferUpdate> updates_;
  absl::flat_hash_map<const Buffer*, size_t> update_index_;
};

}  // namespace

absl::Status ValidateForwardProgram(const nlohmann::json& program, const Module& module) {
  if (!program.is_array()) return absl::InvalidArgumentError("expected a list of steps");
  for (size_t i = 0; i < program.size(); ++i) {
    PARAMD_RETURN_IF_ERROR(At(absl::StrCat("step ", i), ValidateStep(program[i], module)));
  }
  return absl::OkStatus();
}

absl::StatusOr<ForwardResult> Forward(const Module& root, absl::Span<const NamedTensor> inputs,
                                      const ForwardOptions& options) {
  const Tensor* input = nullptr;
  absl::flat_hash_map<std::string, Tensor> extra;
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
  Runner runner(backend, device, options);
  PARAMD_ASSIGN_OR_RETURN(Tensor x, runner.ToDevice(*input));
  for (auto& [name, tensor] : extra) {
    PARAMD_ASSIGN_OR_RETURN(tensor, runner.ToDevice(tensor));
  }
  PARAMD_ASSIGN_OR_RETURN(Tensor output,
                          runner.Call(root, "", x, extra.empty() ? nullptr : &extra));
  PARAMD_RETURN_IF_ERROR(runner.Finish());
  ForwardResult result;
  result.outputs.push_back({"output", std::move(output)});
  result.buffer_updates = runner.TakeUpdates();
  return result;
}

absl::StatusOr<ForwardResult> Forward(const Module& root, bool training,
                                      absl::Span<const NamedTensor> inputs) {
  return Forward(root, inputs, ForwardOptions{.training = training});
}

}  // namespace paramd::core
