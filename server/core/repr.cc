#include "server/core/repr.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "server/core/layers/layer.h"

namespace paramd::core {
namespace {

// torch.nn.modules.module._addindent: every line after the first gets `spaces` spaces.
std::string AddIndent(const std::string& text, int spaces) {
  std::vector<std::string> lines = absl::StrSplit(text, '\n');
  if (lines.size() == 1) return text;
  const std::string pad(static_cast<size_t>(spaces), ' ');
  std::string out(lines[0]);
  for (size_t i = 1; i < lines.size(); ++i) absl::StrAppend(&out, "\n", pad, lines[i]);
  return out;
}

std::string ChildRepr(const std::shared_ptr<Module>& child) {
  return child == nullptr ? "None" : Repr(*child);
}

// ModuleList.__repr__: consecutive children with equal reprs collapse into one line. The
// labels are positions in the list, and the layer's extra_repr is not printed.
std::string ModuleListRepr(const Module& module) {
  if (module.children().empty()) return absl::StrCat(module.type(), "()");
  std::vector<std::string> reprs;
  for (const auto& [name, child] : module.children()) reprs.push_back(ChildRepr(child));

  std::vector<std::string> lines;
  size_t start = 0;
  while (start < reprs.size()) {
    size_t end = start;
    while (end + 1 < reprs.size() && reprs[end + 1] == reprs[start]) ++end;
    const std::string line =
        start == end
            ? absl::StrCat("(", start, "): ", reprs[start])
            : absl::StrCat("(", start, "-", end, "): ", end - start + 1, " x ", reprs[start]);
    lines.push_back(AddIndent(line, 2));
    start = end + 1;
  }
  return absl::StrCat(module.type(), "(\n  ", absl::StrJoin(lines, "\n  "), "\n)");
}

}  // namespace

std::string Repr(const Module& module) {
  const LayerDef* layer = module.layer();
  if (layer != nullptr && layer->type == "ModuleList") return ModuleListRepr(module);

  std::vector<std::string> extra_lines;
  if (layer != nullptr && layer->extra_repr != nullptr) {
    const std::string extra = layer->extra_repr(module);
    // `if extra_repr:` skips the empty string, which split would turn into one empty line.
    if (!extra.empty()) extra_lines = absl::StrSplit(extra, '\n');
  }
  std::vector<std::string> child_lines;
  for (const auto& [name, child] : module.children()) {
    child_lines.push_back(absl::StrCat("(", name, "): ", AddIndent(ChildRepr(child), 2)));
  }

  std::string out = absl::StrCat(module.type(), "(");
  if (extra_lines.size() == 1 && child_lines.empty()) {
    out += extra_lines[0];
  } else if (!extra_lines.empty() || !child_lines.empty()) {
    std::vector<std::string> lines = std::move(extra_lines);
    lines.insert(lines.end(), child_lines.begin(), child_lines.end());
    absl::StrAppend(&out, "\n  ", absl::StrJoin(lines, "\n  "), "\n");
  }
  out += ")";
  return out;
}

}  // namespace paramd::core
