#include "server/core/model.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "base/text.h"
#include "base/version_conflict.h"
#include "kernels/backend.h"
#include "server/core/traversal.h"

namespace paramd::core {
namespace {

Shape Squeezed(const Shape& shape) {
  Shape out;
  for (int64_t extent : shape) {
    if (extent != 1) out.push_back(extent);
  }
  return out;
}

using SlotCopies = std::vector<std::pair<std::shared_ptr<TensorSlot>, Tensor>>;

// Every Parameter and Buffer object of `root` once (a tied Parameter or a shared module's
// tensors one time, so they stay one object), each with a copy of its tensor on `device`.
absl::StatusOr<SlotCopies> CopiesOn(const std::shared_ptr<Module>& root, const Device& device) {
  SlotCopies copies;
  for (const auto& [name, parameter] : NamedParameters(root)) {
    PARAMD_ASSIGN_OR_RETURN(Tensor copy,
                            ConvertTo(parameter->data(), parameter->data().dtype(), device));
    copies.emplace_back(parameter, std::move(copy));
  }
  for (const auto& [name, buffer] : NamedBuffers(root)) {
    PARAMD_ASSIGN_OR_RETURN(Tensor copy, ConvertTo(buffer->data(), buffer->data().dtype(), device));
    copies.emplace_back(buffer, std::move(copy));
  }
  return copies;
}

}  // namespace

absl::Status MoveUnpublishedTree(const std::shared_ptr<Module>& root, const Device& device) {
  PARAMD_ASSIGN_OR_RETURN(SlotCopies copies, CopiesOn(root, device));
  for (const auto& [slot, tensor] : copies) slot->set_data(tensor, slot->version());
  return absl::OkStatus();
}

Model::Model(std::string name, std::shared_ptr<Module> root, Device device, uint64_t version)
    : name_(std::move(name)), device_(device), root_(std::move(root)),
      version_(version == 0 ? 1 : version) {}

Model::~Model() {
  absl::StatusOr<kernels::Backend*> host = kernels::GetBackend(Device::Cpu());
  if (host.ok() && structure_bytes_ > 0) (*host)->Unreserve(structure_bytes_);
}

absl::Status Model::ChargeStructure(uint64_t bytes) {
  PARAMD_ASSIGN_OR_RETURN(kernels::Backend * host, kernels::GetBackend(Device::Cpu()));
  absl::MutexLock lock(&charge_mu_);
  if (bytes > structure_bytes_) {
    const absl::Status reserved = host->Reserve(bytes - structure_bytes_);
    if (!reserved.ok()) {
      return absl::Status(
          reserved.code(),
          absl::StrCat("model ", QuoteName(name_),
                       ": its structure (modules, parameter, buffer "
                       "and child slots, names) takes about ",
                       bytes, " bytes of host memory, which do not fit: ", reserved.message()));
    }
  } else {
    host->Unreserve(structure_bytes_ - bytes);
  }
  structure_bytes_ = bytes;
  return absl::OkStatus();
}

void Model::set_version_lease(std::shared_ptr<VersionLease> lease) {
  absl::MutexLock writer(&writer_mu_);
  lease_ = std::move(lease);
  reserved_ = 0;
}

uint64_t Model::version() const {
  absl::ReaderMutexLock lock(&mu_);
  return version_;
}

Device Model::device() const {
  absl::ReaderMutexLock lock(&mu_);
  return device_;
}

bool Model::training() const {
  absl::ReaderMutexLock lock(&mu_);
  return root_->training();
}

absl::StatusOr<uint64_t> Model::Write(std::optional<uint64_t> if_version, const Prepare& prepare) {
  absl::MutexLock writer(&writer_mu_);
  std::shared_ptr<Module> root;
  uint64_t current;
  {
    absl::ReaderMutexLock lock(&mu_);
    root = root_;
    current = version_;
  }
  if (if_version && *if_version != current) {
    return VersionConflictError(absl::StrCat("model ", QuoteName(name_), " is at version ",
                                             current, ", not ", *if_version,
                                             "; read it again and redo the write"),
                                current);
  }
  // A prepare that grows the structure charges its new size (ChargeStructure) as its last
  // step; a write that fails after that gives the charge back, so that nothing changes.
  uint64_t charged;
  {
    absl::MutexLock lock(&charge_mu_);
    charged = structure_bytes_;
  }
  const auto fail = [&](absl::Status status) {
    // Structure only grows in a write, so going back releases bytes and cannot fail.
    (void)ChargeStructure(charged);
    return status;
  };
  // Only writers change the tree and this one holds writer_mu_, so `prepare` may read it
  // without mu_ while readers carry on.
  absl::StatusOr<Commit> commit = prepare(root);
  if (!commit.ok()) return fail(commit.status());
  if (current == std::numeric_limits<uint64_t>::max()) {
    return fail(absl::FailedPreconditionError(
        absl::StrCat("model '", name_, "' is at the last version there is (", current,
                     "); save it and load it under a new name to write it again")));
  }
  // Only writers change version_ and this one holds writer_mu_: `current` is still current.
  const uint64_t next = current + 1;
  if (lease_ != nullptr && next > reserved_) {
    absl::StatusOr<uint64_t> reserved = lease_->Reserve(name_, next);
    if (!reserved.ok()) return fail(reserved.status());
    reserved_ = *reserved;
  }
  absl::MutexLock lock(&mu_);
  (*commit)(next);
  version_ = next;
  return next;
}

absl::StatusOr<std::shared_ptr<TensorSlot>> FindTensorSlot(const std::shared_ptr<Module>& root,
                                                           absl::string_view key) {
  const size_t dot = key.rfind('.');
  const absl::string_view module_path = dot == absl::string_view::npos ? "" : key.substr(0, dot);
  const absl::string_view name = dot == absl::string_view::npos ? key : key.substr(dot + 1);
  PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<Module> module, GetSubmodule(root, module_path));
  if (const auto* parameter = module->parameters().Find(name)) {
    if (*parameter != nullptr) return std::shared_ptr<TensorSlot>(*parameter);
    return absl::NotFoundError(absl::StrCat("parameter ", QuoteName(key), " is None"));
  }
  if (const auto* buffer = module->buffers().Find(name)) {
    if (*buffer != nullptr) return std::shared_ptr<TensorSlot>(*buffer);
    return absl::NotFoundError(absl::StrCat("buffer ", QuoteName(key), " is None"));
  }
  return absl::NotFoundError(absl::StrCat("no parameter or buffer named ", QuoteName(key), " (", module->type(),
                                          " has no parameter or buffer `", ShortName(name),
                                          "`); NamedParameters and NamedBuffers list them"));
}

absl::StatusOr<uint64_t> Model::SetTensor(absl::string_view key, const std::optional<Region>& region,
                                          const Tensor& values, std::optional<uint64_t> if_version) {
  return SetTensors({TensorWrite{std::string(key), region, values}}, if_version);
}

namespace {

// Writes one region of `updated` (a private copy) from `values`.
absl::Status WriteInto(const Tensor& updated, const Model::TensorWrite& write) {
  Tensor target_view = updated;
  if (write.region) {
    PARAMD_ASSIGN_OR_RETURN(target_view, updated.Slice(*write.region));
  }
  Tensor source = write.values;
  // One element fills the target, as copy_ broadcasts it, but copy_ refuses a source with
  // more dimensions than a whole tensor ([1, 1] into a 0-dim one).
  const bool fills = source.numel() == 1 && (write.region || source.dim() <= target_view.dim());
  if (source.shape() != target_view.shape() && !fills) {
    if (!write.region || Squeezed(source.shape()) != Squeezed(target_view.shape())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "shape ", ShapeString(write.values.shape()), " does not match ",
          write.region ? "the region's shape " : "the shape ", ShapeString(target_view.shape()),
          " of ", QuoteName(write.key)));
    }
    if (!source.is_contiguous()) {
      PARAMD_ASSIGN_OR_RETURN(source, Clone(source));
    }
    source = Tensor(source.storage(), source.offset(), target_view.shape(),
                    ContiguousStrides(target_view.shape()), source.dtype());
  }
  return CopyConvert(source, target_view);
}

}  // namespace

absl::StatusOr<uint64_t> Model::SetTensors(const std::vector<TensorWrite>& writes,
                                           std::optional<uint64_t> if_version) {
  if (writes.empty()) {
    // Nothing to write: no new version. The answer is the version the batch would have
    // applied to, and a stale if_version is ABORTED with Write's error, as for any write.
    absl::ReaderMutexLock lock(&mu_);
    if (if_version && *if_version != version_) {
      return VersionConflictError(absl::StrCat("model ", QuoteName(name_), " is at version ",
                                               version_, ", not ", *if_version,
                                               "; read it again and redo the write"),
                                  version_);
    }
    return version_;
  }
  return Write(if_version, [&](const std::shared_ptr<Module>& root) -> absl::StatusOr<Commit> {
    // One private copy per tensor object, so that two writes to a tensor (or to two tied
    // names) accumulate, and nothing published is touched before the commit.
    struct Update {
      std::shared_ptr<TensorSlot> slot;
      Tensor tensor;
      bool owned;  // false: the caller's values, taken over as they are
    };
    std::vector<Update> updates;
    for (const TensorWrite& write : writes) {
      PARAMD_ASSIGN_OR_RETURN(std::shared_ptr<TensorSlot> slot, FindTensorSlot(root, write.key));
      auto it = std::find_if(updates.begin(), updates.end(),
                             [&](const Update& update) { return update.slot == slot; });
      const Tensor& current = slot->data();
      if (!write.region && write.values.shape() == current.shape()) {
        // A whole-tensor write. In the right dtype, layout and device the values become the
        // new storage as they are, with no copy; otherwise one converted copy does, made on
        // the tensor's device (copy_ keeps the destination's dtype and device).
        Update update{slot, write.values, false};
        if (write.values.dtype() != current.dtype() || !write.values.is_contiguous() ||
            !(write.values.device() == current.device())) {
          PARAMD_ASSIGN_OR_RETURN(update.tensor,
                                  ConvertTo(write.values, current.dtype(), current.device()));
          update.owned = true;
        }
        if (it == updates.end()) {
          updates.push_back(std::move(update));
        } else {
          *it = std::move(update);
        }
        continue;
      }
      // A write to part of a tensor goes into a private host copy of it; for a tensor in
      // GPU memory that is one round trip, the whole tensor down now and back up below.
      if (it == updates.end()) {
        PARAMD_ASSIGN_OR_RETURN(Tensor copy, ConvertTo(current, current.dtype(), Device::Cpu()));
        updates.push_back({slot, std::move(copy), true});
        it = std::prev(updates.end());
      } else if (!it->owned || !it->tensor.device().is_cpu()) {
        PARAMD_ASSIGN_OR_RETURN(it->tensor,
                                ConvertTo(it->tensor, it->tensor.dtype(), Device::Cpu()));
        it->owned = true;
      }
      PARAMD_RETURN_IF_ERROR(WriteInto(it->tensor, write));
    }
    for (Update& update : updates) {
      const Device home = update.slot->data().device();
      if (!(update.tensor.device() == home)) {
        PARAMD_ASSIGN_OR_RETURN(update.tensor,
                                ConvertTo(update.tensor, update.tensor.dtype(), home));
      }
    }
    return Commit([updates = std::move(updates)](uint64_t version) {
      for (const Update& update : updates) update.slot->set_data(update.tensor, version);
    });
  });
}

absl::StatusOr<std::pair<uint64_t, IncompatibleKeys>> Model::LoadStateDict(
    const StateDictInput& input, const LoadOptions& options, std::optional<uint64_t> if_version) {
  IncompatibleKeys keys;
  PARAMD_ASSIGN_OR_RETURN(
      uint64_t version,
      Write(if_version, [&](const std::shared_ptr<Module>& root) -> absl::StatusOr<Commit> {
        PARAMD_ASSIGN_OR_RETURN(LoadPlan plan, PlanLoadStateDict(root, input, options));
        keys = plan.keys();
        auto shared_plan = std::make_shared<LoadPlan>(std::move(plan));
        return Commit([shared_plan](uint64_t v) { shared_plan->Commit(v); });
      }));
  return std::make_pair(version, std::move(keys));
}

absl::StatusOr<uint64_t> Model::MoveTo(const Device& device, std::optional<uint64_t> if_version) {
  {
    absl::ReaderMutexLock lock(&mu_);
    if (device_ == device && (!if_version || *if_version == version_)) return version_;
  }
  return Write(if_version, [&](const std::shared_ptr<Module>& root) -> absl::StatusOr<Commit> {
    PARAMD_ASSIGN_OR_RETURN(SlotCopies moved, CopiesOn(root, device));
    // Runs under mu_ (Write's commit), so readers see the device and the tensors change
    // together.
    return Commit([this, device, moved = std::move(moved)](uint64_t version) {
      for (const auto& [slot, tensor] : moved) slot->set_data(tensor, version);
      device_ = device;
    });
  });
}

absl::StatusOr<uint64_t> Model::SetTraining(bool training, std::optional<uint64_t> if_version) {
  return Write(if_version, [training](const std::shared_ptr<Module>& root) -> absl::StatusOr<Commit> {
    Named<Module> modules = NamedModules(root);
    return Commit([training, modules = std::move(modules)](uint64_t) {
      for (const auto& [name, module] : modules) module->set_training(training);
    });
  });
}

}  // namespace paramd::core
