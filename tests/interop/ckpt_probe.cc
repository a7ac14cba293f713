// ckpt_probe: the interop tests' window into paramd's checkpoint code (server/io), so that
// Python with real PyTorch can check what paramd reads from torch's files and what torch
// reads from paramd's.
//
//   ckpt_probe read FILE              prints the checkpoint as JSON (see Describe)
//   ckpt_probe convert IN OUT [--keep-vars]
//                                     reads IN and writes OUT in the format OUT's suffix
//                                     names, keeping every sharing of storage
//
// Exit status 0 on success; 1 with the error on stderr otherwise.
#include <cstdio>
#include <iostream>
#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "base/dtype.h"
#include "server/core/parameter.h"
#include "server/io/checkpoint.h"
#include "server/io/sha256.h"

namespace {

using paramd::io::Checkpoint;
using Json = nlohmann::ordered_json;

// One object per entry: name, dtype, shape, stride, storage_offset, storage (the index of
// its storage in order of first appearance, so that shared storages have one index),
// is_parameter, requires_grad, location, and the SHA-256 of its elements in C order.
Json Describe(const Checkpoint& checkpoint) {
  Json entries = Json::array();
  std::map<const paramd::core::Storage*, int> storages;
  for (const auto& entry : checkpoint.entries) {
    const auto& tensor = entry.tensor;
    auto [it, fresh] = storages.emplace(tensor.storage().get(), static_cast<int>(storages.size()));
    absl::StatusOr<std::vector<uint8_t>> bytes = paramd::core::ToBytes(tensor);
    entries.push_back({{"name", entry.name},
                       {"dtype", std::string(paramd::DTypeName(tensor.dtype()))},
                       {"shape", tensor.shape()},
                       {"stride", tensor.strides()},
                       {"storage_offset", tensor.offset()},
                       {"storage", it->second},
                       {"storage_nbytes", tensor.storage()->nbytes()},
                       {"is_parameter", entry.is_parameter},
                       {"requires_grad", entry.requires_grad},
                       {"location", entry.location},
                       {"sha256", bytes.ok() ? paramd::io::Sha256Hex(*bytes) : "?"}});
  }
  Json out = {{"format", std::string(paramd::io::FormatName(checkpoint.format))},
              {"entries", std::move(entries)}};
  if (checkpoint.module_versions) {
    Json versions = Json::array();
    for (const auto& [prefix, version] : *checkpoint.module_versions) {
      versions.push_back({prefix, version});
    }
    out["module_versions"] = std::move(versions);
  }
  if (checkpoint.spec_json) out["spec"] = *checkpoint.spec_json;
  return out;
}

int Fail(const absl::Status& status) {
  std::cerr << "ckpt_probe: " << status << "\n";
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "";
  if (command == "read" && argc == 3) {
    absl::StatusOr<Checkpoint> checkpoint = paramd::io::ReadCheckpoint(argv[2]);
    if (!checkpoint.ok()) return Fail(checkpoint.status());
    std::cout << Describe(*checkpoint).dump() << "\n";
    return 0;
  }
  if (command == "convert" && (argc == 4 || (argc == 5 && std::string(argv[4]) == "--keep-vars"))) {
    absl::StatusOr<Checkpoint> checkpoint = paramd::io::ReadCheckpoint(argv[2]);
    if (!checkpoint.ok()) return Fail(checkpoint.status());
    const paramd::io::CheckpointFormat format = paramd::io::FormatForSave(argv[3]);
    paramd::io::SaveInput input;
    input.keep_vars = argc == 5;
    // One slot object per stored tensor, as a module tree has one per Parameter.
    std::map<std::tuple<const paramd::core::Storage*, int64_t, paramd::core::Shape,
                        paramd::core::Shape>,
             std::shared_ptr<paramd::core::TensorSlot>>
        slots;
    for (const auto& entry : checkpoint->entries) {
      const auto& t = entry.tensor;
      auto& slot = slots[{t.storage().get(), t.offset(), t.shape(), t.strides()}];
      if (slot == nullptr) {
        if (entry.is_parameter) {
          slot = std::make_shared<paramd::core::Parameter>(t, entry.requires_grad);
        } else {
          slot = std::make_shared<paramd::core::Buffer>(t);
        }
      }
      input.state_dict.entries.push_back({entry.name, t, slot, entry.is_parameter});
    }
    if (checkpoint->module_versions) input.state_dict.metadata = *checkpoint->module_versions;
    absl::Status saved = paramd::io::SaveCheckpoint(argv[3], format, input);
    if (!saved.ok()) return Fail(saved);
    return 0;
  }
  std::cerr << "usage: ckpt_probe read FILE | ckpt_probe convert IN OUT [--keep-vars]\n";
  return 2;
}
