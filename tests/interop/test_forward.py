"""Forward interop with real PyTorch (DESIGN.md section 6): the same random inputs through a
torch module and through paramd holding that module's weights (torch.save'd state_dict
loaded with `paramctl load --spec`), for every built-in module type, the seed's MLP and
CNN, a residual block and a tied model. float32 outputs agree within rtol 1e-5; a
training-mode forward through BatchNorm leaves the same running buffers as torch's."""

import json
import zlib
import os

import numpy as np
import pytest
import torch
from torch import nn

from seed_models import MyModel, TiedLM

RTOL, ATOL = 1e-5, 1e-6


def randomize(module, generator):
    """Gives parameters that PyTorch initialises to a constant (BatchNorm and LayerNorm
    weight and bias) and the BatchNorm running buffers random values, so that a wrong
    weight or statistic cannot pass by being zero or one. Other parameters keep PyTorch's
    own random initialisation, whose scale keeps float32 sums well conditioned."""
    with torch.no_grad():
        for p in module.parameters():
            if p.numel() > 1 and bool((p == p.flatten()[0]).all()):
                p.copy_(torch.randn(p.shape, generator=generator) * 0.5 + p)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=generator) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=generator) + 0.5)
    return module


class Remote:
    """One torch module mirrored into the daemon under `name`."""

    def __init__(self, daemon, tmp_path, name, module, spec):
        self.daemon, self.tmp_path, self.name = daemon, tmp_path, name
        os.makedirs(daemon.checkpoint_dir, exist_ok=True)
        torch.save(module.state_dict(), os.path.join(daemon.checkpoint_dir, f"{name}.pt"))
        spec_path = tmp_path / f"{name}.json"
        spec_path.write_text(json.dumps(spec))
        daemon.paramctl("load", name, f"{name}.pt", "--spec", spec_path)

    def forward(self, inputs, mode):
        """paramctl forward with `inputs` (a tensor, or a dict with "input"); returns the
        output tensor and the JSON paramctl printed."""
        if isinstance(inputs, dict):
            in_path = self.tmp_path / f"{self.name}-in.npz"
            np.savez(in_path, **{k: v.numpy() for k, v in inputs.items()})
        else:
            in_path = self.tmp_path / f"{self.name}-in.npy"
            np.save(in_path, inputs.numpy())
        out_path = self.tmp_path / f"{self.name}-out.npy"
        result = self.daemon.paramctl("--json", "forward", self.name, "--in", in_path, "--out",
                                      out_path, f"--{mode}")
        return torch.from_numpy(np.load(out_path)), json.loads(result.stdout)

    def tensor(self, key):
        path = self.tmp_path / f"{self.name}-{key}.npy"
        self.daemon.paramctl("get", self.name, key, "--out", path)
        return torch.from_numpy(np.load(path))


def check(daemon, tmp_path, name, module, spec, inputs, mode="eval"):
    """Runs `inputs` through `module` and through paramd; asserts they agree, and for a
    training-mode forward that every buffer of the module agrees afterwards too."""
    generator = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    randomize(module, generator)
    remote = Remote(daemon, tmp_path, name, module, spec)
    module.train(mode == "train")
    with torch.no_grad():
        if isinstance(inputs, dict):
            named = dict(inputs)
            expected = module(named.pop("input"), **named)
        else:
            expected = module(inputs)
    got, answer = remote.forward(inputs, mode)
    assert answer["mode"] == mode
    assert got.dtype == expected.dtype and got.shape == expected.shape, (got.shape, expected.shape)
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)
    updated = False
    for key, buffer in module.state_dict().items():
        if "running" in key or "num_batches" in key:
            updated = updated or mode == "train"
            torch.testing.assert_close(remote.tensor(key), buffer, rtol=RTOL, atol=ATOL,
                                       msg=lambda m: f"{name} buffer {key}: {m}")
    assert answer["updated_version"] == (answer["version"] + 1 if updated else 0)
    return answer


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def layer(type_, **args):
    return {"type": type_, "args": args}


# (case id, torch module factory, spec, input factory, mode)
CASES = [
    ("linear", lambda: nn.Linear(5, 3), layer("Linear", in_features=5, out_features=3),
     lambda: randn(4, 5), "eval"),
    ("linear_3d_nobias", lambda: nn.Linear(5, 3, bias=False),
     layer("Linear", in_features=5, out_features=3, bias=False), lambda: randn(2, 4, 5), "eval"),
    # Large enough (64 x 512 x 256 multiply-adds) for the CPU backend's oneDNN path.
    ("linear_large", lambda: nn.Linear(512, 256),
     layer("Linear", in_features=512, out_features=256), lambda: randn(64, 512), "eval"),
    ("conv2d", lambda: nn.Conv2d(3, 8, 3), layer("Conv2d", in_channels=3, out_channels=8,
                                                 kernel_size=3), lambda: randn(2, 3, 9, 10), "eval"),
    ("conv2d_stride_pad_dilation_groups",
     lambda: nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=2),
     layer("Conv2d", in_channels=4, out_channels=6, kernel_size=[3, 2], stride=[2, 1],
           padding=[1, 2], dilation=[2, 1], groups=2), lambda: randn(2, 4, 11, 9), "eval"),
    ("conv2d_depthwise_unbatched", lambda: nn.Conv2d(3, 3, 3, padding=1, groups=3, bias=False),
     layer("Conv2d", in_channels=3, out_channels=3, kernel_size=3, padding=1, groups=3,
           bias=False), lambda: randn(3, 7, 7), "eval"),
    ("conv1d", lambda: nn.Conv1d(3, 8, 3), layer("Conv1d", in_channels=3, out_channels=8,
                                                 kernel_size=3), lambda: randn(2, 3, 10), "eval"),
    ("conv1d_stride_pad_dilation_groups",
     lambda: nn.Conv1d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2),
     layer("Conv1d", in_channels=4, out_channels=6, kernel_size=[3], stride=2, padding=[2],
           dilation=2, groups=2), lambda: randn(2, 4, 13), "eval"),
    ("conv1d_same_unbatched", lambda: nn.Conv1d(2, 3, 4, padding="same", bias=False),
     layer("Conv1d", in_channels=2, out_channels=3, kernel_size=4, padding="same", bias=False),
     lambda: randn(2, 9), "eval"),
    ("maxpool2d", lambda: nn.MaxPool2d(3, stride=2, padding=1),
     layer("MaxPool2d", kernel_size=3, stride=2, padding=1), lambda: randn(2, 3, 9, 8), "eval"),
    ("maxpool2d_ceil_dilation", lambda: nn.MaxPool2d(2, stride=2, dilation=2, ceil_mode=True),
     layer("MaxPool2d", kernel_size=2, stride=2, dilation=2, ceil_mode=True),
     lambda: randn(1, 2, 9, 10), "eval"),
    ("avgpool2d", lambda: nn.AvgPool2d(3, stride=2, padding=1),
     layer("AvgPool2d", kernel_size=3, stride=2, padding=1), lambda: randn(2, 3, 9, 8), "eval"),
    ("avgpool2d_ceil_exclude_pad",
     lambda: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
     layer("AvgPool2d", kernel_size=3, stride=2, padding=1, ceil_mode=True,
           count_include_pad=False), lambda: randn(2, 3, 10, 7), "eval"),
    ("adaptive_avg_pool2d", lambda: nn.AdaptiveAvgPool2d((3, 4)),
     layer("AdaptiveAvgPool2d", output_size=[3, 4]), lambda: randn(2, 3, 7, 9), "eval"),
    ("adaptive_avg_pool2d_1", lambda: nn.AdaptiveAvgPool2d(1),
     layer("AdaptiveAvgPool2d", output_size=1), lambda: randn(2, 5, 6, 6), "eval"),
    ("batchnorm1d_eval", lambda: nn.BatchNorm1d(4), layer("BatchNorm1d", num_features=4),
     lambda: randn(6, 4), "eval"),
    ("batchnorm1d_train", lambda: nn.BatchNorm1d(4, momentum=0.2),
     layer("BatchNorm1d", num_features=4, momentum=0.2), lambda: randn(6, 4), "train"),
    # An empty batch leaves the running statistics as they are and still counts the batch.
    ("batchnorm1d_empty_batch_train", lambda: nn.BatchNorm1d(4),
     layer("BatchNorm1d", num_features=4), lambda: randn(0, 4), "train"),
    ("batchnorm2d_empty_planes_train", lambda: nn.BatchNorm2d(3, momentum=None),
     layer("BatchNorm2d", num_features=3, momentum=None), lambda: randn(2, 3, 0, 4), "train"),
    ("batchnorm1d_3d_train", lambda: nn.BatchNorm1d(3), layer("BatchNorm1d", num_features=3),
     lambda: randn(4, 3, 5), "train"),
    ("batchnorm2d_eval", lambda: nn.BatchNorm2d(3, eps=1e-3),
     layer("BatchNorm2d", num_features=3, eps=1e-3), lambda: randn(2, 3, 5, 4), "eval"),
    ("batchnorm2d_train", lambda: nn.BatchNorm2d(3), layer("BatchNorm2d", num_features=3),
     lambda: randn(2, 3, 5, 4), "train"),
    ("batchnorm2d_cumulative_train", lambda: nn.BatchNorm2d(3, momentum=None),
     layer("BatchNorm2d", num_features=3, momentum=None), lambda: randn(2, 3, 5, 4), "train"),
    ("batchnorm1d_no_bias_train", lambda: nn.BatchNorm1d(4, bias=False),
     layer("BatchNorm1d", num_features=4, bias=False), lambda: randn(6, 4), "train"),
    ("batchnorm2d_no_bias_eval", lambda: nn.BatchNorm2d(3, bias=False),
     layer("BatchNorm2d", num_features=3, bias=False), lambda: randn(2, 3, 5, 4), "eval"),
    ("layernorm_no_bias", lambda: nn.LayerNorm(5, bias=False),
     layer("LayerNorm", normalized_shape=5, bias=False), lambda: randn(2, 3, 5), "eval"),
    ("layernorm", lambda: nn.LayerNorm([4, 5]), layer("LayerNorm", normalized_shape=[4, 5]),
     lambda: randn(3, 4, 5), "eval"),
    ("layernorm_no_affine", lambda: nn.LayerNorm(5, eps=1e-3, elementwise_affine=False),
     layer("LayerNorm", normalized_shape=5, eps=1e-3, elementwise_affine=False),
     lambda: randn(2, 3, 5), "eval"),
    ("embedding", lambda: nn.Embedding(10, 4), layer("Embedding", num_embeddings=10,
                                                     embedding_dim=4),
     lambda: torch.tensor([[1, 2, 9], [0, 0, 5]]), "eval"),
    ("embedding_padding_idx", lambda: nn.Embedding(10, 4, padding_idx=0),
     layer("Embedding", num_embeddings=10, embedding_dim=4, padding_idx=0),
     lambda: torch.tensor([0, 3, 0, 7]), "eval"),
    ("dropout_eval", lambda: nn.Dropout(0.5), layer("Dropout", p=0.5), lambda: randn(4, 6),
     "eval"),
    ("relu", nn.ReLU, {"type": "ReLU"}, lambda: randn(3, 7), "eval"),
    ("gelu", nn.GELU, {"type": "GELU"}, lambda: randn(3, 7) * 3, "eval"),
    ("gelu_tanh", lambda: nn.GELU(approximate="tanh"), layer("GELU", approximate="tanh"),
     lambda: randn(3, 7) * 3, "eval"),
    ("silu", nn.SiLU, {"type": "SiLU"}, lambda: randn(3, 7) * 3, "eval"),
    ("sigmoid", nn.Sigmoid, {"type": "Sigmoid"}, lambda: randn(3, 7) * 3, "eval"),
    ("tanh", nn.Tanh, {"type": "Tanh"}, lambda: randn(3, 7) * 3, "eval"),
    ("softmax", lambda: nn.Softmax(dim=1), layer("Softmax", dim=1), lambda: randn(3, 7, 2) * 3,
     "eval"),
    ("log_softmax", lambda: nn.LogSoftmax(dim=-1), layer("LogSoftmax", dim=-1),
     lambda: randn(3, 7) * 3, "eval"),
    ("flatten", nn.Flatten, {"type": "Flatten"}, lambda: randn(2, 3, 4, 5), "eval"),
    ("flatten_0_1", lambda: nn.Flatten(0, 1), layer("Flatten", start_dim=0, end_dim=1),
     lambda: randn(2, 3, 4), "eval"),
    ("identity", nn.Identity, {"type": "Identity"}, lambda: randn(2, 3), "eval"),
    ("sequential",
     lambda: nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(),
                           nn.Linear(8, 2), nn.LogSoftmax(dim=1)),
     {"type": "Sequential", "children": [
         layer("Linear", in_features=6, out_features=8), {"type": "ReLU"},
         layer("Linear", in_features=8, out_features=8), {"type": "Tanh"},
         layer("Linear", in_features=8, out_features=2), layer("LogSoftmax", dim=1)]},
     lambda: randn(5, 6), "eval"),
    ("shared_sequential",
     lambda: (lambda shared: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), shared, nn.ReLU(), shared,
                                           nn.ReLU(), nn.Linear(8, 1)))(nn.Linear(8, 8)),
     {"type": "Sequential", "children": [
         layer("Linear", in_features=4, out_features=8), {"type": "ReLU"},
         layer("Linear", in_features=8, out_features=8), {"type": "ReLU"}, {"ref": "2"},
         {"type": "ReLU"}, layer("Linear", in_features=8, out_features=1)]},
     lambda: randn(3, 4), "eval"),
]


@pytest.mark.parametrize("name,factory,spec,make_input,mode", CASES, ids=[c[0] for c in CASES])
def test_builtin_module_matches_torch(daemon, tmp_path, name, factory, spec, make_input, mode):
    check(daemon, tmp_path, name, factory(), spec, make_input(), mode)


# --- the seed's models and custom containers ---------------------------------------------

class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear1 = nn.Linear(1, 2)
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(2, 1)

    def forward(self, x):
        return self.linear2(self.relu(self.linear1(x)))


MLP_SPEC = {"type": "MLP", "children": [
    {"name": "linear1", **layer("Linear", in_features=1, out_features=2)},
    {"name": "relu", "type": "ReLU"},
    {"name": "linear2", **layer("Linear", in_features=2, out_features=1)}],
    "forward": ["linear1", "relu", "linear2"]}


CNN_SPEC = {"type": "CNN", "children": [
    {"name": "conv1", **layer("Conv2d", in_channels=1, out_channels=20, kernel_size=5)},
    {"name": "pool", **layer("MaxPool2d", kernel_size=2, stride=2)},
    {"name": "fc1", **layer("Linear", in_features=2880, out_features=10)}],
    "forward": ["conv1", {"op": "relu"}, "pool", {"op": "view", "args": {"shape": [-1, 2880]}},
                "fc1", {"op": "relu"}]}


class Residual(nn.Module):
    """torchvision's BasicBlock without downsampling."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(h)) + x)


def residual_spec(channels):
    conv = layer("Conv2d", in_channels=channels, out_channels=channels, kernel_size=3, padding=1,
                 bias=False)
    return {"type": "Residual", "children": [
        {"name": "conv1", **conv}, {"name": "bn1", **layer("BatchNorm2d", num_features=channels)},
        {"name": "conv2", **conv}, {"name": "bn2", **layer("BatchNorm2d", num_features=channels)}],
        "forward": ["conv1", "bn1", {"op": "relu"}, "conv2", {"call": "bn2", "out": "h"},
                    {"op": "add", "in": ["h", "input"]}, {"op": "relu"}]}


TIED_SPEC = {"type": "TiedLM", "children": [
    {"name": "embed", **layer("Embedding", num_embeddings=10, embedding_dim=4)},
    {"name": "lm_head", **layer("Linear", in_features=4, out_features=10, bias=False),
     "parameters": [{"name": "weight", "tie": "embed.weight"}]}],
    "forward": ["embed", "lm_head", {"op": "log_softmax", "args": {"dim": -1}}]}


class Gated(nn.Module):
    """A second named input, read by the forward program."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x, gate):
        return torch.sigmoid(gate) * self.fc(x) + x


GATED_SPEC = {"type": "Gated", "children": [
    {"name": "fc", **layer("Linear", in_features=3, out_features=3)}],
    "forward": [{"op": "sigmoid", "in": "gate", "out": "g"},
                {"call": "fc", "in": "input", "out": "h"},
                {"op": "mul", "in": ["g", "h"], "out": "gh"},
                {"op": "add", "in": ["gh", "input"]}]}


@pytest.mark.parametrize("batch", [1, 64])
def test_seed_mlp(daemon, tmp_path, batch):
    check(daemon, tmp_path, f"mlp{batch}", MLP(), MLP_SPEC, randn(batch, 1, seed=batch))


@pytest.mark.parametrize("batch", [1, 64])
def test_seed_cnn(daemon, tmp_path, batch):
    check(daemon, tmp_path, f"cnn{batch}", MyModel(), CNN_SPEC,
          randn(batch, 1, 28, 28, seed=batch))


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_residual_block(daemon, tmp_path, mode):
    check(daemon, tmp_path, f"residual_{mode}", Residual(4), residual_spec(4),
          randn(2, 4, 6, 6), mode)


def test_tied_model(daemon, tmp_path):
    model = TiedLM()
    assert model.lm_head.weight is model.embed.weight
    check(daemon, tmp_path, "tied", model, TIED_SPEC, torch.tensor([[1, 4, 9], [0, 2, 2]]))


def test_named_inputs_from_npz(daemon, tmp_path):
    check(daemon, tmp_path, "gated", Gated(), GATED_SPEC,
          {"input": randn(4, 3), "gate": randn(4, 3, seed=1)})


def test_shape_error_names_module_and_expected_shape(daemon, tmp_path):
    Remote(daemon, tmp_path, "cnn", MyModel(), CNN_SPEC)
    np.save(tmp_path / "bad.npy", randn(1, 3, 28, 28).numpy())
    result = daemon.paramctl("forward", "cnn", "--in", tmp_path / "bad.npy", check=False)
    assert result.returncode == 1
    assert "module 'conv1' (Conv2d)" in result.stderr
    with pytest.raises(RuntimeError) as torch_error:
        MyModel()(randn(1, 3, 28, 28))
    # torch's own sentence, after paramd's module prefix.
    assert str(torch_error.value).split(",")[0] in result.stderr


def test_conv1d_repr_matches_torch(daemon, tmp_path):
    """DescribeModel's repr of Conv1d prints its one-element tuples as torch does."""
    module = nn.Sequential(nn.Conv1d(3, 8, 3),
                           nn.Conv1d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2,
                                     bias=False),
                           nn.Conv1d(2, 3, 4, padding="same"))
    spec = {"type": "Sequential", "children": [
        layer("Conv1d", in_channels=3, out_channels=8, kernel_size=3),
        layer("Conv1d", in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=2,
              dilation=2, groups=2, bias=False),
        layer("Conv1d", in_channels=2, out_channels=3, kernel_size=4, padding="same")]}
    Remote(daemon, tmp_path, "conv1d_repr", module, spec)
    described = json.loads(daemon.paramctl("--json", "describe", "conv1d_repr").stdout)
    assert described["repr"] == repr(module)
