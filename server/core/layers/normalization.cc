// nn.BatchNorm1d, nn.BatchNorm2d and nn.LayerNorm as torch 2.15 has them (BatchNorm's
// keyword-only `bias`, `bias=` in both reprs). A training-mode BatchNorm returns its running
// statistics through the runner (Note [Forward buffer updates] in forward.h).
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "server/core/layers/builtin.h"
#include "server/core/py_format.h"
#include "server/core/runner.h"

namespace paramd::core {
namespace {

// _NormBase.__init__'s arguments, shared by BatchNorm1d and BatchNorm2d (they differ only
// in the input rank forward accepts).
struct BatchNormArgs {
  int64_t num_features = 0;  // required
  double eps = 1e-5;
  std::optional<double> momentum = 0.1;  // None: a cumulative moving average
  bool affine = true;
  bool track_running_stats = true;
  bool bias = true;  // keyword-only; with affine=False there is no bias either way
  DType dtype = DType::kFloat32;
};

absl::StatusOr<BatchNormArgs> ParseBatchNorm(ArgReader& args) {
  BatchNormArgs parsed;
  PARAMD_ASSIGN_OR_RETURN(parsed.num_features, args.Int("num_features"));
  PARAMD_ASSIGN_OR_RETURN(parsed.eps, args.Float("eps", parsed.eps));
  PARAMD_ASSIGN_OR_RETURN(parsed.momentum, args.OptionalFloat("momentum", parsed.momentum));
  PARAMD_ASSIGN_OR_RETURN(parsed.affine, args.Bool("affine", parsed.affine));
  PARAMD_ASSIGN_OR_RETURN(parsed.track_running_stats,
                          args.Bool("track_running_stats", parsed.track_running_stats));
  PARAMD_ASSIGN_OR_RETURN(parsed.bias, args.Bool("bias", parsed.bias));
  PARAMD_ASSIGN_OR_RETURN(parsed.dtype, args.Dtype());
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  PARAMD_RETURN_IF_ERROR(CheckNoNegativeDimension({parsed.num_features}));
  return parsed;
}

absl::Status InitBatchNorm(const BatchNormArgs& args, Module& module, InitRng& rng) {
  const Shape shape = {args.num_features};
  const DType dtype = args.dtype;
  // reset_parameters: weight ones, bias zeros, running_mean zeros, running_var ones,
  // num_batches_tracked 0 (always int64, whatever `dtype` is).
  if (args.affine) {
    PARAMD_RETURN_IF_ERROR(AddParameter(module, "weight", Tensor::Full(dtype, shape, 1.0)));
    PARAMD_RETURN_IF_ERROR(args.bias ? AddParameter(module, "bias", Tensor::Full(dtype, shape, 0.0))
                                     : module.RegisterParameter("bias", nullptr));
  } else {
    PARAMD_RETURN_IF_ERROR(module.RegisterParameter("weight", nullptr));
    PARAMD_RETURN_IF_ERROR(module.RegisterParameter("bias", nullptr));
  }
  if (args.track_running_stats) {
    PARAMD_RETURN_IF_ERROR(AddBuffer(module, "running_mean", Tensor::Full(dtype, shape, 0.0)));
    PARAMD_RETURN_IF_ERROR(AddBuffer(module, "running_var", Tensor::Full(dtype, shape, 1.0)));
    return AddBuffer(module, "num_batches_tracked", Tensor::Full(DType::kInt64, {}, 0.0));
  }
  PARAMD_RETURN_IF_ERROR(module.RegisterBuffer("running_mean", nullptr));
  PARAMD_RETURN_IF_ERROR(module.RegisterBuffer("running_var", nullptr));
  return module.RegisterBuffer("num_batches_tracked", nullptr);
}

// `bias=` reports the slot, not the argument: PyTorch prints `self.bias is not None`.
absl::string_view HasBias(const Module& module) {
  const std::shared_ptr<Parameter>* bias = module.parameters().Find("bias");
  return PyBool(bias != nullptr && *bias != nullptr);
}

std::string BatchNormExtraRepr(const Module& module) {
  return absl::StrCat(PyRepr(ArgOf(module, "num_features")), ", eps=", PyRepr(ArgOf(module, "eps")),
                      ", momentum=", PyRepr(ArgOf(module, "momentum")),
                      ", affine=", PyRepr(ArgOf(module, "affine")), ", bias=", HasBias(module),
                      ", track_running_stats=", PyRepr(ArgOf(module, "track_running_stats")));
}

struct LayerNormArgs {
  std::vector<int64_t> normalized_shape;  // required
  double eps = 1e-5;
  bool elementwise_affine = true;
  bool bias = true;
  DType dtype = DType::kFloat32;
};

absl::StatusOr<LayerNormArgs> ParseLayerNorm(ArgReader& args) {
  LayerNormArgs parsed;
  // Any number of dimensions: Note [ArgReader sequences] in builtin.h.
  PARAMD_ASSIGN_OR_RETURN(parsed.normalized_shape, args.IntOrTuple("normalized_shape", 0));
  PARAMD_ASSIGN_OR_RETURN(parsed.eps, args.Float("eps", parsed.eps));
  PARAMD_ASSIGN_OR_RETURN(parsed.elementwise_affine,
                          args.Bool("elementwise_affine", parsed.elementwise_affine));
  PARAMD_ASSIGN_OR_RETURN(parsed.bias, args.Bool("bias", parsed.bias));
  PARAMD_ASSIGN_OR_RETURN(parsed.dtype, args.Dtype());
  PARAMD_RETURN_IF_ERROR(args.CheckAllConsumed());
  PARAMD_RETURN_IF_ERROR(CheckNoNegativeDimension(
      Shape(parsed.normalized_shape.begin(), parsed.normalized_shape.end())));
  // LayerNorm keeps `tuple(normalized_shape)`, so an int is stored as a one-element list.
  args.Put("normalized_shape", nlohmann::ordered_json(parsed.normalized_shape));
  return parsed;
}

absl::Status InitLayerNorm(const LayerNormArgs& args, Module& module, InitRng& rng) {
  const Shape shape(args.normalized_shape.begin(), args.normalized_shape.end());
  if (!args.elementwise_affine) {
    PARAMD_RETURN_IF_ERROR(module.RegisterParameter("weight", nullptr));
    return module.RegisterParameter("bias", nullptr);
  }
  PARAMD_RETURN_IF_ERROR(AddParameter(module, "weight", Tensor::Full(args.dtype, shape, 1.0)));
  if (!args.bias) return module.RegisterParameter("bias", nullptr);
  return AddParameter(module, "bias", Tensor::Full(args.dtype, shape, 0.0));
}

std::string LayerNormExtraRepr(const Module& module) {
  return absl::StrCat(PyRepr(ArgOf(module, "normalized_shape")),
                      ", eps=", PyRepr(ArgOf(module, "eps")),
                      ", elementwise_affine=", PyRepr(ArgOf(module, "elementwise_affine")),
                      ", bias=", HasBias(module));
}

// _BatchNorm.forward, after the subclass's _check_input_dim.
absl::StatusOr<Tensor> BatchNormForward(const BatchNormArgs& args, const LayerCall& call,
                                        const Tensor& input) {
  Runner& run = call.runner;
  const Module& m = call.module;
  const std::string& path = call.path;
  const Buffer *mean_slot = nullptr, *var_slot = nullptr, *count_slot = nullptr;
  const Tensor running_mean = run.BufferValue(m, "running_mean", &mean_slot);
  const Tensor running_var = run.BufferValue(m, "running_var", &var_slot);
  const Tensor num_batches = run.BufferValue(m, "num_batches_tracked", &count_slot);
  const Tensor weight = ParameterOf(m, "weight");
  const Tensor bias = ParameterOf(m, "bias");
  const bool training = run.training();
  const bool track = args.track_running_stats;
  const std::optional<double> momentum = args.momentum;
  const int64_t channels = input.shape()[1];

  // _BatchNorm.forward: count the batch, choose the averaging factor.
  double factor = momentum.value_or(0.0);
  std::optional<Tensor> new_count;
  // The kernel counts the batch on the data's device (no host round trip on a GPU) where it
  // runs and the count is a plain int64; otherwise the count is read here, as PyTorch does.
  const bool count_in_kernel = training && track && num_batches.defined() &&
                               num_batches.dtype() == DType::kInt64 &&
                               num_batches.numel() == 1 && input.numel() > 0;
  if (count_in_kernel) {
    PARAMD_ASSIGN_OR_RETURN(Tensor next, run.Empty(DType::kInt64, num_batches.shape()));
    new_count = next;
  } else if (training && track && num_batches.defined()) {
    PARAMD_ASSIGN_OR_RETURN(const int64_t count, run.ReadInt64(num_batches));
    PARAMD_ASSIGN_OR_RETURN(Tensor next, run.Scalar(DType::kInt64, static_cast<double>(count + 1)));
    if (num_batches.dtype() != DType::kInt64) {
      PARAMD_ASSIGN_OR_RETURN(next, run.ConvertDType(next, num_batches.dtype()));
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
  PARAMD_ASSIGN_OR_RETURN(Tensor x, run.Contiguous(input));
  PARAMD_ASSIGN_OR_RETURN(Tensor out, run.Empty(x.dtype(), x.shape()));
  kernels::BatchNormArgs norm{.input = ConstView(x),
                              .output = MutableView(out),
                              .weight = weight.defined() ? weight.data() : nullptr,
                              .bias = bias.defined() ? bias.data() : nullptr,
                              .running_mean = mean_in.defined() ? mean_in.data() : nullptr,
                              .running_var = var_in.defined() ? var_in.data() : nullptr,
                              .use_batch_stats = use_batch_stats,
                              .momentum = factor,
                              .eps = args.eps};
  if (count_in_kernel) {
    norm.num_batches_tracked = static_cast<const int64_t*>(num_batches.data());
    norm.new_num_batches_tracked = static_cast<int64_t*>(new_count->mutable_data());
    norm.cumulative_average = !momentum.has_value();
  }
  Tensor new_mean, new_var;
  // An empty batch has no statistics: PyTorch leaves the running ones as they are (and
  // still counts the batch in num_batches_tracked).
  const bool update =
      training && use_batch_stats && mean_in.defined() && var_in.defined() && out.numel() > 0;
  if (update) {
    PARAMD_ASSIGN_OR_RETURN(new_mean, run.Empty(running_mean.dtype(), running_mean.shape()));
    PARAMD_ASSIGN_OR_RETURN(new_var, run.Empty(running_var.dtype(), running_var.shape()));
    norm.new_running_mean = new_mean.mutable_data();
    norm.new_running_var = new_var.mutable_data();
  }
  if (out.numel() > 0) PARAMD_RETURN_IF_ERROR(run.backend().BatchNorm(norm));
  if (update) {
    run.RecordUpdate(mean_slot, ChildPath(path, "running_mean"), new_mean);
    run.RecordUpdate(var_slot, ChildPath(path, "running_var"), new_var);
  }
  if (new_count.has_value()) {
    run.RecordUpdate(count_slot, ChildPath(path, "num_batches_tracked"), *new_count);
  }
  return out;
}

absl::StatusOr<Tensor> BatchNorm1dForward(const BatchNormArgs& args, const LayerCall& call,
                                          const Tensor& input) {
  if (input.dim() != 2 && input.dim() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected 2D or 3D input (got ", input.dim(), "D input)"));
  }
  return BatchNormForward(args, call, input);
}

absl::StatusOr<Tensor> BatchNorm2dForward(const BatchNormArgs& args, const LayerCall& call,
                                          const Tensor& input) {
  if (input.dim() != 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected 4D input (got ", input.dim(), "D input)"));
  }
  return BatchNormForward(args, call, input);
}

absl::StatusOr<Tensor> LayerNormForward(const LayerNormArgs& args, const LayerCall& call,
                                        const Tensor& input) {
  Runner& run = call.runner;
  const Module& m = call.module;
  const std::vector<int64_t>& normalized = args.normalized_shape;
  const int64_t k = static_cast<int64_t>(normalized.size());
  if (k == 0) {  // torch builds LayerNorm([]) but refuses every forward of it
    return absl::InvalidArgumentError(
        "Expected normalized_shape to be at least 1-dimensional, i.e., containing at least one "
        "element, but got normalized_shape = []");
  }
  bool ok = input.dim() >= k;
  for (int64_t i = 0; ok && i < k; ++i) ok = input.shape()[input.dim() - k + i] == normalized[i];
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "Given normalized_shape=", ShapeString(normalized), ", expected input with shape [*",
        k > 0 ? ", " : "", absl::StrJoin(normalized, ", "), "], but got input of size",
        ShapeString(input.shape())));
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
  PARAMD_ASSIGN_OR_RETURN(Tensor x, run.Contiguous(input));
  PARAMD_ASSIGN_OR_RETURN(Tensor out, run.Empty(x.dtype(), x.shape()));
  if (out.numel() == 0) return out;
  PARAMD_RETURN_IF_ERROR(
      run.backend().LayerNorm({.input = ConstView(x),
                               .output = MutableView(out),
                               .normalized_size = size,
                               .weight = weight.defined() ? weight.data() : nullptr,
                               .bias = bias.defined() ? bias.data() : nullptr,
                               .eps = args.eps}));
  return out;
}

constexpr int kBatchNormVersion = 2;

}  // namespace

const LayerDef& BatchNorm1dLayer() {
  static const LayerDef* const def = MakeLayer<BatchNormArgs>({
      .type = "BatchNorm1d",
      .module_version = kBatchNormVersion,
      .fills_num_batches_tracked = true,
      .parse = &ParseBatchNorm,
      .init = &InitBatchNorm,
      .extra_repr = &BatchNormExtraRepr,
      .forward = &BatchNorm1dForward,
      .attributes = {"num_features", "eps", "momentum", "affine", "track_running_stats"},
  });
  return *def;
}

const LayerDef& BatchNorm2dLayer() {
  static const LayerDef* const def = MakeLayer<BatchNormArgs>({
      .type = "BatchNorm2d",
      .module_version = kBatchNormVersion,
      .fills_num_batches_tracked = true,
      .parse = &ParseBatchNorm,
      .init = &InitBatchNorm,
      .extra_repr = &BatchNormExtraRepr,
      .forward = &BatchNorm2dForward,
      .attributes = {"num_features", "eps", "momentum", "affine", "track_running_stats"},
  });
  return *def;
}

const LayerDef& LayerNormLayer() {
  static const LayerDef* const def = MakeLayer<LayerNormArgs>({
      .type = "LayerNorm",
      .parse = &ParseLayerNorm,
      .init = &InitLayerNorm,
      .extra_repr = &LayerNormExtraRepr,
      .forward = &LayerNormForward,
      .attributes = {"normalized_shape", "eps", "elementwise_affine"},
  });
  return *def;
}

}  // namespace paramd::core
