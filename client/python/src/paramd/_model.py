"""A model held by the daemon, used like a ``torch.nn.Module``: :class:`RemoteModel`.

A RemoteModel is a handle (a Client and a model name); it holds no server state and no
tensors. Every read pins one model version, from its first byte to its last, even while
writers write, and says which (``state_dict().version``); every write is all-or-nothing
and returns the new version. Reads return torch tensors when torch is installed, NumPy
arrays otherwise or with ``as_numpy=True``: always copies of the server's data, so writing
to them changes nothing remote. Thread-safe as the Client is.
"""

from __future__ import annotations

import collections
import os
from dataclasses import replace
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np

from paramd import _tensors, _wire
from paramd._answers import StreamedLoad, merged_module_entries
from paramd._client import Client, ModelInfo
from paramd._errors import ForwardError, InvalidArgument, NotFound, ParamdError
from paramd._progress import Progress, Reporter
from paramd._results import ForwardResult, SaveResult, StateDict, incompatible_keys
from paramd.v1 import checkpoints_pb2, inference_pb2, models_pb2, parameters_pb2, tensor_pb2

Tensor = _tensors.Tensor
# NumPy-style index of leading dimensions: ints and step-1 slices.
Index = Union[int, slice, Sequence[Union[int, slice]], None]

_P = "/paramd.v1.Parameters/"


_FORMATS = {None: checkpoints_pb2.CHECKPOINT_FORMAT_UNSPECIFIED,
            "safetensors": checkpoints_pb2.CHECKPOINT_FORMAT_SAFETENSORS,
            "torch": checkpoints_pb2.CHECKPOINT_FORMAT_TORCH}
_FORMAT_NAMES = {v: (k or "") for k, v in _FORMATS.items()}


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path and name else path or name


def _normalize_index(index: Index) -> list[Union[int, slice]]:
    if index is None:
        return []
    if isinstance(index, (int, np.integer, slice)):
        return [index]
    if isinstance(index, tuple):
        return list(index)
    if isinstance(index, list):
        # NumPy and torch read a list as advanced indexing (rows picked one by one), which
        # no rectangular region is; taking it for a tuple would pick other elements.
        raise TypeError("region must be an int, a slice or a tuple of them, not a list (a "
                        "list picks rows one by one, which a region cannot; use a tuple for "
                        "several dimensions, or get each row)")
    raise TypeError(f"region must be an int, a slice or a tuple of them, not "
                    f"{type(index).__name__}")


def _squeezed(shape: Sequence[int]) -> list[int]:
    """``shape`` without its size-1 dimensions: a region write's value may have or lack them,
    as the daemon allows (docs/wire.md)."""
    return [dim for dim in shape if dim != 1]


def _pump(reader: _wire.StreamReader, frames: Iterable[Any]) -> None:
    """Feeds a stream to its reader; no chunk copy is left running when this returns."""
    try:
        for frame in frames:
            reader.add(frame)
    except BaseException:
        try:
            reader.wait_copies()
        except Exception:  # the stream's own error is the one to report
            pass
        raise
    reader.finish()


class _Handle:
    """What RemoteModel and its submodule handles share: a model and a module path."""

    def __init__(self, client: Client, model: str, path: str = "") -> None:
        self._client = client
        self._model = model
        self._path = path

    # --- single tensors -------------------------------------------------------------

    def _shape(self, name: str) -> list[int]:
        """The shape of the parameter or buffer ``name`` (full dotted path)."""
        request = parameters_pb2.GetTensorRequest(model=self._model, name=name,
                                                  metadata_only=True)
        reader = _wire.StreamReader(expect_data=False)
        _pump(reader, self._client._server_stream(_P + "GetTensor", request,
                                                  _wire.decode_tensor_frame))
        if not reader.entries:
            raise NotFound(f"model '{self._model}' sent no tensor for '{name}'")
        return reader.entries[0].shape

    def _region(self, name: str, index: Index) -> tuple[Optional[list[tuple[int, int]]],
                                                        list[int], list[int]]:
        """Wire ranges for a NumPy-style index, the dimensions ints drop, and the shape
        the index selects (without those dimensions). Ints and slices resolve against the
        tensor's shape as Python's do: negative from the end, slices clipped to the size
        (an empty range where they stop before they start), ints out of range IndexError
        with torch's text."""
        items = _normalize_index(index)
        if not items:
            return None, [], []
        shape = self._shape(name)
        if len(items) > len(shape):
            raise IndexError(f"too many indices for tensor of dimension {len(shape)} "
                             f"('{name}')")
        ranges: list[tuple[int, int]] = []
        dropped: list[int] = []
        selected: list[int] = []
        for i, item in enumerate(items):
            size = shape[i]
            if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                at = int(item)
                if not -size <= at < size:
                    raise IndexError(f"index {at} is out of bounds for dimension {i} with "
                                     f"size {size} ('{name}')")
                at = at + size if at < 0 else at
                ranges.append((at, at + 1))
                dropped.append(i)
            elif isinstance(item, slice):
                if item.step not in (None, 1):
                    raise ValueError(f"region of '{name}': only step-1 slices, not step "
                                     f"{item.step}")
                start, stop, _ = item.indices(size)
                ranges.append((start, max(start, stop)))
                selected.append(max(start, stop) - start)
            else:
                raise TypeError(f"region of '{name}': indices must be ints or slices, not "
                                f"{type(item).__name__}")
        return ranges, dropped, selected + shape[len(items):]

    def get(self, name: str, region: Index = None, *, dtype: Any = None,
            as_numpy: bool = False) -> Tensor:
        """The parameter or buffer ``name`` ("0.weight"), or a region of its leading
        dimensions NumPy-style (``(0, slice(0, 4))``; an int drops its dimension).
        ``dtype`` casts floating-point data on the wire (e.g. "bfloat16")."""
        full = _join(self._path, name)
        ranges, dropped, _ = self._region(full, region)
        request = parameters_pb2.GetTensorRequest(model=self._model, name=full)
        if ranges is not None:
            for start, stop in ranges:
                request.region.ranges.add(start=start, stop=stop)
        if dtype is not None:
            request.wire_dtype = _tensors.dtype_of(dtype).wire  # type: ignore[assignment]
        reader = _wire.StreamReader(expect_data=True, as_numpy=as_numpy)
        _pump(reader, self._client._server_stream(_P + "GetTensor", request,
                                                  _wire.decode_tensor_frame))
        if not reader.entries:
            raise NotFound(f"model '{self._model}' sent no tensor for '{full}'")
        entry = reader.entries[0]
        if dropped:
            shape = [d for i, d in enumerate(entry.shape) if i not in dropped]
            return _tensors.reshape(entry.value, shape)
        return entry.value

    def _prepare_write(self, name: str, value: Any, region: Index) -> tuple[
            tensor_pb2.TensorHeader, _tensors.Outgoing]:
        full = _join(self._path, name)
        # A bare Python float goes as float64: `p[:] = 0.1` and `p.fill_(0.1)` convert the
        # double to p's dtype once (exact in a float64 p), where a float32 on the wire would
        # round it twice.
        out = _tensors.to_wire(np.float64(value) if type(value) is float else value,
                               name=full)
        ranges, dropped, selected = self._region(full, region)
        if ranges is None and not _tensors.is_tensor(value) and not out.shape:
            # A Python number fills the whole tensor: a region over all of it.
            shape = self._shape(full)
            if shape:
                ranges = [(0, shape[0])]
        if ranges is not None and _tensors.numel(out.shape) == 1:
            out.shape = []  # one element fills the region
        elif ranges is not None and _squeezed(out.shape) != _squeezed(selected):
            # Checked here, where the shapes are the caller's (the daemon sees the dropped
            # dimensions put back).
            raise ValueError(f"cannot write a value of shape {list(out.shape)} into the "
                             f"region of '{full}' of shape {selected}")
        elif dropped:
            shape = list(out.shape)
            for i in dropped:
                shape.insert(i, 1)
            out.shape = shape
        return _wire.header_of(full, out, ranges), out

    def set(self, name: str, value: Any, region: Index = None, *,
            if_version: Optional[int] = None, progress: Progress = None) -> int:
        """Writes ``value`` (a tensor, array or number) to ``name``, or to a region of its
        leading dimensions (a single value fills it); converts dtype as ``copy_`` does.
        Returns the new model version; VersionConflict if ``if_version`` is not current."""
        return self._write([(name, region, value)], if_version, progress)

    def update(self, values: Union[Mapping[str, Any], Iterable[tuple[str, Index, Any]]], *,
               if_version: Optional[int] = None, progress: Progress = None,
               commit_each_tensor: bool = False) -> int:
        """Writes many tensors as one new version (all or nothing): a mapping of name to
        value, or ``(name, region, value)`` triples. Returns the new model version.
        ``commit_each_tensor``: each tensor is its own version as it arrives (in-place, as
        ``copy_`` one by one; the daemon needs room for the largest tensor only, docs/wire.md)."""
        items: list[tuple[str, Index, Any]] = (
            [(k, None, v) for k, v in values.items()] if isinstance(values, Mapping)
            else list(values))
        for item in items:
            if not (isinstance(item, tuple) and len(item) == 3 and isinstance(item[0], str)):
                raise TypeError("update takes a mapping of name to value or (name, region, "
                                f"value) triples, not {type(values).__name__} holding "
                                f"{item!r:.80}")
        return self._write(items, if_version, progress, commit_each_tensor)

    def _write(self, items: list[tuple[str, Index, Any]], if_version: Optional[int],
               progress: Progress, commit_each_tensor: bool = False) -> int:
        writes = [self._prepare_write(name, value, region) for name, region, value in items]
        options = parameters_pb2.WriteOptions(model=self._model, if_version=if_version or 0,
                                              commit_each_tensor=commit_each_tensor)
        with Reporter(progress, f"write {self._model}") as reporter:
            answer = self._client._client_stream(
                _P + "SetTensors", _wire.write_frames(options, writes, reporter.callback),
                parameters_pb2.WriteResponse)
        return answer.version

    # --- registration ---------------------------------------------------------------

    def register_parameter(self, name: str, param: Any, *, requires_grad: Optional[bool] = None,
                           if_version: Optional[int] = None) -> int:
        """``module.register_parameter(name, param)``: a tensor (``nn.Parameter`` or any
        tensor, taken as ``nn.Parameter(t)`` takes it: requiring grad unless
        ``requires_grad=False``) or None. PyTorch's name rules and texts (KeyError for ``.`` or ``""``,
        AlreadyExists for a taken name). Returns the new model version."""
        return self._register("RegisterParameter", name, param, True, requires_grad,
                              if_version)

    def register_buffer(self, name: str, tensor: Any, persistent: bool = True, *,
                        if_version: Optional[int] = None) -> int:
        """``module.register_buffer(name, tensor, persistent)``; None registers a None slot.
        Returns the new model version."""
        return self._register("RegisterBuffer", name, tensor, persistent, False, if_version)

    def _register(self, rpc: str, name: str, value: Any, flag: bool,
                  requires_grad: Optional[bool], if_version: Optional[int]) -> int:
        if not isinstance(name, str):
            kind = "parameter" if rpc == "RegisterParameter" else "buffer"
            raise TypeError(f"{kind} name should be a string. Got {type(name).__name__}")
        options = parameters_pb2.WriteOptions(model=self._model, if_version=if_version or 0,
                                              module_path=self._path, name=name,
                                              none=value is None)
        tensors = []
        if rpc == "RegisterBuffer":
            options.non_persistent = not flag
        if value is not None:
            out = _tensors.to_wire(value, name=name)
            if requires_grad is None:
                # An nn.Parameter says; any other tensor is wrapped as nn.Parameter(t) would
                # wrap it, which requires grad whatever t.requires_grad was.
                torch = _tensors.torch_module()
                is_parameter = torch is not None and isinstance(value, torch.nn.Parameter)
                requires_grad = (rpc == "RegisterParameter"
                                 and (bool(value.requires_grad) if is_parameter else True))
            tensors.append((_wire.header_of(name, out, None, rpc == "RegisterParameter",
                                            requires_grad), out))
        answer = self._client._client_stream(_P + rpc, _wire.write_frames(options, tensors),
                                             parameters_pb2.WriteResponse)
        return answer.version


class RemoteModule(_Handle):
    """A handle on one module of a remote model (``model.submodule("encoder.0")``, or what
    ``named_modules`` yields): register parameters and buffers on it, get and set its
    tensors by names relative to it."""

    def __init__(self, client: Client, model: str, path: str, type_name: str = "",
                 parameters: Sequence[str] = (), buffers: Sequence[str] = (),
                 shared_with: Sequence[str] = ()) -> None:
        super().__init__(client, model, path)
        self.path = path
        self.type = type_name
        self.parameter_names = list(parameters)
        self.buffer_names = list(buffers)
        self.shared_with = list(shared_with)

    def __repr__(self) -> str:
        return f"<RemoteModule {self.type or '?'} at {self._model}:{self.path or '(root)'}>"

    def __eq__(self, other: object) -> bool:
        """Two handles on one module object (a shared module's paths) are equal."""
        if not isinstance(other, RemoteModule):
            return NotImplemented
        return self._model == other._model and (
            self.path == other.path or other.path in self.shared_with)

    def __hash__(self) -> int:
        return hash((self._model, min([self.path, *self.shared_with])))


class RemoteModel(_Handle):
    """A model held by a paramd daemon, used like ``torch.nn.Module``. Make one with
    ``client.model(name)`` or ``client.create(name, spec)``."""

    def __init__(self, client: Client, name: str) -> None:
        super().__init__(client, name, "")
        self.name = name
        self._module_order: dict[frozenset[str], list[str]] = {}

    @property
    def client(self) -> Client:
        return self._client

    # --- description ----------------------------------------------------------------

    def describe(self) -> ModelInfo:
        """DescribeModel: repr (whole: fetched with GetRepr when long), counts, bytes,
        version, device and mode."""
        return self._client._whole_repr(ModelInfo.from_proto(self._client._unary(
            "/paramd.v1.Models/DescribeModel", models_pb2.DescribeModelRequest(name=self.name),
            models_pb2.ModelInfo)))

    @property
    def version(self) -> int:
        """The model's current version."""
        return self.describe().version

    @property
    def training(self) -> bool:
        return self.describe().training

    @property
    def device(self) -> str:
        return self.describe().device

    def __repr__(self) -> str:
        """PyTorch's ``repr(module)`` of the remote model. repr must not raise (loggers,
        debuggers and test reports call it): a model that cannot be described now shows as
        a handle saying why."""
        try:
            return self.describe().repr
        except ParamdError as error:
            return f"<RemoteModel '{self.name}': {type(error).__name__}: {error.message}>"

    def delete(self, *, if_version: Optional[int] = None) -> None:
        self._client.delete(self.name, if_version=if_version)

    def submodule(self, path: str) -> RemoteModule:
        """A handle on the module at dotted ``path`` ("" is the root), as
        ``get_submodule`` finds it (NotFound with PyTorch's text when there is none)."""
        modules = dict(self.named_modules(remove_duplicate=False))
        if path in modules:
            return modules[path]
        # PyTorch's get_submodule text, naming the class where the walk stopped.
        parent = ""
        for item in path.split("."):
            here = _join(parent, item)
            if here not in modules:
                owner = modules[parent]
                if item in owner.parameter_names or item in owner.buffer_names:
                    raise NotFound(f"`{item}` is not an nn.Module")  # torch's text
                raise NotFound(f"{owner.type} has no attribute `{item}`")
            parent = here
        raise NotFound(f"{self.name} has no module `{path}`")

    # --- mode and device ------------------------------------------------------------

    def train(self, mode: bool = True, *, if_version: Optional[int] = None) -> "RemoteModel":
        """``model.train(mode)``; returns self."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")  # torch's text
        self._client._unary("/paramd.v1.Models/SetMode", models_pb2.SetModeRequest(
            name=self.name, training=mode, if_version=if_version or 0), models_pb2.ModelInfo)
        return self

    def eval(self) -> "RemoteModel":
        """``model.eval()``; returns self."""
        return self.train(False)

    def to(self, device: Any, *, if_version: Optional[int] = None) -> "RemoteModel":
        """``model.to(device)`` ("cpu", "cuda", "cuda:1" or a torch.device); returns self."""
        self._client._unary("/paramd.v1.Models/MoveModel", models_pb2.MoveModelRequest(
            name=self.name, device=str(device), if_version=if_version or 0),
            models_pb2.ModelInfo)
        return self

    # --- state_dict and iterators ---------------------------------------------------

    def state_dict(self, prefix: str = "", *, dtype: Any = None,
                   out: Optional[Mapping[str, Tensor]] = None, as_numpy: bool = False,
                   progress: Progress = None) -> StateDict:
        """``model.state_dict(prefix=...)`` of one model version (``.version``).

        Keys and order are PyTorch's; tied parameters and shared modules' entries share one
        storage, as in PyTorch. ``dtype`` casts floating-point tensors on the wire (e.g.
        "bfloat16" halves the bytes). ``out`` (a previous result, or any mapping of name to
        contiguous CPU tensor) is filled in place: no memory is allocated for the names it
        holds with the model's dtype and shape; any other name gets a new tensor, leaving
        ``out``'s as it was. A pull that fails midway (a lost connection) may have filled
        some of ``out``'s tensors.
        """
        if out is not None:
            if not isinstance(out, Mapping):
                raise TypeError(f"out must be a mapping of name to tensor (such as an earlier "
                                f"state_dict), not {type(out).__name__}")
            for key, value in out.items():
                _tensors.check_out(value, key)
        # aliases: a tied or shared tensor's bytes travel once (StreamReader shares them).
        request = parameters_pb2.StateDictRequest(model=self.name, prefix=prefix, aliases=True)
        if dtype is not None:
            request.wire_dtype = _tensors.dtype_of(dtype).wire  # type: ignore[assignment]
        with Reporter(progress, f"state_dict {self.name}") as reporter:
            reader = _wire.StreamReader(expect_data=True, as_numpy=as_numpy,
                                        out=dict(out) if out is not None else None,
                                        progress=reporter.callback)
            _pump(reader, self._client._server_stream(_P + "StateDict", request,
                                                      _wire.decode_tensor_frame))
        assert reader.start is not None
        result = StateDict((e.name, e.value) for e in reader.entries)
        result.version = reader.start.version
        ordered = reader.start.ordered_metadata
        if ordered or not reader.start.metadata:
            result._metadata = collections.OrderedDict(
                (m.path, {"version": m.version}) for m in ordered)
        else:
            result._metadata = self._ordered_metadata(dict(reader.start.metadata), prefix)
        return result

    def _ordered_metadata(self, metadata: dict[str, int],
                          prefix: str) -> "collections.OrderedDict[str, dict[str, int]]":
        """``_metadata`` in PyTorch's order from a daemon that sends only the unordered map
        (before StreamStart.ordered_metadata): the order comes from named_modules (cached
        per set of paths)."""
        keys = frozenset(metadata)
        order = self._module_order.get(keys)
        if order is None:
            modules = self._named_module_entries(prefix.removesuffix("."), keep_duplicates=True)
            order = [m.name for m in modules if m.name in keys]
            order += sorted(keys.difference(order))
            self._module_order[keys] = order
        return collections.OrderedDict((k, {"version": metadata[k]}) for k in order)

    def _named_module_entries(self, prefix: str,
                              keep_duplicates: bool) -> list[parameters_pb2.ModuleEntry]:
        """NamedModules' entries of one version, merged from its streamed messages."""
        request = parameters_pb2.NamedModulesRequest(model=self.name, prefix=prefix,
                                                     keep_duplicates=keep_duplicates)
        return merged_module_entries(self._client._server_stream(
            _P + "NamedModules", request, parameters_pb2.NamedModulesResponse.FromString))

    def _named_tensors(self, rpc: str, prefix: str, recurse: bool, remove_duplicate: bool,
                       as_numpy: bool) -> list[_wire.Entry]:
        request = parameters_pb2.NamedTensorsRequest(
            model=self.name, prefix=prefix, no_recurse=not recurse,
            keep_duplicates=not remove_duplicate, with_data=True)
        reader = _wire.StreamReader(expect_data=True, as_numpy=as_numpy)
        _pump(reader, self._client._server_stream(_P + rpc, request, _wire.decode_tensor_frame))
        return reader.entries

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True, *,
                         as_numpy: bool = False) -> Iterator[tuple[str, Tensor]]:
        """``model.named_parameters(...)``: PyTorch's names, order and de-duplication (a
        tied or shared parameter once, under its first name). Values are copies, as
        ``nn.Parameter`` (with the remote ``requires_grad``) when torch is in use."""
        torch = None if as_numpy else _tensors.torch_module()
        for entry in self._named_tensors("NamedParameters", prefix, recurse, remove_duplicate,
                                         as_numpy):
            value = entry.value
            if torch is not None:
                value = torch.nn.Parameter(value, requires_grad=entry.meta.requires_grad)
            yield entry.name, value

    def parameters(self, recurse: bool = True, *, as_numpy: bool = False) -> Iterator[Tensor]:
        for _, value in self.named_parameters(recurse=recurse, as_numpy=as_numpy):
            yield value

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True, *,
                      as_numpy: bool = False) -> Iterator[tuple[str, Tensor]]:
        """``model.named_buffers(...)`` (non-persistent buffers included, as in PyTorch)."""
        for entry in self._named_tensors("NamedBuffers", prefix, recurse, remove_duplicate,
                                         as_numpy):
            yield entry.name, entry.value

    def buffers(self, recurse: bool = True, *, as_numpy: bool = False) -> Iterator[Tensor]:
        for _, value in self.named_buffers(recurse=recurse, as_numpy=as_numpy):
            yield value

    def named_modules(self, memo: Optional[set[Any]] = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, RemoteModule]]:
        """``model.named_modules(...)``: pre-order, the root first (named ``prefix``), a
        shared module once (with its subtree) unless ``remove_duplicate=False``."""
        for m in self._named_module_entries(prefix, keep_duplicates=not remove_duplicate):
            path = m.name[len(prefix) + 1:] if prefix and m.name.startswith(prefix + ".") \
                else ("" if m.name == prefix else m.name)
            module = RemoteModule(self._client, self.name, path, m.type, m.parameters,
                                  m.buffers, m.shared_with)
            if memo is not None:
                if module in memo:
                    continue
                memo.add(module)
            yield m.name, module

    def modules(self) -> Iterator[RemoteModule]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, RemoteModule]]:
        """Direct children in registration order, always de-duplicated (as PyTorch)."""
        seen: list[RemoteModule] = []
        for name, module in self.named_modules(remove_duplicate=False):
            if not name or "." in name:
                continue
            if module in seen:
                continue
            seen.append(module)
            yield name, module

    def children(self) -> Iterator[RemoteModule]:
        for _, module in self.named_children():
            yield module

    # --- whole-model writes ---------------------------------------------------------

    def tie(self, name: str, target: str, *, if_version: Optional[int] = None) -> int:
        """``name`` ("lm_head.weight") becomes the Parameter object ``target``
        ("embed.weight") holds, as ``model.lm_head.weight = model.embed.weight``."""
        answer = self._client._unary(_P + "TieParameters", parameters_pb2.TieParametersRequest(
            model=self.name, name=name, target=target, if_version=if_version or 0),
            parameters_pb2.WriteResponse)
        return answer.version

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True,
                        assign: bool = False, *, if_version: Optional[int] = None,
                        progress: Progress = None) -> Any:
        """``model.load_state_dict(state_dict, strict, assign)``, atomically: a refused
        load changes nothing. Returns torch's ``_IncompatibleKeys``; raises RuntimeError
        (LoadStateDictError) with PyTorch's exact text for missing/unexpected keys (strict)
        and size mismatches (always). ``_metadata``, when the dict has it, travels too."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict)}.")
        options = parameters_pb2.WriteOptions(model=self.name, if_version=if_version or 0,
                                              non_strict=not strict, assign=assign)
        metadata = getattr(state_dict, "_metadata", None)
        if isinstance(metadata, Mapping):
            options.has_metadata = True
            for path, local in metadata.items():
                # torch reads local_metadata.get("version"): None is no version at all.
                if isinstance(local, Mapping) and local.get("version") is not None:
                    options.metadata[str(path)] = int(local["version"])
        torch = _tensors.torch_module()
        tensors = []
        for key, value in state_dict.items():
            out = _tensors.to_wire(value, name=key)
            is_param = torch is not None and isinstance(value, torch.nn.Parameter)
            tensors.append((_wire.header_of(key, out, None, is_param,
                                            bool(getattr(value, "requires_grad", False))), out))
        with Reporter(progress, f"load_state_dict {self.name}") as reporter:
            answer = StreamedLoad.gather(self._client._bidi_stream(
                _P + "LoadStateDict", _wire.write_frames(options, tensors, reporter.callback),
                parameters_pb2.LoadStateDictResponse.FromString))
        return incompatible_keys(answer.missing_keys, answer.unexpected_keys)

    # --- forward --------------------------------------------------------------------

    def run(self, input: Any, named: Optional[Mapping[str, Any]] = None, *,
            mode: Optional[str] = None, seed: int = 0, if_version: Optional[int] = None,
            dtype: Any = None, as_numpy: bool = False) -> ForwardResult:
        """A forward pass with its options and versions: ``named`` are values a custom
        container's forward program reads besides ``input``; ``mode`` "train" or "eval"
        for this call only (None: the model's mode), ``seed`` for dropout masks, ``dtype``
        for floating-point outputs on the wire."""
        named = named or {}
        modes = {None: inference_pb2.FORWARD_MODE_MODEL, "train": inference_pb2.FORWARD_MODE_TRAIN,
                 "eval": inference_pb2.FORWARD_MODE_EVAL}
        if mode not in modes:
            raise ValueError(f"mode must be 'train', 'eval' or None, not {mode!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) \
                or not 0 <= seed < 1 << 64:
            raise ValueError(f"seed must be an int from 0 to 2**64 - 1, not {seed!r}")
        options = inference_pb2.ForwardOptions(model=self.name, mode=modes[mode], seed=seed,
                                               if_version=if_version or 0)
        if dtype is not None:
            options.wire_dtype = _tensors.dtype_of(dtype).wire  # type: ignore[assignment]
        inputs = [("input", _tensors.to_wire(input, name="input"))]
        inputs += [(k, _tensors.to_wire(v, name=k)) for k, v in named.items()]

        def frames() -> Iterator[bytes]:
            for i, (name, out) in enumerate(inputs):
                request = inference_pb2.ForwardRequest(header=_wire.header_of(name, out))
                if i == 0:
                    request.options.CopyFrom(options)
                if out.nbytes <= _wire.CHUNK_BYTES:  # a small input: one frame
                    request.chunk.offset = 0
                    request.chunk.data = out.data.tobytes()
                    yield request.SerializeToString()
                    continue
                yield request.SerializeToString()
                for offset in range(0, out.nbytes, _wire.CHUNK_BYTES):
                    yield _wire.encode_chunk(offset, out.data[offset:offset + _wire.CHUNK_BYTES])

        def decode(data: bytes) -> Any:
            chunk = _wire.decode_chunk(data)
            return chunk if chunk is not None else inference_pb2.ForwardResponse.FromString(data)

        reader = _wire.StreamReader(expect_data=True, as_numpy=as_numpy, share_tied=False)
        start: Optional[inference_pb2.ForwardStart] = None
        try:
            for frame in self._client._bidi_stream("/paramd.v1.Inference/Forward", frames(),
                                                   decode):
                if isinstance(frame, _wire.Chunk):
                    reader.add(frame)
                    continue
                if frame.HasField("start"):
                    start = frame.start
                    reader.add(parameters_pb2.TensorFrame(start=parameters_pb2.StreamStart(
                        model=start.model, version=start.version)))
                if frame.HasField("header"):
                    reader.add(parameters_pb2.TensorFrame(header=frame.header))
                if frame.HasField("chunk"):
                    reader.add(_wire.Chunk(frame.chunk.offset, memoryview(frame.chunk.data)))
        except InvalidArgument as error:
            raise ForwardError(error.message, error.code) from None
        reader.finish()
        assert start is not None
        outputs = {e.name: e.value for e in reader.entries}
        output = outputs.get("output", next(iter(outputs.values()), None))
        return ForwardResult(output, start.version, start.updated_version, start.training)

    def forward(self, input: Any, **named: Any) -> Tensor:
        """``model(input, **named)`` on the server; the output as a tensor."""
        return self.run(input, named).output

    __call__ = forward

    # --- checkpoints ----------------------------------------------------------------

    def save(self, path: str, *, format: Optional[str] = None, keep_vars: bool = False,
             sha256: bool = False) -> SaveResult:
        """``torch.save(model.state_dict(), path)`` on the daemon: ``path`` is in its
        checkpoint directory; a path ending in .safetensors gets safetensors, any other
        torch's format (as torch.save, whatever the name), unless ``format`` ("torch",
        "safetensors") says. Atomic; from one version; ``sha256`` also returns its digest."""
        if format not in _FORMATS:
            raise ValueError(f"format must be 'torch', 'safetensors' or None, not {format!r}")
        answer = self._client._unary("/paramd.v1.Checkpoints/Save", checkpoints_pb2.SaveRequest(
            model=self.name, path=path, format=_FORMATS[format], keep_vars=keep_vars,
            return_sha256=sha256),
            checkpoints_pb2.SaveResponse)
        return SaveResult(answer.path, _FORMAT_NAMES.get(answer.format, ""), answer.version,
                          answer.size, answer.sha256)

    def load(self, path: str, strict: bool = True, map_location: Any = None, *,
             assign: bool = False, if_version: Optional[int] = None) -> Any:
        """``model.load_state_dict(torch.load(path, map_location))`` from a file in the
        daemon's checkpoint directory, atomically. ``map_location``: a location ("cpu",
        "cuda:0", a torch.device) or a mapping of saved locations to new ones. Returns
        ``_IncompatibleKeys``; RuntimeError with PyTorch's text on a refused load."""
        request = checkpoints_pb2.LoadRequest(model=self.name, path=path, non_strict=not strict,
                                              assign=assign, if_version=if_version or 0)
        if isinstance(map_location, Mapping):
            for key, value in map_location.items():
                request.location_map[str(key)] = str(value)
        elif map_location is not None:
            request.map_location = str(map_location)
        answer = StreamedLoad.gather(self._client._server_stream(
            "/paramd.v1.Checkpoints/Load", request, checkpoints_pb2.LoadResponse.FromString))
        return incompatible_keys(answer.missing_keys, answer.unexpected_keys)

    def upload(self, local_path: Union[str, "os.PathLike[str]"], *, strict: bool = True,
               remote_path: Optional[str] = None, progress: Progress = None) -> Any:
        """Sends a local checkpoint file to the daemon and loads it into this model
        (``load_state_dict`` semantics). Returns ``_IncompatibleKeys``."""
        remote = remote_path or f"uploads/{self.name}{os.path.splitext(os.fspath(local_path))[1]}"
        self._client.upload(local_path, remote, progress=progress)
        return self.load(remote, strict=strict)

    def download(self, local_path: Union[str, "os.PathLike[str]"], *,
                 remote_path: Optional[str] = None, progress: Progress = None) -> SaveResult:
        """Saves this model on the daemon (format from ``local_path``'s suffix) and fetches
        the file to ``local_path``; ``torch.load`` reads it; sha256 is the checked file's."""
        suffix = os.path.splitext(os.fspath(local_path))[1] or ".pt"
        remote = remote_path or f"downloads/{self.name}{suffix}"
        saved = self.save(remote)
        moved = self._client.download(remote, local_path, progress=progress)
        return replace(saved, sha256=moved.sha256)
