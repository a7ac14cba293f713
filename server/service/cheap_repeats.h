// CheapRepeats: remembers, per model, the last forward that proved cheap, so that an exact
// repeat of it may run on gRPC's thread instead of the Executor (Note [Cheap repeats]).
//
// Ownership: holds models only weakly; an entry whose model was deleted never matches.
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/core/model.h"

namespace paramd::service {

// Note [Cheap repeats]
// Handing a forward from gRPC's thread to a worker and its answer back costs two thread
// wake-ups, about 20 us on a small VM: more than a whole forward of a small model. Heavy
// work must stay off gRPC's few callback threads (Note [Call admission]), but a forward's
// cost cannot be bounded from the spec alone (padding, pooling windows and programs make
// the work grow faster than the inputs). It can be known from experience: a forward's
// cost is fixed by the model's structure at one version, the mode and the inputs' shapes.
// So a forward that took at most `kCheapForward` on a worker is remembered by exactly those
// (model object, version, signature), and a call that repeats it runs inline, pinned to
// that version, so that a write landing in between sends the call back to a worker instead
// of running an unmeasured structure inline. Any write moves the version, so the next call
// is measured again on a worker. Inline runs are re-measured too: one that turns out slow
// (a noisy machine) forgets the entry.
class CheapRepeats {
 public:
  static constexpr absl::Duration kCheapForward = absl::Microseconds(200);
  // Past this many models the memory is cleared rather than grown (a flood of model names
  // must not grow it without bound).
  static constexpr size_t kMaxEntries = 4096;

  // The version at which `model` last ran a forward with `signature` within kCheapForward,
  // or 0 when there is none.
  uint64_t CheapVersion(const std::shared_ptr<core::Model>& model,
                        const std::string& signature) const;

  // Records a forward of `model` at `version` with `signature` that took `took`: a cheap
  // one is remembered, a slow one forgets what was remembered for the model.
  void Record(const std::shared_ptr<core::Model>& model, uint64_t version,
              const std::string& signature, absl::Duration took);

 private:
  struct Entry {
    std::weak_ptr<core::Model> model;
    uint64_t version = 0;
    std::string signature;
  };

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);  // by model name
};

}  // namespace paramd::service
