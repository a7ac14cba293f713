"""Data-parallel training end to end (docs/training.md, issue 15 item 7): two worker processes
(digits_worker.py, real torch) train an MLP (64-128-10) on scikit-learn's bundled digits
through paramd.

Synchronous mode, SGD(lr=0.1, momentum=0.9): each step's batch of 64 is split 32 + 32 across
the workers; paramd averages their gradients (DistributedDataParallel's mean), so training
reproduces single-process torch from the same initial weights on the same batches: the mean of
the two workers' losses equals torch's loss on the whole batch within 1e-5 relative, every
step. Asynchronous mode, Adam(lr=1e-3): each push steps alone. Both reach >= 0.9 test
accuracy."""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "client" / "python" / "src"))
import paramd  # noqa: E402

import digits_worker  # noqa: E402
from digits_worker import SPEC, batches, digits, mlp  # noqa: E402

WORKER = pathlib.Path(digits_worker.__file__).resolve()
WORKERS, BATCH = 2, 64


@pytest.fixture
def client(daemon):
    with paramd.connect(daemon.address) as c:
        yield c


def train_remotely(address, name, steps, batch):
    """Runs the two worker processes to the end; each one's per-step losses."""
    processes = [subprocess.Popen(
        [sys.executable, str(WORKER), address, name, name, str(index), str(WORKERS), str(steps),
         str(batch)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1")) for index in range(WORKERS)]
    losses = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, f"worker failed:\n{err}"
        losses.append(json.loads(out))
    return losses


def accuracy(state_dict):
    _, _, x_test, y_test = digits()
    module = mlp()
    module.load_state_dict(state_dict)
    with torch.no_grad():
        return float((module(x_test).argmax(1) == y_test).float().mean())


def test_synchronous_sgd_reproduces_single_process_torch(client, daemon):
    torch.manual_seed(0)
    steps = 50
    model = client.create("digits-sync", SPEC, seed=0)
    client.create_optimizer("digits-sync", "digits-sync", "SGD", mode="synchronous",
                            workers=WORKERS, lr=0.1, momentum=0.9)
    initial = model.state_dict()
    # Single-process torch from paramd's initial weights on the same batches of 64.
    x, y, _, _ = digits()
    reference = mlp()
    reference.load_state_dict(initial)
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, foreach=False)
    expected = []
    for indices in batches(len(x), BATCH, steps):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(reference(x[indices]), y[indices])
        loss.backward()
        optimizer.step()
        expected.append(loss.item())

    losses = train_remotely(daemon.address, "digits-sync", steps, BATCH)
    assert [len(w) for w in losses] == [steps] * WORKERS
    # Each worker's loss is the mean over its 32 rows: their mean is the batch's mean.
    combined = [sum(step) / WORKERS for step in zip(*losses)]
    worst = max(abs(c - e) / abs(e) for c, e in zip(combined, expected))
    print(f"\nsynchronous SGD, {steps} steps: largest relative loss difference {worst:.3g}; "
          f"loss {expected[0]:.4f} -> {expected[-1]:.4f}")
    for step, (c, e) in enumerate(zip(combined, expected)):
        assert c == pytest.approx(e, rel=1e-5), f"step {step}: paramd {c}, torch {e}"
    assert client.optimizer("digits-sync").info().steps == steps
    final = model.state_dict()
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(final[name], value, rtol=1e-4, atol=1e-5)
    acc = accuracy(final)
    print(f"synchronous SGD test accuracy {acc:.4f}")
    assert acc >= 0.9


def test_asynchronous_adam_reaches_the_accuracy(client, daemon):
    steps = 200  # per worker: 400 steps of Adam in all, each on one worker's 32 rows
    model = client.create("digits-async", SPEC, seed=0)
    client.create_optimizer("digits-async", "digits-async", "Adam", mode="asynchronous",
                            max_staleness=4, lr=1e-3)
    losses = train_remotely(daemon.address, "digits-async", steps, BATCH)
    assert [len(w) for w in losses] == [steps] * WORKERS
    assert client.optimizer("digits-async").info().steps == WORKERS * steps
    acc = accuracy(model.state_dict())
    print(f"\nasynchronous Adam, {WORKERS} x {steps} pushes: test accuracy {acc:.4f}")
    assert acc >= 0.9
