"""Frames on the wire, encoded and decoded without protobuf objects for tensor data.

A data chunk is the one frame that matters for speed: the daemon writes it as field 3
(length-delimited) holding TensorChunk's field 1 (offset, varint) and field 2 (data). The
deserializer here recognises that layout and hands back the offset and a ``memoryview``
into gRPC's bytes, so the only copy of a chunk is the one into its tensor; every other frame
is parsed by protobuf. Chunks going out are built the same way: a few prefix bytes joined
with a view of the tensor's memory (one copy, which gRPC's Python API needs anyway).
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np

from paramd import _tensors
from paramd._errors import DataLoss
from paramd.v1 import parameters_pb2, tensor_pb2

# Bytes per chunk sent; the daemon's chunk size too (docs/wire.md, LIMITS.md).
CHUNK_BYTES = 1 << 20

_CHUNK_TAG = 0x1A  # field 3, length-delimited: TensorFrame/WriteFrame/ForwardRequest .chunk
_OFFSET_TAG = 0x08  # TensorChunk.offset
_DATA_TAG = 0x12  # TensorChunk.data; also UploadRequest/DownloadResponse .chunk (field 2)


# Note [Copying off the receiving thread]: gRPC's Python API hands over one message at a time
# and asks for the next only when the consumer comes back for it, so a copy made on the
# consuming thread stalls the stream for as long as it takes. Chunks of COPY_ASYNC_BYTES and
# more are therefore copied by one helper thread (NumPy releases the GIL while it copies)
# while this thread goes back for the next message; at most COPIES_IN_FLIGHT chunks wait
# for it, which bounds the memory a pull holds beyond its tensors to that many chunks.
COPY_ASYNC_BYTES = 256 << 10
COPIES_IN_FLIGHT = 4
_copier: Optional[concurrent.futures.ThreadPoolExecutor] = None
_copier_lock = threading.Lock()


def copier() -> concurrent.futures.ThreadPoolExecutor:
    global _copier
    with _copier_lock:
        if _copier is None:
            _copier = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="paramd-copy")
        return _copier


def _forget_copier_after_fork() -> None:
    # A forked child (a DataLoader worker, multiprocessing) inherits the executor but not
    # its thread: the executor believes its thread alive and starts none, and the child's
    # first large pull would wait for copies that never run. The child makes its own.
    global _copier, _copier_lock
    _copier = None
    _copier_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_copier_after_fork)


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise IndexError
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


@dataclass
class Chunk:
    offset: int
    data: memoryview


def decode_chunk(data: bytes, tag: int = _CHUNK_TAG) -> Optional[Chunk]:
    """The chunk a frame holds when it is exactly one chunk field, else None."""
    if not data or data[0] != tag:
        return None
    try:
        length, pos = _read_varint(data, 1)
        if pos + length != len(data):
            return None
        offset = 0
        if pos < len(data) and data[pos] == _OFFSET_TAG:
            offset, pos = _read_varint(data, pos + 1)
        if pos >= len(data) or data[pos] != _DATA_TAG:
            return None
        size, pos = _read_varint(data, pos + 1)
        if pos + size != len(data):
            return None
    except IndexError:
        return None
    return Chunk(offset, memoryview(data)[pos:])


def decode_tensor_frame(data: bytes) -> Union[Chunk, parameters_pb2.TensorFrame]:
    """gRPC response deserializer for TensorFrame streams."""
    chunk = decode_chunk(data)
    if chunk is not None:
        return chunk
    return parameters_pb2.TensorFrame.FromString(data)


def encode_chunk(offset: int, data: memoryview) -> bytes:
    """A WriteFrame / ForwardRequest holding one TensorChunk, as protobuf would encode it."""
    inner = b"".join((bytes((_OFFSET_TAG,)), varint(offset), bytes((_DATA_TAG,)),
                      varint(data.nbytes)))
    return b"".join((bytes((_CHUNK_TAG,)), varint(len(inner) + data.nbytes), inner, data))


def encode_bytes_field2(data: memoryview) -> bytes:
    """An UploadRequest holding ``chunk`` (field 2)."""
    return b"".join((bytes((_DATA_TAG,)), varint(data.nbytes), data))


def identity(data: bytes) -> bytes:
    return data


def header_of(name: str, out: _tensors.Outgoing, region: Optional[list[tuple[int, int]]] = None,
              is_parameter: bool = False, requires_grad: bool = False) -> tensor_pb2.TensorHeader:
    header = tensor_pb2.TensorHeader(name=name)
    header.meta.dtype = out.dtype.wire  # type: ignore[assignment]
    header.meta.shape.extend(out.shape)
    header.meta.is_parameter = is_parameter
    header.meta.requires_grad = requires_grad
    if region is not None:
        for start, stop in region:
            header.region.ranges.add(start=start, stop=stop)
    return header


def write_frames(options: parameters_pb2.WriteOptions,
                 tensors: Sequence[tuple[tensor_pb2.TensorHeader, _tensors.Outgoing]],
                 progress: Optional[Callable[[int, int], None]] = None) -> Iterator[bytes]:
    """The serialized WriteFrames of a write: options, then per tensor header and chunks."""
    total = sum(out.nbytes for _, out in tensors)
    done = 0
    if not options.reserve_bytes:
        # The daemon sets the memory aside up front and refuses a write that cannot fit
        # before its data is sent (docs/wire.md, "Write memory").
        sent = options.__class__()
        sent.CopyFrom(options)
        sent.reserve_bytes = (max((out.nbytes for _, out in tensors), default=0)
                              if options.commit_each_tensor else total)
        options = sent
    yield parameters_pb2.WriteFrame(options=options).SerializeToString()
    for header, out in tensors:
        yield parameters_pb2.WriteFrame(header=header).SerializeToString()
        data = out.data
        for offset in range(0, data.nbytes, CHUNK_BYTES):
            piece = data[offset:offset + CHUNK_BYTES]
            yield encode_chunk(offset, piece)
            done += piece.nbytes
            if progress is not None:
                progress(done, total)
    if progress is not None and total == 0:
        progress(0, 0)


@dataclass
class Entry:
    """One tensor of a read stream."""

    name: str
    meta: tensor_pb2.TensorMeta
    tied_with: list[str]
    dtype: _tensors.DType
    shape: list[int]
    value: Any = None  # the tensor (None for metadata-only reads)


@dataclass
class StreamReader:
    """Assembles a TensorFrame stream into entries, checking the wire contract (DATA_LOSS
    for a stream that breaks it, as the C++ client does).

    ``out`` maps names to caller tensors to fill in place. A tensor tied to one that already
    arrived in this stream shares its memory, and chunks for it are checked for order but
    not copied again.
    """

    expect_data: bool
    as_numpy: bool = False
    out: Optional[dict[str, Any]] = None
    share_tied: bool = True
    progress: Optional[Callable[[int, int], None]] = None
    start: Optional[parameters_pb2.StreamStart] = None
    entries: list[Entry] = field(default_factory=list)
    _by_name: dict[str, Entry] = field(default_factory=dict)
    _view: Optional[np.ndarray[Any, Any]] = None
    _filled: int = 0
    _expected: int = 0
    _skip: bool = False
    _total: int = 0
    _done: int = 0
    _copies: collections.deque[concurrent.futures.Future[None]] = field(
        default_factory=collections.deque)

    def add(self, frame: Union[Chunk, parameters_pb2.TensorFrame]) -> None:
        if isinstance(frame, Chunk):
            self._chunk(frame.offset, frame.data)
            return
        kind = frame.WhichOneof("frame")
        if self.start is None and kind != "start":
            raise DataLoss(f"the server's stream began with a {kind or 'empty'} frame "
                           "instead of a start frame")
        if kind == "start":
            if self.start is not None:
                raise DataLoss("the server's stream carried a second start frame")
            self.start = frame.start
        elif kind == "header":
            self._header(frame.header)
        elif kind == "chunk":
            self._chunk(frame.chunk.offset, memoryview(frame.chunk.data))
        else:
            raise DataLoss("the server's stream carried an empty frame")

    def wait_copies(self) -> None:
        """Waits for every chunk copy handed to the helper thread (Note [Copying off the
        receiving thread]); call before the tensors are used, and on errors too."""
        while self._copies:
            self._copies.popleft().result()

    def finish(self) -> None:
        self.wait_copies()
        if self.start is None:
            raise DataLoss("the server's stream ended without a start frame")
        self._check_complete()

    def _check_complete(self) -> None:
        # A tied entry may come without chunks (its bytes went with the first name), or
        # with all of them again (a request without aliases gets every name's bytes).
        if self._view is not None or (self._skip and self._filled != 0):
            if self._filled != self._expected:
                raise DataLoss(f"tensor '{self.entries[-1].name}' ended short: got "
                               f"{self._filled} of {self._expected} bytes its dtype and shape "
                               "need")
        self._view = None
        self._skip = False

    def _header(self, header: tensor_pb2.TensorHeader) -> None:
        self._check_complete()
        dtype = _tensors.BY_WIRE.get(header.meta.dtype)
        if dtype is None:
            raise DataLoss(f"tensor '{header.name}' arrived with dtype {header.meta.dtype}, "
                           "which is unset or unknown to this client")
        shape = list(header.meta.shape)
        if any(dim < 0 for dim in shape):
            raise DataLoss(f"tensor '{header.name}' arrived with a negative dimension")
        entry = Entry(header.name, header.meta, list(header.tied_with), dtype, shape)
        self.entries.append(entry)
        self._by_name[entry.name] = entry
        if not self.expect_data:
            return
        if header.alias_of:
            self._alias(entry, header.alias_of)
            return
        nbytes = _tensors.numel(shape) * dtype.itemsize
        self._expected = nbytes
        self._filled = 0
        self._total += nbytes
        first = None
        if self.share_tied:
            first = next((self._by_name[n] for n in entry.tied_with if n in self._by_name
                          and self._by_name[n].value is not None), None)
        mine = self._out_for(entry)
        if first is not None and first.shape == shape and first.dtype == dtype and (
                mine is None or _tensors.same_memory(mine, first.value)):
            # Tied: one storage, as PyTorch's state_dict gives; its bytes (if the server
            # sends them again) are the same version's and are not copied twice.
            entry.value = _tensors.alias(first.value) if mine is None else mine
            self._skip = True
            return
        if mine is not None:
            self._view = np.frombuffer(_tensors.byte_view(mine, dtype, shape, entry.name),
                                       np.uint8)
            entry.value = mine
        else:
            entry.value, view = _tensors.allocate(dtype, shape, self.as_numpy)
            self._view = np.frombuffer(view, np.uint8)

    def _out_for(self, entry: Entry) -> Any:
        """The ``out=`` tensor to fill for ``entry``: none where ``out`` has no such name or
        its tensor no longer has the entry's dtype and shape (a load with assign=True changed
        them). That entry gets a new tensor and ``out``'s is left as it was: a pull never
        fails halfway over a mismatch, having filled the entries before it."""
        mine = None if self.out is None else self.out.get(entry.name)
        if mine is None or not _tensors.fits(mine, entry.dtype, entry.shape):
            return None
        return mine

    def _alias(self, entry: Entry, alias_of: str) -> None:
        """A tied name whose bytes went with ``alias_of`` earlier in the stream (the request
        asked for aliases): one storage, as PyTorch's state_dict gives; no chunks follow."""
        first = self._by_name.get(alias_of)
        if first is None or first is entry or first.value is None or \
                first.shape != entry.shape or first.dtype != entry.dtype:
            raise DataLoss(f"tensor '{entry.name}' arrived as an alias of '{alias_of}', which "
                           "did not come before it with the same dtype and shape")
        self._expected = 0
        mine = self._out_for(entry)
        if mine is None:
            entry.value = _tensors.alias(first.value)
            return
        destination = _tensors.byte_view(mine, entry.dtype, entry.shape, entry.name)
        entry.value = mine
        if not _tensors.same_memory(mine, first.value):
            self.wait_copies()  # the first name's bytes may still be on their way
            np.copyto(np.frombuffer(destination, np.uint8),
                      np.frombuffer(_tensors.byte_view(first.value, first.dtype, first.shape,
                                                       first.name), np.uint8))

    def _chunk(self, offset: int, data: memoryview) -> None:
        if not self.expect_data:
            raise DataLoss("the server sent tensor data in a metadata-only stream")
        if self._view is None and not self._skip:
            raise DataLoss("the server sent a data chunk before any tensor header"
                           if not self.entries else
                           f"the server sent a data chunk past the end of tensor "
                           f"'{self.entries[-1].name}'")
        name = self.entries[-1].name
        if offset != self._filled:
            raise DataLoss(f"tensor '{name}': a chunk at byte {offset} arrived where byte "
                           f"{self._filled} was expected")
        size = data.nbytes
        if size > self._expected - self._filled:
            raise DataLoss(f"tensor '{name}': {self._filled + size} bytes arrived but its "
                           f"dtype and shape give {self._expected}")
        if self._view is not None:
            destination = self._view[offset:offset + size]
            source = np.frombuffer(data, np.uint8)
            if size < COPY_ASYNC_BYTES:
                np.copyto(destination, source)
            else:
                if len(self._copies) >= COPIES_IN_FLIGHT:
                    self._copies.popleft().result()
                self._copies.append(copier().submit(np.copyto, destination, source))
        self._filled += size
        self._done += size
        if self.progress is not None:
            self.progress(self._done, self._total)
