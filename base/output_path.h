// Where a client writes a file it was told to write (paramctl's --out, the C++ client's
// Download): the checks made before any byte is fetched, and the file the bytes go into.
// Reentrant, no shared state.
//
// Note [Writing over special files]: a whole file is written as NAME.part and renamed over
// NAME, so that nobody sees half of it. Renaming over NAME replaces whatever NAME is, which
// is right for a regular file and wrong for anything else: a symlink would lose its link
// (and its target stay as it was), a device or a FIFO would be replaced by a regular file
// and get no byte. np.save and torch.save open NAME and write into it; so do we, as far as
// the part file allows:
// - a symlink (a chain of them, or one that leads nowhere yet) is followed, and the part
//   is written next to the file it leads to and renamed over that: the link stays;
// - an existing NAME that is not a regular file (a character or block device, a FIFO, a
//   socket), and a name for an open descriptor (/dev/stdout, /dev/fd/N, /proc/self/fd/N),
//   is written straight into, in order, with no part and no rename. Nothing is atomic
//   there: a failed write leaves what was written. A descriptor's name is not opened but
//   the descriptor duplicated: opening /proc/self/fd/N checks the permissions of the pipe
//   or socket behind it, which may belong to someone else, or cannot be opened at all;
// - a directory, a name ending in '/', and an empty name are refused before anything is
//   fetched.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace paramd {

struct OutputPath {
  // The file the bytes go to: the name given, or the file its symlinks lead to.
  std::string path;
  // Not a regular file: write straight into `path`, in order, with no part file.
  bool in_place = false;
};

// The descriptor `name` stands for (1 for /dev/stdout, N for /dev/fd/N or /proc/self/fd/N);
// -1 when it names none.
int NamedDescriptor(const std::string& name);

// Resolves `name` as Note [Writing over special files] says. INVALID_ARGUMENT for an empty
// name, a name ending in '/', a directory, or a symlink loop, naming `name` and saying what
// to give instead; errno's code for a symlink that cannot be read.
absl::StatusOr<OutputPath> ResolveOutputPath(const std::string& name);

}  // namespace paramd
