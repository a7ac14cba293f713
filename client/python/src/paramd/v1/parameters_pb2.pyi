from paramd.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TensorFrame(_message.Message):
    __slots__ = ("start", "header", "chunk")
    START_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    start: StreamStart
    header: _tensor_pb2.TensorHeader
    chunk: _tensor_pb2.TensorChunk
    def __init__(self, start: _Optional[_Union[StreamStart, _Mapping]] = ..., header: _Optional[_Union[_tensor_pb2.TensorHeader, _Mapping]] = ..., chunk: _Optional[_Union[_tensor_pb2.TensorChunk, _Mapping]] = ...) -> None: ...

class StreamStart(_message.Message):
    __slots__ = ("model", "version", "metadata", "ordered_metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ORDERED_METADATA_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    metadata: _containers.ScalarMap[str, int]
    ordered_metadata: _containers.RepeatedCompositeFieldContainer[ModuleVersion]
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ..., metadata: _Optional[_Mapping[str, int]] = ..., ordered_metadata: _Optional[_Iterable[_Union[ModuleVersion, _Mapping]]] = ...) -> None: ...

class StateDictRequest(_message.Message):
    __slots__ = ("model", "prefix", "wire_dtype", "metadata_only", "aliases")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    WIRE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_ONLY_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    model: str
    prefix: str
    wire_dtype: _tensor_pb2.DType
    metadata_only: bool
    aliases: bool
    def __init__(self, model: _Optional[str] = ..., prefix: _Optional[str] = ..., wire_dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ..., metadata_only: _Optional[bool] = ..., aliases: _Optional[bool] = ...) -> None: ...

class NamedTensorsRequest(_message.Message):
    __slots__ = ("model", "prefix", "no_recurse", "keep_duplicates", "with_data", "wire_dtype")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    NO_RECURSE_FIELD_NUMBER: _ClassVar[int]
    KEEP_DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    WITH_DATA_FIELD_NUMBER: _ClassVar[int]
    WIRE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    model: str
    prefix: str
    no_recurse: bool
    keep_duplicates: bool
    with_data: bool
    wire_dtype: _tensor_pb2.DType
    def __init__(self, model: _Optional[str] = ..., prefix: _Optional[str] = ..., no_recurse: _Optional[bool] = ..., keep_duplicates: _Optional[bool] = ..., with_data: _Optional[bool] = ..., wire_dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ...) -> None: ...

class NamedModulesRequest(_message.Message):
    __slots__ = ("model", "prefix", "keep_duplicates")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    KEEP_DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    model: str
    prefix: str
    keep_duplicates: bool
    def __init__(self, model: _Optional[str] = ..., prefix: _Optional[str] = ..., keep_duplicates: _Optional[bool] = ...) -> None: ...

class ModuleEntry(_message.Message):
    __slots__ = ("name", "type", "parameters", "buffers", "shared_with")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    BUFFERS_FIELD_NUMBER: _ClassVar[int]
    SHARED_WITH_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    parameters: _containers.RepeatedScalarFieldContainer[str]
    buffers: _containers.RepeatedScalarFieldContainer[str]
    shared_with: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., parameters: _Optional[_Iterable[str]] = ..., buffers: _Optional[_Iterable[str]] = ..., shared_with: _Optional[_Iterable[str]] = ...) -> None: ...

class NamedModulesResponse(_message.Message):
    __slots__ = ("version", "modules")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODULES_FIELD_NUMBER: _ClassVar[int]
    version: int
    modules: _containers.RepeatedCompositeFieldContainer[ModuleEntry]
    def __init__(self, version: _Optional[int] = ..., modules: _Optional[_Iterable[_Union[ModuleEntry, _Mapping]]] = ...) -> None: ...

class GetTensorRequest(_message.Message):
    __slots__ = ("model", "name", "region", "wire_dtype", "metadata_only")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    WIRE_DTYPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_ONLY_FIELD_NUMBER: _ClassVar[int]
    model: str
    name: str
    region: _tensor_pb2.Region
    wire_dtype: _tensor_pb2.DType
    metadata_only: bool
    def __init__(self, model: _Optional[str] = ..., name: _Optional[str] = ..., region: _Optional[_Union[_tensor_pb2.Region, _Mapping]] = ..., wire_dtype: _Optional[_Union[_tensor_pb2.DType, str]] = ..., metadata_only: _Optional[bool] = ...) -> None: ...

class WriteOptions(_message.Message):
    __slots__ = ("model", "if_version", "module_path", "name", "none", "non_persistent", "non_strict", "assign", "metadata", "has_metadata", "reserve_bytes", "commit_each_tensor")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODULE_PATH_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    NONE_FIELD_NUMBER: _ClassVar[int]
    NON_PERSISTENT_FIELD_NUMBER: _ClassVar[int]
    NON_STRICT_FIELD_NUMBER: _ClassVar[int]
    ASSIGN_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    HAS_METADATA_FIELD_NUMBER: _ClassVar[int]
    RESERVE_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_EACH_TENSOR_FIELD_NUMBER: _ClassVar[int]
    model: str
    if_version: int
    module_path: str
    name: str
    none: bool
    non_persistent: bool
    non_strict: bool
    assign: bool
    metadata: _containers.ScalarMap[str, int]
    has_metadata: bool
    reserve_bytes: int
    commit_each_tensor: bool
    def __init__(self, model: _Optional[str] = ..., if_version: _Optional[int] = ..., module_path: _Optional[str] = ..., name: _Optional[str] = ..., none: _Optional[bool] = ..., non_persistent: _Optional[bool] = ..., non_strict: _Optional[bool] = ..., assign: _Optional[bool] = ..., metadata: _Optional[_Mapping[str, int]] = ..., has_metadata: _Optional[bool] = ..., reserve_bytes: _Optional[int] = ..., commit_each_tensor: _Optional[bool] = ...) -> None: ...

class WriteFrame(_message.Message):
    __slots__ = ("options", "header", "chunk")
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    options: WriteOptions
    header: _tensor_pb2.TensorHeader
    chunk: _tensor_pb2.TensorChunk
    def __init__(self, options: _Optional[_Union[WriteOptions, _Mapping]] = ..., header: _Optional[_Union[_tensor_pb2.TensorHeader, _Mapping]] = ..., chunk: _Optional[_Union[_tensor_pb2.TensorChunk, _Mapping]] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class TieParametersRequest(_message.Message):
    __slots__ = ("model", "name", "target", "if_version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    name: str
    target: str
    if_version: int
    def __init__(self, model: _Optional[str] = ..., name: _Optional[str] = ..., target: _Optional[str] = ..., if_version: _Optional[int] = ...) -> None: ...

class LoadStateDictResponse(_message.Message):
    __slots__ = ("version", "missing_keys", "unexpected_keys", "error_text")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MISSING_KEYS_FIELD_NUMBER: _ClassVar[int]
    UNEXPECTED_KEYS_FIELD_NUMBER: _ClassVar[int]
    ERROR_TEXT_FIELD_NUMBER: _ClassVar[int]
    version: int
    missing_keys: _containers.RepeatedScalarFieldContainer[str]
    unexpected_keys: _containers.RepeatedScalarFieldContainer[str]
    error_text: str
    def __init__(self, version: _Optional[int] = ..., missing_keys: _Optional[_Iterable[str]] = ..., unexpected_keys: _Optional[_Iterable[str]] = ..., error_text: _Optional[str] = ...) -> None: ...

class ModuleVersion(_message.Message):
    __slots__ = ("path", "version")
    PATH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    path: str
    version: int
    def __init__(self, path: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...
