"""paramd's optimizer step and gradient push against their peers, measured in the same run.

    python bench/training_bench.py --paramd build/server/main/paramd [--gib 1] [--runs 5]

Step: an Adam step (lr=1e-3, every parameter with a gradient) on a float32 model of --gib
GiB (tensors of 64 MiB) held by paramd, against torch's fastest CPU Adam (``fused=True``)
on tensors of the same sizes in this process with as many threads as the daemon's CPU
backend uses (``torch.set_num_threads``, default 2), and torch's single-tensor Adam
(``foreach=False``, the arithmetic paramd reproduces) for reference. Both are also printed
as bytes moved per second, counting Adam's 28 bytes per element (parameter, gradient and
two moments read; parameter and moments written). The first step of each is untimed: it
creates the state. The step is timed from the client (the Step call's round trip).

Push: a 1 GiB gradient push through the ``paramd`` package (``RemoteOptimizer.push``)
against raw grpcio: the same PushGradients RPC on the same channel with frames serialized
before the clock starts and a pass-through serializer, the ceiling of any Python client
over grpcio. The daemon's work (adding into the gradients) is the same in both.

Each figure is the median of --runs runs, the two sides alternating.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from typing import Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from python_bench import start_daemon  # noqa: E402

import paramd  # noqa: E402
from paramd import _tensors, _wire  # noqa: E402
from paramd.v1 import training_pb2  # noqa: E402

TENSOR_SHAPE = (16384, 1024)  # 64 MiB of float32
ADAM_BYTES_PER_ELEMENT = 28


def cpu_name() -> str:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paramd", required=True, help="the paramd binary to start")
    parser.add_argument("--gib", type=int, default=1, help="GiB of parameters (default 1)")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch's threads (default 2)")
    parser.add_argument("--single-tensor", action="store_true",
                        help="also time torch's foreach=False Adam (slow)")
    args = parser.parse_args()

    root = tempfile.mkdtemp(prefix="training-bench-")
    # Parameters, gradients, two moments, and the step's new copies of three of them.
    memory = f"{8 * args.gib + 2}G"
    daemon, target = start_daemon(args.paramd, root, ["--max-memory", memory])
    try:
        return run(target, args)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)


def run(target: str, args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    count = 16 * args.gib
    names = [f"p{i}" for i in range(count)]
    numel = count * int(np.prod(TENSOR_SHAPE))
    nbytes = numel * 4
    moved = numel * ADAM_BYTES_PER_ELEMENT
    rng = np.random.default_rng(0)
    grads = {n: rng.standard_normal(TENSOR_SHAPE, dtype=np.float32) for n in names}

    client = paramd.connect(target)
    name = f"training-bench-{os.getpid()}"
    client.create(name, {"type": "Bench", "parameters": [
        {"name": n, "shape": list(TENSOR_SHAPE)} for n in names]})
    try:
        optimizer = client.create_optimizer(f"{name}-adam", name, "Adam", lr=1e-3)
        optimizer.push(grads)  # gradients stay until zero_grad: every step uses them
        optimizer.step()  # creates the state

        params = [torch.zeros(TENSOR_SHAPE) for _ in names]
        for p, n in zip(params, names):
            p.grad = torch.from_numpy(grads[n])
        fused = torch.optim.Adam(params, lr=1e-3, fused=True)
        fused.step()

        steps: dict[str, list[float]] = {"paramd": [], "torch fused": []}
        for _ in range(args.runs):
            steps["paramd"].append(seconds(optimizer.step))
            steps["torch fused"].append(seconds(fused.step))
        if args.single_tensor:
            single = torch.optim.Adam(params, lr=1e-3, foreach=False)
            single.step()
            steps["torch single-tensor"] = [seconds(single.step) for _ in range(args.runs)]
        del fused, params

        # Push: gradients accumulate (manual mode), so every push does the same work.
        channel = client._channel
        raw_push = channel.stream_unary(
            "/paramd.v1.Training/PushGradients", request_serializer=lambda data: data,
            response_deserializer=training_pb2.PushGradientsResponse.FromString)
        options = training_pb2.GradientFrame(options=training_pb2.GradientOptions(
            optimizer=optimizer.name)).SerializeToString()
        from paramd._training import _frames
        outgoing = [(_wire.header_of(n, out), out) for n, out in
                    ((n, _tensors.to_wire(v, name=n)) for n, v in grads.items())]
        frames = list(_frames(options, outgoing))
        pushes: dict[str, list[float]] = {"package": [], "raw": []}
        raw_push(iter(frames))  # warm
        for _ in range(args.runs):
            pushes["raw"].append(seconds(lambda: raw_push(iter(frames))))
            pushes["package"].append(seconds(lambda: optimizer.push(grads)))
        del frames
    finally:
        client.delete(name)
        client.close()

    med = {k: statistics.median(v) for k, v in steps.items()}
    push = {k: statistics.median(v) for k, v in pushes.items()}
    print(f"training_bench: {nbytes / 2**30:.0f} GiB float32 in {count} tensors, "
          f"{cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__} on "
          f"{args.threads} threads, load average {os.getloadavg()[0]:.1f}, "
          f"median of {args.runs}")
    print(f"{'Adam step':<32}{'ms':>8}{'GB/s moved':>12}{'paramd / it':>13}")
    for key, value in med.items():
        print(f"{key:<32}{value * 1e3:>8.0f}{moved / value / 1e9:>12.1f}"
              f"{value / med['paramd']:>13.2f}")
    print(f"{'gradient push':<32}{'ms':>8}{'GB/s':>12}{'/ raw':>13}")
    for key in ("raw", "package"):
        print(f"{key:<32}{push[key] * 1e3:>8.0f}{nbytes / push[key] / 1e9:>12.2f}"
              f"{push['raw'] / push[key]:>13.2f}")
    step_ratio = med["torch fused"] / med["paramd"]
    push_ratio = push["raw"] / push["package"]
    print(f"targets: Adam step >= 1.0 of torch fused ({step_ratio:.2f}), "
          f"push >= 0.9 of raw ({push_ratio:.2f}): "
          + ("met" if step_ratio >= 1.0 and push_ratio >= 0.9 else "NOT met"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
