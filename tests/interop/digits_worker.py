"""The digits MLP of test_data_parallel.py and one data-parallel worker that trains it through
paramd, in a process of its own:

    python digits_worker.py ADDRESS MODEL OPTIMIZER INDEX WORKERS STEPS BATCH

The worker pulls paramd's weights into its own nn.Module, computes the gradients of its share
of each step's batch (rows INDEX * BATCH / WORKERS onwards) with autograd, and pushes them with
paramd.Worker; it prints its loss of every step as a JSON list. A push that paramd refuses as
too stale (asynchronous mode) is computed again on fresh weights.
"""

from __future__ import annotations

import json
import pathlib
import sys

import torch
from torch import nn

# The Python client from this checkout (the interop environment may hold an older install).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "client" / "python" / "src"))
import paramd  # noqa: E402

SPEC = {"type": "Sequential", "children": [
    {"type": "Linear", "args": {"in_features": 64, "out_features": 128}},
    {"type": "ReLU"},
    {"type": "Linear", "args": {"in_features": 128, "out_features": 10}}]}


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's bundled digits (no download): a fixed, stratified 75/25 split, the
    pixels (0..16) scaled to 0..1."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=0,
                                                        stratify=y)
    def pixels(a):
        return torch.tensor(a, dtype=torch.float32) / 16
    return pixels(x_train), torch.tensor(y_train), pixels(x_test), torch.tensor(y_test)


def batches(rows: int, batch: int, steps: int, seed: int = 0) -> list[torch.Tensor]:
    """Each step's row indices: consecutive slices of seeded permutations, one per epoch."""
    generator = torch.Generator().manual_seed(seed)
    out: list[torch.Tensor] = []
    order, position = torch.randperm(rows, generator=generator), 0
    while len(out) < steps:
        if position + batch > rows:
            order, position = torch.randperm(rows, generator=generator), 0
        out.append(order[position:position + batch])
        position += batch
    return out


def main() -> None:
    address, model, optimizer = sys.argv[1:4]
    index, workers, steps, batch = (int(a) for a in sys.argv[4:8])
    torch.set_num_threads(1)
    x, y, _, _ = digits()
    share = batch // workers
    module = mlp()
    losses = []
    with paramd.connect(address) as client:
        worker = paramd.Worker(client, model, optimizer, module, worker=f"worker-{index}")
        for indices in batches(len(x), batch, steps):
            mine = indices[index * share:(index + 1) * share]
            while True:
                worker.pull()
                module.zero_grad()
                loss = nn.functional.cross_entropy(module(x[mine]), y[mine])
                loss.backward()
                try:
                    worker.push()
                    break
                except paramd.VersionConflict:
                    continue  # too stale: again on the current weights
            losses.append(loss.item())
    print(json.dumps(losses))


if __name__ == "__main__":
    main()
