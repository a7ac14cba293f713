"""The client's side of the wire without a daemon: a stream that breaks the contract is
DataLoss, chunk frames decode to views, and what a server sends beyond today's daemon
(trailing metadata with the current version on ABORTED) and the bearer token reach their
place. A small grpc server in this process plays the daemon where one is needed."""

from __future__ import annotations

from concurrent import futures
from typing import Any, Iterator

import grpc
import numpy as np
import pytest

import paramd
from paramd import _tensors, _wire
from paramd.v1 import parameters_pb2, tensor_pb2


def start() -> parameters_pb2.TensorFrame:
    return parameters_pb2.TensorFrame(start=parameters_pb2.StreamStart(model="m", version=3))


def header(name: str, shape: list[int], tied: tuple[str, ...] = ()) -> parameters_pb2.TensorFrame:
    h = tensor_pb2.TensorHeader(name=name, tied_with=list(tied))
    h.meta.dtype = tensor_pb2.FLOAT32
    h.meta.shape.extend(shape)
    return parameters_pb2.TensorFrame(header=h)


def chunk(offset: int, data: bytes) -> Any:
    return _wire.decode_tensor_frame(_wire.encode_chunk(offset, memoryview(data)))


def test_chunk_frames_decode_to_views_and_match_protobuf() -> None:
    encoded = _wire.encode_chunk(300, memoryview(b"abcd"))
    parsed = parameters_pb2.TensorFrame.FromString(encoded)
    assert (parsed.chunk.offset, parsed.chunk.data) == (300, b"abcd")
    decoded = _wire.decode_tensor_frame(encoded)
    assert isinstance(decoded, _wire.Chunk) and decoded.offset == 300
    assert bytes(decoded.data) == b"abcd"
    # Offset 0 left out, as protobuf encoders do.
    plain = parameters_pb2.TensorFrame(chunk=tensor_pb2.TensorChunk(data=b"xy")).SerializeToString()
    assert bytes(_wire.decode_tensor_frame(plain).data) == b"xy"


def test_tied_entries_share_memory_and_are_copied_once() -> None:
    reader = _wire.StreamReader(expect_data=True, as_numpy=True)
    data = np.arange(4, dtype=np.float32).tobytes()
    for frame in (start(), header("a", [4], ("b",)), chunk(0, data), header("b", [4], ("a",)),
                  chunk(0, b"\0" * 16)):
        reader.add(frame)
    reader.finish()
    a, b = (e.value for e in reader.entries)
    assert np.shares_memory(a, b) and a.tolist() == [0, 1, 2, 3]


def test_tied_entries_may_arrive_without_their_bytes() -> None:
    reader = _wire.StreamReader(expect_data=True, as_numpy=True)
    data = np.arange(4, dtype=np.float32).tobytes()
    for frame in (start(), header("a", [4], ("b",)), chunk(0, data), header("b", [4], ("a",)),
                  header("c", [1]), chunk(0, data[:4])):
        reader.add(frame)
    reader.finish()
    a, b, c = (e.value for e in reader.entries)
    assert np.shares_memory(a, b) and b.tolist() == [0, 1, 2, 3] and c.tolist() == [0]


@pytest.mark.parametrize("frames, message", [
    ([header("a", [2])], "began with a header frame instead of a start frame"),
    ([start(), start()], "second start frame"),
    ([start(), chunk(0, b"1234")], "before any tensor header"),
    ([start(), header("a", [2]), chunk(4, b"1234")], "a chunk at byte 4 arrived where byte 0"),
    ([start(), header("a", [1]), chunk(0, b"12345678")], "8 bytes arrived but its dtype"),
    ([start(), header("a", [2]), chunk(0, b"1234"), header("b", [1])], "'a' ended short"),
    ([start(), header("a", [2]), chunk(0, b"1234")], "'a' ended short"),
])
def test_broken_streams_are_data_loss(frames: list[Any], message: str) -> None:
    reader = _wire.StreamReader(expect_data=True, as_numpy=True)
    with pytest.raises(paramd.DataLoss, match=message):
        for frame in frames:
            reader.add(frame)
        reader.finish()


def test_to_wire_refuses_what_paramd_cannot_hold() -> None:
    out = _tensors.to_wire(np.arange(3, dtype=">i4"))
    assert out.dtype.name == "int32" and bytes(out.data) == np.arange(3, dtype="<i4").tobytes()
    assert _tensors.to_wire(1.5).dtype.name == "float32"
    assert _tensors.to_wire(True).dtype.name == "bool"
    with pytest.raises(TypeError, match="uint32"):
        _tensors.to_wire(np.zeros(2, np.uint32))
    with pytest.raises(TypeError, match="dict"):
        _tensors.to_wire({})


class FakeDaemon:
    """SetTensors answers ABORTED with the current version as trailing metadata; Health
    records the metadata it was called with."""

    def __init__(self) -> None:
        self.metadata: list[tuple[str, str]] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))

        def check(request: bytes, context: grpc.ServicerContext) -> bytes:
            self.metadata = [(m.key, m.value) for m in context.invocation_metadata()]
            return b"\x08\x01"

        def set_tensors(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
            for _ in requests:
                pass
            context.set_trailing_metadata((("paramd-current-version", "7"),))
            context.abort(grpc.StatusCode.ABORTED, "model 'm' is at version 7, not 2")

        identity = {"request_deserializer": None, "response_serializer": None}
        self.server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
                "Check": grpc.unary_unary_rpc_method_handler(check, **identity)}),
            grpc.method_handlers_generic_handler("paramd.v1.Parameters", {
                "SetTensors": grpc.stream_unary_rpc_method_handler(set_tensors, **identity)}),
        ))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()


def test_version_conflict_carries_the_current_version_and_token_is_sent() -> None:
    fake = FakeDaemon()
    try:
        with paramd.connect(f"127.0.0.1:{fake.port}", token="s3cret", timeout=10) as client:
            assert client.health() == "SERVING"
            assert ("authorization", "Bearer s3cret") in fake.metadata
            with pytest.raises(paramd.VersionConflict) as caught:
                client.model("m").set("w", np.zeros(2, np.float32), if_version=2)
            assert caught.value.current_version == 7
            assert str(caught.value) == "model 'm' is at version 7, not 2"
    finally:
        fake.server.stop(0)
