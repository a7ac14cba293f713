"""Remote optimizers (paramd.v1.Training): torch.optim's SGD, Adam and AdamW run inside
paramd on gradients that workers push. :class:`RemoteOptimizer` reads like a torch
optimizer: ``step()``, ``zero_grad()``, ``state_dict()`` and ``load_state_dict()`` in torch's
layout; ``push()`` adds gradients (``p.grad += g``) and :func:`push_grads` pushes a local
module's ``.grad`` tensors. docs/training.md describes the semantics.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from paramd import _tensors, _wire
from paramd._errors import DataLoss
from paramd.v1 import parameters_pb2, tensor_pb2, training_pb2

if TYPE_CHECKING:
    from paramd._client import Client

_T = "/paramd.v1.Training/"

Gradients = Union[Mapping[str, Any], Iterable[tuple[str, Any]]]


def to_hyper(value: Any) -> training_pb2.HyperValue:
    """A hyperparameter with its Python type (None, bool, int, float, tuple of floats)."""
    if value is None:
        return training_pb2.HyperValue(none=True)
    if isinstance(value, bool):
        return training_pb2.HyperValue(bool_value=value)
    if isinstance(value, int):
        return training_pb2.HyperValue(int_value=value)
    if isinstance(value, float):
        return training_pb2.HyperValue(float_value=value)
    if isinstance(value, (tuple, list)):
        return training_pb2.HyperValue(
            tuple_value=training_pb2.FloatTuple(values=[float(v) for v in value]))
    item = getattr(value, "item", None)  # a one-element tensor (a Tensor lr)
    if item is not None:
        return to_hyper(item())
    raise TypeError(f"a hyperparameter must be None, a bool, a number or a tuple of numbers, "
                    f"not {type(value).__name__}")


def from_hyper(value: training_pb2.HyperValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "float_value":
        return value.float_value
    if kind == "tuple_value":
        return tuple(value.tuple_value.values)
    return None


def _hypers(values: Mapping[str, Any]) -> list[training_pb2.Hyperparameter]:
    return [training_pb2.Hyperparameter(name=k, value=to_hyper(v)) for k, v in values.items()]


@dataclass(frozen=True)
class OptimizerInfo:
    """paramd.v1.OptimizerInfo."""

    name: str
    model: str
    kind: str
    param_groups: int
    parameters: int
    with_gradient: int
    steps: int
    state_bytes: int
    model_version: int
    mode: str = "manual"
    max_staleness: int = 0
    workers: int = 0
    waiting: int = 0

    @staticmethod
    def from_proto(info: training_pb2.OptimizerInfo) -> "OptimizerInfo":
        return OptimizerInfo(info.name, info.model, info.kind, info.param_groups,
                             info.parameters, info.with_gradient, info.steps, info.state_bytes,
                             info.model_version, info.mode, info.max_staleness, info.workers,
                             info.waiting)


def _frames(options_frame: bytes,
            tensors: Sequence[tuple[tensor_pb2.TensorHeader, _tensors.Outgoing]]) -> Iterator[bytes]:
    """An options frame, then per tensor a header and its chunks (GradientFrame and
    OptimizerStateFrame share WriteFrame's field numbers for header and chunk)."""
    yield options_frame
    for header, out in tensors:
        yield training_pb2.GradientFrame(header=header).SerializeToString()
        data = out.data
        for offset in range(0, data.nbytes, _wire.CHUNK_BYTES):
            yield _wire.encode_chunk(offset, data[offset:offset + _wire.CHUNK_BYTES])


def _decode_state_frame(data: bytes) -> Any:
    chunk = _wire.decode_chunk(data)
    if chunk is not None:
        return chunk
    return training_pb2.OptimizerStateFrame.FromString(data)


class RemoteOptimizer:
    """A handle on the daemon's optimizer ``name``; cheap, holds no state of its own."""

    def __init__(self, client: "Client", name: str) -> None:
        self._client = client
        self.name = name

    def __repr__(self) -> str:
        return f"RemoteOptimizer({self.name!r})"

    def info(self) -> OptimizerInfo:
        for info in self._client.optimizers():
            if info.name == self.name:
                return info
        from paramd._errors import NotFound
        raise NotFound(f"optimizer '{self.name}' not found; client.optimizers() lists them")

    def push(self, gradients: Gradients, *, version: int = 0, worker: str = "",
             round: int = 0) -> training_pb2.PushGradientsResponse:
        """``p.grad += g`` for each (name, gradient), all or nothing; names are any
        state_dict name of the parameter. An asynchronous optimizer steps at once with them
        (``round``: the optimizer step whose weights they were computed on; VersionConflict
        when it is too old). A synchronous one takes them as ``worker``'s push for ``round``
        and answers once the round has stepped on the average of its workers' pushes
        (VersionConflict for another round, or when the round timed out; AlreadyExists for a
        second push of ``worker`` in the round). Returns the answer (``with_gradient``,
        ``model_version``, ``round``)."""
        items = gradients.items() if isinstance(gradients, Mapping) else gradients
        tensors = []
        for name, value in items:
            out = _tensors.to_wire(value, name=name)
            tensors.append((_wire.header_of(name, out), out))
        options = training_pb2.GradientFrame(options=training_pb2.GradientOptions(
            optimizer=self.name, version=version, worker=worker,
            round=round)).SerializeToString()
        return self._client._client_stream(_T + "PushGradients", _frames(options, tensors),
                                           training_pb2.PushGradientsResponse)

    def step(self, *, if_version: Optional[int] = None) -> int:
        """``optimizer.step()``: returns the model version holding the result."""
        answer = self._client._unary(
            _T + "Step", training_pb2.StepRequest(optimizer=self.name, if_version=if_version or 0),
            training_pb2.StepResponse)
        return answer.version

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._client._unary(_T + "ZeroGrad", training_pb2.ZeroGradRequest(
            optimizer=self.name, keep_as_zeros=not set_to_none), training_pb2.OptimizerInfo)

    def set_hyperparameters(self, group: Optional[int] = None, **values: Any) -> None:
        """Writes hyperparameters (``lr=...``) of param group ``group``, or of every group."""
        self._client._unary(_T + "SetHyperparameters", training_pb2.SetHyperparametersRequest(
            optimizer=self.name, group=-1 if group is None else group,
            hyperparameters=_hypers(values)), training_pb2.OptimizerInfo)

    def delete(self) -> None:
        self._client._unary(_T + "DeleteOptimizer",
                            training_pb2.DeleteOptimizerRequest(optimizer=self.name),
                            training_pb2.DeleteOptimizerResponse)

    def state_dict(self) -> dict[str, Any]:
        """``optimizer.state_dict()`` in torch's layout: loads into
        ``torch.optim.<kind>(params).load_state_dict``."""
        reader = _wire.StreamReader(expect_data=True)
        reader.start = parameters_pb2.StreamStart()
        head: Optional[training_pb2.OptimizerStateHead] = None
        frames = self._client._server_stream(
            _T + "GetOptimizerState", training_pb2.GetOptimizerStateRequest(optimizer=self.name),
            _decode_state_frame)
        try:
            for frame in frames:
                if isinstance(frame, _wire.Chunk):
                    reader.add(frame)
                    continue
                kind = frame.WhichOneof("frame")
                if kind == "options":
                    head = frame.options
                elif kind == "header":
                    reader.add(parameters_pb2.TensorFrame(header=frame.header))
                elif kind == "chunk":
                    reader.add(parameters_pb2.TensorFrame(chunk=frame.chunk))
        finally:
            reader.wait_copies()
        reader.finish()
        if head is None:
            raise DataLoss("the optimizer state stream carried no head frame")
        state: dict[int, dict[str, Any]] = {}
        for entry in reader.entries:
            index, _, key = entry.name.partition(".")
            state.setdefault(int(index), {})[key] = entry.value
        groups = []
        for group in head.param_groups:
            values = {h.name: from_hyper(h.value) for h in group.hyperparameters}
            values["params"] = list(group.params)
            groups.append(values)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """``optimizer.load_state_dict()`` from torch's layout (a torch optimizer's
        ``state_dict()``, or this class's)."""
        head = training_pb2.OptimizerStateHead(optimizer=self.name)
        for group in state_dict["param_groups"]:
            entry = head.param_groups.add()
            entry.params.extend(int(i) for i in group["params"])
            entry.hyperparameters.extend(_hypers(
                {k: v for k, v in group.items() if k not in ("params", "param_names")}))
        tensors = []
        for index, values in state_dict["state"].items():
            for key, value in values.items():
                if key == "step" and not _tensors.is_tensor(value):
                    value = np.float32(value)
                out = _tensors.to_wire(value, name=f"{index}.{key}")
                tensors.append((_wire.header_of(f"{index}.{key}", out), out))
        options = training_pb2.OptimizerStateFrame(options=head).SerializeToString()
        self._client._client_stream(_T + "LoadOptimizerState", _frames(options, tensors),
                                    training_pb2.OptimizerInfo)


def param_groups_proto(params: Any) -> list[training_pb2.ParamGroup]:
    """CreateOptimizer's groups from torch's forms: None (all parameters), a list of names,
    or a list of dicts ``{"params": [names], **hyperparameters}``. An empty list is refused
    with torch's ValueError; a dict with an empty ``params`` is a group, as torch takes it."""
    if params is None:
        return []
    params = list(params)
    if not params:
        raise ValueError("optimizer got an empty parameter list")
    if all(isinstance(p, str) for p in params):
        return [training_pb2.ParamGroup(param_names=params)]
    groups = []
    for group in params:
        if not isinstance(group, Mapping):
            raise TypeError("params must be parameter names or dicts with a 'params' list")
        groups.append(training_pb2.ParamGroup(
            param_names=list(group["params"]),
            hyperparameters=_hypers({k: v for k, v in group.items() if k != "params"})))
    return groups


class Worker:
    """The worker's side of the parameter-server loop around a local ``nn.Module``:
    ``pull()`` copies the remote weights into the module in place, ``push()`` sends every
    ``.grad`` that is not None in one push, ``step()`` steps (manual mode). The model version
    and the optimizer round the gradients belong to are tracked for you: an asynchronous or
    synchronous optimizer's push names the round of the last pull. In synchronous mode
    ``push()`` returns once the round has stepped (every worker pushed), so the next
    ``pull()`` gets the new weights. ``worker`` names this worker in its pushes (a
    synchronous round takes one push per worker); by default the host and process id.
    """

    def __init__(self, client: "Client", model: str, optimizer: str, module: Any, *,
                 worker: str = "") -> None:
        self.model = client.model(model)
        self.optimizer = RemoteOptimizer(client, optimizer)
        self.module = module
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self.version = 0
        self.round = 0

    def pull(self) -> int:
        """The remote weights into the module's own tensors (no new memory); returns the
        model version they come from."""
        info = self.optimizer.info()
        state = self.model.state_dict(out=self.module.state_dict())
        self.version = state.version
        self.round = info.steps
        return self.version

    def push(self, *, worker: str = "") -> training_pb2.PushGradientsResponse:
        """Every parameter's ``.grad`` (those that are not None), in one push, as
        ``worker`` (this worker's id when empty) for the round of the last pull. In
        synchronous mode it returns once that round has stepped."""
        grads = {n: p.grad for n, p in self.module.named_parameters() if p.grad is not None}
        answer = self.optimizer.push(grads, version=self.version, worker=worker or self.worker,
                                     round=self.round)
        self.round = answer.round
        return answer

    def step(self) -> int:
        """``optimizer.step()`` then ``zero_grad()`` on the server (manual mode); returns the
        new model version."""
        version = self.optimizer.step()
        self.optimizer.zero_grad()
        return version
