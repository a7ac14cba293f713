"""Training interop with real PyTorch (docs/training.md): paramd's optimizers against
torch.optim's single-tensor (foreach=False) ones. Both sides get the same gradients (torch's
autograd on torch's copy of the model) for 100 steps; the parameters agree within
torch.testing.assert_close(rtol=1e-5, atol=1e-6). optimizer.state_dict() moves both ways:
paramd's loads into torch.optim.X(...).load_state_dict and continues identically, and
torch's loads into paramd."""

import pathlib
import sys

import pytest
import torch
from torch import nn

# The Python client from this checkout (the interop environment may hold an older install).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "client" / "python" / "src"))
import paramd  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6
SPEC = {"type": "Sequential", "children": [
    {"type": "Linear", "args": {"in_features": 8, "out_features": 16}},
    {"type": "Tanh"},
    {"type": "Linear", "args": {"in_features": 16, "out_features": 4}}]}

CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, weight_decay=0.01, maximize=True)),
    ("Adam", dict(lr=1e-2)),
    ("Adam", dict(lr=1e-2, amsgrad=True, weight_decay=0.01)),
    ("Adam", dict(lr=1e-2, betas=(0.3, 0.99), maximize=True)),
    ("AdamW", dict(lr=1e-2)),
    ("AdamW", dict(lr=1e-2, weight_decay=0.05, amsgrad=True)),
]


def torch_model():
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))


@pytest.fixture
def client(daemon):
    with paramd.connect(daemon.address) as c:
        yield c


class Trainer:
    """A torch model and optimizer, and the paramd model and optimizer they mirror."""

    def __init__(self, client, name, kind, kwargs, groups=None, seed=0, mode="manual"):
        self.client, self.name = client, name
        self.remote = client.create(name, SPEC, seed=seed)
        self.module = torch_model()
        self.module.load_state_dict(self.remote.state_dict())
        params = self.module.parameters() if groups is None else [
            dict(g, params=[dict(self.module.named_parameters())[n] for n in g["params"]])
            for g in groups]
        self.optimizer = getattr(torch.optim, kind)(params, foreach=False, **kwargs)
        self.remote_optimizer = client.create_optimizer(name, name, kind, groups, foreach=False,
                                                        mode=mode, **kwargs)
        self.mode, self.round = mode, 0
        self.generator = torch.Generator().manual_seed(seed + 1)

    def gradients(self):
        """One batch through torch's model; its gradients, by name."""
        self.optimizer.zero_grad()
        x = torch.randn(32, 8, generator=self.generator)
        y = torch.randn(32, 4, generator=self.generator)
        nn.functional.mse_loss(self.module(x), y).backward()
        return {n: p.grad.detach().clone() for n, p in self.module.named_parameters()}

    def step(self, steps):
        for _ in range(steps):
            grads = self.gradients()
            if self.mode == "asynchronous":  # the push steps
                self.round = self.remote_optimizer.push(grads, round=self.round).round
            else:
                self.remote_optimizer.zero_grad()
                self.remote_optimizer.push(grads)
                self.remote_optimizer.step()
            self.optimizer.step()

    def compare(self):
        """Asserts agreement; returns the largest absolute and relative differences."""
        remote = self.remote.state_dict()
        worst_abs = worst_rel = 0.0
        for n, p in self.module.named_parameters():
            torch.testing.assert_close(remote[n], p.detach(), rtol=RTOL, atol=ATOL)
            diff = (remote[n] - p.detach()).abs()
            worst_abs = max(worst_abs, float(diff.max()))
            worst_rel = max(worst_rel, float((diff / p.detach().abs().clamp_min(1e-3)).max()))
        return worst_abs, worst_rel


@pytest.mark.parametrize("kind,kwargs", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_hundred_steps_match_torch_optim(client, kind, kwargs):
    trainer = Trainer(client, f"train-{kind.lower()}-{abs(hash(str(kwargs))) % 10**6}", kind, kwargs)
    trainer.step(100)
    worst_abs, worst_rel = trainer.compare()
    print(f"\n{kind}{kwargs}: 100 steps, max |diff| {worst_abs:.3g}, max rel {worst_rel:.3g}")


def test_asynchronous_pushes_step_as_torch_optim_does(client):
    trainer = Trainer(client, "async", "Adam", dict(lr=1e-2, amsgrad=True), mode="asynchronous")
    trainer.step(30)
    assert trainer.round == 30
    trainer.compare()


def test_param_groups_and_a_scheduler_match_torch_optim(client):
    groups = [{"params": ["0.weight", "0.bias"], "lr": 0.1, "momentum": 0.5},
              {"params": ["2.weight", "2.bias"]}]
    trainer = Trainer(client, "groups", "SGD", dict(lr=0.05, momentum=0.9), groups)
    for epoch in range(4):
        trainer.step(25)
        lr = 0.05 * 0.5 ** (epoch + 1)
        trainer.optimizer.param_groups[1]["lr"] = lr
        trainer.remote_optimizer.set_hyperparameters(group=1, lr=lr)
    trainer.compare()


def test_state_dict_of_paramd_continues_in_torch(client):
    trainer = Trainer(client, "to-torch", "Adam", dict(lr=1e-2, amsgrad=True))
    trainer.step(10)
    state = trainer.remote_optimizer.state_dict()
    reference = trainer.optimizer.state_dict()
    assert state["param_groups"] == reference["param_groups"]
    assert state["state"].keys() == reference["state"].keys()
    for index, values in reference["state"].items():
        assert list(state["state"][index]) == list(values)
        for key, value in values.items():
            assert state["state"][index][key].dtype == value.dtype
            torch.testing.assert_close(state["state"][index][key], value, rtol=RTOL, atol=ATOL)
    # A fresh torch optimizer on paramd's weights, loaded from paramd's state.
    trainer.module.load_state_dict(trainer.remote.state_dict())
    fresh = torch.optim.Adam(trainer.module.parameters(), foreach=False)
    fresh.load_state_dict(state)
    for group in fresh.param_groups:
        group["foreach"] = False
    trainer.optimizer = fresh
    trainer.step(20)
    trainer.compare()


def test_state_dict_of_torch_continues_in_paramd(client):
    trainer = Trainer(client, "from-torch", "AdamW", dict(lr=1e-2, weight_decay=0.02))
    for _ in range(10):  # torch alone
        trainer.gradients()
        trainer.optimizer.step()
    trainer.remote.load_state_dict(trainer.module.state_dict())
    trainer.remote_optimizer.load_state_dict(trainer.optimizer.state_dict())
    assert trainer.remote_optimizer.state_dict()["param_groups"] == \
        trainer.optimizer.state_dict()["param_groups"]
    trainer.step(20)
    trainer.compare()


def test_a_torch_error_text_and_nothing_changed(client):
    client.create("tied-errors", SPEC)
    with pytest.raises(paramd.InvalidArgument,
                       match="some parameters appear in more than one parameter group"):
        client.create_optimizer("dup", "tied-errors", "SGD",
                                [{"params": ["0.weight"]}, {"params": ["0.weight"]}])
    with pytest.raises(paramd.InvalidArgument, match="Invalid learning rate: -1.0"):
        client.create_optimizer("neg", "tied-errors", "Adam", lr=-1.0)
    assert client.optimizers("tied-errors") == []


def outcome(call):
    """None when `call` returns, else the text of what it raised."""
    try:
        call()
    except Exception as e:  # noqa: BLE001 - torch's and paramd's refusals are compared
        return str(e)
    return None


NAN = float("nan")
# (kind, keyword arguments, param groups or None): torch checks only the keyword arguments,
# with its own comparisons (SGD's `lr < 0.0` lets NaN through, Adam's `not 0.0 <= lr` does
# not), and the fused ones after the groups.
CONSTRUCTOR_CASES = [
    ("SGD", dict(lr=0.1), [{"params": ["0.weight"], "lr": -1.0},
                           {"params": ["0.bias"], "nesterov": True}]),
    ("Adam", dict(), [{"params": ["0.weight"], "betas": (1.5, 0.9), "eps": -1.0}]),
    ("SGD", dict(lr=NAN, momentum=NAN, weight_decay=NAN), None),
    ("SGD", dict(lr=-0.5), None),
    ("Adam", dict(lr=NAN), None),
    ("AdamW", dict(eps=NAN), None),
    ("Adam", dict(betas=(0.9, 1.0)), None),
    ("SGD", dict(fused=True, differentiable=True), None),
    ("Adam", dict(fused=True, differentiable=True), None),
    ("AdamW", dict(fused=True, foreach=True), None),
    ("SGD", dict(fused=True, differentiable=True),
     [{"params": ["0.weight"]}, {"params": ["0.weight"]}]),
    ("SGD", dict(), [{"params": ["0.weight"], "fused": True, "foreach": True,
                      "differentiable": True}]),
    ("AdamW", dict(decoupled_weight_decay=False), None),
]


@pytest.mark.parametrize("kind,kwargs,groups", CONSTRUCTOR_CASES,
                         ids=[f"{k}-{i}" for i, (k, _, _) in enumerate(CONSTRUCTOR_CASES)])
def test_hyperparameters_are_refused_where_torch_refuses_them(client, kind, kwargs, groups):
    client.create("checks", SPEC)
    named = dict(torch_model().named_parameters())
    params = list(named.values()) if groups is None else [
        dict(g, params=[named[n] for n in g["params"]]) for g in groups]
    expected = outcome(lambda: getattr(torch.optim, kind)(params, **kwargs))
    actual = outcome(lambda: client.create_optimizer("checks", "checks", kind, groups, **kwargs))
    # paramd may add which parameter it means, in parentheses after torch's text.
    assert actual == expected or actual.startswith(f"{expected} (")
    assert [o.name for o in client.optimizers()] == ([] if expected else ["checks"])


def test_writes_and_loads_torch_leaves_unchecked_train_as_torchs_do(client):
    trainer = Trainer(client, "unchecked", "AdamW", dict(lr=1e-2, weight_decay=0.1))
    trainer.step(3)
    # A scheduler's write of a negative lr, and AdamW's decoupled_weight_decay turned off.
    for group in trainer.optimizer.param_groups:
        group.update(lr=-0.1, decoupled_weight_decay=False)
    trainer.remote_optimizer.set_hyperparameters(lr=-0.1, decoupled_weight_decay=False)
    trainer.step(3)
    trainer.compare()
    # A loaded negative lr is taken; AdamW's load makes decoupled_weight_decay True again.
    state = trainer.optimizer.state_dict()
    state["param_groups"][0]["lr"] = -0.5
    trainer.optimizer.load_state_dict(state)
    trainer.remote_optimizer.load_state_dict(state)
    assert trainer.remote_optimizer.state_dict()["param_groups"] == \
        trainer.optimizer.state_dict()["param_groups"]
    trainer.step(3)
    trainer.compare()


def test_a_second_beta_past_one_fails_the_step_as_torchs_does(client):
    groups = [{"params": ["0.weight", "0.bias", "2.weight", "2.bias"], "betas": (0.9, 1.5)}]
    trainer = Trainer(client, "beta2", "Adam", dict(lr=1e-2), groups)
    grads = trainer.gradients()
    version = trainer.remote.state_dict().version
    trainer.remote_optimizer.push(grads)
    expected = outcome(trainer.optimizer.step)
    assert expected is not None
    assert outcome(trainer.remote_optimizer.step) == expected
    assert trainer.remote.state_dict().version == version
    assert trainer.remote_optimizer.state_dict()["state"] == {}


def test_empty_parameter_lists_as_torchs(client):
    client.create("empty", SPEC)
    with pytest.raises(ValueError) as torch_error:
        torch.optim.SGD([], lr=0.1)
    with pytest.raises(ValueError) as paramd_error:
        client.create_optimizer("empty", "empty", "SGD", [], lr=0.1)
    assert str(paramd_error.value) == str(torch_error.value)
    assert client.optimizers() == []
    # A group with no parameters among others is a group, in torch and in paramd.
    groups = [{"params": [], "lr": 0.5}, {"params": ["0.weight", "0.bias", "2.weight", "2.bias"]}]
    trainer = Trainer(client, "empty-group", "SGD", dict(lr=0.05, momentum=0.9), groups)
    trainer.step(5)
    trainer.compare()
    assert trainer.remote_optimizer.state_dict()["param_groups"] == \
        trainer.optimizer.state_dict()["param_groups"]


def compare_state(trainer):
    """paramd's state_dict()["state"] is torch's, key for key."""
    state = trainer.remote_optimizer.state_dict()["state"]
    reference = trainer.optimizer.state_dict()["state"]
    assert state.keys() == reference.keys()
    for index, values in reference.items():
        assert list(state[index]) == list(values)
        for key, value in values.items():
            torch.testing.assert_close(state[index][key], value, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("kind,kwargs,switch", [
    ("SGD", dict(lr=0.05, momentum=0.9), ("momentum", 0.9, 0)),
    ("Adam", dict(lr=1e-2, amsgrad=True), ("amsgrad", True, False)),
], ids=["sgd-momentum", "adam-amsgrad"])
def test_state_a_step_does_not_use_is_kept_as_torchs(client, kind, kwargs, switch):
    key, on, off = switch
    trainer = Trainer(client, f"kept-{kind.lower()}", kind, kwargs)
    for value in (on, off, on):
        for group in trainer.optimizer.param_groups:
            group[key] = value
        trainer.remote_optimizer.set_hyperparameters(**{key: value})
        trainer.step(3)
        trainer.compare()
        compare_state(trainer)


def test_amsgrad_without_its_state_fails_the_step_as_torchs_key_error(client):
    trainer = Trainer(client, "keyerror", "Adam", dict(lr=1e-2))
    trainer.step(2)
    for group in trainer.optimizer.param_groups:
        group["amsgrad"] = True
    trainer.remote_optimizer.set_hyperparameters(amsgrad=True)
    grads = trainer.gradients()
    trainer.remote_optimizer.push(grads)
    state = trainer.remote_optimizer.state_dict()
    version = trainer.remote.state_dict().version
    with pytest.raises(KeyError) as raised:
        trainer.optimizer.step()
    with pytest.raises(paramd.FailedPrecondition) as refused:
        trainer.remote_optimizer.step()
    assert f"torch raises KeyError: {raised.value}" in str(refused.value)
    assert "parameter '0.weight'" in str(refused.value)
    assert trainer.remote.state_dict().version == version
    after = trainer.remote_optimizer.state_dict()
    for index, values in state["state"].items():
        for key, value in values.items():
            assert torch.equal(after["state"][index][key], value)
    trainer.compare()
    compare_state(trainer)


@pytest.mark.parametrize("kind,kwargs,write", [
    ("SGD", dict(lr=0.05, momentum=0.9), dict(lr=1e39)),
    ("SGD", dict(lr=0.05), dict(weight_decay=1e39)),
    ("SGD", dict(lr=0.05, momentum=0.9), dict(momentum=1e39)),  # unchecked: steps to inf
    ("Adam", dict(lr=1e-2), dict(lr=1e38)),  # lr / (1 - beta1^t) past the range
    ("AdamW", dict(lr=1e-2), dict(weight_decay=-1e39)),  # unchecked: steps to inf
], ids=["sgd-lr", "sgd-weight-decay", "sgd-momentum", "adam-lr", "adamw-weight-decay"])
def test_scalars_past_floats_range_fail_the_step_where_torchs_does(client, kind, kwargs, write):
    trainer = Trainer(client, "overflow", kind, kwargs)
    trainer.step(1)
    for group in trainer.optimizer.param_groups:
        group.update(write)
    trainer.remote_optimizer.set_hyperparameters(**write)
    trainer.remote_optimizer.zero_grad()
    trainer.remote_optimizer.push(trainer.gradients())
    version = trainer.remote.state_dict().version
    expected = outcome(trainer.optimizer.step)
    actual = outcome(trainer.remote_optimizer.step)
    assert actual == expected
    if expected is None:
        trainer.compare()
    else:
        assert trainer.remote.state_dict().version == version


def test_state_is_listed_in_the_order_torch_lists_it(client):
    trainer = Trainer(client, "order", "Adam", dict(lr=1e-2))
    # 2.bias gets its state first, then 0.weight, then the rest.
    for names in (["2.bias"], ["0.weight", "2.bias"], None):
        grads = trainer.gradients()
        for n, p in trainer.module.named_parameters():
            if names is not None and n not in names:
                p.grad = None
        trainer.remote_optimizer.zero_grad()
        trainer.remote_optimizer.push({n: g for n, g in grads.items()
                                       if names is None or n in names})
        trainer.remote_optimizer.step()
        trainer.optimizer.step()
    reference = trainer.optimizer.state_dict()
    assert list(reference["state"]) == [3, 0, 1, 2]
    assert list(trainer.remote_optimizer.state_dict()["state"]) == list(reference["state"])
    trainer.compare()
    # A loaded state keeps its order, in torch and in paramd.
    reordered = {"state": {k: reference["state"][k] for k in (1, 3, 2, 0)},
                 "param_groups": reference["param_groups"]}
    trainer.optimizer.load_state_dict(reordered)
    trainer.remote_optimizer.load_state_dict(reordered)
    assert list(trainer.remote_optimizer.state_dict()["state"]) == \
        list(trainer.optimizer.state_dict()["state"]) == [1, 3, 2, 0]


def test_param_group_keys_come_in_torchs_order(client):
    groups = [{"params": ["0.weight", "0.bias"], "weight_decay": 0.5, "lr": 0.2},
              {"params": ["2.weight", "2.bias"]}]
    trainer = Trainer(client, "keys", "Adam", dict(lr=1e-2), groups)
    trainer.step(2)

    def keys(state_dict):
        return [list(group) for group in state_dict["param_groups"]]

    reference = trainer.optimizer.state_dict()
    assert keys(trainer.remote_optimizer.state_dict()) == keys(reference)
    # A load keeps the loaded order, and __setstate__ appends the keys it fills.
    loaded = {"state": reference["state"], "param_groups": [
        {k: group[k] for k in reversed(list(group)) if k not in ("amsgrad", "fused")}
        for group in reference["param_groups"]]}
    trainer.optimizer.load_state_dict(loaded)
    trainer.remote_optimizer.load_state_dict(loaded)
    assert keys(trainer.remote_optimizer.state_dict()) == keys(trainer.optimizer.state_dict())
    trainer.step(2)
    trainer.compare()
