"""One exception hierarchy for every paramd call.

Every error the server sends arrives as a :class:`ParamdError` subclass that carries the gRPC
status code (``.code``) and the server's message (``str(error)``, verbatim, so PyTorch's texts
read as PyTorch prints them). Each subclass also derives from the built-in exception PyTorch
raises in the same situation, so ``except KeyError`` or ``except RuntimeError`` written for a
local ``nn.Module`` keeps working. No bare ``grpc.RpcError`` leaves this package.
"""

from __future__ import annotations

from typing import Optional

import grpc

__all__ = [
    "ParamdError",
    "NotFound",
    "InvalidArgument",
    "LoadStateDictError",
    "InvalidName",
    "AlreadyExists",
    "VersionConflict",
    "FailedPrecondition",
    "ResourceExhausted",
    "PermissionDenied",
    "Unauthenticated",
    "Unavailable",
    "DeadlineExceeded",
    "Unimplemented",
    "Cancelled",
    "DataLoss",
    "ConnectionClosed",
]

# The trailing metadata key a server may send with ABORTED: the model's current version.
CURRENT_VERSION_KEY = "paramd-current-version"


class ParamdError(Exception):
    """A failed paramd call: ``code`` is the gRPC status code, ``str(e)`` the message."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:  # KeyError would print repr(message)
        return self.message


class NotFound(ParamdError, KeyError):
    """NOT_FOUND: an unknown model, module path or tensor name (a ``KeyError``)."""

    code = grpc.StatusCode.NOT_FOUND


class InvalidArgument(ParamdError, ValueError):
    """INVALID_ARGUMENT: a bad name, spec, shape, dtype, region or file."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class LoadStateDictError(InvalidArgument, RuntimeError):
    """load_state_dict refused: the message is PyTorch's ``Error(s) in loading state_dict``
    text, and the exception is a ``RuntimeError`` as PyTorch's is."""


class ForwardError(InvalidArgument, RuntimeError):
    """A forward pass the model refused (an input of the wrong shape or dtype), with PyTorch's
    text where it has one; a ``RuntimeError`` as PyTorch's forward raises."""


class InvalidName(InvalidArgument, KeyError):
    """register_parameter / register_buffer with a name PyTorch refuses with KeyError
    (a ``.`` in it, or the empty string)."""


class AlreadyExists(ParamdError, KeyError):
    """ALREADY_EXISTS: a model name, or an attribute name (``attribute 'x' already exists``)."""

    code = grpc.StatusCode.ALREADY_EXISTS


class VersionConflict(ParamdError):
    """ABORTED: the model moved on past ``if_version``; read again and redo the write.

    ``current_version`` is the model's version when the server reports it (trailing metadata
    ``paramd-current-version``), else None.
    """

    code = grpc.StatusCode.ABORTED

    def __init__(
        self,
        message: str,
        code: Optional[grpc.StatusCode] = None,
        current_version: Optional[int] = None,
    ) -> None:
        super().__init__(message, code)
        self.current_version = current_version


class FailedPrecondition(ParamdError):
    """FAILED_PRECONDITION: fix the state first (e.g. ``cuda`` on a daemon without a GPU)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(ParamdError):
    """RESOURCE_EXHAUSTED: the daemon's memory ceiling would be passed."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class PermissionDenied(ParamdError, PermissionError):
    """PERMISSION_DENIED."""

    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(ParamdError, PermissionError):
    """UNAUTHENTICATED: no or a wrong token."""

    code = grpc.StatusCode.UNAUTHENTICATED


class Unavailable(ParamdError, ConnectionError):
    """UNAVAILABLE: the daemon cannot be reached (retry)."""

    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(ParamdError, TimeoutError):
    """DEADLINE_EXCEEDED: the call ran past the client's ``timeout``."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unimplemented(ParamdError, NotImplementedError):
    """UNIMPLEMENTED: a module option or dtype the forward kernels do not run."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Cancelled(ParamdError):
    """CANCELLED."""

    code = grpc.StatusCode.CANCELLED


class OutOfRange(ParamdError):
    """OUT_OF_RANGE: an offset past the end (a download resumed past a file's size)."""

    code = grpc.StatusCode.OUT_OF_RANGE


class DataLoss(ParamdError):
    """DATA_LOSS: a stream broke the wire contract, or a download's checksum did not match."""

    code = grpc.StatusCode.DATA_LOSS


class ConnectionClosed(ParamdError, ConnectionError):
    """The Client was closed; make a new one with :func:`paramd.connect`."""

    code = grpc.StatusCode.CANCELLED


_BY_CODE: dict[grpc.StatusCode, type[ParamdError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        InvalidArgument,
        AlreadyExists,
        VersionConflict,
        FailedPrecondition,
        ResourceExhausted,
        PermissionDenied,
        Unauthenticated,
        Unavailable,
        DeadlineExceeded,
        Unimplemented,
        Cancelled,
        OutOfRange,
        DataLoss,
    )
}

_LOAD_PREFIX = "Error(s) in loading state_dict for "
_KEY_ERROR_TEXTS = ("name can't contain \".\"", "name can't be empty string")


def from_rpc_error(error: grpc.RpcError) -> ParamdError:
    """The ParamdError for a failed call (``error`` is a grpc.Call as well)."""
    code: grpc.StatusCode = getattr(error, "code", lambda: grpc.StatusCode.UNKNOWN)()
    message: str = getattr(error, "details", lambda: str(error))() or code.name
    if code == grpc.StatusCode.ABORTED:
        current: Optional[int] = None
        trailing = getattr(error, "trailing_metadata", lambda: None)() or ()
        for key, value in trailing:
            if key == CURRENT_VERSION_KEY:
                try:
                    current = int(value)
                except (TypeError, ValueError):
                    current = None
        return VersionConflict(message, code, current)
    return from_status(code, message)


def from_status(code: grpc.StatusCode, message: str) -> ParamdError:
    """The ParamdError for a status ``code`` and ``message`` (no trailing metadata)."""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        if message.startswith(_LOAD_PREFIX):
            return LoadStateDictError(message, code)
        if any(text in message for text in _KEY_ERROR_TEXTS):
            return InvalidName(message, code)
    return _BY_CODE.get(code, ParamdError)(message, code)
