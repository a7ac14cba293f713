"""paramd against real torch: seed models both ways, load_state_dict errors identical to
torch's for the same mistake, from_torch / to_torch for every built-in type, ties and
shared modules."""

from __future__ import annotations

import copy
import os
from typing import Any

import grpc
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import paramd  # noqa: E402
from paramd.torch import UnsupportedModule, from_torch, spec_of, to_torch  # noqa: E402
from paramd.v1 import parameters_pb2  # noqa: E402
from conftest import SPECS, Daemon  # noqa: E402
from seed_models import MyModel, TiedLM  # noqa: E402


class MLP(nn.Module):
    """The seed's MLP (pytorch-semantics.md section 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear1 = nn.Linear(1, 2)
        self.w1 = torch.tensor([1.0], requires_grad=True)
        self.w2 = nn.Parameter(torch.tensor([2.0]))
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(2, 1)

    def forward(self, x: Any) -> Any:
        return self.linear2(self.relu(self.linear1(x)))


def shared_net() -> nn.Module:
    shared = nn.Linear(2, 2)
    return nn.Sequential(nn.Linear(1, 2), nn.ReLU(), shared, nn.ReLU(), shared)


def assert_same_state(local: nn.Module, remote: paramd.RemoteModel) -> None:
    mine = local.state_dict()
    theirs = remote.state_dict()
    assert list(mine) == list(theirs)
    assert list(mine._metadata) == list(theirs._metadata)
    for key in mine:
        assert mine[key].dtype == theirs[key].dtype, key
        assert torch.equal(mine[key], theirs[key]), key
    assert [n for n, _ in local.named_parameters()] == [n for n, _ in remote.named_parameters()]
    assert [n for n, _ in local.named_parameters(remove_duplicate=False)] == \
        [n for n, _ in remote.named_parameters(remove_duplicate=False)]
    assert [n for n, _ in local.named_buffers()] == [n for n, _ in remote.named_buffers()]
    assert [n for n, _ in local.named_modules()] == [n for n, _ in remote.named_modules()]
    assert [n for n, _ in local.named_children()] == [n for n, _ in remote.named_children()]
    assert repr(local) == repr(remote)


SEED_INPUTS = {
    "mlp": lambda: torch.randn(3, 1),
    "sequential": lambda: torch.randn(3, 1),
    "cnn": lambda: torch.randn(2, 1, 28, 28),
    "tied_sequential": lambda: torch.randn(3, 4),
}


@pytest.mark.parametrize("spec", ["mlp", "sequential", "cnn", "tied_embedding",
                                  "tied_sequential", "custom_linear"])
def test_seed_spec_to_torch_and_back(client: paramd.Client, name: str, spec: str) -> None:
    remote = client.create(name, SPECS / f"{spec}.json", seed=7)
    local = to_torch(remote)
    assert_same_state(local, remote)
    if spec in SEED_INPUTS:
        x = SEED_INPUTS[spec]()
        torch.testing.assert_close(local(x), remote(x), rtol=1e-4, atol=1e-5)
    again = from_torch(local, client, name + "-back")
    assert_same_state(local, again)
    assert spec_of(local) == spec_of(to_torch(again))


def test_seed_state_dict_keys_match_torch(client: paramd.Client, name: str) -> None:
    pairs = [("mlp", MLP()), ("cnn", MyModel()), ("tied_embedding", TiedLM())]
    for spec, module in pairs:
        remote = client.create(f"{name}-{spec}", SPECS / f"{spec}.json")
        sd = remote.state_dict()
        assert list(sd) == list(module.state_dict())
        assert list(sd._metadata) == list(module.state_dict()._metadata)
        assert [n for n, _ in remote.named_parameters()] == \
            [n for n, _ in module.named_parameters()]


def wire_metadata(daemon: Daemon, model: str) -> list[tuple[str, int]]:
    """StreamStart.ordered_metadata of a StateDict call, read with bare grpcio."""
    with grpc.insecure_channel(daemon.address) as channel:
        call = channel.unary_stream("/paramd.v1.Parameters/StateDict",
                                    request_serializer=parameters_pb2.StateDictRequest
                                    .SerializeToString,
                                    response_deserializer=parameters_pb2.TensorFrame.FromString)
        for frame in call(parameters_pb2.StateDictRequest(model=model, metadata_only=True)):
            return [(m.path, m.version) for m in frame.start.ordered_metadata]
    raise AssertionError("no start frame")


@pytest.mark.parametrize("make", [MLP, MyModel, TiedLM, shared_net], ids=lambda f: f.__name__)
def test_metadata_order_on_the_wire_is_torchs(client: paramd.Client, name: str, daemon: Daemon,
                                              make: Any) -> None:
    module = make()
    remote = from_torch(module, client, name)
    expected = [(k, v["version"]) for k, v in module.state_dict()._metadata.items()]
    assert wire_metadata(daemon, name) == expected
    assert [(k, v["version"]) for k, v in remote.state_dict()._metadata.items()] == expected


@pytest.mark.parametrize("make", [MLP, MyModel, TiedLM, shared_net], ids=lambda f: f.__name__)
def test_seed_modules_from_torch_and_back(client: paramd.Client, name: str, make: Any) -> None:
    torch.manual_seed(0)
    local = make()
    remote = from_torch(local, client, name)
    assert_same_state(local, remote)
    back = to_torch(remote)
    assert_same_state(back, remote)
    assert type(back).__name__ == type(local).__name__
    inputs = {MLP: torch.randn(4, 1), MyModel: torch.randn(2, 1, 28, 28),
              TiedLM: torch.tensor([[1, 2, 3]]), shared_net: torch.randn(4, 1)}[make]
    expected = local(inputs)
    torch.testing.assert_close(remote(inputs), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(back(inputs), expected, rtol=1e-4, atol=1e-5)


def test_to_torch_reads_the_spec_and_writes_nothing(client: paramd.Client, name: str,
                                                    daemon: Daemon) -> None:
    # The tree as it stands after a tie and a registered buffer, read with GetSpec: no
    # checkpoint file is written on the daemon for it.
    remote = client.create(name, SPECS / "mlp.json")
    remote.tie("linear2.bias", "w2")
    remote.submodule("linear1").register_buffer("scale", torch.tensor([1.0, 2.0]))
    local = to_torch(remote)
    assert local.linear2.bias is local.w2
    assert local.linear1.scale.tolist() == [1.0, 2.0]
    assert_same_state(local, remote)
    assert not os.path.exists(os.path.join(daemon.checkpoint_dir, "paramd-client"))


def test_ties_and_shared_modules_survive(client: paramd.Client, name: str) -> None:
    back = to_torch(from_torch(TiedLM(), client, name))
    assert back.lm_head.weight is back.embed.weight
    sd = back.state_dict()
    assert sd["embed.weight"].data_ptr() == sd["lm_head.weight"].data_ptr()
    net = to_torch(from_torch(shared_net(), client, name + "-net"))
    assert net[2] is net[4]
    remote = client.model(name + "-net")
    remote.set("2.bias", torch.tensor([5.0, 6.0]))
    assert remote.get("4.bias").tolist() == [5.0, 6.0]
    sd = remote.state_dict()
    assert sd["2.weight"].data_ptr() == sd["4.weight"].data_ptr()


def test_register_parameter_none_like_torch(client: paramd.Client, name: str) -> None:
    local = MLP()
    remote = from_torch(local, client, name)
    local.register_parameter("w3", None)
    remote.register_parameter("w3", None)
    assert list(local.state_dict()) == list(remote.state_dict())
    sd = {**local.state_dict(), "w3": torch.zeros(1)}
    assert repr(local.load_state_dict(sd, strict=False)) == \
        repr(remote.load_state_dict(sd, strict=False))
    assert to_torch(remote).w3 is None
    with pytest.raises(KeyError) as local_error:
        local.register_parameter("w1", None)
    with pytest.raises(KeyError) as remote_error:
        remote.register_parameter("w1", None)
    assert str(remote_error.value) == local_error.value.args[0] == "attribute 'w1' already exists"


def torch_error(module: nn.Module, state_dict: Any, **kwargs: Any) -> str:
    with pytest.raises(RuntimeError) as caught:
        copy.deepcopy(module).load_state_dict(state_dict, **kwargs)
    return str(caught.value)


@pytest.mark.parametrize("mistake", ["missing", "unexpected", "size", "all", "non_strict_size",
                                     "tied_missing", "shared_missing"])
def test_strict_load_errors_are_torch_text(client: paramd.Client, name: str,
                                           mistake: str) -> None:
    module = {"tied_missing": TiedLM, "shared_missing": shared_net}.get(mistake, MLP)()
    remote = from_torch(module, client, name)
    sd = dict(module.state_dict())
    kwargs: dict[str, Any] = {}
    if mistake in ("missing", "all", "tied_missing", "shared_missing"):
        sd.pop(list(sd)[-1])
    if mistake in ("unexpected", "all"):
        sd["extra"] = torch.zeros(1)
        sd["linear1.nosuch"] = torch.zeros(1)
    if mistake in ("size", "all", "non_strict_size"):
        sd["linear1.weight"] = torch.zeros(3, 1)
    if mistake == "non_strict_size":
        kwargs["strict"] = False
    expected = torch_error(module, sd, **kwargs)
    before = remote.state_dict()
    with pytest.raises(RuntimeError) as caught:
        remote.load_state_dict(sd, **kwargs)
    assert str(caught.value) == expected
    assert isinstance(caught.value, paramd.LoadStateDictError)
    after = remote.state_dict()
    assert after.version == before.version
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_incompatible_keys_is_torchs(client: paramd.Client, name: str) -> None:
    module = MLP()
    remote = from_torch(module, client, name)
    sd = module.state_dict()
    result = remote.load_state_dict(sd)
    assert type(result) is type(module.load_state_dict(sd))
    assert repr(result) == "<All keys matched successfully>"
    partial = {"w2": torch.ones(1), "extra": torch.ones(1)}
    assert repr(remote.load_state_dict(partial, strict=False)) == \
        repr(copy.deepcopy(module).load_state_dict(partial, strict=False))


class Everything(nn.Module):
    """Every built-in type with arguments off their defaults, buffers persistent or not,
    None slots, nested containers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, (3, 2), stride=2, padding=1, dilation=1, groups=1,
                              bias=False)
        self.bn2 = nn.BatchNorm2d(4, eps=1e-3, momentum=0.2)
        self.bn1 = nn.BatchNorm1d(5, affine=False, track_running_stats=True)
        self.bn_no_bias = nn.BatchNorm1d(5, momentum=None, bias=False)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
        self.avg = nn.AvgPool2d(2, count_include_pad=False)
        self.adaptive = nn.AdaptiveAvgPool2d((2, 3))
        self.norm = nn.LayerNorm([5], eps=1e-4)
        self.embed = nn.Embedding(7, 5, padding_idx=0)
        self.drop = nn.Dropout(0.25)
        self.acts = nn.ModuleList([nn.ReLU(), nn.GELU(approximate="tanh"), nn.SiLU(),
                                   nn.Sigmoid(), nn.Tanh(), nn.Softmax(dim=1),
                                   nn.LogSoftmax(dim=-1), nn.Flatten(1, -1), nn.Identity()])
        self.heads = nn.ModuleDict({"a": nn.Linear(5, 3),
                                    "b": nn.Sequential(nn.Linear(3, 2, dtype=torch.float64))})
        self.register_buffer("steps", torch.tensor(3), persistent=False)
        self.register_buffer("scale", torch.ones(2))
        self.register_buffer("gone", None)
        self.register_parameter("nothing", None)
        self.add_module("empty", None)


def test_every_builtin_type_round_trips(client: paramd.Client, name: str) -> None:
    torch.manual_seed(1)
    local = Everything()
    with torch.no_grad():
        local.bn2.running_mean.uniform_()
        local.bn1.num_batches_tracked.fill_(5)
    local.eval()
    remote = from_torch(local, client, name, trace_forward=False)
    assert_same_state(local, remote)
    assert remote.training is False
    back = to_torch(remote)
    assert_same_state(back, remote)
    assert back.training is False
    assert back.steps.item() == 3 and "steps" not in back.state_dict()
    assert back.heads.b[0].weight.dtype == torch.float64


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.out = nn.Linear(8, 2)

    def forward(self, x: Any) -> Any:
        h = torch.relu(self.fc(x))
        h = h + x
        y = torch.cat([h, x * 2], dim=1)
        return torch.log_softmax(self.out(y).flatten(1), dim=-1)


def test_traced_forward_with_named_values(client: paramd.Client, name: str) -> None:
    local = Residual()
    remote = from_torch(local, client, name)
    x = torch.randn(3, 4)
    torch.testing.assert_close(remote(x), local(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(to_torch(remote)(x), local(x), rtol=1e-4, atol=1e-5)


class Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)

    def forward(self, x: Any) -> Any:
        return torch.matmul(x, self.fc.weight)


class DataDependent(nn.Module):
    def forward(self, x: Any) -> Any:
        if x.sum() > 0:
            return x
        return -x


def test_inexpressible_forward_names_the_module(client: paramd.Client, name: str) -> None:
    wrapper = nn.Sequential(Untraceable())
    with pytest.raises(UnsupportedModule, match=r"module '0' \(Untraceable\)"):
        from_torch(wrapper, client, name)
    with pytest.raises(UnsupportedModule, match=r"module '\(root\)' \(DataDependent\): .*traced"):
        from_torch(DataDependent(), client, name)
    assert name not in [m.name for m in client.models()]


def test_numpy_mode_with_torch_installed(client: paramd.Client, name: str) -> None:
    remote = client.create(name, SPECS / "mlp.json")
    sd = remote.state_dict(as_numpy=True)
    assert type(sd["w2"]).__module__ == "numpy"
    assert isinstance(remote.state_dict()["w2"], torch.Tensor)
    bf = remote.state_dict(dtype=torch.bfloat16)
    assert bf["w2"].dtype == torch.bfloat16 and bf["w2"].item() == 2.0
    assert str(remote.state_dict(dtype="bfloat16", as_numpy=True)["w2"].dtype) == "bfloat16"


def test_builtin_layers_forward_like_torch(client: paramd.Client, name: str) -> None:
    torch.manual_seed(2)
    local = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=1, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(2, 2), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(),
        nn.Linear(16, 8), nn.LayerNorm(8), nn.GELU(), nn.SiLU(), nn.Tanh(), nn.Sigmoid(),
        nn.Dropout(0.5), nn.Linear(8, 5), nn.LogSoftmax(dim=1))
    with torch.no_grad():
        local[1].running_mean.uniform_(-1, 1)
        local[1].running_var.uniform_(0.5, 2)
    local.eval()
    remote = from_torch(local, client, name)
    x = torch.randn(3, 2, 16, 16)
    expected = local(x)
    torch.testing.assert_close(remote(x), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(to_torch(remote)(x), expected, rtol=1e-4, atol=1e-5)


def requires_grad_of(module: Any) -> dict[str, bool]:
    return {key: p.requires_grad for key, p in module.named_parameters()}


def test_frozen_and_mixed_dtype_builtin_parameters_survive(client: paramd.Client,
                                                           name: str) -> None:
    torch.manual_seed(3)
    local = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2), nn.Conv1d(2, 4, 3, bias=False),
                          nn.Embedding.from_pretrained(torch.randn(5, 2), freeze=True))
    local[0].requires_grad_(False)  # a frozen layer, as fine-tuning freezes one
    local[1].bias = nn.Parameter(local[1].bias.detach().double())
    with torch.no_grad():
        local[1].bias.fill_(0.1)
    remote = from_torch(local, client, name)
    assert_same_state(local, remote)
    assert requires_grad_of(remote) == requires_grad_of(local)
    assert remote.get("1.bias").tolist() == [0.1, 0.1]  # float64, not float32-rounded
    back = to_torch(remote)
    assert requires_grad_of(back) == requires_grad_of(local)
    assert back[1].bias.dtype == torch.float64 and back[2].weight.shape == (4, 2, 3)


class DivFloor(nn.Module):
    def forward(self, x: Any) -> Any:
        return x.div(2, rounding_mode="floor")


class SoftmaxTo64(nn.Module):
    def forward(self, x: Any) -> Any:
        return torch.softmax(x, 0, torch.float64)


class LogSoftmaxDtype(nn.Module):
    def forward(self, x: Any) -> Any:
        return F.log_softmax(x, dim=-1, dtype=torch.float64)


class DropoutAlwaysOff(nn.Module):
    def forward(self, x: Any) -> Any:
        return F.dropout(x, 0.9, training=False)


class DropoutDefault(nn.Module):
    def forward(self, x: Any) -> Any:
        return F.dropout(x, 0.5)


class DropoutFollowsMode(nn.Module):
    def forward(self, x: Any) -> Any:
        return F.dropout(x, 0.5, training=self.training)


class LoopOverList(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])

    def forward(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer(x)
        return x


class AddBool(nn.Module):
    def forward(self, x: Any) -> Any:
        return x + True


class MyLinear(nn.Linear):
    pass


def test_what_a_spec_cannot_hold_is_refused_not_lost(client: paramd.Client,
                                                     name: str) -> None:
    hooked = nn.Linear(2, 2)
    hooked.register_forward_hook(lambda m, i, o: o * 0)
    shared_buffer = nn.Sequential(nn.Module(), nn.Module())
    mask = torch.arange(3.0)
    shared_buffer[0].register_buffer("mask", mask)
    shared_buffer[1].register_buffer("mask", mask)
    mixed_mode = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    mixed_mode[1].eval()
    deep: nn.Module = nn.Identity()
    for _ in range(200):
        deep = nn.Sequential(deep)
    with torch.device("meta"):
        on_meta = nn.Linear(2, 2)
    cases = [
        (hooked, "forward hooks"),
        (torch.nn.utils.weight_norm(nn.Linear(3, 2)), "forward pre-hooks"),
        (shared_buffer, r"buffer 'mask' is the tensor of buffer '0.mask'"),
        (mixed_mode, r"module '1' is in eval mode and the root in training mode"),
        (DivFloor(), "'div' with rounding_mode"),
        (SoftmaxTo64(), "more arguments than paramd's softmax takes"),
        (LogSoftmaxDtype(), "'log_softmax' with dtype"),
        (DropoutAlwaysOff(), "training=self.training"),
        (DropoutDefault(), "training=self.training"),
        (LoopOverList(), "'layers.0', a module below its children"),
        (AddBool(), "'add' of"),
        (MyLinear(2, 2), "a subclass of nn.Linear"),
        (deep, "a spec holds at most 128 levels"),
        (on_meta, "on the meta device"),
        (nn.LazyLinear(2), "uninitialized"),
    ]
    for module, message in cases:
        with pytest.raises(UnsupportedModule, match=message):
            from_torch(module, client, name)
            pytest.fail(f"{type(module).__name__} was taken: {message}")
    assert name not in [m.name for m in client.models()]
    # With training=self.training the op follows the model's mode, remote as local.
    remote = from_torch(DropoutFollowsMode(), client, name)
    remote.eval()
    x = torch.ones(4, 8)
    assert torch.equal(remote(x), x)


def test_a_sequential_with_a_none_child_fails_as_torchs(client: paramd.Client,
                                                        name: str) -> None:
    local = nn.Sequential(nn.ReLU(), nn.ReLU())
    local._modules["1"] = None
    with pytest.raises(TypeError, match="'NoneType' object is not callable"):
        local(torch.ones(2))
    remote = from_torch(local, client, name)
    with pytest.raises(paramd.ForwardError, match="'NoneType' object is not callable"):
        remote(torch.ones(2))
