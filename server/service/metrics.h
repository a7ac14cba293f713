// The daemon's Prometheus metrics (docs/metrics.md lists every one): what calls record as
// they finish (RPC counts, latencies and bytes, forward latencies, checkpoint durations and
// bytes) and what a scrape reads at the moment it runs (memory against --max-memory, each
// model's version and tensor bytes, the executor's work). The HTTP endpoint that serves them
// (--metrics-listen) is the daemon's (server/main); this file only keeps and renders them.
//
// Thread-safety: every method may be called from any thread, scrapes included.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/support/status.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/family.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "server/core/registry.h"
#include "server/service/executor.h"

namespace paramd::service {

// The label value of every model past the cap (Note [Model label cap]).
inline constexpr absl::string_view kOtherModels = "_other";

// Note [Model label cap]
// A series per model is what an operator wants for a handful of models and what breaks
// Prometheus for 20k: every label value is a series kept in the daemon and in the server
// that scrapes it. So the first `max_models` distinct model names a metric meets since the
// daemon started (--metrics-max-models) keep their own label value, in the order they were
// met, and every later name is folded into the one value "_other" (its bytes and latencies
// summed into that series). A name keeps its label for the daemon's life, even after its
// model is deleted, so that no series ever changes meaning; a scrape meets the models in
// name order, so after a restart the first scrape labels them deterministically.
class ModelLabels {
 public:
  explicit ModelLabels(size_t max_models) : max_models_(max_models) {}

  // `model` itself when it has a label or one is left, else "_other".
  std::string Label(absl::string_view model);

 private:
  const size_t max_models_;
  mutable absl::Mutex mu_;
  absl::flat_hash_set<std::string> labelled_ ABSL_GUARDED_BY(mu_);
};

struct MetricsOptions {
  // Models with their own label value (--metrics-max-models); the rest are "_other".
  size_t max_models = 100;
  // The CPU's tensor memory limit (--max-memory), reported beside the bytes in use.
  size_t max_memory = 0;
};

class Metrics {
 public:
  // Borrows `models`, which must outlive every scrape.
  Metrics(const MetricsOptions& options, const core::ModelRegistry* models);
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

  // What an HTTP endpoint registers: every metric, the scrape-time ones read as it collects.
  std::weak_ptr<prometheus::Collectable> collectable() const;
  // The text exposition format, as a scrape answers (for tests and tools).
  std::string Render() const;

  // The executor whose work a scrape reports; null (the default, and before it goes away)
  // reports none.
  void SetExecutor(const Executor* executor);

  // One method's RPC counters, found once (the call observer keeps one per method):
  // `method` is gRPC's full name ("/paramd.v1.Models/CreateModel"); a method the daemon does
  // not serve is "_unknown". Any number of calls may use one Call at once.
  class Call {
   public:
    void Received(size_t bytes) const { received_->Increment(static_cast<double>(bytes)); }
    void Sent(size_t bytes) const { sent_->Increment(static_cast<double>(bytes)); }
    // Counts one call, with its latency, under its status code.
    void Finished(grpc::StatusCode code, double seconds) const;

   private:
    friend class Metrics;
    Metrics* metrics_ = nullptr;
    std::string service_, method_;
    prometheus::Counter* received_ = nullptr;
    prometheus::Counter* sent_ = nullptr;
  };
  Call StartCall(absl::string_view method);

  // A forward's compute time (its inputs read, its outputs not yet sent).
  void ObserveForward(absl::string_view model, double seconds);
  // A checkpoint saved or loaded, with the file's bytes.
  enum class CheckpointOp { kSave, kLoad };
  void ObserveCheckpoint(CheckpointOp op, double seconds, uint64_t bytes);

 private:
  class Collector;

  ModelLabels model_labels_;
  const size_t max_memory_;
  const core::ModelRegistry* const models_;
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Counter>& handled_;
  prometheus::Family<prometheus::Histogram>& handling_seconds_;
  prometheus::Family<prometheus::Counter>& received_bytes_;
  prometheus::Family<prometheus::Counter>& sent_bytes_;
  prometheus::Family<prometheus::Histogram>& forward_seconds_;
  prometheus::Family<prometheus::Histogram>& checkpoint_seconds_;
  prometheus::Family<prometheus::Counter>& checkpoint_bytes_;
  std::shared_ptr<Collector> collector_;
};

// The status code's name as gRPC spells it: "OK", "NOT_FOUND", ...
absl::string_view StatusCodeName(grpc::StatusCode code);

}  // namespace paramd::service
