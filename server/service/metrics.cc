#include "server/service/metrics.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/backend.h"
#include "prometheus/metric_family.h"
#include "prometheus/text_serializer.h"
#include "server/core/traversal.h"
#include "server/service/auth.h"

namespace paramd::service {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;

// RPC latencies: from half a millisecond (a cached read) to two minutes (a large load).
const prometheus::Histogram::BucketBoundaries& CallBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
  return *buckets;
}

// Checkpoints: from a small model's 10 ms to a 100 GB file's ten minutes.
const prometheus::Histogram::BucketBoundaries& CheckpointBuckets() {
  static const auto* buckets = new prometheus::Histogram::BucketBoundaries{
      0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600};
  return *buckets;
}

MetricFamily Gauges(std::string name, std::string help) {
  MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = MetricType::Gauge;
  return family;
}

void AddGauge(MetricFamily& family, std::vector<prometheus::ClientMetric::Label> labels,
              double value) {
  ClientMetric metric;
  metric.label = std::move(labels);
  metric.gauge.value = value;
  family.metric.push_back(std::move(metric));
}

}  // namespace

std::string ModelLabels::Label(absl::string_view model) {
  absl::MutexLock lock(&mu_);
  if (labelled_.contains(model)) return std::string(model);
  if (labelled_.size() >= max_models_) return std::string(kOtherModels);
  labelled_.emplace(model);
  return std::string(model);
}

// What a scrape reads at the moment it runs, after the registry's recorded metrics. It may be
// locked by a scrape while the Metrics goes away: `metrics_` is then null and it adds nothing.
class Metrics::Collector final : public prometheus::Collectable {
 public:
  explicit Collector(Metrics* metrics) : metrics_(metrics) {}

  std::vector<MetricFamily> Collect() const override {
    absl::MutexLock lock(&mu_);
    if (metrics_ == nullptr) return {};
    std::vector<MetricFamily> families = metrics_->registry_->Collect();
    AddMemory(families);
    AddModels(families);
    if (executor_ != nullptr) AddExecutor(families);
    return families;
  }

  void Detach() {
    absl::MutexLock lock(&mu_);
    metrics_ = nullptr;
    executor_ = nullptr;
  }

  void SetExecutor(const Executor* executor) {
    absl::MutexLock lock(&mu_);
    executor_ = executor;
  }

 private:
  void AddMemory(std::vector<MetricFamily>& families) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    MetricFamily used = Gauges("paramd_memory_used_bytes",
                               "Bytes of tensor memory allocated, by device.");
    MetricFamily limit = Gauges("paramd_memory_limit_bytes",
                                "Most bytes of tensor memory allowed, by device (--max-memory "
                                "for the CPU, the memory of a GPU).");
    if (auto cpu = kernels::GetBackend(Device::Cpu()); cpu.ok()) {
      AddGauge(used, {{"device", "cpu"}}, static_cast<double>((*cpu)->bytes_in_use()));
    }
    AddGauge(limit, {{"device", "cpu"}}, static_cast<double>(metrics_->max_memory_));
    if (auto gpus = kernels::QueryGpus(); gpus.ok()) {
      for (const kernels::GpuInfo& gpu : *gpus) {
        const Device device = Device::Cuda(gpu.index);
        if (auto backend = kernels::GetBackend(device); backend.ok()) {
          AddGauge(used, {{"device", device.ToString()}},
                   static_cast<double>((*backend)->bytes_in_use()));
        }
        AddGauge(limit, {{"device", device.ToString()}}, static_cast<double>(gpu.total_memory));
      }
    }
    families.push_back(std::move(used));
    families.push_back(std::move(limit));
  }

  // Every model's version and tensor bytes, in name order (Note [Model label cap]); the
  // models past the cap are summed into "_other", which has no version.
  void AddModels(std::vector<MetricFamily>& families) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<std::shared_ptr<core::Model>> models = metrics_->models_->List();
    std::sort(models.begin(), models.end(),
              [](const auto& a, const auto& b) { return a->name() < b->name(); });
    MetricFamily count = Gauges("paramd_models", "Models the daemon holds.");
    AddGauge(count, {}, static_cast<double>(models.size()));
    MetricFamily versions = Gauges("paramd_model_version", "Each model's current version.");
    MetricFamily bytes = Gauges("paramd_model_tensor_bytes",
                                "Bytes of tensor memory each model holds, by model and device.");
    std::vector<std::pair<std::string, double>> other_bytes;  // device -> bytes past the cap
    for (const std::shared_ptr<core::Model>& model : models) {
      const std::string label = metrics_->model_labels_.Label(model->name());
      const std::string device = model->device().ToString();
      const auto [version, nbytes] = model->Read(
          [](const std::shared_ptr<core::Module>& root, uint64_t version) {
            return std::make_pair(version, core::StorageBytes(root));
          });
      if (label != kOtherModels) {
        AddGauge(versions, {{"model", label}}, static_cast<double>(version));
        AddGauge(bytes, {{"model", label}, {"device", device}}, static_cast<double>(nbytes));
        continue;
      }
      auto it = std::find_if(other_bytes.begin(), other_bytes.end(),
                             [&](const auto& entry) { return entry.first == device; });
      if (it == other_bytes.end()) it = other_bytes.insert(other_bytes.end(), {device, 0.0});
      it->second += static_cast<double>(nbytes);
    }
    for (const auto& [device, nbytes] : other_bytes) {
      AddGauge(bytes, {{"model", std::string(kOtherModels)}, {"device", device}}, nbytes);
    }
    families.push_back(std::move(count));
    families.push_back(std::move(versions));
    families.push_back(std::move(bytes));
  }

  void AddExecutor(std::vector<MetricFamily>& families) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::pair<const char*, std::pair<const char*, int>> gauges[] = {
        {"paramd_executor_workers", {"Worker threads for heavy calls (--workers).",
                                     executor_->workers()}},
        {"paramd_executor_max_queued_calls",
         {"Heavy calls that may wait beyond the workers (--max-queued-calls).",
          executor_->max_queued()}},
        {"paramd_executor_admitted_calls",
         {"Heavy calls admitted now: running, waiting for a worker or receiving their request.",
          executor_->admitted()}},
        {"paramd_executor_running_tasks", {"Tasks a worker is running now.", executor_->running()}},
        {"paramd_executor_queued_tasks",
         {"Tasks waiting for a free worker.", executor_->queued()}},
    };
    for (const auto& [name, gauge] : gauges) {
      MetricFamily family = Gauges(name, gauge.first);
      AddGauge(family, {}, gauge.second);
      families.push_back(std::move(family));
    }
  }

  mutable absl::Mutex mu_;
  Metrics* metrics_ ABSL_GUARDED_BY(mu_);
  const Executor* executor_ ABSL_GUARDED_BY(mu_) = nullptr;
};

Metrics::Metrics(const MetricsOptions& options, const core::ModelRegistry* models)
    : model_labels_(options.max_models),
      max_memory_(options.max_memory),
      models_(models),
      registry_(std::make_shared<prometheus::Registry>()),
      handled_(prometheus::BuildCounter()
                   .Name("paramd_grpc_server_handled_total")
                   .Help("RPCs finished, by service, method and status code.")
                   .Register(*registry_)),
      handling_seconds_(prometheus::BuildHistogram()
                            .Name("paramd_grpc_server_handling_seconds")
                            .Help("Seconds from an RPC's start to its status, by service, "
                                  "method and status code.")
                            .Register(*registry_)),
      received_bytes_(prometheus::BuildCounter()
                          .Name("paramd_grpc_server_received_bytes_total")
                          .Help("Bytes of request messages received (serialized, before "
                                "gRPC's framing), by service and method.")
                          .Register(*registry_)),
      sent_bytes_(prometheus::BuildCounter()
                      .Name("paramd_grpc_server_sent_bytes_total")
                      .Help("Bytes of response messages sent (serialized, before gRPC's "
                            "framing), by service and method.")
                      .Register(*registry_)),
      forward_seconds_(prometheus::BuildHistogram()
                           .Name("paramd_forward_seconds")
                           .Help("Seconds a forward computes, by model (capped: "
                                 "--metrics-max-models).")
                           .Register(*registry_)),
      checkpoint_seconds_(prometheus::BuildHistogram()
                              .Name("paramd_checkpoint_seconds")
                              .Help("Seconds a successful checkpoint save or load took, by "
                                    "operation.")
                              .Register(*registry_)),
      checkpoint_bytes_(prometheus::BuildCounter()
                            .Name("paramd_checkpoint_bytes_total")
                            .Help("Bytes of checkpoint files saved or loaded, by operation.")
                            .Register(*registry_)),
      collector_(std::make_shared<Collector>(this)) {}

Metrics::~Metrics() { collector_->Detach(); }

std::weak_ptr<prometheus::Collectable> Metrics::collectable() const { return collector_; }

std::string Metrics::Render() const {
  return prometheus::TextSerializer().Serialize(collector_->Collect());
}

void Metrics::SetExecutor(const Executor* executor) { collector_->SetExecutor(executor); }

Metrics::Call Metrics::StartCall(absl::string_view method) {
  Call call;
  call.metrics_ = this;
  absl::string_view service = "_unknown", name = "_unknown";
  // Only the methods of the role table: a client can send any path, and each would be a
  // series.
  if (RequiredRole(method).has_value()) {
    const size_t slash = method.rfind('/');
    service = method.substr(1, slash - 1);
    name = method.substr(slash + 1);
  }
  call.service_ = std::string(service);
  call.method_ = std::string(name);
  const prometheus::Labels labels = {{"grpc_service", call.service_},
                                     {"grpc_method", call.method_}};
  call.received_ = &received_bytes_.Add(labels);
  call.sent_ = &sent_bytes_.Add(labels);
  return call;
}

void Metrics::Call::Finished(grpc::StatusCode code, double seconds) const {
  if (metrics_ == nullptr) return;
  const prometheus::Labels labels = {{"grpc_service", service_},
                                     {"grpc_method", method_},
                                     {"grpc_code", std::string(StatusCodeName(code))}};
  metrics_->handled_.Add(labels).Increment();
  metrics_->handling_seconds_.Add(labels, CallBuckets()).Observe(seconds);
}

void Metrics::ObserveForward(absl::string_view model, double seconds) {
  forward_seconds_.Add({{"model", model_labels_.Label(model)}}, CallBuckets()).Observe(seconds);
}

void Metrics::ObserveCheckpoint(CheckpointOp op, double seconds, uint64_t bytes) {
  const prometheus::Labels labels = {{"operation", op == CheckpointOp::kSave ? "save" : "load"}};
  checkpoint_seconds_.Add(labels, CheckpointBuckets()).Observe(seconds);
  checkpoint_bytes_.Add(labels).Increment(static_cast<double>(bytes));
}

absl::string_view StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK: return "OK";
    case grpc::StatusCode::CANCELLED: return "CANCELLED";
    case grpc::StatusCode::UNKNOWN: return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT: return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED: return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND: return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS: return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED: return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION: return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED: return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE: return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED: return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL: return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE: return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS: return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

}  // namespace paramd::service
