// An insertion-ordered map from name to value, as Python's dict keeps PyTorch's module
// registries: re-assigning a name keeps its position; erasing and re-adding appends.
// Not thread-safe.
#pragma once

#include "absl/strings/string_view.h"
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace paramd::core {

template <typename V>
class OrderedMap {
 public:
  using Entry = std::pair<std::string, V>;

  bool contains(absl::string_view key) const { return index_.contains(key); }
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }
  auto begin() const { return entries_.begin(); }
  auto end() const { return entries_.end(); }

  // The value for `key`, or null when absent.
  const V* Find(absl::string_view key) const {
    auto it = index_.find(key);
    return it == index_.end() ? nullptr : &entries_[it->second].second;
  }

  // Sets `key`, keeping its position if present.
  void Set(absl::string_view key, V value) {
    auto it = index_.find(key);
    if (it != index_.end()) {
      entries_[it->second].second = std::move(value);
      return;
    }
    index_.emplace(std::string(key), entries_.size());
    entries_.emplace_back(std::string(key), std::move(value));
  }

  bool Erase(absl::string_view key) {
    auto it = index_.find(key);
    if (it == index_.end()) return false;
    entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(it->second));
    index_.clear();
    for (size_t i = 0; i < entries_.size(); ++i) index_.emplace(entries_[i].first, i);
    return true;
  }

 private:
  std::vector<Entry> entries_;
  absl::flat_hash_map<std::string, size_t> index_;
};

}  // namespace paramd::core
