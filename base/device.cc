#include "base/device.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace paramd {

std::string Device::ToString() const {
  std::string name = is_cpu() ? "cpu" : "cuda";
  if (index >= 0) absl::StrAppend(&name, ":", index);
  return name;
}

absl::StatusOr<Device> ParseDevice(absl::string_view text) {
  const size_t colon = text.find(':');
  const absl::string_view type_name = text.substr(0, colon);
  Device device;
  if (type_name == "cpu") {
    device.type = DeviceType::kCPU;
  } else if (type_name == "cuda") {
    device.type = DeviceType::kCUDA;
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "Expected one of cpu, cuda device type at start of device string: ", text));
  }
  if (colon == absl::string_view::npos) return device;
  const absl::string_view index_text = text.substr(colon + 1);
  int index = 0;
  const bool digits_only =
      !index_text.empty() && index_text.find_first_not_of("0123456789") == absl::string_view::npos;
  if (!digits_only || !absl::SimpleAtoi(index_text, &index)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Invalid device string: '", text, "'; expected 'cpu', 'cuda' or 'cuda:N'"));
  }
  device.index = index;
  return device;
}

}  // namespace paramd
