"""The peers of bench/checkpoint_bench: torch.save / torch.load and safetensors'
save_file / load_file on the same tensors (64 float32 vectors, the i-th filled with i + 1),
in the same directory, measured the way checkpoint_bench measures paramd.

    checkpoint_peers.py TOTAL_BYTES DIR

Sets up (imports, the tensors, one untimed round), prints one line of JSON naming the
versions (or {"skipped": ...} without torch), then runs one timed round for each line read
from standard input and answers each with a line of JSON: that round's seconds per case,
peak RSS of each load above its process's baseline (KiB), the file sizes, and the largest
fraction of a file still cached after an eviction so far. checkpoint_bench asks for a round
after each of its own, so that paramd and its peers meet the disk in the same state: this
VM's disk drifts between runs by a factor of two or more. Saves end with flush + os.fsync
of the file; torch.save and save_file do not rename or sync the directory, which paramd's
atomic save also does. Loads read a file evicted from the page cache (posix_fadvise
DONTNEED) in a forked child, so that the parent's tensors do not count in its RSS, then
read one float of every 4 KiB page of every tensor, as checkpoint_bench does.
"""

import ctypes
import json
import os
import resource
import sys
import time

TENSORS = 64
PAGE = 4096

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def resident_fraction(path):
    """Fraction of the file's pages in the page cache (mincore)."""
    size = os.path.getsize(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        # PROT_READ, MAP_SHARED: mapping alone faults nothing in.
        addr = _libc.mmap(None, size, 1, 1, fd, 0)
    finally:
        os.close(fd)
    if addr in (None, ctypes.c_void_p(-1).value):
        return -1.0
    pages = (size + PAGE - 1) // PAGE
    vec = ctypes.create_string_buffer(pages)
    ok = _libc.mincore(addr, size, vec) == 0
    _libc.munmap(addr, size)
    return sum(b & 1 for b in vec.raw) / pages if ok else -1.0


worst_resident = 0.0


def evict(path):
    global worst_resident
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    worst_resident = max(worst_resident, resident_fraction(path))


def max_rss_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def touch(state_dict):
    # One float per 4 KiB page and the last: every page of a mapped file comes in.
    total = 0.0
    for tensor in state_dict.values():
        flat = tensor.reshape(-1)
        total += float(flat[:: PAGE // 4].sum()) + float(flat[-1])
    return total


def in_child(load):
    """Runs load() in a forked child; returns its times and peak RSS growth."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            # The child starts with the parent's resident pages; only growth is the load's.
            baseline = max_rss_kib()
            t0 = time.perf_counter()
            loaded = load()
            load_s = time.perf_counter() - t0
            rss_load = max_rss_kib() - baseline
            touch(loaded)
            touch_s = time.perf_counter() - t0
            report = {"load_s": load_s, "touch_s": touch_s, "rss_load_kib": rss_load,
                      "rss_touch_kib": max_rss_kib() - baseline}
        except BaseException as error:  # reported to the parent, which fails loudly
            report = {"error": repr(error)}
        os.write(write_end, json.dumps(report).encode())
        os._exit(0)
    os.close(write_end)
    chunks = []
    while True:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    report = json.loads(b"".join(chunks) or b'{"error": "the load child died"}')
    if "error" in report:
        raise RuntimeError(report["error"])
    return report


def main():
    total, directory = int(sys.argv[1]), sys.argv[2]
    try:
        import torch
        import safetensors
        import safetensors.torch
    except ImportError as error:
        print(json.dumps({"skipped": f"no torch: {error}"}), flush=True)
        return
    # One thread, as paramd (and the CPU this process is pinned to).
    torch.set_num_threads(1)

    numel = total // TENSORS // 4
    state_dict = {f"layers.{i}.weight": torch.full((numel,), float(i + 1), dtype=torch.float32)
                  for i in range(TENSORS)}
    pt_path = os.path.join(directory, "torch.pt")
    st_path = os.path.join(directory, "peer.safetensors")

    def torch_save():
        with open(pt_path, "wb") as f:
            torch.save(state_dict, f)
            f.flush()
            os.fsync(f.fileno())

    def st_save():
        safetensors.torch.save_file(state_dict, st_path)
        fd = os.open(st_path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    saves = {"torch_save": (pt_path, torch_save), "st_save": (st_path, st_save)}
    loads = {
        "torch_load": (pt_path, lambda: torch.load(pt_path, weights_only=True)),
        "torch_load_mmap": (pt_path, lambda: torch.load(pt_path, weights_only=True, mmap=True)),
        "st_load": (st_path, lambda: safetensors.torch.load_file(st_path)),
    }

    # Imports and first-call set-up happen here, in the parent, not in a measured child.
    small = {"w": torch.ones(4)}
    torch.save(small, os.path.join(directory, "warm.pt"))
    safetensors.torch.save_file(small, os.path.join(directory, "warm.safetensors"))
    touch(torch.load(os.path.join(directory, "warm.pt"), weights_only=True))
    touch(torch.load(os.path.join(directory, "warm.pt"), weights_only=True, mmap=True))
    touch(safetensors.torch.load_file(os.path.join(directory, "warm.safetensors")))

    # Each save replaces its own file removed just before, as checkpoint_bench does: the
    # write then reuses the page-cache memory its previous version freed instead of touching
    # never-used memory, which is slow in this VM. One untimed round first, for that reason.
    def one_round():
        out = {}
        for name, (path, save) in saves.items():
            if os.path.exists(path):
                os.unlink(path)
            os.sync()  # no writeback of an earlier step is billed to this save
            t0 = time.perf_counter()
            save()
            out[f"{name}_s"] = time.perf_counter() - t0
        for name, (path, load) in loads.items():
            evict(path)
            report = in_child(load)
            out[f"{name}_s"] = report["load_s"]
            out[f"{name}_touch_s"] = report["touch_s"]
            out[f"{name}_rss_load_kib"] = report["rss_load_kib"]
            out[f"{name}_rss_touch_kib"] = report["rss_touch_kib"]
            out[f"{name}_file_bytes"] = os.path.getsize(path)
        out["worst_resident"] = worst_resident
        return out

    one_round()
    print(json.dumps({"torch": torch.__version__, "safetensors": safetensors.__version__}),
          flush=True)
    for _ in sys.stdin:
        print(json.dumps(one_round()), flush=True)


if __name__ == "__main__":
    main()
