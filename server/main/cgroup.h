// The memory limit a container or systemd unit sets on paramd's cgroup, so that
// --max-memory's default stays below what the kernel would kill the process at.
// Thread-safety: a plain function; it reads files only.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

namespace paramd::main {

// The smallest memory limit on the way from this process's cgroup up to `root`: cgroup v2's
// memory.max, or v1's memory.limit_in_bytes under ROOT/memory. The process's cgroup comes
// from `self_cgroup` (/proc/self/cgroup); in a container with its own cgroup namespace
// that is "/", and ROOT itself holds the limit. nullopt when no limit is set ("max", v1's
// near-2^63 "unlimited", or no such files).
std::optional<size_t> CgroupMemoryLimit(const std::string& root = "/sys/fs/cgroup",
                                        const std::string& self_cgroup = "/proc/self/cgroup");

}  // namespace paramd::main
