"""paramd: the Python client of the paramd model-parameter server.

``paramd.connect()`` gives a :class:`Client`; ``client.model(name)`` a :class:`RemoteModel`
that reads like ``torch.nn.Module`` (``state_dict``, ``named_parameters``,
``load_state_dict``, ``register_parameter``, ``train``/``eval``, ``to``, ``forward``, ...)
with PyTorch's names, order and error texts. ``paramd.torch`` converts live ``nn.Module``
objects to and from remote models. torch is optional: without it tensors are NumPy arrays.

The gRPC message classes in ``paramd.v1`` are generated from ``proto/paramd/v1`` with
grpcio-tools and committed, so that ``pip install`` needs no code generator and no copy of
the protos; CI regenerates them and fails when they differ from the protos
(``client/python/tools/check_stubs.py``). docs/python.md describes the whole API.
"""

from paramd._client import Client, ModelInfo, TransferResult, connect
from paramd._errors import (
    AlreadyExists,
    Cancelled,
    ConnectionClosed,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    ForwardError,
    InvalidArgument,
    InvalidName,
    LoadStateDictError,
    NotFound,
    OutOfRange,
    ParamdError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    VersionConflict,
)
from paramd._model import RemoteModel, RemoteModule
from paramd._results import ForwardResult, SaveResult, StateDict
from paramd._training import OptimizerInfo, RemoteOptimizer, Worker

__version__ = "0.1.0"

__all__ = [
    "AlreadyExists",
    "Cancelled",
    "Client",
    "ConnectionClosed",
    "DataLoss",
    "DeadlineExceeded",
    "FailedPrecondition",
    "ForwardError",
    "ForwardResult",
    "InvalidArgument",
    "InvalidName",
    "LoadStateDictError",
    "ModelInfo",
    "NotFound",
    "OutOfRange",
    "OptimizerInfo",
    "ParamdError",
    "PermissionDenied",
    "RemoteModel",
    "RemoteModule",
    "RemoteOptimizer",
    "ResourceExhausted",
    "SaveResult",
    "StateDict",
    "TransferResult",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "VersionConflict",
    "Worker",
    "connect",
    "__version__",
]
