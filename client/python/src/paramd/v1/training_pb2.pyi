from paramd.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HyperValue(_message.Message):
    __slots__ = ("none", "bool_value", "int_value", "float_value", "tuple_value")
    NONE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    TUPLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    none: bool
    bool_value: bool
    int_value: int
    float_value: float
    tuple_value: FloatTuple
    def __init__(self, none: _Optional[bool] = ..., bool_value: _Optional[bool] = ..., int_value: _Optional[int] = ..., float_value: _Optional[float] = ..., tuple_value: _Optional[_Union[FloatTuple, _Mapping]] = ...) -> None: ...

class FloatTuple(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Hyperparameter(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: HyperValue
    def __init__(self, name: _Optional[str] = ..., value: _Optional[_Union[HyperValue, _Mapping]] = ...) -> None: ...

class ParamGroup(_message.Message):
    __slots__ = ("param_names", "hyperparameters", "params")
    PARAM_NAMES_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    param_names: _containers.RepeatedScalarFieldContainer[str]
    hyperparameters: _containers.RepeatedCompositeFieldContainer[Hyperparameter]
    params: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, param_names: _Optional[_Iterable[str]] = ..., hyperparameters: _Optional[_Iterable[_Union[Hyperparameter, _Mapping]]] = ..., params: _Optional[_Iterable[int]] = ...) -> None: ...

class CreateOptimizerRequest(_message.Message):
    __slots__ = ("name", "model", "kind", "defaults", "param_groups", "mode", "max_staleness", "workers")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DEFAULTS_FIELD_NUMBER: _ClassVar[int]
    PARAM_GROUPS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    kind: str
    defaults: _containers.RepeatedCompositeFieldContainer[Hyperparameter]
    param_groups: _containers.RepeatedCompositeFieldContainer[ParamGroup]
    mode: str
    max_staleness: int
    workers: int
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., kind: _Optional[str] = ..., defaults: _Optional[_Iterable[_Union[Hyperparameter, _Mapping]]] = ..., param_groups: _Optional[_Iterable[_Union[ParamGroup, _Mapping]]] = ..., mode: _Optional[str] = ..., max_staleness: _Optional[int] = ..., workers: _Optional[int] = ...) -> None: ...

class OptimizerInfo(_message.Message):
    __slots__ = ("name", "model", "kind", "param_groups", "parameters", "with_gradient", "steps", "state_bytes", "model_version", "mode", "max_staleness", "workers", "waiting")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PARAM_GROUPS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    WITH_GRADIENT_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    STATE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    MAX_STALENESS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    kind: str
    param_groups: int
    parameters: int
    with_gradient: int
    steps: int
    state_bytes: int
    model_version: int
    mode: str
    max_staleness: int
    workers: int
    waiting: int
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., kind: _Optional[str] = ..., param_groups: _Optional[int] = ..., parameters: _Optional[int] = ..., with_gradient: _Optional[int] = ..., steps: _Optional[int] = ..., state_bytes: _Optional[int] = ..., model_version: _Optional[int] = ..., mode: _Optional[str] = ..., max_staleness: _Optional[int] = ..., workers: _Optional[int] = ..., waiting: _Optional[int] = ...) -> None: ...

class GradientOptions(_message.Message):
    __slots__ = ("optimizer", "version", "worker", "round")
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    optimizer: str
    version: int
    worker: str
    round: int
    def __init__(self, optimizer: _Optional[str] = ..., version: _Optional[int] = ..., worker: _Optional[str] = ..., round: _Optional[int] = ...) -> None: ...

class GradientFrame(_message.Message):
    __slots__ = ("options", "header", "chunk")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    options: GradientOptions
    header: _tensor_pb2.TensorHeader
    chunk: _tensor_pb2.TensorChunk
    def __init__(self, options: _Optional[_Union[GradientOptions, _Mapping]] = ..., header: _Optional[_Union[_tensor_pb2.TensorHeader, _Mapping]] = ..., chunk: _Optional[_Union[_tensor_pb2.TensorChunk, _Mapping]] = ...) -> None: ...

class PushGradientsResponse(_message.Message):
    __slots__ = ("with_gradient", "model_version", "round")
    WITH_GRADIENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    with_gradient: int
    model_version: int
    round: int
    def __init__(self, with_gradient: _Optional[int] = ..., model_version: _Optional[int] = ..., round: _Optional[int] = ...) -> None: ...

class StepRequest(_message.Message):
    __slots__ = ("optimizer", "if_version")
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_FIELD_NUMBER: _ClassVar[int]
    optimizer: str
    if_version: int
    def __init__(self, optimizer: _Optional[str] = ..., if_version: _Optional[int] = ...) -> None: ...

class StepResponse(_message.Message):
    __slots__ = ("version", "steps")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    version: int
    steps: int
    def __init__(self, version: _Optional[int] = ..., steps: _Optional[int] = ...) -> None: ...

class ZeroGradRequest(_message.Message):
    __slots__ = ("optimizer", "keep_as_zeros")
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    KEEP_AS_ZEROS_FIELD_NUMBER: _ClassVar[int]
    optimizer: str
    keep_as_zeros: bool
    def __init__(self, optimizer: _Optional[str] = ..., keep_as_zeros: _Optional[bool] = ...) -> None: ...

class GetOptimizerStateRequest(_message.Message):
    __slots__ = ("optimizer",)
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    optimizer: str
    def __init__(self, optimizer: _Optional[str] = ...) -> None: ...

class OptimizerStateHead(_message.Message):
    __slots__ = ("optimizer", "kind", "model", "param_groups")
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PARAM_GROUPS_FIELD_NUMBER: _ClassVar[int]
    optimizer: str
    kind: str
    model: str
    param_groups: _containers.RepeatedCompositeFieldContainer[ParamGroup]
    def __init__(self, optimizer: _Optional[str] = ..., kind: _Optional[str] = ..., model: _Optional[str] = ..., param_groups: _Optional[_Iterable[_Union[ParamGroup, _Mapping]]] = ...) -> None: ...

class OptimizerStateFrame(_message.Message):
    __slots__ = ("options", "header", "chunk")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    options: OptimizerStateHead
    header: _tensor_pb2.TensorHeader
    chunk: _tensor_pb2.TensorChunk
    def __init__(self, options: _Optional[_Union[OptimizerStateHead, _Mapping]] = ..., header: _Optional[_Union[_tensor_pb2.TensorHeader, _Mapping]] = ..., chunk: _Optional[_Union[_tensor_pb2.TensorChunk, _Mapping]] = ...) -> None: ...

class SetHyperparametersRequest(_message.Message):
    __slots__ = ("optimizer", "group", "hyperparameters")
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    optimizer: str
    group: int
    hyperparameters: _containers.RepeatedCompositeFieldContainer[Hyperparameter]
    def __init__(self, optimizer: _Optional[str] = ..., group: _Optional[int] = ..., hyperparameters: _Optional[_Iterable[_Union[Hyperparameter, _Mapping]]] = ...) -> None: ...

class DeleteOptimizerRequest(_message.Message):
    __slots__ = ("optimizer",)
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    optimizer: str
    def __init__(self, optimizer: _Optional[str] = ...) -> None: ...

class DeleteOptimizerResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListOptimizersRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ListOptimizersResponse(_message.Message):
    __slots__ = ("optimizers",)
    OPTIMIZERS_FIELD_NUMBER: _ClassVar[int]
    optimizers: _containers.RepeatedCompositeFieldContainer[OptimizerInfo]
    def __init__(self, optimizers: _Optional[_Iterable[_Union[OptimizerInfo, _Mapping]]] = ...) -> None: ...
