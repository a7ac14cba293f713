// paramctl's command table (every command's name, usage, help and flags, in the order
// `paramctl --help` lists them), and the help it prints.
#include <algorithm>
#include <cstring>
#include <iostream>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "client/cli/command.h"

namespace paramd::cli {

namespace {

const FlagSpec kIfVersion = {"if-version", "N",
                             "write only if the model is still at version N (else ABORTED)"};
const FlagSpec kPrefix = {"prefix", "P", "prepend P to every name, as PyTorch's prefix= does"};

}  // namespace

const std::vector<Command>& Commands() {
  static const std::vector<Command> kCommands = {
      {.name = "health",
       .usage = "health",
       .summary = "check that the daemon is serving",
       .details = "Calls grpc.health.v1.Health/Check for the whole server. Prints SERVING and\n"
                  "exits 0 when it serves; otherwise prints the reported status and exits 1.",
       .run = RunHealth},
      {.name = "models",
       .usage = "models",
       .summary = "list the loaded models",
       .details = "One row per model: name, root type, device, train/eval mode, version, number\n"
                  "of state_dict entries, parameter elements and bytes held.",
       .run = RunModels},
      {.name = "create",
       .usage = "create NAME --spec FILE [--device D] [--seed N]",
       .summary = "build a model from a JSON spec",
       .details = "Builds the module tree described by the JSON spec in FILE ('-' reads stdin;\n"
                  "see docs/specs.md) on device D, initialising parameters as PyTorch would\n"
                  "with seed N. The spec is UTF-8 text of at most 4128768 bytes (it travels\n"
                  "in one request, within the daemon's 4 MiB message limit).",
       .min_args = 1,
       .max_args = 1,
       .flags = {{"spec", "FILE", "the JSON model spec ('-' for stdin)"},
                 {"device", "D", "cpu (default), cuda or cuda:N"},
                 {"seed", "N", "the initialisation seed (default 0)"}},
       .run = RunCreate},
      {.name = "delete",
       .usage = "delete NAME [--if-version N]",
       .summary = "delete a model",
       .details = "Deletes the model NAME.",
       .min_args = 1,
       .max_args = 1,
       .flags = {kIfVersion},
       .run = RunDelete},
      {.name = "describe",
       .usage = "describe NAME",
       .summary = "print a model's repr and summary",
       .details = "Prints repr(model) exactly as PyTorch prints it, then the root type, device,\n"
                  "mode, version, number of state_dict entries, parameters (and their\n"
                  "elements) and bytes held.",
       .min_args = 1,
       .max_args = 1,
       .run = RunDescribe},
      {.name = "state-dict",
       .usage = "state-dict NAME [--prefix P] [--out FILE.npz]",
       .summary = "list (or download) model.state_dict()",
       .details = "Lists every state_dict entry in PyTorch's order: name, shape, dtype, device,\n"
                  "bytes, and the other names of the same tensor object (tied parameters,\n"
                  "shared modules), then the model version read. With --json, a JSON array\n"
                  "of objects with name, shape, dtype, device, nbytes, tied_with, ...\n"
                  "With --out, downloads the whole state_dict instead and writes it as an .npz\n"
                  "file (one array per key) that load-state-dict and numpy.load read, each\n"
                  "chunk to the file as it arrives (through FILE.npz.part, renamed at the end),\n"
                  "so memory stays at a few chunks however large the model; ZIP64 past 4 GiB.\n"
                  "A symlink FILE is followed (the link stays); a device, a FIFO or /dev/stdout\n"
                  "is written straight into, in order, with no .part (not atomic).",
       .min_args = 1,
       .max_args = 1,
       .flags = {kPrefix, {"out", "FILE.npz", "download every tensor into FILE.npz"}},
       .run = RunStateDict},
      {.name = "params",
       .usage = "params NAME [--all] [--no-recurse] [--prefix P]",
       .summary = "list model.named_parameters()",
       .details = "Lists named_parameters(): name, shape, dtype, device, requires_grad, bytes.\n"
                  "Like PyTorch, a parameter reachable under several names is listed once\n"
                  "(under its first name) unless --all is given.",
       .min_args = 1,
       .max_args = 1,
       .flags = {{"all", nullptr, "remove_duplicate=False: list every name of shared parameters"},
                 {"no-recurse", nullptr, "recurse=False: only the root module's own parameters"},
                 kPrefix},
       .run = RunParams},
      {.name = "buffers",
       .usage = "buffers NAME [--all] [--no-recurse] [--prefix P]",
       .summary = "list model.named_buffers()",
       .details = "Lists named_buffers() (persistent or not): name, shape, dtype, device, bytes.",
       .min_args = 1,
       .max_args = 1,
       .flags = {{"all", nullptr, "remove_duplicate=False: list every name of shared buffers"},
                 {"no-recurse", nullptr, "recurse=False: only the root module's own buffers"},
                 kPrefix},
       .run = RunBuffers},
      {.name = "modules",
       .usage = "modules NAME [--all] [--prefix P]",
       .summary = "list model.named_modules()",
       .details = "Lists named_modules(): path ('(root)' for the model itself), type, own\n"
                  "parameter and buffer names, and other paths of the same module object.",
       .min_args = 1,
       .max_args = 1,
       .flags = {{"all", nullptr, "remove_duplicate=False: list every path of shared modules"},
                 kPrefix},
       .run = RunModules},
      {.name = "get",
       .usage = "get NAME KEY[REGION] [--out FILE.npy] [--dtype D]",
       .summary = "print (or save) one parameter or buffer",
       .details =
           "Prints the tensor KEY as PyTorch prints it (a parameter as 'Parameter\n"
           "containing:' then tensor([...], requires_grad=True)), or writes it to FILE.npy\n"
           "with --out. REGION selects part of it with one subscript per leading dimension,\n"
           "as in Python: an index i, or a slice a:b with either end optional and negative\n"
           "values counting from the end, e.g. 'fc.weight[0]', 'fc.weight[:, 1:3]'. A\n"
           "region prints as a plain tensor and keeps its dimensions (an index selects a\n"
           "length-1 range). --dtype D (e.g. bfloat16) casts floating-point data on the\n"
           "wire. With --json, prints the metadata and the values as nested lists.\n"
           "--out streams the tensor into FILE.npy.part chunk by chunk as it arrives\n"
           "(np.save's file; bfloat16 is written as float32), renamed when complete:\n"
           "paramctl never holds the whole tensor. A symlink FILE is followed (the link\n"
           "stays); a device, a FIFO or /dev/stdout is written straight into, with no\n"
           ".part (not atomic), and the summary goes to stderr when FILE is stdout.",
       .min_args = 2,
       .max_args = 2,
       .flags = {{"out", "FILE.npy", "write the tensor to a .npy file instead of printing it"},
                 {"dtype", "D", "receive floating-point data as dtype D"}},
       .run = RunGet},
      {.name = "set",
       .usage = "set NAME KEY[REGION] (--in FILE.npy | --value JSON) [--if-version N]",
       .summary = "write one parameter or buffer (or a region of it)",
       .details =
           "Writes the tensor KEY, or the REGION of it (syntax as for get), from a .npy file\n"
           "or from JSON: a number, a boolean, or nested lists, converted to KEY's dtype.\n"
           "The data has the region's shape, or is a single value that fills it:\n"
           "  paramctl set net '2.weight[0,0]' --value 100\n"
           "  paramctl set net 0.bias --value '[0.5, -0.5]'\n"
           "  paramctl set net 0.weight --in weight.npy --if-version 7\n"
           "A .npy file is checked first (header and size), then sent chunk by chunk from\n"
           "it (a Fortran-ordered one is read whole, to be reordered); a file cut on the\n"
           "way cancels the write, which changes nothing. A pipe (--in /dev/stdin) is read\n"
           "whole and checked before anything is sent. Prints the new model version.",
       .min_args = 2,
       .max_args = 2,
       .flags = {{"in", "FILE.npy", "the values, from a .npy file"},
                 {"value", "JSON", "the values, as JSON"},
                 kIfVersion},
       .run = RunSet},
      {.name = "register-param",
       .usage = "register-param NAME MODULE PNAME (--in FILE.npy | --none) [--no-grad]",
       .summary = "register a parameter on a module",
       .details = "module.register_parameter(PNAME, nn.Parameter(tensor)) on the module at\n"
                  "path MODULE ('' or '.' for the root), with PyTorch's name rules; --none\n"
                  "registers None. Prints the new model version.",
       .min_args = 3,
       .max_args = 3,
       .flags = {{"in", "FILE.npy", "the parameter's value"},
                 {"none", nullptr, "register None"},
                 {"no-grad", nullptr, "requires_grad=False"},
                 kIfVersion},
       .run = RunRegisterParam},
      {.name = "register-buffer",
       .usage = "register-buffer NAME MODULE BNAME (--in FILE.npy | --none) [--non-persistent]",
       .summary = "register a buffer on a module",
       .details = "module.register_buffer(BNAME, tensor, persistent) on the module at path\n"
                  "MODULE ('' or '.' for the root); --non-persistent keeps it out of\n"
                  "state_dict, --none registers None. Prints the new model version.",
       .min_args = 3,
       .max_args = 3,
       .flags = {{"in", "FILE.npy", "the buffer's value"},
                 {"none", nullptr, "register None"},
                 {"non-persistent", nullptr, "persistent=False"},
                 kIfVersion},
       .run = RunRegisterBuffer},
      {.name = "tie",
       .usage = "tie NAME KEY --to OTHER_KEY [--if-version N]",
       .summary = "make KEY the same Parameter object as OTHER_KEY",
       .details = "The equivalent of `module.name = other_parameter` in PyTorch: afterwards\n"
                  "both names hold one Parameter, so a write through either shows through\n"
                  "both. Prints the new model version.",
       .min_args = 2,
       .max_args = 2,
       .flags = {{"to", "OTHER_KEY", "the parameter to share"}, kIfVersion},
       .run = RunTie},
      {.name = "load-state-dict",
       .usage = "load-state-dict NAME FILE.npz [--no-strict] [--assign]",
       .summary = "model.load_state_dict() from an .npz file",
       .details = "Loads the arrays of FILE.npz (key = state_dict name) with PyTorch's rules,\n"
                  "atomically: a load that fails changes nothing. The file is checked whole\n"
                  "(structure, headers, sizes) first, then sent chunk by chunk from it: stored\n"
                  "(np.savez) or deflated (np.savez_compressed) members, each one's CRC-32\n"
                  "checked before its last chunk leaves; a corrupt member cancels the load.\n"
                  "FILE.npz must be a regular file, not a pipe or a directory (a .safetensors\n"
                  "or .pt checkpoint is loaded by the daemon: `upload` it, then `load`).\n"
                  "Prints PyTorch's result\n"
                  "(<All keys matched successfully> or _IncompatibleKeys(...)) and the new\n"
                  "model version.",
       .min_args = 2,
       .max_args = 2,
       .flags = {{"no-strict", nullptr,
                  "strict=False: report missing and unexpected keys, load the rest"},
                 {"assign", nullptr,
                  "assign=True: take the file's tensors instead of copying into them"},
                 kIfVersion},
       .run = RunLoadStateDict,
       .local_file_args = {1}},
      {.name = "train",
       .usage = "train NAME",
       .summary = "model.train()",
       .details = "Puts the model in training mode. Prints the model version.",
       .min_args = 1,
       .max_args = 1,
       .flags = {kIfVersion},
       .run = RunTrain},
      {.name = "eval",
       .usage = "eval NAME",
       .summary = "model.eval()",
       .details = "Puts the model in evaluation mode. Prints the model version.",
       .min_args = 1,
       .max_args = 1,
       .flags = {kIfVersion},
       .run = RunEval},
      {.name = "to",
       .usage = "to NAME DEVICE",
       .summary = "model.to(DEVICE)",
       .details = "Moves every parameter and buffer to DEVICE (cpu, cuda, cuda:N). Prints the\n"
                  "new model version.",
       .min_args = 2,
       .max_args = 2,
       .flags = {kIfVersion},
       .run = RunTo},
      {.name = "forward",
       .usage = "forward NAME --in FILE.npy|FILE.npz [--out FILE.npy] [--train|--eval] "
                "[--seed N] [--if-version N] [--dtype D]",
       .summary = "run the model on inputs: model(input)",
       .details =
           "Runs the model on the server on the array in FILE.npy (the positional input),\n"
           "or on the arrays of FILE.npz: the one named 'input' is the positional input, the\n"
           "others are named values a custom container's forward program reads. Prints the\n"
           "output as PyTorch prints a tensor (or writes it to --out FILE.npy) and the model\n"
           "version that answered. The model's train/eval mode applies unless --train or\n"
           "--eval says otherwise for this call; a training-mode forward through BatchNorm\n"
           "commits the updated running statistics as the next version, and says so.\n"
           "--seed N seeds dropout; --if-version N runs on version N or fails (ABORTED);\n"
           "--dtype D receives a floating-point output as dtype D.",
       .min_args = 1,
       .max_args = 1,
       .flags = {{"in", "FILE", "the input: FILE.npy, or FILE.npz with named inputs"},
                 {"out", "FILE.npy", "write the output to a .npy file instead of printing it"},
                 {"train", nullptr, "run in training mode for this call"},
                 {"eval", nullptr, "run in evaluation mode for this call"},
                 {"seed", "N", "seed of the dropout masks (default 0)"},
                 {"if-version", "N", "run on version N only (else ABORTED)"},
                 {"dtype", "D", "receive a floating-point output as dtype D"}},
       .run = RunForward},
      {.name = "save",
       .usage = "save NAME PATH [--format F] [--keep-vars] [--optimizer O] [--sha256]",
       .summary = "save a model to a checkpoint file on the server",
       .details =
           "torch.save(model.state_dict(), PATH) or safetensors' save_model, into the\n"
           "daemon's checkpoint directory (PATH is relative to it). A PATH ending in\n"
           ".safetensors gets safetensors, any other torch's format (as torch.save writes it\n"
           "whatever the name: mlp.params, pytorch_model.bin), unless --format says. The file\n"
           "is written to a temporary name and renamed: a failed save leaves an older file\n"
           "as it was. Tied\n"
           "parameters and shared modules are stored once. The file also records the\n"
           "model's spec, so `load` can recreate the model from it alone. With --optimizer,\n"
           "a training checkpoint: torch.save({'model': model.state_dict(), 'optimizer':\n"
           "optimizer.state_dict()}, PATH), the optimizer O's state as it goes with the saved\n"
           "weights (PyTorch format only). --sha256 has the daemon hash the file as it\n"
           "writes it and prints the digest (a large save then runs about a third slower;\n"
           "`download` checks the digest of what it receives either way).",
       .min_args = 2,
       .max_args = 2,
       .flags = {{"format", "F",
                  "safetensors or torch (default: torch unless PATH ends in .safetensors)"},
                 {"keep-vars", nullptr, "save parameters as nn.Parameter (PyTorch format)"},
                 {"optimizer", "O", "also save optimizer O of the model (a training checkpoint)"},
                 {"sha256", nullptr, "print the file's SHA-256, hashed as it is written"}},
       .run = RunSave},
      {.name = "load",
       .usage = "load NAME PATH [--no-strict] [--assign] [--map-location L] [--spec FILE] "
                "[--device D] [--optimizer O]",
       .summary = "load a checkpoint file on the server into a model",
       .details =
           "model.load_state_dict(torch.load(PATH, map_location=L)) for a model that exists,\n"
           "atomically (a load that fails changes nothing). When NAME does not exist it is\n"
           "created first, from the spec the file records (files paramd saved) or the one\n"
           "in --spec FILE. Reads safetensors and PyTorch zip files; the pickle in a PyTorch\n"
           "file is read without running any code. L is a device (cpu, cuda:0) or FROM=TO\n"
           "pairs (cuda:0=cpu,cuda:1=cpu), as torch.load's map_location. With --optimizer,\n"
           "PATH is a training checkpoint ({'model': ..., 'optimizer': ...}): 'model' loads\n"
           "into the existing NAME and 'optimizer' into its existing optimizer O (the file\n"
           "does not name the optimizer's class), both checked before either changes.",
       .min_args = 2,
       .max_args = 2,
       .flags = {{"no-strict", nullptr,
                  "strict=False: report missing and unexpected keys, load the rest"},
                 {"assign", nullptr,
                  "assign=True: take the file's tensors instead of copying into them"},
                 {"map-location", "L", "where saved locations go, as torch.load's map_location"},
                 {"spec", "FILE", "create NAME from this JSON spec ('-' for stdin)"},
                 {"device", "D", "the device of a model created by the load (default cpu)"},
                 {"optimizer", "O", "also load the file's optimizer state into optimizer O"},
                 kIfVersion},
       .run = RunLoad},
      {.name = "checkpoints",
       .usage = "checkpoints",
       .summary = "list the files in the server's checkpoint directory",
       .details = "One row per file: path, format (from the file's contents, whatever its\n"
                  "name: torch or safetensors; empty for neither), bytes, modification time.",
       .run = RunCheckpoints},
      {.name = "upload",
       .usage = "upload LOCAL REMOTE",
       .summary = "send a local file to the server's checkpoint directory",
       .details = "Streams LOCAL to REMOTE (relative to the checkpoint directory). An upload that\n"
                  "broke off is resumed where it stopped when run again. The file appears on the\n"
                  "server only once all of it arrived and its SHA-256 matches.",
       .min_args = 2,
       .max_args = 2,
       .run = RunUpload,
       .local_file_args = {0}},
      {.name = "download",
       .usage = "download REMOTE LOCAL",
       .summary = "fetch a file from the server's checkpoint directory",
       .details =
           "Streams REMOTE into LOCAL through LOCAL.part; a download that broke off resumes\n"
           "from the part when run again. LOCAL appears only once the SHA-256 matches.\n"
           "A symlink LOCAL is followed (the link stays). A device, a FIFO or /dev/stdout\n"
           "is written straight into from the start, no .part and no resume, and the\n"
           "SHA-256 of the bytes written is checked at the end.",
       .min_args = 2,
       .max_args = 2,
       .run = RunDownload,
       .local_file_args = {1}},
      {.name = "snapshot",
       .usage = "snapshot [NAME...]",
       .summary = "snapshot models into the server's data directory now",
       .details = "Writes the latest state of the named models (all when none is named) to\n"
                  "the daemon's data directory, from which it restores them when it starts.",
       .max_args = 64,
       .run = RunSnapshot},
      {.name = "optimizers",
       .usage = "optimizers [--model M]",
       .summary = "list the optimizers (of model M)",
       .details = "One row per optimizer: name, model, kind (SGD, Adam, AdamW), mode (manual or\n"
                  "asynchronous(S)), param groups, parameters, parameters with a gradient,\n"
                  "steps taken (the round) and bytes of state held. See docs/training.md.",
       .flags = {{"model", "M", "only the optimizers of model M"}},
       .run = RunOptimizers},
      {.name = "optimizer-state",
       .usage = "optimizer-state NAME",
       .summary = "show an optimizer's state_dict: param groups and state",
       .details = "Prints what optimizer.state_dict() holds, as PyTorch users read it: each\n"
                  "param group's dict (every hyperparameter, 'params' and 'param_names'), then\n"
                  "the state per parameter index: 0-dim tensors (Adam's step) by value, others\n"
                  "by dtype and shape. An empty state (SGD without momentum, no step yet) is {}.\n"
                  "With --json, the same with 0-dim values.",
       .min_args = 1,
       .max_args = 1,
       .run = RunOptimizerState},
      {.name = "hash-token",
       .usage = "hash-token [TOKEN]",
       .summary = "print the sha256:HEX line a token file lists for TOKEN",
       .details = "Reads TOKEN from the argument, or the first line of stdin when there is none\n"
                  "(keeps it out of the shell's history), and prints sha256:HEX for the daemon's\n"
                  "--auth-tokens file, where each line is NAME ROLE sha256:HEX.",
       .max_args = 1,
       .run = RunHashToken,
       .needs_server = false},
      {.name = "help",
       .usage = "help [COMMAND]",
       .summary = "show help for paramctl or one command",
       .details = "Without COMMAND lists every command; with it, shows that command's usage\n"
                  "and flags.",
       .max_args = 1,
       .run = RunHelp,
       .needs_server = false},
  };
  return kCommands;
}

const Command* FindCommand(absl::string_view name) {
  for (const Command& command : Commands()) {
    if (name == command.name) return &command;
  }
  return nullptr;
}

namespace {

void PrintFlags(std::ostream& out, const std::vector<FlagSpec>& flags) {
  std::vector<std::pair<std::string, std::string>> rows;
  size_t width = 0;
  for (const FlagSpec& flag : flags) {
    std::string left = absl::StrCat("  --", flag.name);
    if (flag.value_name != nullptr) absl::StrAppend(&left, " ", flag.value_name);
    width = std::max(width, left.size());
    rows.emplace_back(std::move(left), flag.help);
  }
  for (const auto& [left, help] : rows) {
    out << left << std::string(width - left.size() + 2, ' ') << help << "\n";
  }
}

}  // namespace

void PrintMainHelp(std::ostream& out) {
  out << "paramctl: the command line for a paramd model-parameter server\n\n"
         "usage: paramctl [--server ADDR] [--json] [--timeout SECONDS] COMMAND [ARGS...]\n\n"
         "commands:\n";
  size_t width = 0;
  for (const Command& command : Commands()) width = std::max(width, strlen(command.name));
  for (const Command& command : Commands()) {
    out << "  " << command.name << std::string(width - strlen(command.name) + 2, ' ')
        << command.summary << "\n";
  }
  out << "\nglobal flags (before or after the command):\n";
  PrintFlags(out, GlobalFlags());
  out << "\nWrites take --if-version N and print the new model version. Exit status: 0 on\n"
         "success, 1 when the server (or a file) refused, 2 for a usage error.\n"
         "Run 'paramctl help COMMAND' for a command's details.\n";
}

void PrintCommandHelp(std::ostream& out, const Command& command) {
  out << "usage: paramctl " << command.usage << "\n\n"
      << command.summary << "\n\n"
      << command.details << "\n";
  if (!command.flags.empty()) {
    out << "\nflags:\n";
    PrintFlags(out, command.flags);
  }
  out << "\nglobal flags:\n";
  PrintFlags(out, GlobalFlags());
}

absl::Status RunHelp(Context&, const Args& args) {
  if (args.positional.empty()) {
    PrintMainHelp(std::cout);
    return absl::OkStatus();
  }
  const Command* command = FindCommand(args.positional[0]);
  if (command == nullptr) {
    return UsageError(absl::StrCat("unknown command '", args.positional[0], "'"));
  }
  PrintCommandHelp(std::cout, *command);
  return absl::OkStatus();
}

}  // namespace paramd::cli
