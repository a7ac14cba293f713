"""Custom modules' forward traced with ``torch.fx`` onto a spec's forward program
(docs/specs.md, "Forward programs"): each child call one step, each torch function or
tensor method one op with its arguments. Whatever a program cannot express, or would run
differently, raises UnsupportedModule naming the module.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn


class UnsupportedModule(ValueError):
    """A module (named by its path) that paramd's specs cannot express."""


class _LeafTracer(torch.fx.Tracer):  # type: ignore[misc,unused-ignore]
    """Traces one module's own forward: every submodule call stays one call step."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return True


def unsupported(path: str, m: nn.Module, why: str) -> UnsupportedModule:
    """The error for module `m` at `path`, saying `why`."""
    return UnsupportedModule(f"module '{path or '(root)'}' ({type(m).__name__}): {why}")


_UNARY = {torch.relu: "relu", F.relu: "relu", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
          torch.tanh: "tanh", F.tanh: "tanh", F.gelu: "gelu", F.silu: "silu",
          torch.flatten: "flatten", F.softmax: "softmax", torch.softmax: "softmax",
          F.log_softmax: "log_softmax", torch.log_softmax: "log_softmax",
          torch.reshape: "reshape", torch.transpose: "transpose", torch.permute: "permute",
          torch.unsqueeze: "unsqueeze", torch.squeeze: "squeeze", F.dropout: "dropout"}
_BINARY = {operator.add: "add", torch.add: "add", operator.sub: "sub", torch.sub: "sub",
           operator.mul: "mul", torch.mul: "mul", operator.truediv: "div", torch.div: "div",
           operator.iadd: "add", operator.imul: "mul"}
_METHODS = {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "flatten": "flatten",
            "softmax": "softmax", "log_softmax": "log_softmax", "view": "view",
            "reshape": "reshape", "transpose": "transpose", "permute": "permute",
            "unsqueeze": "unsqueeze", "squeeze": "squeeze", "contiguous": "contiguous",
            "add": "add", "sub": "sub", "mul": "mul", "div": "div"}
# Positional argument names after the input, per op (PyTorch's).
_POSITIONAL = {"flatten": ["start_dim", "end_dim"], "softmax": ["dim"], "log_softmax": ["dim"],
               "transpose": ["dim0", "dim1"], "unsqueeze": ["dim"], "squeeze": ["dim"],
               "dropout": ["p", "training"], "gelu": [], "relu": ["inplace"],
               "silu": ["inplace"], "add": ["other"], "sub": ["other"], "mul": ["other"],
               "div": ["other"], "cat": ["dim"]}
# Arguments with these values are PyTorch's defaults, which the ops take.
_DROPPED_KWARGS = {"inplace": False, "dtype": None, "_stacklevel": 3, "rounding_mode": None}
# The arguments each op's spec takes (docs/specs.md); anything else a traced call passes
# would be lost, so it is refused.
_OP_ARGS = {"relu": {"inplace"}, "silu": {"inplace"}, "gelu": {"approximate"},
            "softmax": {"dim"}, "log_softmax": {"dim"}, "flatten": {"start_dim", "end_dim"},
            "view": {"shape"}, "reshape": {"shape"}, "transpose": {"dim0", "dim1"},
            "permute": {"dims"}, "unsqueeze": {"dim"}, "squeeze": {"dim"},
            "add": {"other", "alpha"}, "sub": {"other", "alpha"}, "mul": {"other"},
            "div": {"other"}, "dropout": {"p"}, "sigmoid": set(), "tanh": set(),
            "contiguous": set()}


def forward_program(m: nn.Module, path: str) -> list[Any]:
    """The forward program of custom module ``m`` (at ``path``), traced from its forward."""
    try:
        graph = _LeafTracer().trace(m)
    except Exception as error:  # fx raises many kinds: TraceError, TypeError, ...
        raise unsupported(path, m, f"its forward cannot be traced with torch.fx ({error})") from None
    nodes = list(graph.nodes)
    following = _dropouts_following_the_mode(m, nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    names: dict[Any, str] = {}
    for i, node in enumerate(placeholders):
        names[node] = "input" if i == 0 else node.target.lstrip("*")
    body = [n for n in nodes if n.op not in ("placeholder", "output")]
    output = next(n for n in nodes if n.op == "output")
    if not body:
        return [{"op": "identity"}]

    def ref(arg: Any) -> str:
        if not isinstance(arg, torch.fx.Node) or arg not in names:
            raise unsupported(path, m, f"step input {arg!r} is not a tensor value of the program")
        return names[arg]

    steps: list[Any] = []
    prev = "input"
    for index, node in enumerate(body):
        names[node] = node.name
        step: dict[str, Any]
        inputs: list[str]
        if node.op == "call_module":
            if "." in node.target:
                raise unsupported(path, m, f"forward calls '{node.target}', a module below its "
                                     "children; a step calls a direct child only: put that "
                                     "part in a child of its own (an nn.Sequential for a loop "
                                     "over a ModuleList)")
            if node.kwargs or len(node.args) != 1:
                raise unsupported(path, m, f"child '{node.target}' is called with more than one input")
            step, inputs = {"call": node.target}, [ref(node.args[0])]
        elif node.op in ("call_function", "call_method"):
            step, inputs = _op_step(node, path, m, ref, node in following)
        else:
            raise unsupported(path, m, f"'{node.op} {node.target}' cannot be a forward step (a "
                                 "parameter or attribute read in forward is not expressible)")
        last = node is body[-1] and output.args[0] is node
        users = list(node.users)
        compact_out = last or (len(users) == 1 and index + 1 < len(body)
                               and users[0] is body[index + 1]
                               and _first_input(body[index + 1]) is node
                               and len(body[index + 1].all_input_nodes) == 1)
        if not (len(inputs) == 1 and inputs[0] == prev):
            step["in"] = inputs[0] if len(inputs) == 1 and step.get("op") != "cat" else inputs
        if not compact_out:
            step["out"] = node.name
        prev = node.name
        if set(step) == {"call"}:
            steps.append(step["call"])
        else:
            steps.append(step)
    if output.args[0] is not body[-1]:
        steps.append({"op": "identity", "in": ref(output.args[0])})
    return steps


def _first_input(node: Any) -> Any:
    return node.args[0] if node.args else None


def _is_dropout(node: Any) -> bool:
    return bool(node.op == "call_function" and node.target in (F.dropout, torch.dropout))


def _dropouts_following_the_mode(m: nn.Module, nodes: list[Any]) -> set[Any]:
    """The dropout calls whose ``training`` is ``self.training``. fx records it as the
    constant it was while tracing, as it records F.dropout's default (True: drops even in
    eval) or a literal, so the forward is traced again with the mode flipped: the calls
    whose constant flipped with it follow the mode."""
    dropouts = [n for n in nodes if _is_dropout(n)]
    if not dropouts:
        return set()
    was = m.training
    try:
        m.training = not was  # this module's flag only: fx reads self.training
        flipped = [n for n in _LeafTracer().trace(m).nodes if _is_dropout(n)]
    except Exception:
        return set()
    finally:
        m.training = was

    def training(node: Any) -> Any:
        if "training" in node.kwargs:
            return node.kwargs["training"]
        return node.args[2] if len(node.args) > 2 else True

    if len(flipped) != len(dropouts):
        return set()
    return {a for a, b in zip(dropouts, flipped)
            if training(a) is was and training(b) is (not was)}


def _op_step(node: Any, path: str, m: nn.Module, ref: Callable[[Any], str],
             follows_mode: bool = False) -> tuple[dict[str, Any], list[str]]:
    target = node.target
    args = list(node.args)
    kwargs = dict(node.kwargs)
    if node.op == "call_method":
        op = _METHODS.get(target)
    elif target in (torch.cat, torch.concat):
        tensors = args.pop(0) if args else kwargs.pop("tensors")
        step: dict[str, Any] = {"op": "cat"}
        dim = args[0] if args else kwargs.get("dim", 0)
        if dim != 0:
            step["args"] = {"dim": dim}
        return step, [ref(t) for t in tensors]
    else:
        op = _UNARY.get(target) or _BINARY.get(target)
    if op is None:
        name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
        raise unsupported(path, m, f"'{name}' in forward has no paramd op (docs/specs.md lists "
                             "the ops)")
    if not args:
        raise unsupported(path, m, f"'{op}' without an input")
    first = args.pop(0)
    step = {"op": op}
    inputs: list[str]
    op_args: dict[str, Any] = {}
    if op in ("add", "sub", "mul", "div"):
        other = args.pop(0) if args else kwargs.pop("other")
        def number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        if isinstance(first, torch.fx.Node) and isinstance(other, torch.fx.Node):
            inputs = [ref(first), ref(other)]
        elif isinstance(first, torch.fx.Node) and number(other):
            inputs, op_args["other"] = [ref(first)], other
        elif isinstance(other, torch.fx.Node) and number(first) and op in ("add", "mul"):
            inputs, op_args["other"] = [ref(other)], first
        else:
            raise unsupported(path, m, f"'{op}' of {first!r} and {other!r} is not expressible")
        if args:
            raise unsupported(path, m, f"'{op}' with more arguments than paramd's {op} takes "
                                 f"({args!r})")
        op_args.update(kwargs)
    else:
        inputs = [ref(first)]
        if op in ("view", "reshape", "permute"):
            shape = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
            shape = kwargs.pop("shape", kwargs.pop("dims", shape))
            if any(not isinstance(d, int) for d in shape):
                raise unsupported(path, m, f"'{op}' with a shape computed in forward ({shape!r}); "
                                     "only constant shapes are expressible")
            op_args["dims" if op == "permute" else "shape"] = list(shape)
            args = []
        positional = _POSITIONAL.get(op, [])
        if len(args) > len(positional):
            raise unsupported(path, m, f"'{op}' with more arguments than paramd's {op} takes "
                                 f"({args[len(positional):]!r})")
        for name, value in zip(positional, args):
            op_args[name] = value
        op_args.update(kwargs)
    if op == "dropout":
        # paramd's dropout is F.dropout(x, p, training=self.training); a literal, or
        # F.dropout's default (True: it drops even in eval), would run differently.
        op_args.pop("training", None)
        if not follows_mode:
            raise unsupported(path, m, "F.dropout is called with training other than "
                                 "self.training; paramd's dropout follows the module's mode: "
                                 "pass training=self.training, or use nn.Dropout")
        op_args.pop("inplace", None)
    for key, default in _DROPPED_KWARGS.items():
        if key in op_args and op_args[key] == default:
            del op_args[key]
    for key, value in op_args.items():
        if isinstance(value, torch.fx.Node):
            raise unsupported(path, m, f"'{op}' argument '{key}' computed in forward is not "
                                 "expressible")
    unknown = sorted(set(op_args) - _OP_ARGS.get(op, set()))
    if unknown:
        raise unsupported(path, m, f"'{op}' with {', '.join(unknown)}, which paramd's {op} does "
                             "not take (docs/specs.md lists each op's arguments)")
    if op in ("squeeze", "unsqueeze", "softmax", "log_softmax") and not (
            op_args.get("dim") is None or (isinstance(op_args["dim"], int)
                                           and not isinstance(op_args["dim"], bool))):
        raise unsupported(path, m, f"'{op}' over dim {op_args['dim']!r}; paramd's {op} takes one "
                             "dimension")
    if op_args:
        step["args"] = op_args
    return step, inputs
