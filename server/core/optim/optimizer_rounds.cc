// Synchronous mode's rounds (Note [Synchronous rounds] in optimizer.h).
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "base/status_macros.h"
#include "base/text.h"
#include "base/version_conflict.h"
#include "kernels/backend.h"
#include "server/core/optim/flat_view.h"
#include "server/core/optim/optimizer.h"

namespace paramd::core {

absl::StatusOr<Optimizer::Joined> Optimizer::JoinRound(const std::vector<Gradient>& gradients,
                                                       const std::string& worker, uint64_t round,
                                                       RoundDone done) {
  std::vector<RoundPush> ended;
  absl::StatusOr<AsyncResult> outcome;
  Joined joined;
  {
    absl::MutexLock lock(&mu_);
    if (mode_.kind != Mode::kSynchronous) {
      return absl::FailedPreconditionError(absl::StrCat(
          "optimizer ", QuoteName(name_), " is not synchronous; its pushes do not wait"));
    }
    PARAMD_RETURN_IF_ERROR(closed_);
    if (worker.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a push to synchronous optimizer ", QuoteName(name_),
          " names its worker (GradientOptions.worker): a round waits for ", mode_.bound,
          " distinct workers"));
    }
    if (round != steps_) {
      return VersionConflictError(
          absl::StrCat("optimizer ", QuoteName(name_), " is at round ", steps_, "; round ",
                       round, round > steps_ ? " has not begun" : " has ended",
                       ": pull the weights again and recompute"),
          steps_);
    }
    for (const RoundPush& push : round_) {
      if (push.worker == worker) {
        return absl::AlreadyExistsError(absl::StrCat(
            "worker ", QuoteName(worker), " already pushed for round ", steps_,
            " of optimizer ", QuoteName(name_),
            "; a round takes one push per worker: wait for its answer, pull, and push for the "
            "next round"));
      }
    }
    PARAMD_ASSIGN_OR_RETURN(auto sums, GatherLocked(gradients, /*fresh=*/true));
    if (round_.empty()) {
      round_deadline_ = mode_.round_timeout > absl::ZeroDuration()
                            ? absl::Now() + mode_.round_timeout
                            : absl::InfiniteFuture();
    }
    joined = {++last_push_id_, round_deadline_};
    round_.push_back({joined.id, worker, std::move(sums), std::move(done)});
    if (round_.size() < mode_.bound) return joined;
    outcome = StepRoundLocked();
    ended.swap(round_);
  }
  for (RoundPush& push : ended) push.done(outcome);
  return joined;
}

absl::StatusOr<Optimizer::AsyncResult> Optimizer::StepRoundLocked() {
  std::vector<const RoundPush*> order;
  for (const RoundPush& push : round_) order.push_back(&push);
  std::sort(order.begin(), order.end(),
            [](const RoundPush* a, const RoundPush* b) { return a->worker < b->worker; });
  // The sums go into the first push's tensors of each parameter: the round is consumed
  // whatever happens, so nobody reads them again.
  absl::flat_hash_map<size_t, Tensor> sums;
  for (const RoundPush* push : order) {
    for (const auto& [index, gradient] : push->gradients) {
      auto [it, first] = sums.emplace(index, gradient);
      if (first) continue;
      PARAMD_ASSIGN_OR_RETURN(kernels::Backend * backend, kernels::GetBackend(gradient.device()));
      const kernels::TensorView sum = FlatView(it->second);
      PARAMD_RETURN_IF_ERROR(backend->Binary(
          {.op = kernels::BinaryOp::kAdd, .a = sum, .b = FlatView(gradient), .output = sum}));
    }
  }
  for (auto& [index, sum] : sums) {
    PARAMD_ASSIGN_OR_RETURN(kernels::Backend * backend, kernels::GetBackend(sum.device()));
    PARAMD_ASSIGN_OR_RETURN(Tensor workers,
                            Tensor::Full(sum.dtype(), {1}, static_cast<double>(mode_.bound),
                                         sum.device()));
    kernels::TensorView divisor = FlatView(workers);
    divisor.shape[0] = sum.numel();
    divisor.strides[0] = 0;  // K, broadcast
    const kernels::TensorView out = FlatView(sum);
    PARAMD_RETURN_IF_ERROR(
        backend->Binary({.op = kernels::BinaryOp::kDiv, .a = out, .b = divisor, .output = out}));
    PARAMD_RETURN_IF_ERROR(backend->Synchronize());
  }
  for (auto& [index, sum] : sums) params_[index].grad = std::move(sum);
  absl::StatusOr<uint64_t> version = StepLocked(std::nullopt);
  for (Param& param : params_) param.grad = Tensor();
  PARAMD_RETURN_IF_ERROR(version.status());
  return AsyncResult{*version, steps_};
}

bool Optimizer::WithdrawFromRound(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = std::find_if(round_.begin(), round_.end(),
                         [id](const RoundPush& push) { return push.id == id; });
  if (it == round_.end()) return false;
  round_.erase(it);
  return true;
}

absl::Time Optimizer::ExpireRound(absl::Time now) {
  std::vector<RoundPush> ended;
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    if (round_.empty()) return absl::InfiniteFuture();
    if (now < round_deadline_) return round_deadline_;
    std::vector<std::string> workers;
    for (const RoundPush& push : round_) workers.push_back(QuoteName(push.worker));
    std::sort(workers.begin(), workers.end());
    status = VersionConflictError(
        absl::StrCat("round ", steps_, " of optimizer ", QuoteName(name_),
                     " was not completed within ", absl::FormatDuration(mode_.round_timeout),
                     " (--sync-round-timeout): ", round_.size(), " of ", mode_.bound,
                     " workers pushed (", absl::StrJoin(workers, ", "),
                     "); their gradients were dropped and the round is still ", steps_,
                     ": push again once every worker is back"),
        steps_);
    ended.swap(round_);
  }
  for (RoundPush& push : ended) push.done(status);
  return absl::InfiniteFuture();
}

void Optimizer::Close(const absl::Status& status) {
  std::vector<RoundPush> ended;
  {
    absl::MutexLock lock(&mu_);
    closed_ = status;
    ended.swap(round_);
  }
  for (RoundPush& push : ended) push.done(status);
}

}  // namespace paramd::core
