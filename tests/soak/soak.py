"""A bounded soak of the real daemon: random mixed traffic from several clients, then a
restart that must bring back every model exactly as last acknowledged.

Each client owns its models (so it knows their exact content at every acknowledged
version) and reads everyone's. Operations, chosen at random from a printed seed: create,
whole and region writes, reads (checked against what the owner knows), saves and loads of
checkpoints, forwards, training steps (an optimizer of the model's own, SGD with momentum,
Adam or AdamW: gradients pushed, a step, the result read back), deletes, snapshots, and
cancelled calls (a write stream cut off half-way, a read abandoned). Under --max-memory the daemon may refuse work with
RESOURCE_EXHAUSTED; a refused call must change nothing, which the owner checks.

At the end: the daemon's peak RSS (VmHWM) must stay under --max-memory plus a documented
constant (docs/daemon.md, "Memory"), SIGTERM must exit 0, and after a restart every model
must hold the content (by SHA-256) and version its owner last had acknowledged, and every
optimizer of a model still there its state_dict as it was before the stop.

  soak.py PARAMD [--seconds S] [--clients N] [--seed SEED] [--max-memory MIB]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from typing import Any, Iterator, Optional

import numpy as np

import paramd
from paramd import _wire
from paramd.v1 import checkpoints_pb2, parameters_pb2

# What the daemon may hold beyond --max-memory, --max-transport-memory (gRPC's buffers of
# calls in flight) and its own resident size when idle (its libraries' code and buffers,
# measured at start): the pages of checkpoint files mapped by loads in progress and the
# allocator's bookkeeping (docs/daemon.md, "Memory").
RSS_ALLOWANCE_MIB = 128


class Daemon:
    def __init__(self, binary: str, data_dir: str, log_path: str, max_memory_mib: int,
                 max_transport_mib: int) -> None:
        self.binary, self.data_dir, self.log_path = binary, data_dir, log_path
        self.max_memory_mib, self.max_transport_mib = max_memory_mib, max_transport_mib
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.address = ""

    def start(self) -> None:
        log = open(self.log_path, "a")
        start = os.path.getsize(self.log_path)
        self.process = subprocess.Popen(
            [self.binary, "--listen", "127.0.0.1:0", "--data-dir", self.data_dir,
             "--max-memory", f"{self.max_memory_mib}M",
             "--max-transport-memory", f"{self.max_transport_mib}M", "--snapshot-interval", "7"],
            stderr=log)
        deadline = time.time() + 60
        while time.time() < deadline:
            with open(self.log_path) as f:
                f.seek(start)
                match = re.search(r"\blisten=(\S+)", f.read())
            if match:
                self.address = match.group(1)
                return
            if self.process.poll() is not None:
                sys.exit("paramd exited at start:\n" + open(self.log_path).read()[-4000:])
            time.sleep(0.02)
        sys.exit("paramd did not start")

    def peak_rss_mib(self) -> int:
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
        return -1

    def rss_parts_mib(self) -> tuple[int, int]:
        """(RssAnon, RssFile + RssShmem) now, in MiB."""
        assert self.process is not None
        anon = file = 0
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    anon = int(line.split()[1]) // 1024
                elif line.startswith(("RssFile:", "RssShmem:")):
                    file += int(line.split()[1]) // 1024
        return anon, file

    def stop(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=120)


def digest(state: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(np.ascontiguousarray(state[name]).tobytes())
    return h.hexdigest()


def optimizer_digest(state: dict[str, Any]) -> str:
    """SHA-256 of an optimizer's state_dict: its groups as text, its state's tensors' bytes."""
    h = hashlib.sha256(repr(state["param_groups"]).encode())
    for index in sorted(state["state"]):
        for key, value in sorted(state["state"][index].items()):
            h.update(f"{index}.{key}".encode())
            h.update(np.ascontiguousarray(np.asarray(value)).tobytes())
    return h.hexdigest()


def spec_for(rng: random.Random) -> dict[str, Any]:
    """A small MLP; now and then a large one that presses on the memory limit."""
    width = rng.choice([8, 64, 256]) if rng.random() < 0.9 else rng.choice([2048, 4096])
    return {"type": "MLP", "children": [
        {"name": "fc1", "type": "Linear", "args": {"in_features": 16, "out_features": width}},
        {"name": "act", "type": "ReLU"},
        {"name": "fc2", "type": "Linear", "args": {"in_features": width, "out_features": width}},
        {"name": "fc3", "type": "Linear", "args": {"in_features": width, "out_features": 4}}],
        "forward": ["fc1", "act", "fc2", "act", "fc3"]}


class Owner:
    """What one client knows of its own models: content and version as last acknowledged."""

    def __init__(self) -> None:
        self.content: dict[str, dict[str, np.ndarray]] = {}
        self.version: dict[str, int] = {}
        self.saved: dict[str, tuple[dict[str, np.ndarray], str]] = {}  # path -> (content, model)
        self.optimizers: dict[str, str] = {}  # model -> its optimizer


class Worker(threading.Thread):
    def __init__(self, index: int, seed: int, address: str, stop_at: float,
                 failures: list[str], counts: Counter[str]) -> None:
        super().__init__(name=f"client{index}")
        self.index, self.rng, self.stop_at = index, random.Random(seed), stop_at
        self.client = paramd.connect(address, timeout=60)
        self.owner = Owner()
        self.failures, self.counts = failures, counts
        self.address = address

    # --- checks -------------------------------------------------------------------------

    def fail(self, what: str) -> None:
        self.failures.append(f"client{self.index}: {what}")

    def pull(self, name: str) -> tuple[dict[str, np.ndarray], int]:
        state = self.client.model(name).state_dict(as_numpy=True)
        return {k: np.array(v) for k, v in state.items()}, state.version  # type: ignore[attr-defined]

    def check_unchanged(self, name: str, why: str) -> None:
        state, version = self.pull(name)
        if version != self.owner.version[name] or digest(state) != digest(self.owner.content[name]):
            self.fail(f"{why} changed {name}: version {self.owner.version[name]} -> {version}")

    # --- operations ---------------------------------------------------------------------

    def op_create(self) -> None:
        mine = [m for m in self.owner.content]
        if len(mine) >= 3:
            return self.op_delete()
        name = f"c{self.index}-{self.rng.randrange(1 << 30):x}"
        try:
            self.client.create(name, spec_for(self.rng), seed=self.rng.randrange(1000))
        except paramd.ResourceExhausted:
            self.counts["create refused (memory)"] += 1
            try:
                self.client.model(name).describe()
                self.fail(f"a refused create left model {name}")
            except paramd.NotFound:
                pass
            return
        self.owner.content[name], self.owner.version[name] = self.pull(name)

    def pick_mine(self) -> Optional[str]:
        mine = sorted(self.owner.content)
        return self.rng.choice(mine) if mine else None

    def op_write(self) -> None:
        name = self.pick_mine()
        if name is None:
            return self.op_create()
        content = self.owner.content[name]
        keys = self.rng.sample(sorted(content), self.rng.randint(1, len(content)))
        new = dict(content)
        items: list[tuple[str, Any, Any]] = []
        for key in keys:
            shape = content[key].shape
            if self.rng.random() < 0.5 and shape[0] > 1:
                stop = self.rng.randint(1, shape[0])
                value = np.full((stop,) + shape[1:], self.rng.uniform(-1, 1), np.float32)
                updated = content[key].copy()
                updated[:stop] = value
                items.append((key, (slice(0, stop),), value))
            else:
                updated = np.random.default_rng(self.rng.randrange(1 << 30)).standard_normal(
                    shape).astype(np.float32)
                items.append((key, None, updated))
            new[key] = updated
        try:
            version = self.client.model(name).update(items)
        except paramd.ResourceExhausted:
            self.counts["write refused (memory)"] += 1
            return self.check_unchanged(name, "a refused write")
        self.owner.content[name], self.owner.version[name] = new, version

    def op_cancelled_write(self) -> None:
        """A write stream that breaks off half-way must leave the model as it was."""
        name = self.pick_mine()
        if name is None:
            return
        model = self.client.model(name)
        content = self.owner.content[name]
        writes = [model._prepare_write(k, np.zeros_like(v), None) for k, v in content.items()]
        options = parameters_pb2.WriteOptions(model=name)
        frames = list(_wire.write_frames(options, writes, None))
        cut = self.rng.randint(1, max(1, len(frames) - 1))

        class WorkerDied(Exception):
            pass

        def broken() -> Iterator[bytes]:
            yield from frames[:cut]
            raise WorkerDied("the worker died mid-push")

        # gRPC cancels the call; the client raises the frames' own exception (or the
        # daemon's answer, when that came first).
        try:
            self.client._client_stream("/paramd.v1.Parameters/SetTensors", broken(),
                                       parameters_pb2.WriteResponse)
            self.fail(f"a write cut off after {cut} of {len(frames)} frames succeeded")
        except (WorkerDied, paramd.ParamdError):
            pass
        self.check_unchanged(name, "a cancelled write")

    def op_read(self) -> None:
        name = self.pick_mine()
        if name is not None and self.rng.random() < 0.7:
            state, version = self.pull(name)
            if version != self.owner.version[name] or digest(state) != digest(
                    self.owner.content[name]):
                self.fail(f"read of {name} at {version} differs from what was written")
            return
        # Someone else's model: any whole version will do, or NotFound if just deleted.
        others = [m.name for m in self.client.models()]
        if others:
            try:
                self.client.model(self.rng.choice(others)).state_dict(as_numpy=True)
            except paramd.NotFound:
                pass

    def op_abandoned_read(self) -> None:
        name = self.pick_mine()
        if name is None:
            return
        stream = self.client._server_stream(
            "/paramd.v1.Parameters/StateDict", parameters_pb2.StateDictRequest(model=name),
            _wire.decode_tensor_frame)
        next(stream, None)
        stream.close()  # cancels the call

    def op_forward(self) -> None:
        name = self.pick_mine()
        if name is None:
            return
        batch = self.rng.randint(1, 8)
        out = self.client.model(name).forward(np.ones((batch, 16), np.float32))
        if tuple(np.asarray(out).shape) != (batch, 4):
            self.fail(f"forward of {name} gave shape {np.asarray(out).shape}")

    def op_train(self) -> None:
        """Gradients for some of a model's tensors, then a step of its optimizer (made on
        first use): the model changes as the step says and nothing else changes it."""
        name = self.pick_mine()
        if name is None:
            return self.op_create()
        if name not in self.owner.optimizers:
            kind = self.rng.choice(["SGD", "Adam", "AdamW"])
            hyper: dict[str, Any] = {"lr": 0.01}
            if kind == "SGD":
                hyper["momentum"] = 0.9
            self.client.create_optimizer(f"o-{name}", name, kind, **hyper)
            self.owner.optimizers[name] = f"o-{name}"
        optimizer = self.client.optimizer(self.owner.optimizers[name])
        content = self.owner.content[name]
        keys = self.rng.sample(sorted(content), self.rng.randint(1, len(content)))
        values = np.random.default_rng(self.rng.randrange(1 << 30))
        optimizer.push({k: values.standard_normal(content[k].shape).astype(np.float32)
                        for k in keys})
        try:
            version = optimizer.step()
        except paramd.ResourceExhausted:
            self.counts["train refused (memory)"] += 1
            return self.check_unchanged(name, "a refused step")
        state, read_version = self.pull(name)
        if read_version != version:
            self.fail(f"the step of {name} answered version {version}, a read {read_version}")
        self.owner.content[name], self.owner.version[name] = state, version
        if self.rng.random() < 0.5:
            optimizer.zero_grad()

    def op_save(self) -> None:
        name = self.pick_mine()
        if name is None:
            return
        path = f"soak/c{self.index}/{name}-{self.owner.version[name]}" + self.rng.choice(
            [".pt", ".safetensors"])
        try:
            self.client.model(name).save(path)
        except paramd.ResourceExhausted:
            self.counts["save refused (memory)"] += 1
            return
        self.owner.saved[path] = (dict(self.owner.content[name]), name)

    def op_load(self) -> None:
        name = self.pick_mine()
        files = [p for p, (_, model) in self.owner.saved.items() if model == name]
        if name is None or not files:
            return self.op_save()
        path = self.rng.choice(files)
        try:
            self.client.model(name).load(path)
        except paramd.ResourceExhausted:
            self.counts["load refused (memory)"] += 1
            return self.check_unchanged(name, "a refused load")
        self.owner.content[name] = dict(self.owner.saved[path][0])
        self.owner.version[name] = self.client.model(name).version

    def op_delete(self) -> None:
        name = self.pick_mine()
        if name is None:
            return
        self.client.delete(name)
        del self.owner.content[name], self.owner.version[name]
        self.owner.optimizers.pop(name, None)

    def op_snapshot(self) -> None:
        self.client._unary("/paramd.v1.Checkpoints/Snapshot", checkpoints_pb2.SnapshotRequest(),
                           checkpoints_pb2.SnapshotResponse)

    OPS = [("create", 6), ("write", 30), ("cancelled_write", 6), ("read", 25),
           ("abandoned_read", 4), ("forward", 12), ("train", 8), ("save", 5), ("load", 5),
           ("delete", 3), ("snapshot", 2)]

    def run(self) -> None:
        names = [n for n, _ in self.OPS]
        weights = [w for _, w in self.OPS]
        while time.time() < self.stop_at and len(self.failures) < 20:
            op = self.rng.choices(names, weights)[0]
            try:
                getattr(self, "op_" + op)()
                self.counts[op] += 1
            except paramd.ResourceExhausted as error:
                self.counts[f"{op} refused (memory)"] += 1
                del error
            except Exception as error:  # anything else is a finding
                self.fail(f"{op}: {type(error).__name__}: {error}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("paramd")
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--max-memory", type=int, default=512, help="MiB")
    parser.add_argument("--max-transport-memory", type=int, default=128, help="MiB")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    print(f"soak: seed {seed} (rerun with --seed {seed}), {args.clients} clients, "
          f"{args.seconds:.0f} s, --max-memory {args.max_memory}M", flush=True)

    with tempfile.TemporaryDirectory(prefix="paramd-soak-") as root:
        daemon = Daemon(args.paramd, os.path.join(root, "data"), os.path.join(root, "paramd.log"),
                        args.max_memory, args.max_transport_memory)
        daemon.start()
        time.sleep(0.5)
        idle = daemon.peak_rss_mib()
        failures: list[str] = []
        counts: Counter[str] = Counter()
        stop_at = time.time() + args.seconds
        workers = [Worker(i, seed * 1000 + i, daemon.address, stop_at, failures, counts)
                   for i in range(args.clients)]
        for w in workers:
            w.start()
        most_anon = most_file = 0
        while any(w.is_alive() for w in workers):
            anon, file = daemon.rss_parts_mib()
            most_anon, most_file = max(most_anon, anon), max(most_file, file)
            time.sleep(0.02)
        for w in workers:
            w.join()
        # Every optimizer of a model still there, as it stands before the stop.
        client = paramd.connect(daemon.address, timeout=60)
        optimizers = {o: optimizer_digest(client.optimizer(o).state_dict())
                      for w in workers for o in w.owner.optimizers.values()}
        client.close()
        peak = daemon.peak_rss_mib()
        code = daemon.stop()
        print("soak: operations " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        bound = args.max_memory + args.max_transport_memory + idle + RSS_ALLOWANCE_MIB
        print(f"soak: peak RSS {peak} MiB (bound {bound}: --max-memory {args.max_memory} + "
              f"--max-transport-memory {args.max_transport_memory} + idle {idle} + "
              f"{RSS_ALLOWANCE_MIB} MiB); "
              f"SIGTERM exit {code}; sampled peaks: anonymous {most_anon} MiB, file-backed {most_file} MiB")
        if peak > bound:
            failures.append(f"peak RSS {peak} MiB over its bound of {bound} MiB")
        if code != 0:
            failures.append(f"SIGTERM exit status {code}")

        # The restart brings back every acknowledged model, whole.
        daemon.start()
        client = paramd.connect(daemon.address, timeout=60)
        expected = {name: (w.owner.content[name], w.owner.version[name])
                    for w in workers for name in w.owner.content}
        present = {m.name for m in client.models()}
        if present != set(expected):
            failures.append(f"after restart: models {sorted(present ^ set(expected))} differ")
        for name, (content, version) in sorted(expected.items()):
            if name not in present:
                continue
            state = client.model(name).state_dict(as_numpy=True)
            got = {k: np.array(v) for k, v in state.items()}
            if digest(got) != digest(content) or state.version != version:  # type: ignore[attr-defined]
                failures.append(
                    f"after restart: {name} is at version {state.version} "  # type: ignore[attr-defined]
                    f"with content {digest(got)[:12]}; acknowledged: version {version}, "
                    f"content {digest(content)[:12]}")
        for name, before in sorted(optimizers.items()):
            try:
                after = optimizer_digest(client.optimizer(name).state_dict())
            except paramd.NotFound:
                failures.append(f"after restart: optimizer {name} is gone")
                continue
            if after != before:
                failures.append(f"after restart: optimizer {name}'s state_dict differs")
        print(f"soak: restart restored {len(expected)} models and {len(optimizers)} optimizers")
        daemon.stop()
        if failures:
            print("soak: FAILED\n  " + "\n  ".join(failures[:40]))
            with open(daemon.log_path) as f:
                print("daemon log (tail):\n" + f.read()[-3000:])
            return 1
        print("soak: passed")
        return 0


if __name__ == "__main__":
    sys.exit(main())
