#include "server/core/run_forward.h"

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/text.h"
#include "base/version_conflict.h"
#include "kernels/ops.h"
#include "server/core/tree_copy.h"

namespace paramd::core {
namespace {

struct Pinned {
  std::shared_ptr<const Module> root;
  uint64_t version = 0;
};

// The copy shares every storage: it costs a few objects per module, no tensor bytes, and
// lets the forward run with no lock held.
Pinned Pin(const Model& model) {
  return model.Read([](const std::shared_ptr<Module>& root, uint64_t version) {
    return Pinned{CopyTreeSharingTensors(*root), version};
  });
}

absl::Status CancelledStatus() { return absl::CancelledError("the client cancelled the forward"); }

}  // namespace

absl::StatusOr<ForwardAnswer> RunForward(Model& model, absl::Span<const NamedTensor> inputs,
                                         const RunForwardOptions& options) {
  const auto cancelled = [&] { return options.cancelled && options.cancelled(); };
  // The kernels take at most kMaxRank dimensions; said once, for the input, rather than by
  // whichever module first meets it (some would pass it through, some not).
  for (const NamedTensor& input : inputs) {
    if (input.tensor.dim() > kernels::kMaxRank) {
      return absl::UnimplementedError(
          absl::StrCat("input ", QuoteName(input.name), " has ", input.tensor.dim(),
                       " dimensions; paramd's kernels take at most ", kernels::kMaxRank,
                       " (PyTorch allows 64): reshape it"));
    }
  }
  for (int attempt = 0; attempt < kForwardAttempts; ++attempt) {
    if (cancelled()) return CancelledStatus();
    const Pinned pinned = Pin(model);
    if (options.if_version && *options.if_version != pinned.version) {
      return VersionConflictError(
          absl::StrCat("model '", model.name(), "' is at version ", pinned.version, ", not ",
                       *options.if_version, "; drop if_version or ask for the current one"),
          pinned.version);
    }
    ForwardAnswer answer;
    answer.version = pinned.version;
    switch (options.mode) {
      case ForwardMode::kTrain:
        answer.training = true;
        break;
      case ForwardMode::kEval:
        answer.training = false;
        break;
      case ForwardMode::kModel:
        answer.training = pinned.root->training();
        break;
    }
    if (answer.training && options.may_train) {
      PARAMD_RETURN_IF_ERROR(options.may_train(options.mode == ForwardMode::kModel));
    }
    PARAMD_ASSIGN_OR_RETURN(
        ForwardResult result,
        Forward(*pinned.root, inputs,
                ForwardOptions{.training = answer.training,
                               .seed = options.seed,
                               .cancelled = options.cancelled}));
    answer.outputs = std::move(result.outputs);
    if (result.buffer_updates.empty()) return answer;
    std::vector<Model::TensorWrite> writes;
    writes.reserve(result.buffer_updates.size());
    for (BufferUpdate& update : result.buffer_updates) {
      writes.push_back({std::move(update.name), std::nullopt, std::move(update.value)});
    }
    absl::StatusOr<uint64_t> committed = model.SetTensors(writes, pinned.version);
    if (committed.ok()) {
      answer.updated_version = *committed;
      return answer;
    }
    if (!absl::IsAborted(committed.status()) || options.if_version) return committed.status();
  }
  return VersionConflictError(
      absl::StrCat(
          "model '", model.name(), "' was written ", kForwardAttempts,
          " times while a training-mode forward ran, so its BatchNorm statistics could not be "
          "committed; retry, or run in eval mode (mode FORWARD_MODE_EVAL) to leave them alone"),
      model.version());
}

}  // namespace paramd::core
