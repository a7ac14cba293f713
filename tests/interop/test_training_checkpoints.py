"""Training checkpoints with real PyTorch (docs/training.md, "Training checkpoints"): the
file torch users write, torch.save({"model": model.state_dict(), "optimizer":
optimizer.state_dict()}, f), moves both ways. torch trains an MLP with Adam for 10 steps and
saves; paramd loads the file into a model and an existing Adam optimizer; 20 more steps of
the same gradients (torch's autograd on the same batches, pushed to paramd) agree with torch
continuing from the same file within torch.testing.assert_close(rtol=1e-5, atol=1e-6). And
the reverse: a file paramd writes loads with torch.load(weights_only=True) into
torch.optim.Adam(...).load_state_dict and continues identically."""

import os
import pathlib
import sys

import torch
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "client" / "python" / "src"))
import paramd  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6
SPEC = {"type": "Sequential", "children": [
    {"type": "Linear", "args": {"in_features": 64, "out_features": 128}},
    {"type": "ReLU"},
    {"type": "Linear", "args": {"in_features": 128, "out_features": 10}}]}


def torch_model():
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def batches(count, seed):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(32, 64, generator=generator),
             torch.randint(0, 10, (32,), generator=generator)) for _ in range(count)]


def gradients(module, x, y):
    module.zero_grad()
    nn.functional.cross_entropy(module(x), y).backward()
    return {n: p.grad.detach().clone() for n, p in module.named_parameters()}


def single_tensor(optimizer):
    """torch's single-tensor step, the one paramd computes (docs/training.md)."""
    for group in optimizer.param_groups:
        group["foreach"] = False
    return optimizer


def continue_both(remote, remote_optimizer, module, optimizer, data):
    """The same gradients (torch's, from `module`) step torch and paramd."""
    for x, y in data:
        grads = gradients(module, x, y)
        remote_optimizer.zero_grad()
        remote_optimizer.push(grads)
        remote_optimizer.step()
        optimizer.step()
    state = remote.state_dict()
    for name, parameter in module.named_parameters():
        torch.testing.assert_close(state[name], parameter.detach(), rtol=RTOL, atol=ATOL)


def test_a_torch_training_checkpoint_continues_in_paramd(daemon):
    torch.manual_seed(0)
    module = torch_model()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3, foreach=False)
    data = batches(30, seed=1)
    for x, y in data[:10]:
        gradients(module, x, y)
        optimizer.step()
    path = os.path.join(daemon.checkpoint_dir, "torch-run.pt")
    os.makedirs(daemon.checkpoint_dir, exist_ok=True)
    # Other keys of the dict (an epoch) are left alone, as torch users' own code reads them.
    torch.save({"model": module.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 1},
               path)

    with paramd.connect(daemon.address) as client:
        remote = client.create("mlp", SPEC, seed=5)
        remote_optimizer = client.create_optimizer("adam", "mlp", "Adam", lr=0.5)
        daemon.paramctl("load", "mlp", "torch-run.pt", "--optimizer", "adam")
        # The file's hyperparameters replaced the optimizer's, as load_state_dict does.
        assert remote_optimizer.state_dict()["param_groups"] == \
            optimizer.state_dict()["param_groups"]

        reference = torch_model()
        reference_optimizer = torch.optim.Adam(reference.parameters())
        checkpoint = torch.load(path, weights_only=True)
        reference.load_state_dict(checkpoint["model"])
        single_tensor(reference_optimizer).load_state_dict(checkpoint["optimizer"])
        single_tensor(reference_optimizer)
        continue_both(remote, remote_optimizer, reference, reference_optimizer, data[10:])


def test_a_paramd_training_checkpoint_continues_in_torch(daemon):
    data = batches(30, seed=2)
    with paramd.connect(daemon.address) as client:
        remote = client.create("mlp", SPEC, seed=3)
        remote_optimizer = client.create_optimizer("adam", "mlp", "Adam", lr=1e-3, foreach=False)
        worker = torch_model()
        for x, y in data[:10]:
            worker.load_state_dict(remote.state_dict())
            remote_optimizer.zero_grad()
            remote_optimizer.push(gradients(worker, x, y))
            remote_optimizer.step()
        daemon.paramctl("save", "mlp", "paramd-run.pt", "--optimizer", "adam")

        checkpoint = torch.load(os.path.join(daemon.checkpoint_dir, "paramd-run.pt"),
                                weights_only=True)
        assert list(checkpoint) == ["model", "optimizer"]
        module = torch_model()
        module.load_state_dict(checkpoint["model"])
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-3, foreach=False)
        # torch 2.15's layout exactly: every key its own state_dict() writes.
        expected = optimizer.state_dict()
        assert list(checkpoint["optimizer"]) == list(expected)
        assert list(checkpoint["optimizer"]["param_groups"][0]) == \
            list(expected["param_groups"][0])
        assert checkpoint["optimizer"]["param_groups"] == expected["param_groups"]
        step = checkpoint["optimizer"]["state"][0]["step"]
        assert step.dtype == torch.float32 and step.dim() == 0 and float(step) == 10.0
        optimizer.load_state_dict(checkpoint["optimizer"])
        continue_both(remote, remote_optimizer, module, single_tensor(optimizer), data[10:])


def test_sgd_without_momentum_saves_an_empty_state(daemon):
    with paramd.connect(daemon.address) as client:
        remote = client.create("mlp", SPEC)
        remote_optimizer = client.create_optimizer("sgd", "mlp", "SGD", lr=0.1)
        remote_optimizer.push({n: torch.ones_like(t) for n, t in remote.state_dict().items()})
        remote_optimizer.step()
        daemon.paramctl("save", "mlp", "sgd.pt", "--optimizer", "sgd")
    checkpoint = torch.load(os.path.join(daemon.checkpoint_dir, "sgd.pt"), weights_only=True)
    module = torch_model()
    expected = torch.optim.SGD(module.parameters(), lr=0.1).state_dict()
    assert checkpoint["optimizer"] == expected


def test_a_saved_state_lists_parameters_in_the_order_torch_does(daemon):
    """torch's state_dict()["state"] follows the order the parameters got their state."""
    with paramd.connect(daemon.address) as client:
        remote = client.create("mlp", SPEC, seed=4)
        remote_optimizer = client.create_optimizer("adam", "mlp", "Adam", lr=1e-3, foreach=False)
        module = torch_model()
        module.load_state_dict(remote.state_dict())
        optimizer = torch.optim.Adam(module.parameters(), lr=1e-3, foreach=False)
        for (x, y), names in zip(batches(2, seed=5), (["2.weight"], None)):
            grads = gradients(module, x, y)
            if names is not None:
                grads = {n: g for n, g in grads.items() if n in names}
                for n, p in module.named_parameters():
                    p.grad = grads.get(n)
            remote_optimizer.push(grads)
            remote_optimizer.step()
            remote_optimizer.zero_grad()
            optimizer.step()
        daemon.paramctl("save", "mlp", "order.pt", "--optimizer", "adam")
    checkpoint = torch.load(os.path.join(daemon.checkpoint_dir, "order.pt"), weights_only=True)
    assert list(optimizer.state_dict()["state"]) == [2, 0, 1, 3]
    assert list(checkpoint["optimizer"]["state"]) == list(optimizer.state_dict()["state"])
