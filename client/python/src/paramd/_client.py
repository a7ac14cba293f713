"""The connection to one paramd daemon: :class:`Client` and :func:`connect`.

A Client owns one gRPC channel and may be used from many threads at once. Calls to a
closed Client raise :class:`paramd.ConnectionClosed`. Every failed call raises a
:class:`paramd.ParamdError` subclass (see ``paramd._errors``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from typing import (TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Optional,
                    Sequence, TypeVar, Union)

import grpc

from paramd import _wire
from paramd._answers import join_repr, list_pages
from paramd._errors import (ConnectionClosed, DataLoss, InvalidArgument, OutOfRange,
                             from_rpc_error)
from paramd._progress import Progress, Reporter
from paramd.v1 import checkpoints_pb2, models_pb2

if TYPE_CHECKING:
    from paramd._model import RemoteModel
    from paramd._training import OptimizerInfo, RemoteOptimizer

_M = TypeVar("_M")
Spec = Union[Mapping[str, Any], str, "os.PathLike[str]"]

# Note [Receive window]: with gRPC's default BDP probing the HTTP/2 window grows while
# this process copies chunks out more slowly than loopback delivers them, and gRPC's core
# buffers the difference: a 1 GiB pull's RSS grew by 30 to 250 MiB over five pulls. A fixed
# 4 MiB window keeps that to a few MiB with the same throughput on loopback (no slower
# within this machine's noise), and still fills a 4 GB/s link at 1 ms round trip.
# `connect(options=[("grpc.http2.bdp_probe", 1)])` restores gRPC's default.
#
# Keepalive (docs/wire.md, "Keepalive"): while a call is in flight, a ping after 30 s without
# hearing from the daemon, and the connection closed (calls end with paramd.Unavailable)
# when it goes 10 s unanswered, so a frozen daemon cannot hang a stream that has no
# deadline. The last two keep gRPC pinging through a long call with no data moving.
#
# Each Client's channel has subchannels of its own: gRPC otherwise shares one connection
# among every channel to the same address in the process, and a Client made in a forked
# child (a DataLoader worker) then inherited the parent's connection, whose socket the fork
# had made unusable: its calls failed with "Stream removed (sendmsg: Wrong file descriptor
# generation)", now and then.
_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 4 << 20),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_time_between_pings_ms", 30_000),
)

_HEALTH_NAMES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


@dataclass(frozen=True)
class ModelInfo:
    """paramd.v1.ModelInfo: what DescribeModel and ListModels report of one model."""

    name: str
    version: int
    device: str
    training: bool
    type: str
    repr: str
    state_dict_entries: int
    parameter_count: int
    parameter_numel: int
    nbytes: int
    # ``repr`` holds only the first 1 MiB of a longer repr (ListModels, CreateModel); the
    # model handle's describe() and repr() fetch it whole.
    repr_truncated: bool = False

    @staticmethod
    def from_proto(info: models_pb2.ModelInfo) -> "ModelInfo":
        return ModelInfo(info.name, info.version, info.device, info.training, info.type,
                         info.repr, info.state_dict_entries, info.parameter_count,
                         info.parameter_numel, info.nbytes, info.repr_truncated)


@dataclass(frozen=True)
class TransferResult:
    """An upload or download: the file's size and hex SHA-256, and the bytes that were
    already there from an earlier, broken-off transfer and were not sent again."""

    size: int
    sha256: str
    resumed_from: int = 0


def _spec_json(spec: Spec) -> str:
    if isinstance(spec, Mapping):
        return json.dumps(spec)
    with open(os.fspath(spec), encoding="utf-8") as f:
        return f.read()


class Client:
    """A connection to a paramd daemon. Make one with :func:`paramd.connect`.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, target: str = "127.0.0.1:50051", *, token: Optional[str] = None,
                 tls: Union[bool, grpc.ChannelCredentials, None] = None,
                 timeout: Optional[float] = None,
                 options: Sequence[tuple[str, Any]] = ()) -> None:
        if not target:
            raise ValueError("connect: target must name a server, e.g. '127.0.0.1:50051'")
        if timeout is not None and (isinstance(timeout, bool)
                                    or not isinstance(timeout, (int, float)) or timeout <= 0):
            raise TypeError(f"connect: timeout must be a positive number of seconds or None, "
                            f"not {timeout!r}")
        # A header value is printable ASCII; gRPC would refuse the token on every call
        # with a bare "Invalid metadata".
        if token is not None and (not isinstance(token, str) or not token
                                  or not all(" " < c <= "~" for c in token)):
            raise ValueError("connect: token must be a non-empty string of printable ASCII "
                             "without spaces (check for a trailing newline from the file "
                             "it was read from)")
        self.target = target
        self.timeout = timeout
        options = [*_CHANNEL_OPTIONS, *options]
        self._metadata: tuple[tuple[str, str], ...] = ()
        if tls:
            credentials = tls if isinstance(tls, grpc.ChannelCredentials) \
                else grpc.ssl_channel_credentials()
            if token is not None:
                credentials = grpc.composite_channel_credentials(
                    credentials, grpc.access_token_call_credentials(token))
            self._channel = grpc.secure_channel(target, credentials, options)
        else:
            # Call credentials need a secure channel; over plain TCP the bearer token goes
            # in each call's metadata instead.
            if token is not None:
                self._metadata = (("authorization", f"Bearer {token}"),)
            self._channel = grpc.insecure_channel(target, options)
        self._closed = False
        self._callables: dict[tuple[str, str], Any] = {}

    # --- plumbing -------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionClosed(f"the connection to {self.target} is closed; "
                                   "make a new one with paramd.connect()")

    def _callable(self, kind: str, path: str, serializer: Callable[[Any], bytes],
                  deserializer: Callable[[bytes], Any]) -> Any:
        key = (kind, path)
        call = self._callables.get(key)
        if call is None:
            factory = getattr(self._channel, kind)
            call = factory(path, request_serializer=serializer,
                           response_deserializer=deserializer)
            self._callables[key] = call
        return call

    def _unary(self, path: str, request: Any, response: type[_M], *,
               timeout: Optional[float] = None) -> _M:
        self._check_open()
        call = self._callable("unary_unary", path, type(request).SerializeToString,
                              response.FromString)  # type: ignore[attr-defined]
        try:
            return call(request, timeout=timeout if timeout is not None else self.timeout,  # type: ignore[no-any-return]
                        metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        except ValueError as error:  # grpc's "Cannot invoke RPC on closed channel!"
            raise ConnectionClosed(str(error)) from None

    def _server_stream(self, path: str, request: Any,
                       deserializer: Callable[[bytes], Any]) -> Iterator[Any]:
        """Yields the decoded frames of a server stream; errors become ParamdError."""
        self._check_open()
        call = self._callable("unary_stream", path, type(request).SerializeToString,
                              deserializer)
        try:
            stream = call(request, metadata=self._metadata)
        except ValueError as error:
            raise ConnectionClosed(str(error)) from None
        try:
            yield from stream
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        finally:
            stream.cancel()  # no-op once the stream is done

    def _client_stream(self, path: str, frames: Iterable[bytes], response: type[_M]) -> _M:
        self._check_open()
        call = self._callable("stream_unary", path, _wire.identity,
                              response.FromString)  # type: ignore[attr-defined]
        requests = _Requests(frames)
        try:
            return call(requests, metadata=self._metadata)  # type: ignore[no-any-return]
        except grpc.RpcError as error:
            raise requests.error or from_rpc_error(error) from None
        except ValueError as error:
            raise ConnectionClosed(str(error)) from None

    def _bidi_stream(self, path: str, frames: Iterable[bytes],
                     deserializer: Callable[[bytes], Any]) -> Iterator[Any]:
        self._check_open()
        call = self._callable("stream_stream", path, _wire.identity, deserializer)
        requests = _Requests(frames)
        try:
            stream = call(requests, metadata=self._metadata)
        except ValueError as error:
            raise ConnectionClosed(str(error)) from None
        try:
            yield from stream
        except grpc.RpcError as error:
            raise requests.error or from_rpc_error(error) from None
        finally:
            stream.cancel()

    # --- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled. Idempotent."""
        if not self._closed:
            self._closed = True
            self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"paramd.Client({self.target!r}{', closed' if self._closed else ''})"

    def health(self) -> str:
        """grpc.health.v1 Check of the whole server: "SERVING" or "NOT_SERVING" (the daemon
        reports a sticky device error so); raises Unavailable when it cannot be reached."""
        self._check_open()
        call = self._callable("unary_unary", "/grpc.health.v1.Health/Check",
                              lambda _: b"", lambda data: data)
        try:
            answer: bytes = call(None, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        status = answer[1] if len(answer) >= 2 and answer[0] == 0x08 else 0
        return _HEALTH_NAMES.get(status, str(status))

    # --- models ---------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        """Every model the daemon holds."""
        def page(request: models_pb2.ListModelsRequest) -> models_pb2.ListModelsResponse:
            return self._unary("/paramd.v1.Models/ListModels", request,
                               models_pb2.ListModelsResponse)

        return [ModelInfo.from_proto(m) for m in list_pages(page)]

    def repr_of(self, name: str) -> str:
        """GetRepr: ``repr(model)`` of model ``name`` whole, however long."""
        return join_repr(self._server_stream("/paramd.v1.Models/GetRepr",
                                             models_pb2.GetReprRequest(name=name),
                                             models_pb2.ReprChunk.FromString))

    def _whole_repr(self, info: ModelInfo) -> ModelInfo:
        """``info`` with its repr whole (GetRepr when the daemon cut it)."""
        if not info.repr_truncated:
            return info
        return dataclasses.replace(info, repr=self.repr_of(info.name), repr_truncated=False)

    def create(self, name: str, spec: Spec, *, device: str = "cpu",
               seed: int = 0) -> "RemoteModel":
        """Builds model ``name`` from a spec (a dict, or the path of a JSON file;
        docs/specs.md) on ``device``, seeded; returns its handle. AlreadyExists if taken."""
        from paramd._model import RemoteModel

        request = models_pb2.CreateModelRequest(name=name, spec_json=_spec_json(spec),
                                                device=device, seed=seed)
        self._unary("/paramd.v1.Models/CreateModel", request, models_pb2.ModelInfo)
        return RemoteModel(self, name)

    def delete(self, name: str, *, if_version: Optional[int] = None) -> None:
        """Deletes model ``name`` (NotFound if there is none)."""
        self._unary("/paramd.v1.Models/DeleteModel",
                    models_pb2.DeleteModelRequest(name=name, if_version=if_version or 0),
                    models_pb2.DeleteModelResponse)

    def model(self, name: str) -> "RemoteModel":
        """A handle on model ``name``; free, and does not check that the model exists."""
        from paramd._model import RemoteModel

        return RemoteModel(self, name)

    def __getitem__(self, name: str) -> "RemoteModel":
        return self.model(name)

    # --- optimizers (docs/training.md) ----------------------------------------------

    def create_optimizer(self, name: str, model: str, kind: str, params: Any = None, *,
                         mode: str = "manual", max_staleness: int = 0, workers: int = 0,
                         **defaults: Any) -> "RemoteOptimizer":
        """``torch.optim.<kind>(params, **defaults)`` on model ``model``, held by the daemon
        as ``name``. ``kind`` is "SGD", "Adam" or "AdamW"; ``params`` None (every
        parameter), a list of parameter names, or torch's list of group dicts with names.
        ``mode`` "asynchronous" makes each push step at once (at most ``max_staleness``
        steps behind); "synchronous" steps once ``workers`` distinct workers have pushed for
        a round, on the average of their gradients (docs/training.md)."""
        from paramd._training import RemoteOptimizer, _hypers, param_groups_proto

        from paramd.v1 import training_pb2
        request = training_pb2.CreateOptimizerRequest(
            name=name, model=model, kind=kind, defaults=_hypers(defaults),
            param_groups=param_groups_proto(params), mode=mode, max_staleness=max_staleness,
            workers=workers)
        self._unary("/paramd.v1.Training/CreateOptimizer", request, training_pb2.OptimizerInfo)
        return RemoteOptimizer(self, name)

    def optimizer(self, name: str) -> "RemoteOptimizer":
        """A handle on optimizer ``name``; free, and does not check that it exists."""
        from paramd._training import RemoteOptimizer

        return RemoteOptimizer(self, name)

    def optimizers(self, model: str = "") -> "list[OptimizerInfo]":
        """The daemon's optimizers (of ``model`` when given), by name."""
        from paramd._training import OptimizerInfo

        from paramd.v1 import training_pb2
        answer = self._unary("/paramd.v1.Training/ListOptimizers",
                             training_pb2.ListOptimizersRequest(model=model),
                             training_pb2.ListOptimizersResponse)
        return [OptimizerInfo.from_proto(info) for info in answer.optimizers]

    # --- checkpoint files -----------------------------------------------------------

    def checkpoints(self) -> list[checkpoints_pb2.CheckpointFile]:
        """The files in the daemon's checkpoint directory."""
        files: list[checkpoints_pb2.CheckpointFile] = []
        # The answer streams in messages of at most 1 MiB (docs/wire.md, "Pages and
        # streamed lists").
        for answer in self._server_stream("/paramd.v1.Checkpoints/List",
                                          checkpoints_pb2.ListCheckpointsRequest(),
                                          checkpoints_pb2.ListCheckpointsResponse.FromString):
            files.extend(answer.files)
        return files

    def upload(self, local_path: Union[str, "os.PathLike[str]"], remote_path: str, *,
               progress: Progress = None) -> TransferResult:
        """Sends a local file to ``remote_path`` in the checkpoint directory. An earlier
        upload of the same file that broke off is resumed where it stopped; the file appears
        on the server only once all of it arrived with the right SHA-256."""
        local = os.fspath(local_path)
        size = os.path.getsize(local)
        digest = hashlib.sha256()
        with open(local, "rb") as f:
            for piece in iter(lambda: f.read(_wire.CHUNK_BYTES * 4), b""):
                digest.update(piece)
        sha = digest.hexdigest()
        status = self._unary("/paramd.v1.Checkpoints/UploadStatus",
                             checkpoints_pb2.UploadStatusRequest(path=remote_path),
                             checkpoints_pb2.UploadStatusResponse)
        offset = status.offset if status.offset <= size else 0
        try:
            return self._upload_from(local, remote_path, size, sha, offset, progress)
        except InvalidArgument:
            if offset == 0:
                raise
            # The kept bytes were of another file: the checksum failed and the server
            # dropped them ("upload the file again from offset 0"). Start again.
            return self._upload_from(local, remote_path, size, sha, 0, progress)

    def _upload_from(self, local: str, remote: str, size: int, sha: str, offset: int,
                     progress: Progress) -> TransferResult:
        with Reporter(progress, f"upload {remote}") as reporter, open(local, "rb") as f:
            f.seek(offset)

            def frames() -> Iterator[bytes]:
                header = checkpoints_pb2.UploadHeader(path=remote, offset=offset,
                                                      total_size=size, sha256=sha)
                yield checkpoints_pb2.UploadRequest(header=header).SerializeToString()
                done = offset
                buffer = bytearray(_wire.CHUNK_BYTES)
                view = memoryview(buffer)
                while True:
                    n = f.readinto(buffer)
                    if not n:
                        break
                    yield _wire.encode_bytes_field2(view[:n])
                    done += n
                    if reporter.callback is not None:
                        reporter.callback(done, size)

            answer = self._client_stream("/paramd.v1.Checkpoints/Upload", frames(),
                                         checkpoints_pb2.UploadResponse)
        return TransferResult(answer.size, answer.sha256, offset)

    def _download_pieces(self, remote_path: str, offset: int = 0) -> Iterator[bytes]:
        """The bytes of a checkpoint file as they arrive (the stream is cancelled when the
        consumer stops early)."""
        request = checkpoints_pb2.DownloadRequest(path=remote_path, offset=offset)
        for frame in self._server_stream("/paramd.v1.Checkpoints/Download", request,
                                         checkpoints_pb2.DownloadResponse.FromString):
            if frame.WhichOneof("kind") == "chunk":
                yield frame.chunk

    def download(self, remote_path: str, local_path: Union[str, "os.PathLike[str]"], *,
                 progress: Progress = None) -> TransferResult:
        """Fetches ``remote_path`` into ``local_path`` through ``local_path + '.part'``: a
        download that broke off resumes from the part's size. The file is renamed into place
        only once its SHA-256 matches the server's (DataLoss otherwise; the part is removed).
        A part that was not this file's beginning (longer than the file, or other bytes) is
        dropped and the download starts again from 0."""
        local = os.fspath(local_path)
        part = local + ".part"
        offset = os.path.getsize(part) if os.path.exists(part) else 0
        try:
            return self._download_from(remote_path, local, part, offset, progress)
        except (OutOfRange, DataLoss):
            if offset == 0:
                raise
            if os.path.exists(part):
                os.remove(part)
            return self._download_from(remote_path, local, part, 0, progress)

    def _download_from(self, remote_path: str, local: str, part: str, offset: int,
                       progress: Progress) -> TransferResult:
        digest = hashlib.sha256()
        if offset:
            with open(part, "rb") as existing:
                for piece in iter(lambda: existing.read(_wire.CHUNK_BYTES * 4), b""):
                    digest.update(piece)
        request = checkpoints_pb2.DownloadRequest(path=remote_path, offset=offset)

        def decode(data: bytes) -> Any:
            chunk = _wire.decode_chunk(data, tag=0x12) if data[:1] == b"\x12" else None
            if chunk is not None:
                return chunk.data
            return checkpoints_pb2.DownloadResponse.FromString(data)

        header: Optional[checkpoints_pb2.DownloadHeader] = None
        done = offset
        try:
            with Reporter(progress, f"download {remote_path}") as reporter, \
                    open(part, "ab") as f:
                for frame in self._server_stream("/paramd.v1.Checkpoints/Download", request,
                                                 decode):
                    if isinstance(frame, memoryview):
                        data: Any = frame
                    elif frame.WhichOneof("kind") == "header":
                        header = frame.header
                        continue
                    else:
                        data = frame.chunk
                    if header is None:
                        raise DataLoss("the server's download began without a header")
                    f.write(data)
                    digest.update(data)
                    done += len(data)
                    if reporter.callback is not None:
                        reporter.callback(done, header.size)
        finally:
            # A download that failed before its first byte leaves no empty part behind.
            if os.path.exists(part) and os.path.getsize(part) == 0:
                os.remove(part)
        if header is None:
            raise DataLoss("the server's download ended without a header")
        sha = digest.hexdigest()
        if done != header.size or sha != header.sha256:
            os.remove(part)
            raise DataLoss(f"download of {remote_path}: got {done} bytes with SHA-256 {sha}, "
                           f"the server has {header.size} with {header.sha256}; try again")
        if header.size == 0:
            open(part, "wb").close()  # an empty file arrives as an empty part
        os.replace(part, local)
        return TransferResult(done, sha, offset)


class _Requests:
    """A call's request frames, keeping the exception they raise (a ``progress`` callback's,
    a local file's read error): gRPC cancels the call on it but reports only "Exception
    iterating requests!", so the caller raises the original instead."""

    def __init__(self, frames: Iterable[bytes]) -> None:
        self._frames = iter(frames)
        self.error: Optional[Exception] = None

    def __iter__(self) -> "_Requests":
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._frames)
        except StopIteration:
            raise
        except Exception as error:
            self.error = error
            raise


def connect(target: str = "127.0.0.1:50051", *, token: Optional[str] = None,
            tls: Union[bool, grpc.ChannelCredentials, None] = None,
            timeout: Optional[float] = None,
            options: Sequence[tuple[str, Any]] = ()) -> Client:
    """Connects to a paramd daemon at ``target`` ("host:port" or any gRPC target).

    ``token``: a bearer token sent with every call. ``tls``: True for TLS with the system's
    roots, or ``grpc.ssl_channel_credentials(...)`` for your own CA or a client
    certificate. ``timeout``: seconds each unary call may take (None: no deadline);
    streams (state_dict, writes, transfers) have none. ``options``: gRPC channel
    arguments, applied after paramd's own (Note [Receive window]). The channel connects
    lazily: an unreachable daemon shows as :class:`paramd.Unavailable` on the first call.
    """
    return Client(target, token=token, tls=tls, timeout=timeout, options=options)
