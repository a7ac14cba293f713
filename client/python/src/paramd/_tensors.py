"""Tensors on the client: dtypes, and moving bytes between the wire and NumPy or torch.

A tensor crosses the wire as a dtype, a shape and little-endian C-contiguous bytes. Received
tensors are allocated once at their full size (or taken from the caller's ``out=``) and
filled chunk by chunk through a flat writable ``memoryview`` of their bytes: one copy per
byte, no protobuf object in between. torch is optional: without it (or with
``as_numpy=True``) tensors are NumPy arrays, bfloat16 as ``ml_dtypes.bfloat16``.
"""

from __future__ import annotations

import functools
import mmap
import sys
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import ml_dtypes
import numpy as np

from paramd.v1 import tensor_pb2

# A torch.Tensor or a numpy.ndarray; typed loosely so that torch stays optional.
Tensor = Any


@dataclass(frozen=True)
class DType:
    """One paramd dtype: its wire enum, PyTorch's name and its NumPy equivalent."""

    wire: int
    name: str
    numpy: np.dtype[Any]

    @property
    def itemsize(self) -> int:
        return int(self.numpy.itemsize)


_DTYPES = [
    DType(tensor_pb2.FLOAT32, "float32", np.dtype(np.float32)),
    DType(tensor_pb2.FLOAT64, "float64", np.dtype(np.float64)),
    DType(tensor_pb2.FLOAT16, "float16", np.dtype(np.float16)),
    DType(tensor_pb2.BFLOAT16, "bfloat16", np.dtype(ml_dtypes.bfloat16)),
    DType(tensor_pb2.INT64, "int64", np.dtype(np.int64)),
    DType(tensor_pb2.INT32, "int32", np.dtype(np.int32)),
    DType(tensor_pb2.INT16, "int16", np.dtype(np.int16)),
    DType(tensor_pb2.INT8, "int8", np.dtype(np.int8)),
    DType(tensor_pb2.UINT8, "uint8", np.dtype(np.uint8)),
    DType(tensor_pb2.BOOL, "bool", np.dtype(np.bool_)),
]
BY_WIRE = {d.wire: d for d in _DTYPES}
BY_NAME = {d.name: d for d in _DTYPES}
_ALIASES = {"float": "float32", "double": "float64", "half": "float16", "long": "int64",
            "int": "int32", "short": "int16"}


@functools.lru_cache(maxsize=None)
def torch_module() -> Any:
    """The torch module, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def dtype_of(spec: Any) -> DType:
    """A paramd DType from a torch.dtype, NumPy dtype, name ("bfloat16", "torch.float32")."""
    if isinstance(spec, DType):
        return spec
    if isinstance(spec, str):
        name = spec.removeprefix("torch.")
        name = _ALIASES.get(name, name)
        if name in BY_NAME:
            return BY_NAME[name]
        raise TypeError(f"paramd has no dtype {spec!r}; one of {', '.join(BY_NAME)}")
    torch = torch_module()
    if torch is not None and isinstance(spec, torch.dtype):
        return dtype_of(str(spec))
    try:
        np_dtype = np.dtype(spec)
    except TypeError:
        raise TypeError(f"paramd has no dtype {spec!r}; one of {', '.join(BY_NAME)}") from None
    for d in _DTYPES:
        if d.numpy == np_dtype:
            return d
    raise TypeError(f"paramd has no dtype {np_dtype}; one of {', '.join(BY_NAME)}")


def is_tensor(value: Any) -> bool:
    torch = torch_module()
    return isinstance(value, np.ndarray) or (torch is not None and isinstance(value, torch.Tensor))


@dataclass
class Outgoing:
    """A tensor ready to send: dtype, shape and its bytes (C order, little-endian)."""

    dtype: DType
    shape: list[int]
    data: memoryview  # format 'B', contiguous

    @property
    def nbytes(self) -> int:
        return self.data.nbytes


def to_wire(value: Any, *, name: str = "value") -> Outgoing:
    """The bytes of a torch tensor, NumPy array or Python number / nested list.

    Python floats become float32 (torch.tensor's default), ints int64, bools bool. No copy
    for a contiguous little-endian CPU tensor. TypeError for anything paramd cannot hold.
    """
    torch = torch_module()
    if torch is not None and isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        tensor = tensor.contiguous()
        dtype = dtype_of(tensor.dtype) if str(tensor.dtype).removeprefix("torch.") in BY_NAME \
            else _bad_dtype(name, tensor.dtype)
        flat = tensor.reshape(-1).view(torch.uint8).numpy()
        return Outgoing(dtype, list(tensor.shape), _bytes(flat))
    if isinstance(value, np.ndarray):
        array = value
    elif isinstance(value, (bool, int, float, list, tuple, np.generic)):
        array = np.asarray(value)
        if array.dtype == np.float64 and not isinstance(value, np.generic):
            array = array.astype(np.float32)
    else:
        raise TypeError(f"{name}: expected a torch.Tensor, numpy.ndarray or number, "
                        f"got {type(value).__name__}")
    try:
        dtype = dtype_of(array.dtype.newbyteorder("="))
    except TypeError:
        _bad_dtype(name, array.dtype)
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and sys.byteorder == "big"):
        array = array.astype(dtype.numpy.newbyteorder("<"))
    # Not np.ascontiguousarray, which makes a 0-dim array (a number) one of shape [1].
    array = np.require(array, requirements="C")
    flat = array.reshape(-1).view(np.uint8)
    return Outgoing(dtype, list(array.shape), _bytes(flat))


def _bad_dtype(name: str, dtype: Any) -> DType:
    raise TypeError(f"{name}: dtype {dtype} is not one paramd holds "
                    f"({', '.join(BY_NAME)})")


def _bytes(flat: Any) -> memoryview:
    """A flat 'B' memoryview of a 1-D uint8 array."""
    return memoryview(flat).cast("B")


def numel(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


# Tensors this large get memory of their own from mmap, advised onto huge pages: first
# touching fresh memory costs more than receiving it otherwise (LIMITS.md: 2 GB/s).
_HUGE_ALLOCATION = 4 << 20


def _huge_buffer(nbytes: int) -> mmap.mmap:
    buffer = mmap.mmap(-1, nbytes)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            buffer.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass
    return buffer


def allocate(dtype: DType, shape: Sequence[int], as_numpy: bool) -> tuple[Tensor, memoryview]:
    """A new tensor of this dtype and shape, and a flat writable byte view of it."""
    torch = torch_module()
    nbytes = numel(shape) * dtype.itemsize
    if nbytes >= _HUGE_ALLOCATION:
        buffer = _huge_buffer(nbytes)
        if torch is not None and not as_numpy:
            tensor = torch.frombuffer(buffer, dtype=getattr(torch, dtype.name)).reshape(
                list(shape))
        else:
            tensor = np.frombuffer(buffer, dtype=dtype.numpy).reshape(tuple(shape))
        return tensor, memoryview(buffer)
    if torch is not None and not as_numpy:
        tensor = torch.empty(list(shape), dtype=getattr(torch, dtype.name))
        return tensor, _bytes(tensor.reshape(-1).view(torch.uint8).numpy())
    array = np.empty(tuple(shape), dtype=dtype.numpy)
    return array, _bytes(array.reshape(-1).view(np.uint8))


def check_out(value: Any, name: str) -> None:
    """Refuses an ``out=`` entry nothing can be written into: not a contiguous, writable
    CPU tensor or array. Checked for every entry before a pull starts."""
    torch = torch_module()
    if torch is not None and isinstance(value, torch.Tensor):
        if value.device.type != "cpu" or not value.is_contiguous():
            raise ValueError(f"out[{name!r}] must be a contiguous CPU tensor")
        return
    if isinstance(value, np.ndarray):
        if not value.flags.c_contiguous or not value.flags.writeable:
            raise ValueError(f"out[{name!r}] must be a writable C-contiguous array")
        return
    raise TypeError(f"out[{name!r}] must be a torch.Tensor or numpy.ndarray, not "
                    f"{type(value).__name__}")


def fits(value: Tensor, dtype: DType, shape: Sequence[int]) -> bool:
    """Whether ``value`` (an ``out=`` entry that passed check_out) has this dtype and shape."""
    torch = torch_module()
    if torch is not None and isinstance(value, torch.Tensor):
        return str(value.dtype) == f"torch.{dtype.name}" and list(value.shape) == list(shape)
    return bool(value.dtype == dtype.numpy and list(value.shape) == list(shape))


def byte_view(value: Tensor, dtype: DType, shape: Sequence[int], name: str) -> memoryview:
    """A flat writable byte view of ``value``, a tensor or array that passed check_out and
    fits this dtype and shape."""
    torch = torch_module()
    check_out(value, name)
    if not fits(value, dtype, shape):
        raise ValueError(f"{name!r} is {value.dtype} {list(value.shape)}, not {dtype.name} "
                         f"{list(shape)}")
    if torch is not None and isinstance(value, torch.Tensor):
        return _bytes(value.detach().reshape(-1).view(torch.uint8).numpy())
    return _bytes(value.reshape(-1).view(np.uint8))


def alias(value: Tensor) -> Tensor:
    """A new tensor object over the same memory (state_dict's tied entries)."""
    torch = torch_module()
    if torch is not None and isinstance(value, torch.Tensor):
        return value.detach()
    return value.view()


def same_memory(a: Tensor, b: Tensor) -> bool:
    torch = torch_module()
    if torch is not None and isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return bool(a.data_ptr() == b.data_ptr() and a.nbytes == b.nbytes)
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return bool(a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
                    and a.nbytes == b.nbytes)
    return False


def reshape(value: Tensor, shape: Sequence[int]) -> Tensor:
    return value.reshape(tuple(shape))


def dtype_name(dtype: Optional[DType]) -> str:
    return "?" if dtype is None else dtype.name
