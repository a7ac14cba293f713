"""Live ``torch.nn.Module`` objects to and from remote models.

``from_torch(module, client, name)`` builds the spec of a module tree (docs/specs.md) by
looking at the objects themselves: every built-in type with its constructor arguments,
parameters and buffers (persistent or not, None slots), tied parameters and shared modules
found by object identity exactly as ``named_parameters`` de-duplicates, nested containers,
and custom classes whose ``forward`` is traced with ``torch.fx`` onto the forward program's
steps and ops. It creates the model and uploads every Parameter and buffer object once, in
one atomic write. ``to_torch(remote)`` builds the module back: same classes' names, keys,
ties, repr, values and forward.

Requires torch (``pip install paramd[torch]``).
"""

from __future__ import annotations

import copy
import json
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from paramd._client import Client
from paramd._model import RemoteModel, _join
from paramd._progress import Progress
from paramd._torch_trace import UnsupportedModule, forward_program, unsupported
from paramd.v1 import models_pb2

__all__ = ["from_torch", "to_torch", "spec_of", "module_from_spec", "UnsupportedModule"]


# Built-in types: constructor arguments read back from the object, and the parameters and
# buffers the constructor makes (given those arguments).
def _pair_args(m: Any, names: list[str]) -> dict[str, Any]:
    return {n: getattr(m, n) for n in names}


def _batch_norm_args(m: Any) -> dict[str, Any]:
    # torch 2.15's keyword-only `bias` is not kept as an attribute: an affine BatchNorm
    # without a bias parameter was built with bias=False.
    return {**_pair_args(m, ["num_features", "eps", "momentum", "affine", "track_running_stats"]),
            **({"bias": False} if m.affine and m.bias is None else {})}


_ARGS: dict[type, Callable[[Any], dict[str, Any]]] = {
    nn.Linear: lambda m: {"in_features": m.in_features, "out_features": m.out_features,
                          "bias": m.bias is not None},
    nn.Conv1d: lambda m: {**_pair_args(m, ["in_channels", "out_channels", "kernel_size",
                                           "stride", "padding", "dilation", "groups"]),
                          "bias": m.bias is not None, "padding_mode": m.padding_mode},
    nn.Conv2d: lambda m: {**_pair_args(m, ["in_channels", "out_channels", "kernel_size",
                                           "stride", "padding", "dilation", "groups"]),
                          "bias": m.bias is not None, "padding_mode": m.padding_mode},
    nn.MaxPool2d: lambda m: _pair_args(m, ["kernel_size", "stride", "padding", "dilation",
                                           "return_indices", "ceil_mode"]),
    nn.AvgPool2d: lambda m: _pair_args(m, ["kernel_size", "stride", "padding", "ceil_mode",
                                           "count_include_pad", "divisor_override"]),
    nn.AdaptiveAvgPool2d: lambda m: {"output_size": m.output_size},
    nn.BatchNorm1d: lambda m: _batch_norm_args(m),
    nn.BatchNorm2d: lambda m: _batch_norm_args(m),
    nn.LayerNorm: lambda m: {"normalized_shape": list(m.normalized_shape), "eps": m.eps,
                             "elementwise_affine": m.elementwise_affine,
                             **({"bias": False} if m.elementwise_affine and m.bias is None
                                else {})},
    nn.Embedding: lambda m: _pair_args(m, ["num_embeddings", "embedding_dim", "padding_idx",
                                           "max_norm", "norm_type", "scale_grad_by_freq",
                                           "sparse"]),
    nn.Dropout: lambda m: {"p": m.p, "inplace": m.inplace},
    nn.ReLU: lambda m: {"inplace": m.inplace} if m.inplace else {},
    nn.GELU: lambda m: {"approximate": m.approximate} if m.approximate != "none" else {},
    nn.SiLU: lambda m: {"inplace": m.inplace} if m.inplace else {},
    nn.Sigmoid: lambda m: {},
    nn.Tanh: lambda m: {},
    nn.Softmax: lambda m: {"dim": m.dim},
    nn.LogSoftmax: lambda m: {"dim": m.dim},
    nn.Flatten: lambda m: {"start_dim": m.start_dim, "end_dim": m.end_dim},
    nn.Identity: lambda m: {},
    nn.Sequential: lambda m: {},
    nn.ModuleList: lambda m: {},
    nn.ModuleDict: lambda m: {},
}
_BUILTINS = {cls.__name__: cls for cls in _ARGS}
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
# Lazy modules' parameters before their first forward (not in torch's type stubs).
_UNINITIALIZED: type = getattr(nn.parameter, "UninitializedTensorMixin")
# Nesting of modules a spec may hold (docs/daemon.md: 128 levels).
_MAX_DEPTH = 128


def _as_constructed(t: type, args: dict[str, Any]) -> nn.Module:
    """What the built-in's constructor makes of ``args``, on the meta device (no memory, no
    initialisation): the parameters and buffers it registers, their shapes and dtypes."""
    args = {k: _tuples(v) for k, v in args.items()}
    if "dtype" in args:
        args["dtype"] = getattr(torch, args["dtype"])
    with torch.device("meta"):
        module: nn.Module = t(**args)
    return module


def _same_slot(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(a.shape == b.shape and a.dtype == b.dtype
                and getattr(a, "requires_grad", False) == getattr(b, "requires_grad", False))


def _jsonable(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    return value


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


# --- from_torch: the spec of a live module ---------------------------------------------

def _check(m: nn.Module, path: str, depth: int) -> None:
    """Refuses what a spec would silently lose."""
    t = type(m)
    if depth > _MAX_DEPTH:
        raise unsupported(path, m, f"it is nested {depth} modules deep; a spec holds at most "
                             f"{_MAX_DEPTH} levels")
    for kind, slots in (("parameter", m._parameters), ("buffer", m._buffers)):
        for name, value in slots.items():
            if value is None:
                continue
            if isinstance(value, _UNINITIALIZED):
                raise unsupported(path, m, f"its {kind} '{name}' is uninitialized (a lazy "
                                     "module): run one forward first")
            if value.device.type == "meta":
                raise unsupported(path, m, f"its {kind} '{name}' is on the meta device and "
                                     "holds no values: materialize it first (to_empty "
                                     "and an init)")
    hooks = [kind for kind, hooked in (
        ("forward hooks", m._forward_hooks), ("forward pre-hooks", m._forward_pre_hooks),
        ("state_dict hooks", m._state_dict_hooks),
        ("state_dict pre-hooks", m._state_dict_pre_hooks),
        ("load_state_dict pre-hooks", m._load_state_dict_pre_hooks)) if hooked]
    if hooks:
        raise unsupported(path, m, f"it has {' and '.join(hooks)}, which paramd does not run "
                             "(torch.nn.utils.weight_norm and spectral_norm add some); "
                             "remove them before from_torch")
    if t not in _ARGS:
        base = next((b for b in _ARGS if b not in _CONTAINERS and isinstance(m, b)), None)
        if base is not None:
            raise unsupported(path, m, f"a subclass of nn.{base.__name__}: paramd builds "
                                 f"{base.__name__} itself, not subclasses; use "
                                 f"nn.{base.__name__}, or a module that holds one")


class _Specs:
    """One spec_of walk: the objects met so far, by identity, and the paths they were met
    at (a later path to the same Parameter is a tie, to the same module a ref)."""

    def __init__(self, trace_forward: bool) -> None:
        self.trace_forward = trace_forward
        self.module_paths: dict[int, str] = {}
        self.param_paths: dict[int, str] = {}
        self.buffer_paths: dict[int, str] = {}

    def node(self, m: nn.Module, path: str, depth: int) -> dict[str, Any]:
        _check(m, path, depth)
        t = type(m)
        spec: dict[str, Any] = {"type": t.__name__}
        constructed: Optional[nn.Module] = None
        if t in _ARGS:
            args = {k: _jsonable(v) for k, v in _ARGS[t](m).items()}
            factory = next((p for p in m._parameters.values() if p is not None), None)
            if factory is not None and factory.dtype != torch.float32:
                args["dtype"] = _dtype_name(factory)
            if args:
                spec["args"] = args
            constructed = _as_constructed(t, args)
            removed = [n for n in (*constructed._parameters, *constructed._buffers)
                       if n not in m._parameters and n not in m._buffers]
            if removed:
                raise unsupported(path, m, f"its {', '.join(removed)} was removed (by a "
                                     f"parametrization?), but paramd's {t.__name__} has it")
        else:
            if t.__name__ in _BUILTINS:
                spec["custom"] = True
            # Plain attributes (the seed MLP's w1): never registered, but their names are
            # taken, so registering one fails remotely as it does in PyTorch.
            attributes = [k for k in vars(m) if not k.startswith("_") and k != "training"]
            if attributes:
                spec["attributes"] = attributes
        for key, items in (("parameters", self.parameters(m, path, constructed)),
                           ("buffers", self.buffers(m, path, constructed)),
                           ("children", self.children(m, path, depth))):
            if items:
                spec[key] = items
        has_forward = m._program is not None if isinstance(m, SpecModule) \
            else type(m).forward is not nn.Module.forward
        if t not in _ARGS and has_forward:
            try:
                # A module to_torch made carries its program as it came.
                spec["forward"] = copy.deepcopy(m._program) if isinstance(m, SpecModule) \
                    else forward_program(m, path)
            except UnsupportedModule:
                if self.trace_forward:
                    raise
        return spec

    def parameters(self, m: nn.Module, path: str,
                   constructed: Optional[nn.Module]) -> list[dict[str, Any]]:
        own = constructed._parameters if constructed is not None else {}
        items: list[dict[str, Any]] = []
        for name, p in m._parameters.items():
            if p is None:
                # bias=False makes its None slot itself; any other None slot is declared.
                if name not in own or own[name] is not None:
                    items.append({"name": name, "none": True})
                continue
            if id(p) in self.param_paths:
                items.append({"name": name, "tie": self.param_paths[id(p)]})
                continue
            self.param_paths[id(p)] = _join(path, name)
            # A built-in's own parameter as its constructor makes it needs no entry; one
            # frozen, or of another dtype or shape, is declared again as it is.
            if name in own and _same_slot(p, own[name]):
                continue
            item: dict[str, Any] = {"name": name, "shape": list(p.shape),
                                    "dtype": _dtype_name(p)}
            if not p.requires_grad:
                item["requires_grad"] = False
            items.append(item)
        return items

    def buffers(self, m: nn.Module, path: str,
                constructed: Optional[nn.Module]) -> list[dict[str, Any]]:
        own = constructed._buffers if constructed is not None else {}
        items: list[dict[str, Any]] = []
        for name, b in m._buffers.items():
            if b is not None:
                if id(b) in self.buffer_paths:
                    raise unsupported(path, m, f"its buffer '{name}' is the tensor of buffer "
                                         f"'{self.buffer_paths[id(b)]}' too; paramd shares "
                                         "parameters (ties) and whole modules, not buffers: "
                                         "register a copy, or share the module")
                self.buffer_paths[id(b)] = _join(path, name)
                if name in own and _same_slot(b, own[name]):
                    continue
            item: dict[str, Any] = {"name": name}
            if b is None:
                item["none"] = True
            else:
                item.update({"shape": list(b.shape), "dtype": _dtype_name(b)})
            if name in m._non_persistent_buffers_set:
                item["persistent"] = False
            items.append(item)
        return items

    def children(self, m: nn.Module, path: str, depth: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for name, child in m._modules.items():
            full = _join(path, name)
            if child is None:
                items.append({"name": name, "none": True})
            elif id(child) in self.module_paths:
                items.append({"name": name, "ref": self.module_paths[id(child)]})
            else:
                self.module_paths[id(child)] = full
                items.append({"name": name, **self.node(child, full, depth + 1)})
        return items


def spec_of(module: nn.Module, *, trace_forward: bool = True) -> dict[str, Any]:
    """The spec (docs/specs.md) of a live module tree. UnsupportedModule, naming the
    module, for anything a spec cannot hold. ``trace_forward=False`` leaves custom classes'
    forward programs out instead of failing on one that cannot be expressed."""
    specs = _Specs(trace_forward)
    specs.module_paths[id(module)] = ""
    return specs.node(module, "", 1)


def from_torch(module: nn.Module, client: Client, name: str, *, device: str = "cpu",
               trace_forward: bool = True, progress: Progress = None) -> RemoteModel:
    """Creates model ``name`` on the daemon from a live module (its spec, then every
    Parameter and buffer object once, in one atomic write) and returns its handle."""
    # A model has one train/eval mode (Models.SetMode sets every module's, as train() does);
    # a tree whose modules differ would run differently there.
    mixed = next((path for path, m in module.named_modules(remove_duplicate=False)
                  if m.training != module.training), None)
    if mixed is not None:
        raise UnsupportedModule(
            f"module '{mixed}' is in {'training' if not module.training else 'eval'} mode "
            f"and the root in {'training' if module.training else 'eval'} mode; a paramd "
            "model has one mode for all its modules: call train() or eval() on the root "
            "first")
    spec = spec_of(module, trace_forward=trace_forward)
    remote = client.create(name, spec, device=device)
    try:
        values: dict[Any, Any] = {}
        for key, p in module.named_parameters():
            values[key] = p
        for key, b in module.named_buffers():
            values[key] = b
        if values:
            remote.update(values, progress=progress)
        if not module.training:
            remote.eval()
    except BaseException:
        client.delete(name)
        raise
    return remote


# --- to_torch: a live module from a remote model ---------------------------------------

def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def _op(name: str, inputs: list[Any], args: dict[str, Any], training: bool) -> Any:
    x = inputs[0]
    if name == "relu":
        return torch.relu(x)
    if name == "gelu":
        return F.gelu(x, **args)
    if name == "silu":
        return F.silu(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    if name in ("identity",):
        return x
    if name == "contiguous":
        return x.contiguous()
    if name == "softmax":
        return F.softmax(x, dim=args.get("dim"))
    if name == "log_softmax":
        return F.log_softmax(x, dim=args.get("dim"))
    if name == "flatten":
        return torch.flatten(x, args.get("start_dim", 0), args.get("end_dim", -1))
    if name == "view":
        return x.view(*args["shape"])
    if name == "reshape":
        return x.reshape(*args["shape"])
    if name == "transpose":
        return x.transpose(args["dim0"], args["dim1"])
    if name == "permute":
        return x.permute(*args["dims"])
    if name == "unsqueeze":
        return x.unsqueeze(args["dim"])
    if name == "squeeze":
        return x.squeeze(args["dim"]) if "dim" in args else x.squeeze()
    if name in ("add", "sub", "mul", "div"):
        other = inputs[1] if len(inputs) > 1 else args["other"]
        if name == "add":
            return torch.add(x, other, alpha=args["alpha"]) if "alpha" in args else x + other
        if name == "sub":
            return torch.sub(x, other, alpha=args["alpha"]) if "alpha" in args else x - other
        return x * other if name == "mul" else x / other
    if name == "cat":
        return torch.cat(inputs, dim=args.get("dim", 0))
    if name == "dropout":
        return F.dropout(x, args.get("p", 0.5), training=training)
    raise UnsupportedModule(f"op '{name}' is unknown to this client")


class SpecModule(nn.Module):  # type: ignore[misc,unused-ignore]
    """Base of the classes to_torch makes for custom containers: its forward runs the
    spec's forward program."""

    _program: Optional[list[Any]] = None

    def forward(self, input: Any, **named: Any) -> Any:
        program = self._program
        if program is None:
            raise NotImplementedError(
                f'Module [{type(self).__name__}] is missing the required "forward" function')
        values = {"input": input, **named}
        current = input
        for step in program:
            if isinstance(step, str):
                step = {"call": step}
            ins = step.get("in")
            if ins is None:
                inputs = [current]
            elif isinstance(ins, str):
                inputs = [values[ins]]
            else:
                inputs = [values[i] for i in ins]
            if "call" in step:
                current = getattr(self, step["call"])(inputs[0])
            else:
                current = _op(step["op"], inputs, step.get("args", {}), self.training)
            if "out" in step:
                values[step["out"]] = current
        return current


def module_from_spec(spec: dict[str, Any]) -> nn.Module:
    """A live module tree from a spec; tensors are uninitialised (``torch.empty``)."""
    classes: dict[str, type] = {}
    refs: list[tuple[nn.Module, str, str]] = []
    ties: list[tuple[nn.Module, str, str]] = []

    def build(node: dict[str, Any]) -> nn.Module:
        type_name = node["type"]
        args = {k: _tuples(v) for k, v in node.get("args", {}).items()}
        if "dtype" in args:
            args["dtype"] = getattr(torch, args["dtype"])
        if type_name in _BUILTINS and not node.get("custom"):
            cls = _BUILTINS[type_name]
            if cls in (nn.Sequential, nn.ModuleList, nn.ModuleDict):
                m = cls(**args)
            else:
                with torch.device("meta"):  # no initialisation: the values come after
                    m = cls(**args)
                m = m.to_empty(device="cpu")
        else:
            if type_name not in classes:
                classes[type_name] = type(type_name, (SpecModule,), {})
            m = classes[type_name]()
            if "forward" in node:
                m._program = node["forward"]
        for item in node.get("parameters", []):
            name = item["name"]
            if item.get("none"):
                m.register_parameter(name, None) if name not in m._parameters \
                    else m._parameters.__setitem__(name, None)
            elif "tie" in item:
                if name not in m._parameters:
                    m.register_parameter(name, None)
                ties.append((m, name, item["tie"]))
            else:
                # A built-in's own parameter declared again (frozen, or of another dtype)
                # takes the constructor's one's place, as assigning it in torch does.
                dtype = getattr(torch, item.get("dtype", "float32"))
                m.register_parameter(name, nn.Parameter(
                    torch.empty(item["shape"], dtype=dtype),
                    requires_grad=item.get("requires_grad", True)))
        for item in node.get("buffers", []):
            name = item["name"]
            persistent = item.get("persistent", True)
            if item.get("none"):
                m.register_buffer(name, None, persistent)
            else:
                dtype = getattr(torch, item.get("dtype", "float32"))
                m.register_buffer(name, torch.empty(item["shape"], dtype=dtype), persistent)
        for index, item in enumerate(node.get("children", [])):
            name = item.get("name", str(index))
            if item.get("none"):
                m.add_module(name, None)
            elif "ref" in item:
                m.add_module(name, None)
                refs.append((m, name, item["ref"]))
            else:
                m.add_module(name, build(item))
        return m

    root = build(spec)
    for parent, name, target in refs:
        parent._modules[name] = root.get_submodule(target)
    for m, name, target in ties:
        m._parameters[name] = root.get_parameter(target)
    return root


def exported_spec(remote: RemoteModel) -> tuple[dict[str, Any], int]:
    """The model's spec as the daemon exports it (the tree as it is now, with ``ref`` and
    ``tie``) and the version it describes: Models.GetSpec."""
    answer = remote.client._unary("/paramd.v1.Models/GetSpec",
                                  models_pb2.GetSpecRequest(name=remote.name),
                                  models_pb2.GetSpecResponse)
    spec: dict[str, Any] = json.loads(answer.spec_json)
    return spec, int(answer.version)


def to_torch(remote: RemoteModel) -> nn.Module:
    """A live ``nn.Module`` equal to the remote model: its classes' names, state_dict keys
    and values, ties and shared modules, non-persistent buffers, repr, train/eval mode and
    forward. Reads one model version (retried if a writer moved the model in between)."""
    for _ in range(5):
        spec, version = exported_spec(remote)
        state = remote.state_dict()
        if state.version == version:
            break
    else:
        raise RuntimeError(f"model '{remote.name}' kept changing while it was read; retry")
    module = module_from_spec(spec)
    with torch.no_grad():
        module.load_state_dict(state, strict=True)
        wanted = {k for k, _ in module.named_buffers(remove_duplicate=False)} - set(state)
        if wanted:
            for key, value in remote.named_buffers(remove_duplicate=False):
                if key in wanted:
                    module.get_buffer(key).copy_(value)
    module.train(remote.training)
    return module
