#include "server/io/snapshots.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "server/common/log.h"
#include "base/status_macros.h"
#include "server/core/load_state_dict.h"
#include "server/core/spec.h"
#include "server/core/spec_export.h"
#include "server/core/traversal.h"
#include "server/io/checkpoint.h"
#include "server/io/file_system.h"
#include "server/io/optimizer_snapshot.h"

namespace paramd::io {
namespace {

constexpr char kSuffix[] = ".safetensors";

struct Pinned {
  SaveInput input;
  bool training = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Snapshots>> Snapshots::Open(const std::string& data_dir,
                                                           core::ModelRegistry* registry,
                                                           FileSystem& fs,
                                                           core::OptimizerRegistry* optimizers,
                                                           absl::Duration sync_round_timeout) {
  const std::string directory = data_dir + "/models";
  const std::string optimizer_directory = data_dir + "/optimizers";
  std::vector<std::string> directories = {directory};
  if (optimizers != nullptr) directories.push_back(optimizer_directory);
  for (const std::string& made : directories) {
    std::error_code error;
    std::filesystem::create_directories(made, error);
    if (error) {
      return absl::Status(absl::StatusCode::kFailedPrecondition,
                          absl::StrCat("cannot create the snapshot directory '", made,
                                       "': ", error.message(), "; check --data-dir"));
    }
  }
  std::unique_ptr<Snapshots> snapshots(
      new Snapshots(directory, optimizer_directory, registry, optimizers, sync_round_timeout, fs));
  for (const std::string& made : directories) snapshots->RemoveLeftovers(made);
  registry->SetVersionLease(snapshots->versions_);
  return snapshots;
}

int Snapshots::RemoveLeftovers(const std::string& directory) {
  // Only WriteFileAtomically's temporaries of our own files: `.<name><suffix>.tmp-<...>`.
  std::vector<std::filesystem::path> doomed;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(directory, error)) {
    const std::string name = entry.path().filename().string();
    const size_t tmp = name.find(".tmp-");
    if (name.empty() || name.front() != '.' || tmp == std::string::npos) continue;
    const absl::string_view target = absl::string_view(name).substr(1, tmp - 1);
    if ((absl::EndsWith(target, kSuffix) || absl::EndsWith(target, VersionFiles::kSuffix)) &&
        entry.is_regular_file(error)) {
      doomed.push_back(entry.path());
    }
  }
  int removed = 0;
  for (const auto& path : doomed) {
    const uintmax_t bytes = std::filesystem::file_size(path, error);
    if (!std::filesystem::remove(path, error)) continue;
    ++removed;
    common::Log("warning", "removed unfinished snapshot file",
                {{"file", path.string()}, {"bytes", absl::StrCat(error ? 0 : bytes)}});
  }
  return removed;
}

std::string Snapshots::PathOf(const std::string& name) const {
  // Model names are valid file names (ValidateModelName).
  return absl::StrCat(directory_, "/", name, kSuffix);
}

std::string Snapshots::OptimizerPathOf(const std::string& name) const {
  // Optimizer names follow model names' rules.
  return absl::StrCat(optimizer_directory_, "/", name, kSuffix);
}

void Snapshots::Acquire(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto idle = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return !busy_.contains(name); };
  mu_.Await(absl::Condition(&idle));
  busy_.insert(name);
}

void Snapshots::Release(const std::string& name) {
  absl::MutexLock lock(&mu_);
  busy_.erase(name);
}

std::vector<std::shared_ptr<core::Optimizer>> Snapshots::OptimizersOf(
    const std::shared_ptr<core::Model>& model) const {
  std::vector<std::shared_ptr<core::Optimizer>> out;
  if (optimizers_ == nullptr) return out;
  for (auto& optimizer : optimizers_->List(model->name())) {
    if (optimizer->model() == model) out.push_back(std::move(optimizer));
  }
  return out;
}

absl::StatusOr<Snapshots::Taken> Snapshots::TakeOne(const std::shared_ptr<core::Model>& model) {
  const std::string& name = model->name();
  Acquire(name);
  // The optimizers' state must go with the pinned version: a step that completed between
  // taking it and pinning the model shows as a change, and both are taken again. A step
  // holds its optimizer's lock until it is done, so Describe waits for one in flight.
  constexpr int kCaptureAttempts = 20;
  std::vector<Captured> captured;
  Pinned pinned;
  for (int attempt = 1;; ++attempt) {
    captured.clear();
    for (auto& optimizer : OptimizersOf(model)) {
      core::Optimizer::Summary summary = optimizer->Describe();
      core::OptimizerStateDict state = optimizer->StateDict();
      captured.push_back({std::move(optimizer), std::move(summary), std::move(state)});
    }
    pinned = model->Read([](const std::shared_ptr<core::Module>& root, uint64_t version) {
      Pinned out;
      out.input.state_dict = core::GetStateDict(*root);
      out.input.spec_json = core::ExportSpec(root).dump();
      out.input.version = version;
      out.training = root->training();
      return out;
    });
    const bool steady = std::all_of(captured.begin(), captured.end(), [](const Captured& c) {
      return c.optimizer->Describe().changes == c.summary.changes;
    });
    if (steady) break;
    if (attempt == kCaptureAttempts) {
      common::Log("warning", "optimizers of a model left out of its snapshot",
                  {{"model", name},
                   {"why", "they kept stepping while the snapshot was taken"},
                   {"note", "the next snapshot tries again"}});
      captured.clear();
      break;
    }
  }
  Taken entry{name, pinned.input.version, false};
  bool unchanged = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = saved_.find(name);
    unchanged = it != saved_.end() && it->second == pinned.input.version;
  }
  if (!unchanged) {
    pinned.input.annotations = {
        {"paramd.model", name},
        {"paramd.device", model->device().ToString()},
        {"paramd.training", pinned.training ? "true" : "false"},
        {"paramd.snapshot_time",
         absl::FormatTime(absl::RFC3339_sec, absl::Now(), absl::UTCTimeZone())}};
    absl::Status status =
        SaveCheckpoint(PathOf(name), CheckpointFormat::kSafetensors, pinned.input, *fs_);
    if (!status.ok()) {
      Release(name);
      common::Log("error", "snapshot failed",
                  {{"model", name}, {"error", std::string(status.message())}});
      return absl::Status(status.code(), absl::StrCat("snapshot of model '", name,
                                                      "' failed: ", status.message()));
    }
    // A model deleted (or deleted and created again) while its snapshot was written must
    // not come back on restart: Forget waited for this write and removed nothing yet, or
    // ran before it and the file written now is the deleted model's.
    absl::StatusOr<std::shared_ptr<core::Model>> current = registry_->Get(name);
    if (!current.ok() || *current != model) {
      std::error_code error;
      std::filesystem::remove(PathOf(name), error);
      absl::MutexLock lock(&mu_);
      saved_.erase(name);
      busy_.erase(name);
      return entry;
    }
    absl::MutexLock lock(&mu_);
    saved_[name] = pinned.input.version;
    entry.written = true;
  }
  absl::Status optimizers = WriteOptimizers(captured, pinned.input.version, entry.written);
  Release(name);
  PARAMD_RETURN_IF_ERROR(optimizers);
  return entry;
}

absl::Status Snapshots::WriteOptimizers(const std::vector<Captured>& captured, uint64_t version,
                                        bool model_written) {
  absl::Status first_error;
  for (const Captured& c : captured) {
    const std::string& name = c.optimizer->name();
    // Optimizer files are marked busy under "/<name>", which no model name can be.
    Acquire("/" + name);
    bool needed = model_written;
    {
      absl::MutexLock lock(&mu_);
      auto it = saved_optimizers_.find(name);
      needed = needed || it == saved_optimizers_.end() ||
               it->second.optimizer.lock() != c.optimizer ||
               it->second.changes != c.summary.changes || it->second.model_version != version;
    }
    if (needed) {
      OptimizerSnapshot snapshot{name,           c.summary.model, c.summary.kind, c.summary.mode,
                                 c.summary.steps, version,         c.state};
      absl::Status status = SaveOptimizerSnapshot(OptimizerPathOf(name), snapshot, *fs_);
      if (status.ok()) {
        absl::MutexLock lock(&mu_);
        saved_optimizers_[name] = {c.optimizer, c.summary.model, c.summary.changes, version};
      } else {
        common::Log("error", "optimizer snapshot failed",
                    {{"optimizer", name}, {"model", c.summary.model},
                     {"error", std::string(status.message())}});
        if (first_error.ok()) {
          first_error = absl::Status(status.code(),
                                     absl::StrCat("snapshot of optimizer '", name,
                                                  "' failed: ", status.message()));
        }
      }
    }
    Release("/" + name);
  }
  return first_error;
}

void Snapshots::SweepOptimizers(const std::string& model) {
  if (optimizers_ == nullptr) return;
  std::vector<std::string> candidates;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, saved] : saved_optimizers_) {
      if (model.empty() || saved.model == model) candidates.push_back(name);
    }
  }
  for (const std::string& name : candidates) RemoveOptimizerFile(name);
}

void Snapshots::RemoveOptimizerFile(const std::string& name) {
  Acquire("/" + name);
  std::shared_ptr<core::Optimizer> saved;
  {
    absl::MutexLock lock(&mu_);
    auto it = saved_optimizers_.find(name);
    if (it != saved_optimizers_.end()) saved = it->second.optimizer.lock();
  }
  // Kept while the optimizer is registered under its name and its model is the one registered
  // under the model's name.
  bool live = false;
  if (saved != nullptr) {
    absl::StatusOr<std::shared_ptr<core::Optimizer>> registered = optimizers_->Get(name);
    absl::StatusOr<std::shared_ptr<core::Model>> model = registry_->Get(saved->model()->name());
    live = registered.ok() && *registered == saved && model.ok() && *model == saved->model();
  }
  if (!live) {
    std::error_code error;
    std::filesystem::remove(OptimizerPathOf(name), error);
    absl::MutexLock lock(&mu_);
    saved_optimizers_.erase(name);
  }
  Release("/" + name);
}

absl::StatusOr<std::vector<Snapshots::Taken>> Snapshots::Take(
    const std::vector<std::string>& names) {
  std::vector<std::shared_ptr<core::Model>> models;
  if (names.empty()) {
    models = registry_->List();
  } else {
    for (const std::string& name : names) {
      PARAMD_ASSIGN_OR_RETURN(auto model, registry_->Get(name));
      models.push_back(std::move(model));
    }
  }
  std::vector<Taken> taken;
  absl::Status first_error;
  for (const auto& model : models) {
    absl::StatusOr<Taken> entry = TakeOne(model);
    if (entry.ok()) {
      taken.push_back(*std::move(entry));
    } else if (first_error.ok()) {
      first_error = entry.status();
    }
  }
  SweepOptimizers();
  if (!first_error.ok()) return first_error;
  return taken;
}

absl::StatusOr<std::vector<Snapshots::Taken>> Snapshots::Shutdown() {
  std::vector<std::string> failed;
  absl::Status first_error;
  std::vector<Taken> taken;
  for (const auto& model : registry_->List()) {
    absl::StatusOr<Taken> entry = TakeOne(model);
    if (!entry.ok()) {
      failed.push_back(model->name());
      if (first_error.ok()) first_error = entry.status();
      continue;
    }
    // Its snapshot holds its current version and no write can come: a clean stop.
    if (model->version() == entry->version) versions_->Remove(model->name());
    taken.push_back(*std::move(entry));
  }
  SweepOptimizers();
  if (!first_error.ok()) {
    return absl::Status(first_error.code(),
                        absl::StrCat("the final snapshot of ", failed.size(), " model(s) (",
                                     absl::StrJoin(failed, ", "), ") failed; the first: ",
                                     first_error.message()));
  }
  return taken;
}

void Snapshots::Forget(const std::string& name) {
  Acquire(name);
  std::error_code error;
  std::filesystem::remove(PathOf(name), error);
  versions_->Remove(name);
  {
    absl::MutexLock lock(&mu_);
    saved_.erase(name);
    busy_.erase(name);
  }
  // Its optimizers can never step again (docs/training.md): they must not come back.
  SweepOptimizers(name);
}

absl::Status Snapshots::Restore(const std::string& name, const std::string& file) {
  PARAMD_ASSIGN_OR_RETURN(Checkpoint checkpoint, ReadCheckpoint(file));
  if (!checkpoint.spec_json || !checkpoint.version) {
    return absl::InvalidArgumentError("the file carries no model spec or version");
  }
  auto annotation = [&](absl::string_view key) -> std::string {
    for (const auto& [k, v] : checkpoint.annotations) {
      if (k == key) return v;
    }
    return "";
  };
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Module> root,
                          core::BuildModuleFromText(*checkpoint.spec_json, 0,
                                                    registry_->max_state_dict_keys()));
  core::StateDictInput input;
  for (CheckpointTensor& entry : checkpoint.entries) {
    input.entries.emplace_back(std::move(entry.name), std::move(entry.tensor));
  }
  // The daemon owns DATA_DIR/models and replaces its files by rename, never in place: the
  // model may keep viewing this one.
  core::LoadOptions options;
  options.keep_mapped = true;
  PARAMD_ASSIGN_OR_RETURN(core::LoadPlan plan, core::PlanLoadStateDict(root, input, options));
  plan.Commit(*checkpoint.version);
  const bool training = annotation("paramd.training") == "true";
  for (const auto& [path, module] : core::NamedModules(root)) module->set_training(training);
  PARAMD_ASSIGN_OR_RETURN(Device device,
                          ParseDevice(annotation("paramd.device").empty()
                                                ? "cpu"
                                                : annotation("paramd.device")));
  if (!device.is_cpu()) {
    // A model from a GPU is better kept on the host than lost when this process has
    // no such device (a restart on another node, a driver gone).
    if (absl::Status moved = core::MoveUnpublishedTree(root, device); !moved.ok()) {
      common::Log("warning", "model restored on cpu",
                  {{"model", name}, {"device", device.ToString()},
                   {"error", std::string(moved.message())}});
      device = Device::Cpu();
    }
  }
  // Note [Version reservation]: a reservation still on disk means the daemon stopped
  // without its final snapshot; versions up to its end may have been handed out.
  PARAMD_ASSIGN_OR_RETURN(std::optional<uint64_t> reserved, versions_->ReservedEnd(name));
  uint64_t version = *checkpoint.version;
  if (reserved && *reserved >= version) {
    if (*reserved == std::numeric_limits<uint64_t>::max()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "its version reservation '", versions_->PathOf(name), "' is at the last version"));
    }
    version = *reserved + 1;
  }
  auto model = std::make_shared<core::Model>(name, std::move(root), device, version);
  PARAMD_RETURN_IF_ERROR(registry_->Add(model));
  {
    absl::MutexLock lock(&mu_);
    saved_[name] = *checkpoint.version;
  }
  common::Log("info", "model restored",
              {{"model", name},
               {"version", absl::StrCat(version)},
               {"snapshot_version", absl::StrCat(*checkpoint.version)},
               {"stop", reserved ? "unclean" : "clean"},
               {"snapshot_time", annotation("paramd.snapshot_time")},
               {"note", "writes made after the snapshot time, if any, were lost"}});
  return absl::OkStatus();
}

int Snapshots::RestoreAll() {
  int restored = 0;
  std::error_code error;
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(directory_, error)) {
    const std::string name = entry.path().filename().string();
    if (!name.empty() && name.front() != '.' && absl::EndsWith(name, kSuffix)) {
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  // A reservation without a snapshot belongs to a model that was never snapshotted (lost
  // with the crash) or was deleted while it was being written.
  for (const auto& entry : std::filesystem::directory_iterator(directory_, error)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name.front() == '.' || !absl::EndsWith(name, VersionFiles::kSuffix)) {
      continue;
    }
    const std::string model = name.substr(0, name.size() - strlen(VersionFiles::kSuffix));
    if (!std::filesystem::exists(PathOf(model), error)) versions_->Remove(model);
  }
  for (const auto& file : files) {
    const std::string name = file.stem().string();
    absl::Status status = Restore(name, file.string());
    if (status.ok()) {
      ++restored;
    } else {
      common::Log("error", "model not restored",
                  {{"model", name}, {"file", file.string()},
                   {"error", std::string(status.message())}});
    }
  }
  RestoreOptimizers();
  return restored;
}

int Snapshots::RestoreOptimizers() {
  if (optimizers_ == nullptr) return 0;
  std::error_code error;
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(optimizer_directory_, error)) {
    const std::string name = entry.path().filename().string();
    if (!name.empty() && name.front() != '.' && absl::EndsWith(name, kSuffix)) {
      files.push_back(entry.path());
    }
  }
  std::sort(files.begin(), files.end());
  int restored = 0;
  for (const auto& file : files) {
    absl::Status status = RestoreOptimizerFile(file.string());
    if (status.ok()) {
      ++restored;
      continue;
    }
    // Loud, but the models are back: only this optimizer is lost.
    common::Log("error", "optimizer not restored",
                {{"optimizer", file.stem().string()}, {"file", file.string()},
                 {"error", std::string(status.message())},
                 {"note", "its model was restored without it; the file is left for inspection "
                          "until an optimizer of that name is snapshotted"}});
  }
  if (!files.empty()) {
    common::Log("info", "optimizers restored",
                {{"optimizers", absl::StrCat(restored)},
                 {"failed", absl::StrCat(files.size() - restored)}});
  }
  return restored;
}

absl::Status Snapshots::RestoreOptimizerFile(const std::string& file) {
  PARAMD_ASSIGN_OR_RETURN(OptimizerSnapshot snapshot, ReadOptimizerSnapshot(file));
  const std::string stem = std::filesystem::path(file).stem().string();
  if (snapshot.name != stem) {
    return absl::InvalidArgumentError(absl::StrCat("the file holds optimizer '", snapshot.name,
                                                   "', not '", stem, "'"));
  }
  absl::StatusOr<std::shared_ptr<core::Model>> model = registry_->Get(snapshot.model);
  if (!model.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("its model '", snapshot.model, "' did not come back"));
  }
  std::optional<uint64_t> model_snapshot;
  {
    absl::MutexLock lock(&mu_);
    if (auto it = saved_.find(snapshot.model); it != saved_.end()) model_snapshot = it->second;
  }
  if (!model_snapshot || *model_snapshot != snapshot.model_version) {
    return absl::FailedPreconditionError(absl::StrCat(
        "its state goes with version ", snapshot.model_version, " of model '", snapshot.model,
        "', but the model came back from version ", model_snapshot.value_or(0),
        " (the daemon stopped between the two snapshots); the optimizer would step weights "
        "its state does not belong to"));
  }
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<core::Optimizer> optimizer,
                          io::RestoreOptimizer(snapshot, *model, sync_round_timeout_));
  PARAMD_RETURN_IF_ERROR(optimizers_->Add(optimizer));
  {
    absl::MutexLock lock(&mu_);
    saved_optimizers_[snapshot.name] = {optimizer, snapshot.model, optimizer->Describe().changes,
                                        snapshot.model_version};
  }
  common::Log("info", "optimizer restored",
              {{"optimizer", snapshot.name},
               {"model", snapshot.model},
               {"kind", std::string(core::OptimizerKindName(snapshot.kind))},
               {"steps", absl::StrCat(snapshot.steps)},
               {"note", "gradients are not kept across restarts: every .grad is None"}});
  return absl::OkStatus();
}

}  // namespace paramd::io
