"""Constructor arguments of every built-in type against real PyTorch (DESIGN.md section 6):
each case builds the module from the same arguments in torch and in paramd (`paramctl create`)
and asserts that paramd prints torch's repr (DescribeModel, `paramctl describe`) and holds the
same state_dict keys, shapes and dtypes. The cases cover every type in
server/core/layers/registry.cc, several argument sets each (defaults, every argument off its
default, None slots)."""

import json
import pathlib
import re

import pytest
import torch
from torch import nn

REGISTRY = pathlib.Path(__file__).resolve().parents[2] / "server/core/layers/registry.cc"


def layer(type_, **args):
    return {"type": type_, "args": args}


def container(type_, children):
    return {"type": type_, "children": [{"name": n, **child} for n, child in children]}


def _torch_args(args):
    """The spec's JSON arguments as torch's keyword arguments: lists become tuples (JSON has
    no tuples) and dtype names become torch dtypes."""
    out = {}
    for key, value in args.items():
        if key == "dtype":
            out[key] = getattr(torch, value)
        elif isinstance(value, list):
            out[key] = tuple(value)
        else:
            out[key] = value
    return out


def to_torch(spec):
    cls = getattr(nn, spec["type"])
    if spec["type"] == "ModuleDict":
        return cls({c["name"]: to_torch(c) for c in spec["children"]})
    if spec["type"] in ("Sequential", "ModuleList"):
        children = [to_torch(c) for c in spec.get("children", [])]
        return cls(*children) if spec["type"] == "Sequential" else cls(children)
    return cls(**_torch_args(spec.get("args", {})))


LINEAR = layer("Linear", in_features=2, out_features=3)

CASES = {
    "Linear": [
        LINEAR,
        layer("Linear", in_features=4, out_features=5, bias=False),
        layer("Linear", in_features=2, out_features=3, dtype="float64"),
    ],
    "Conv1d": [
        layer("Conv1d", in_channels=2, out_channels=3, kernel_size=3),
        layer("Conv1d", in_channels=4, out_channels=6, kernel_size=2, stride=2, padding=1,
              dilation=2, groups=2, bias=False),
        layer("Conv1d", in_channels=2, out_channels=2, kernel_size=3, padding="same",
              padding_mode="reflect"),
    ],
    "Conv2d": [
        layer("Conv2d", in_channels=1, out_channels=20, kernel_size=5),
        layer("Conv2d", in_channels=2, out_channels=4, kernel_size=[3, 2], stride=[2, 1],
              padding=[1, 0], dilation=[1, 2], groups=2, bias=False),
        layer("Conv2d", in_channels=2, out_channels=2, kernel_size=3, padding="valid",
              padding_mode="circular"),
    ],
    "MaxPool2d": [
        layer("MaxPool2d", kernel_size=2),
        layer("MaxPool2d", kernel_size=3, stride=1, padding=1, dilation=2, ceil_mode=True),
        layer("MaxPool2d", kernel_size=[2, 3], stride=[1, 2]),
    ],
    "AvgPool2d": [
        layer("AvgPool2d", kernel_size=2),
        layer("AvgPool2d", kernel_size=3, stride=2, padding=1, ceil_mode=True,
              count_include_pad=False, divisor_override=2),
        layer("AvgPool2d", kernel_size=[2, 3]),
    ],
    "AdaptiveAvgPool2d": [
        layer("AdaptiveAvgPool2d", output_size=1),
        layer("AdaptiveAvgPool2d", output_size=[2, 3]),
        layer("AdaptiveAvgPool2d", output_size=[None, 2]),
    ],
    "BatchNorm1d": [
        layer("BatchNorm1d", num_features=3),
        layer("BatchNorm1d", num_features=4, eps=0.001, momentum=None, affine=False),
        layer("BatchNorm1d", num_features=3, bias=False),
        layer("BatchNorm1d", num_features=2, track_running_stats=False, dtype="float64"),
    ],
    "BatchNorm2d": [
        layer("BatchNorm2d", num_features=20),
        layer("BatchNorm2d", num_features=4, momentum=1, bias=False),
        layer("BatchNorm2d", num_features=3, affine=False, bias=False,
              track_running_stats=False),
    ],
    "LayerNorm": [
        layer("LayerNorm", normalized_shape=4),
        layer("LayerNorm", normalized_shape=[2, 3], eps=1e-6, elementwise_affine=False),
        layer("LayerNorm", normalized_shape=[5], bias=False),
        layer("LayerNorm", normalized_shape=3, eps=0, dtype="float64"),
    ],
    "Embedding": [
        layer("Embedding", num_embeddings=10, embedding_dim=4),
        layer("Embedding", num_embeddings=10, embedding_dim=4, padding_idx=0),
        layer("Embedding", num_embeddings=5, embedding_dim=3, padding_idx=-1, max_norm=1.0,
              norm_type=3.0, scale_grad_by_freq=True, sparse=True),
    ],
    "Dropout": [layer("Dropout"), layer("Dropout", p=0.25), layer("Dropout", p=0.5, inplace=True)],
    "ReLU": [layer("ReLU"), layer("ReLU", inplace=True)],
    "GELU": [layer("GELU"), layer("GELU", approximate="tanh")],
    "SiLU": [layer("SiLU"), layer("SiLU", inplace=True)],
    "Sigmoid": [layer("Sigmoid")],
    "Tanh": [layer("Tanh")],
    "Softmax": [layer("Softmax"), layer("Softmax", dim=1), layer("Softmax", dim=-1)],
    "LogSoftmax": [layer("LogSoftmax"), layer("LogSoftmax", dim=0), layer("LogSoftmax", dim=-1)],
    "Flatten": [layer("Flatten"), layer("Flatten", start_dim=0, end_dim=-2)],
    "Identity": [layer("Identity")],
    "Sequential": [
        container("Sequential", []),
        container("Sequential", [("0", LINEAR), ("1", layer("ReLU")),
                                 ("2", layer("BatchNorm1d", num_features=3, bias=False))]),
    ],
    "ModuleList": [
        container("ModuleList", []),
        container("ModuleList", [("0", LINEAR), ("1", layer("LayerNorm", normalized_shape=3))]),
    ],
    "ModuleDict": [
        container("ModuleDict", []),
        container("ModuleDict", [("fc", LINEAR), ("act", layer("GELU", approximate="tanh"))]),
    ],
}


def builtin_types():
    """The built-in types the registry's table lists, in its order."""
    text = REGISTRY.read_text()
    table = text[text.index("AllLayers() {"):]
    table = table[:table.index("};")]
    return [name for name in re.findall(r"&(\w+)Layer\(\)", table)]


def test_cases_cover_every_builtin_type():
    assert builtin_types() and list(CASES) == builtin_types()


PARAMS = [pytest.param(spec, id=f"{type_}-{i}")
          for type_, specs in CASES.items() for i, spec in enumerate(specs)]


@pytest.mark.parametrize("spec", PARAMS)
def test_builtin_arguments_repr_and_state_dict_match_torch(daemon, tmp_path, spec):
    expected = to_torch(spec)
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    daemon.paramctl("create", "m", "--spec", spec_path)

    described = json.loads(daemon.paramctl("--json", "describe", "m").stdout)
    assert described["repr"] == repr(expected)

    entries = json.loads(daemon.paramctl("--json", "state-dict", "m").stdout)
    got = [(e["name"], list(e["shape"]), e["dtype"]) for e in entries]
    want = [(k, list(v.shape), str(v.dtype).removeprefix("torch."))
            for k, v in expected.state_dict().items()]
    assert got == want
