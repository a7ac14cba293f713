// The program engine (program.h): custom containers' forward programs (DESIGN.md section
// 6), their steps and ops, checked by ValidateStep when a spec is built and again as each
// step runs.
#include "server/core/program.h"

#include <algorithm>
#include <optional>

#include "base/text.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "server/core/layers/layer.h"

namespace paramd::core {
namespace {

using json = nlohmann::json;
using kernels::UnaryOp;

// ---------------------------------------------------------------------------------------
// The ops and the checks of a step

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
          absl::StrCat("unknown field ", QuoteName(key), "; expected one of call, op, args, in, out"));
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
        "op ", QuoteName(op->name), " takes ",
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
          absl::StrCat("op ", QuoteName(op->name), " has no argument ", QuoteName(key), "",
                       names.empty() ? "; it takes none"
                                     : absl::StrCat("; it takes ", absl::StrJoin(names, ", "))));
    }
    if (!HasType(value, known->type)) {
      return absl::InvalidArgumentError(absl::StrCat("op ", QuoteName(op->name), " argument ", QuoteName(key),
                                                     " must be ", TypeWords(known->type), ", got ",
                                                     value.dump()));
    }
  }
  for (const ProgramArg& arg : op->args) {
    if (arg.required && !args->contains(std::string(arg.name))) {
      return absl::InvalidArgumentError(
          absl::StrCat("op ", QuoteName(op->name), " needs the argument ", QuoteName(arg.name)));
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
          "op ", QuoteName(op->name), " takes two inputs, or one input and the argument 'other'"));
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
// Running a program

// A Linear (or another layer that fuses a GEMM epilogue).
bool FusesEpilogue(const Module* module) {
  return module != nullptr && module->layer() != nullptr && module->layer()->fuses_epilogue;
}

class ProgramRunner {
 public:
  explicit ProgramRunner(Runner& runner) : runner_(runner) {}

  absl::StatusOr<Tensor> Run(const Module& m, const std::string& path, const Tensor& input,
                             const ValueMap* extra) {
    const json& program = m.forward_program();
    if (!program.is_array()) {
      return absl::InvalidArgumentError(absl::StrCat(
          ModuleLabel(path, m), ": Module [", m.type(),
          "] is missing the required \"forward\" function; give its spec a \"forward\" program"));
    }
    ValueMap values;
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
              where, ": 'NoneType' object is not callable (child ", QuoteName(name), " is None)"));
        }
        PARAMD_ASSIGN_OR_RETURN(result,
                                runner_.Call(*child, ChildPath(path, name), inputs.front()));
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

  absl::StatusOr<std::vector<Tensor>> StepInputs(const json& step, const ValueMap& values,
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
            absl::StrCat(where, ": reads the value ", QuoteName(name),
                         ", which no earlier step wrote ('out') and no input supplies"));
      }
      inputs.push_back(it->second);
    }
    return inputs;
  }

  // Runs `step` (a Linear call with no named output) and `next` (relu or gelu reading it)
  // as one fused GEMM; nullopt when the pair does not qualify.
  absl::StatusOr<std::optional<Tensor>> TryFusedStep(const Module& m, const std::string& path,
                                                     const json& step, const json& next,
                                                     const ValueMap& values,
                                                     const Tensor& current) {
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
    if (!epilogue.has_value() || !runner_.Fusable(*epilogue) || !ValidateStep(next, m).ok()) {
      return std::optional<Tensor>();
    }
    const std::shared_ptr<Module>* child = m.children().Find(name);
    if (child == nullptr || !FusesEpilogue(child->get())) return std::optional<Tensor>();
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
    PARAMD_ASSIGN_OR_RETURN(Tensor out, runner_.CallFused(**child, child_path, input, *epilogue));
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
    if (op == "relu") return runner_.ApplyUnary(x, UnaryOp::kReLU);
    if (op == "gelu") {
      const bool tanh = args.contains("approximate") && args["approximate"] == "tanh";
      return runner_.ApplyUnary(x, tanh ? UnaryOp::kGELUTanh : UnaryOp::kGELU);
    }
    if (op == "silu") return runner_.ApplyUnary(x, UnaryOp::kSiLU);
    if (op == "sigmoid") return runner_.ApplyUnary(x, UnaryOp::kSigmoid);
    if (op == "tanh") return runner_.ApplyUnary(x, UnaryOp::kTanh);
    if (op == "identity") return x;
    if (op == "contiguous") return runner_.Contiguous(x);
    if (op == "softmax" || op == "log_softmax") {
      std::optional<int64_t> dim;
      if (args.contains("dim") && args["dim"].is_number_integer()) dim = args["dim"].get<int64_t>();
      return runner_.ApplySoftmax(x, dim, op == "log_softmax");
    }
    if (op == "flatten")
      return runner_.ApplyFlatten(x, int_arg("start_dim", 0), int_arg("end_dim", -1));
    if (op == "view" || op == "reshape")
      return runner_.ApplyView(x, list_arg("shape"), op == "view");
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
      PARAMD_ASSIGN_OR_RETURN(Tensor c, runner_.Contiguous(x));
      Shape shape = c.shape();
      shape.insert(shape.begin() + dim, 1);
      return Reshaped(c, shape);
    }
    if (op == "squeeze") {
      PARAMD_ASSIGN_OR_RETURN(Tensor c, runner_.Contiguous(x));
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
        PARAMD_ASSIGN_OR_RETURN(other, runner_.Scalar(dtype, args["other"].get<double>()));
      }
      if (args.contains("alpha") && args["alpha"].get<double>() != 1.0) {
        PARAMD_ASSIGN_OR_RETURN(Tensor alpha,
                                runner_.Scalar(other.dtype(), args["alpha"].get<double>()));
        PARAMD_ASSIGN_OR_RETURN(other, runner_.ApplyBinary(other, alpha, kernels::BinaryOp::kMul));
      }
      return runner_.ApplyBinary(x, other, kind);
    }
    if (op == "cat") return runner_.ApplyCat(in, int_arg("dim", 0));
    if (op == "dropout") {
      const double p = args.contains("p") ? args["p"].get<double>() : 0.5;
      return runner_.ApplyDropout(x, p);
    }
    return absl::InvalidArgumentError(absl::StrCat("unknown op ", QuoteName(op)));
  }

 private:
  Runner& runner_;
};

}  // namespace

absl::StatusOr<Tensor> RunProgram(Runner& runner, const Module& module, const std::string& path,
                                  const Tensor& input, const ValueMap* extra) {
  return ProgramRunner(runner).Run(module, path, input, extra);
}

absl::Status ValidateForwardProgram(const nlohmann::json& program, const Module& module) {
  if (!program.is_array()) return absl::InvalidArgumentError("expected a list of steps");
  for (size_t i = 0; i < program.size(); ++i) {
    PARAMD_RETURN_IF_ERROR(At(absl::StrCat("step ", i), ValidateStep(program[i], module)));
  }
  return absl::OkStatus();
}

}  // namespace paramd::core
