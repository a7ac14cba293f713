#include "client/cli/region.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace paramd::cli {
namespace {

absl::StatusOr<int64_t> ParseInt(absl::string_view text, absl::string_view whole) {
  int64_t value = 0;
  if (!absl::SimpleAtoi(text, &value)) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' in '", whole,
                     "' is not an integer; write an index like 0 or -1, or a slice like 1:3"));
  }
  return value;
}

absl::StatusOr<Subscript> ParseSubscript(absl::string_view text, absl::string_view whole) {
  text = absl::StripAsciiWhitespace(text);
  if (text.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("empty subscript in '", whole, "'; write an index, a slice, or ':'"));
  }
  std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  Subscript subscript;
  if (parts.size() == 1) {
    absl::StatusOr<int64_t> index = ParseInt(text, whole);
    if (!index.ok()) return index.status();
    subscript.is_index = true;
    subscript.index = *index;
    return subscript;
  }
  if (parts.size() > 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", text, "' in '", whole, "' has a step; only start:stop slices are supported"));
  }
  const absl::string_view start = absl::StripAsciiWhitespace(parts[0]);
  const absl::string_view stop = absl::StripAsciiWhitespace(parts[1]);
  if (!start.empty()) {
    absl::StatusOr<int64_t> value = ParseInt(start, whole);
    if (!value.ok()) return value.status();
    subscript.start = *value;
  }
  if (!stop.empty()) {
    absl::StatusOr<int64_t> value = ParseInt(stop, whole);
    if (!value.ok()) return value.status();
    subscript.stop = *value;
  }
  return subscript;
}

// Python's slice clamping of one bound on a dimension of `size`.
int64_t ClampBound(int64_t bound, int64_t size) {
  if (bound < 0) bound += size;
  return std::clamp<int64_t>(bound, 0, size);
}

}  // namespace

bool KeyRegion::NeedsShape() const {
  for (const Subscript& s : subscripts) {
    if (s.is_index) {
      if (s.index < 0) return true;
    } else if (!s.start || !s.stop || *s.start < 0 || *s.stop < 0) {
      return true;
    }
  }
  return false;
}

absl::StatusOr<KeyRegion> ParseKeyRegion(absl::string_view text) {
  KeyRegion out;
  const size_t open = text.find('[');
  if (open == absl::string_view::npos) {
    if (text.find(']') != absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat("'", text, "' has ']' without '['"));
    }
    out.key = std::string(text);
  } else {
    if (text.back() != ']' || text.find('[', open + 1) != absl::string_view::npos ||
        text.find(']') != text.size() - 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", text, "' is not KEY[SUBSCRIPTS]; write e.g. 0.weight[0,1:3]"));
    }
    out.key = std::string(text.substr(0, open));
    const absl::string_view inside = text.substr(open + 1, text.size() - open - 2);
    if (absl::StripAsciiWhitespace(inside).empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", text, "' has empty brackets; leave them out to address the whole tensor"));
    }
    for (absl::string_view part : absl::StrSplit(inside, ',')) {
      absl::StatusOr<Subscript> subscript = ParseSubscript(part, text);
      if (!subscript.ok()) return subscript.status();
      out.subscripts.push_back(*subscript);
    }
  }
  if (out.key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' names no tensor; write a key such as 0.weight"));
  }
  return out;
}

absl::StatusOr<client::Region> ResolveRegion(const std::vector<Subscript>& subscripts,
                                             const std::vector<int64_t>& shape) {
  if (subscripts.size() > shape.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("too many indices for tensor of dimension ", shape.size()));
  }
  client::Region region;
  for (size_t dim = 0; dim < subscripts.size(); ++dim) {
    const Subscript& s = subscripts[dim];
    const int64_t size = shape[dim];
    if (s.is_index) {
      const int64_t index = s.index < 0 ? s.index + size : s.index;
      if (index < 0 || index >= size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "index ", s.index, " is out of bounds for dimension ", dim, " with size ", size));
      }
      region.emplace_back(index, index + 1);
      continue;
    }
    const int64_t start = s.start ? ClampBound(*s.start, size) : 0;
    const int64_t stop = s.stop ? ClampBound(*s.stop, size) : size;
    region.emplace_back(start, std::max(start, stop));
  }
  return region;
}

absl::StatusOr<client::Region> ResolveRegionWithoutShape(const std::vector<Subscript>& subscripts) {
  client::Region region;
  for (const Subscript& s : subscripts) {
    if (s.is_index && s.index >= 0) {
      region.emplace_back(s.index, s.index + 1);
    } else if (!s.is_index && s.start && s.stop && *s.start >= 0 && *s.stop >= 0) {
      region.emplace_back(*s.start, std::max(*s.start, *s.stop));
    } else {
      return absl::InvalidArgumentError(
          "an open or negative subscript needs the tensor's shape to resolve");
    }
  }
  return region;
}

std::vector<int64_t> RegionShape(const client::Region& region, const std::vector<int64_t>& shape) {
  std::vector<int64_t> out = shape;
  for (size_t dim = 0; dim < region.size() && dim < out.size(); ++dim) {
    out[dim] = region[dim].second - region[dim].first;
  }
  return out;
}

std::string RegionString(const client::Region& region) {
  return absl::StrCat("[",
                      absl::StrJoin(region, ", ",
                                    [](std::string* out, const std::pair<int64_t, int64_t>& range) {
                                      absl::StrAppend(out, range.first, ":", range.second);
                                    }),
                      "]");
}

}  // namespace paramd::cli
