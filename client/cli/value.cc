#include "client/cli/value.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace paramd::cli {
namespace {

using client::DType;
using client::HostTensor;

bool IsIntegral(DType dtype) {
  return dtype == DType::kInt64 || dtype == DType::kInt32 || dtype == DType::kInt16 ||
         dtype == DType::kInt8 || dtype == DType::kUInt8;
}

// Walks nested lists depth-first: records the shape from the first element at each depth
// and checks every other list against it; collects the leaves in C order.
absl::Status Walk(const nlohmann::json& node, size_t depth, std::vector<int64_t>* shape,
                  bool* shape_fixed, std::vector<const nlohmann::json*>* leaves) {
  if (!node.is_array()) {
    if (!*shape_fixed) {
      *shape_fixed = true;
    } else if (depth != shape->size()) {
      return absl::InvalidArgumentError(
          "the value's lists are ragged: every list at one depth must have the same length");
    }
    if (!node.is_number() && !node.is_boolean() &&
        !(node.is_string() && (node == "nan" || node == "inf" || node == "-inf"))) {
      return absl::InvalidArgumentError(
          absl::StrCat("the value holds ", node.dump(), ", which is not a number or boolean"));
    }
    leaves->push_back(&node);
    return absl::OkStatus();
  }
  const int64_t size = static_cast<int64_t>(node.size());
  if (!*shape_fixed) {
    if (depth == shape->size()) shape->push_back(size);
    if (size == 0) *shape_fixed = true;
  }
  if (*shape_fixed && (depth >= shape->size() || (*shape)[depth] != size)) {
    return absl::InvalidArgumentError(
        "the value's lists are ragged: every list at one depth must have the same length");
  }
  for (const nlohmann::json& child : node) {
    if (absl::Status status = Walk(child, depth + 1, shape, shape_fixed, leaves); !status.ok()) {
      return status;
    }
  }
  if (size == 0 && depth + 1 != shape->size()) {
    return absl::InvalidArgumentError(
        "the value's lists are ragged: every list at one depth must have the same length");
  }
  return absl::OkStatus();
}

double LeafDouble(const nlohmann::json& leaf) {
  if (leaf.is_boolean()) return leaf.get<bool>() ? 1.0 : 0.0;
  if (leaf.is_string()) {
    if (leaf == "nan") return std::nan("");
    return leaf == "inf" ? INFINITY : -INFINITY;
  }
  return leaf.get<double>();
}

template <typename T>
void StoreInt(int64_t value, char* out) {
  const T narrowed = static_cast<T>(value);
  std::memcpy(out, &narrowed, sizeof(T));
}

void StoreInteger(DType dtype, int64_t value, char* out) {
  switch (dtype) {
    case DType::kInt64:
      return StoreInt<int64_t>(value, out);
    case DType::kInt32:
      return StoreInt<int32_t>(value, out);
    case DType::kInt16:
      return StoreInt<int16_t>(value, out);
    case DType::kInt8:
      return StoreInt<int8_t>(value, out);
    case DType::kUInt8:
      return StoreInt<uint8_t>(value, out);
    default:
      return;
  }
}

template <typename T>
T LoadAs(const char* in) {
  T value;
  std::memcpy(&value, in, sizeof(T));
  return value;
}

nlohmann::json Element(const HostTensor& tensor, size_t index, const std::vector<double>& doubles) {
  const char* in = tensor.data.data() + index * client::ElementSize(tensor.dtype);
  switch (tensor.dtype) {
    case DType::kInt64:
      return LoadAs<int64_t>(in);
    case DType::kInt32:
      return LoadAs<int32_t>(in);
    case DType::kInt16:
      return LoadAs<int16_t>(in);
    case DType::kInt8:
      return LoadAs<int8_t>(in);
    case DType::kUInt8:
      return LoadAs<uint8_t>(in);
    case DType::kBool:
      return LoadAs<uint8_t>(in) != 0;
    default:
      break;
  }
  const double value = doubles[index];
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  return value;
}

nlohmann::json Nest(const HostTensor& tensor, size_t dim, size_t* next,
                    const std::vector<double>& doubles) {
  if (dim == tensor.shape.size()) return Element(tensor, (*next)++, doubles);
  nlohmann::json list = nlohmann::json::array();
  for (int64_t i = 0; i < tensor.shape[dim]; ++i) {
    list.push_back(Nest(tensor, dim + 1, next, doubles));
  }
  return list;
}

}  // namespace

absl::StatusOr<HostTensor> ParseValueJson(absl::string_view text, DType dtype) {
  const nlohmann::json value =
      nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (value.is_discarded()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text,
                     "' is not JSON; write a number (1.5), a boolean (true) or nested lists "
                     "([[1, 2], [3, 4]])"));
  }
  std::vector<int64_t> shape;
  bool shape_fixed = false;
  std::vector<const nlohmann::json*> leaves;
  if (absl::Status status = Walk(value, 0, &shape, &shape_fixed, &leaves); !status.ok()) {
    return status;
  }

  bool all_integers = IsIntegral(dtype);
  for (const nlohmann::json* leaf : leaves) {
    all_integers = all_integers && leaf->is_number_integer();
  }
  if (all_integers) {
    HostTensor tensor;
    tensor.dtype = dtype;
    tensor.shape = std::move(shape);
    const size_t size = client::ElementSize(dtype);
    tensor.data.resize(leaves.size() * size);
    for (size_t i = 0; i < leaves.size(); ++i) {
      const int64_t element = leaves[i]->is_number_unsigned()
                                  ? static_cast<int64_t>(leaves[i]->get<uint64_t>())
                                  : leaves[i]->get<int64_t>();
      StoreInteger(dtype, element, tensor.data.data() + i * size);
    }
    return tensor;
  }
  std::vector<double> doubles;
  doubles.reserve(leaves.size());
  for (const nlohmann::json* leaf : leaves) doubles.push_back(LeafDouble(*leaf));
  return HostTensor::FromDoubles(dtype, std::move(shape), doubles);
}

nlohmann::json TensorValuesJson(const HostTensor& tensor) {
  const std::vector<double> doubles = tensor.ToDoubles();
  if (tensor.data.size() != tensor.nbytes()) return nlohmann::json(nullptr);
  size_t next = 0;
  return Nest(tensor, 0, &next, doubles);
}

}  // namespace paramd::cli
