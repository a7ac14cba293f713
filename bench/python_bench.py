"""The Python client's transfer speed against raw grpcio, measured in the same run.

    python bench/python_bench.py --paramd build/server/main/paramd [--gib 1] [--runs 3]
    python bench/python_bench.py --target 127.0.0.1:50051

Pulls and pushes a 1 GiB state_dict (16 float32 tensors of 64 MiB) through the paramd
package and through "raw grpcio": the same RPCs (StateDict, SetTensors) called from Python
with pass-through bytes (de)serializers and the same 1 MiB chunks, where the pull keeps the
received messages without looking into them and the push sends frames serialized before
the clock starts. Raw grpcio is so the ceiling of any Python client over grpcio; the
package's figure is printed as a ratio to it (target >= 0.8). Each figure is the median of
--runs runs, package and raw alternating. Beside the wall-clock ratio it prints the client
process's CPU seconds and their ratio, which a loaded machine disturbs less.

Then the peak RSS growth of five repeated ``state_dict(out=...)`` pulls into warm tensors
(target <= four chunks + 64 MiB), from the kernel's high-water mark reset before them.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

import numpy as np

import paramd
from paramd import _wire
from paramd.v1 import parameters_pb2

TENSOR_SHAPE = (16384, 1024)  # 64 MiB of float32
CHUNK = _wire.CHUNK_BYTES


def start_daemon(binary: str, root: str,
                 extra: Sequence[str] = ()) -> tuple[subprocess.Popen[bytes], str]:
    log_path = os.path.join(root, "paramd.log")
    log = open(log_path, "w")
    process = subprocess.Popen([binary, "--listen", "127.0.0.1:0", "--data-dir",
                                os.path.join(root, "data"), "--snapshot-interval", "0",
                                *extra], stderr=log)
    for _ in range(1500):
        match = re.search(r"listen=(\S+)", open(log_path).read())
        if match:
            return process, match.group(1)
        time.sleep(0.02)
    raise RuntimeError("paramd did not start:\n" + open(log_path).read())


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds (all its threads) of one call."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paramd", help="the paramd binary to start on a loopback port")
    parser.add_argument("--target", help="an already running daemon instead")
    parser.add_argument("--gib", type=int, default=1, help="GiB of state_dict (default 1)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    args = parser.parse_args()
    if not args.paramd and not args.target:
        parser.error("give --paramd BINARY or --target HOST:PORT")

    daemon = None
    root = tempfile.mkdtemp(prefix="python-bench-")
    target = args.target
    if args.paramd:
        daemon, target = start_daemon(args.paramd, root)
    try:
        return run(target, args.gib, args.runs)
    finally:
        if daemon is not None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)


def run(target: str, gib: int, runs: int) -> int:
    count = 16 * gib
    names = [f"p{i}" for i in range(count)]
    nbytes = count * int(np.prod(TENSOR_SHAPE)) * 4
    client = paramd.connect(target)
    name = f"python-bench-{os.getpid()}"
    model = client.create(name, {"type": "Bench", "parameters": [
        {"name": n, "shape": list(TENSOR_SHAPE)} for n in names]})
    channel = client._channel  # the same channel: raw grpcio shares its connection
    try:
        raw_pull = channel.unary_stream(
            "/paramd.v1.Parameters/StateDict",
            request_serializer=parameters_pb2.StateDictRequest.SerializeToString,
            response_deserializer=lambda data: data)
        raw_push = channel.stream_unary(
            "/paramd.v1.Parameters/SetTensors", request_serializer=lambda data: data,
            response_deserializer=parameters_pb2.WriteResponse.FromString)
        request = parameters_pb2.StateDictRequest(model=name)

        def raw_pull_once() -> None:
            received = 0
            for message in raw_pull(request):
                received += len(message)
            assert received >= nbytes

        # Push data: distinct values so nothing is special-cased.
        values = {n: np.full(TENSOR_SHAPE, i, np.float32) for i, n in enumerate(names)}
        frames = list(_wire.write_frames(parameters_pb2.WriteOptions(model=name), [
            (_wire.header_of(n, out), out) for n, out in
            ((n, paramd._tensors.to_wire(v)) for n, v in values.items())]))

        def raw_push_once() -> None:
            raw_push(iter(frames))

        out = model.state_dict(as_numpy=True)  # warm destination tensors

        def package_pull_out() -> None:
            model.state_dict(out=out)

        def package_pull_new() -> None:
            model.state_dict(as_numpy=True)

        def package_push() -> None:
            model.update(values)

        raw_pull_once()  # warm the connection
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in (
            "raw pull", "pull out=", "pull new", "raw push", "push")}
        for _ in range(runs):
            results["raw pull"].append(timed(raw_pull_once))
            results["pull out="].append(timed(package_pull_out))
            results["pull new"].append(timed(package_pull_new))
            results["raw push"].append(timed(raw_push_once))
            results["push"].append(timed(package_push))
        del frames
        assert all((out[n] == i).all() for i, n in enumerate(names))

        # Peak RSS growth over five pulls into warm tensors.
        model.state_dict(out=out)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        base = status_kib("VmRSS")
        for _ in range(5):
            model.state_dict(out=out)
        growth = (status_kib("VmHWM") - base) * 1024
    finally:
        client.delete(name)
        client.close()

    med = {k: statistics.median(wall for wall, _ in v) for k, v in results.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in results.items()}
    gbs = {k: nbytes / v / 1e9 for k, v in med.items()}
    print(f"python_bench: {nbytes / 2**30:.0f} GiB state_dict, {count} tensors, "
          f"{CHUNK >> 20} MiB chunks, median of {runs}")
    print(f"{'transfer':<34}{'GB/s':>8}{'ratio':>8}{'CPU s':>8}{'ratio':>8}")
    rows = [("pull, raw grpcio (bytes, no copy)", "raw pull", "raw pull"),
            ("pull, state_dict(out=...)", "pull out=", "raw pull"),
            ("pull, state_dict() (new tensors)", "pull new", "raw pull"),
            ("push, raw grpcio (pre-serialized)", "raw push", "raw push"),
            ("push, update({...})", "push", "raw push")]
    for label, key, base_key in rows:
        print(f"{label:<34}{gbs[key]:>8.2f}{med[base_key] / med[key]:>8.2f}"
              f"{cpu[key]:>8.2f}{cpu[base_key] / cpu[key]:>8.2f}")
    limit = 4 * CHUNK + (64 << 20)
    print(f"peak RSS growth, 5 x state_dict(out=...): {growth / 2**20:.1f} MiB "
          f"(target <= {limit / 2**20:.0f} MiB)")
    ok = med["raw pull"] / med["pull out="] >= 0.8 and med["raw push"] / med["push"] >= 0.8 \
        and growth <= limit
    print("targets met" if ok else "targets NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
