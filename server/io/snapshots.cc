#include "server/io/snapshots.h"

#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
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
                                                            FileSystem& fs) {
  const std::string directory = data_dir + "/models";
  std::error_code error;
  std::filesystem::create_directories(directory, error);
  if (error) {
    return absl::Status(absl::StatusCode::kFailedPrecondition,
                        absl::StrCat("cannot create the snapshot directory '", directory,
                                     "': ", error.message(), "; check --data-dir"));
  }
  return std::unique_ptr<Snapshots>(new Snapshots(directory, registry, fs));
}

std::string Snapshots::PathOf(const std::string& name) const {
  // Model names are valid file names (ValidateModelName).
  return absl::StrCat(directory_, "/", name, kSuffix);
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
  absl::MutexLock write_lock(&write_mu_);
  std::vector<Taken> taken;
  absl::Status first_error;
  for (const auto& model : models) {
    Pinned pinned = model->Read([](const std::shared_ptr<core::Module>& root, uint64_t version) {
      Pinned out;
      out.input.state_dict = core::GetStateDict(*root);
      out.input.spec_json = core::ExportSpec(root).dump();
      out.input.version = version;
      out.training = root->training();
      return out;
    });
    Taken entry{model->name(), pinned.input.version, false};
    {
      absl::MutexLock lock(&mu_);
      auto it = saved_.find(model->name());
      if (it != saved_.end() && it->second == pinned.input.version) {
        taken.push_back(entry);
        continue;
      }
    }
    pinned.input.annotations = {
        {"paramd.model", model->name()},
        {"paramd.device", model->device().ToString()},
        {"paramd.training", pinned.training ? "true" : "false"},
        {"paramd.snapshot_time", absl::FormatTime(absl::RFC3339_sec, absl::Now(),
                                                  absl::UTCTimeZone())}};
    absl::Status status = SaveCheckpoint(PathOf(model->name()), CheckpointFormat::kSafetensors,
                                         pinned.input, *fs_);
    if (!status.ok()) {
      common::Log("error", "snapshot failed",
                  {{"model", model->name()}, {"error", std::string(status.message())}});
      if (first_error.ok()) first_error = status;
      continue;
    }
    {
      absl::MutexLock lock(&mu_);
      saved_[model->name()] = pinned.input.version;
    }
    entry.written = true;
    taken.push_back(entry);
  }
  // A model deleted while the snapshot was written must not come back on restart.
  for (const Taken& entry : taken) {
    if (!registry_->Get(entry.model).ok()) Forget(entry.model);
  }
  if (!first_error.ok()) return first_error;
  return taken;
}

void Snapshots::Forget(const std::string& name) {
  absl::MutexLock write_lock(&write_mu_);
  std::error_code error;
  std::filesystem::remove(PathOf(name), error);
  absl::MutexLock lock(&mu_);
  saved_.erase(name);
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
                          core::BuildModuleFromText(*checkpoint.spec_json, 0));
  core::StateDictInput input;
  for (CheckpointTensor& entry : checkpoint.entries) {
    input.entries.emplace_back(std::move(entry.name), std::move(entry.tensor));
  }
  PARAMD_ASSIGN_OR_RETURN(core::LoadPlan plan, core::PlanLoadStateDict(root, input, {}));
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
  auto model = std::make_shared<core::Model>(name, std::move(root), device,
                                             *checkpoint.version);
  PARAMD_RETURN_IF_ERROR(registry_->Add(model));
  {
    absl::MutexLock lock(&mu_);
    saved_[name] = *checkpoint.version;
  }
  common::Log("info", "model restored",
              {{"model", name},
               {"version", absl::StrCat(*checkpoint.version)},
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
  return restored;
}

}  // namespace paramd::io
