from paramd.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ForwardMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FORWARD_MODE_MODEL: _ClassVar[ForwardMode]
    FORWARD_MODE_TRAIN: _ClassVar[ForwardMode]
    FORWARD_MODE_EVAL: _ClassVar[ForwardMode]
FORWARD_MODE_MODEL: ForwardMode
FORWARD_MODE_TRAIN: ForwardMode
FORWARD_MODE_EVAL: ForwardMode

class ForwardOptions(_message.Message):
    __slots__ = ("model", "mode", "seed", "if_version", "wire_dtype")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_FIELD_NUMBER: _ClassVar[int]
    WIRE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    model: str
    mode: ForwardMode
    seed: int
    if_version: int
    wire_dtype: _tensor_pb2.DType
    def __init__(self, model: _Optional[str] = ..., mode: _Optional[_Union[ForwardMode, str]] = ..., seed: _Optional[int] = ..., if_version: _Optional[int] = ..., wire_dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ...) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("options", "header", "chunk")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    options: ForwardOptions
    header: _tensor_pb2.TensorHeader
    chunk: _tensor_pb2.TensorChunk
    def __init__(self, options: _Optional[_Union[ForwardOptions, _Mapping]] = ..., header: _Optional[_Union[_tensor_pb2.TensorHeader, _Mapping]] = ..., chunk: _Optional[_Union[_tensor_pb2.TensorChunk, _Mapping]] = ...) -> None: ...

class ForwardStart(_message.Message):
    __slots__ = ("model", "version", "updated_version", "training")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPDATED_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    updated_version: int
    training: bool
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., updated_version: _Optional[int] = ..., training: _Optional[bool] = ...) -> None: ...

class ForwardResponse(_message.Message):
    __slots__ = ("start", "header", "chunk")
    START_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    start: ForwardStart
    header: _tensor_pb2.TensorHeader
    chunk: _tensor_pb2.TensorChunk
    def __init__(self, start: _Optional[_Union[ForwardStart, _Mapping]] = ..., header: _Optional[_Union[_tensor_pb2.TensorHeader, _Mapping]] = ..., chunk: _Optional[_Union[_tensor_pb2.TensorChunk, _Mapping]] = ...) -> None: ...
