from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CheckpointFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECKPOINT_FORMAT_UNSPECIFIED: _ClassVar[CheckpointFormat]
    CHECKPOINT_FORMAT_SAFETENSORS: _ClassVar[CheckpointFormat]
    CHECKPOINT_FORMAT_TORCH: _ClassVar[CheckpointFormat]
CHECKPOINT_FORMAT_UNSPECIFIED: CheckpointFormat
CHECKPOINT_FORMAT_SAFETENSORS: CheckpointFormat
CHECKPOINT_FORMAT_TORCH: CheckpointFormat

class SaveRequest(_message.Message):
    __slots__ = ("model", "path", "format", "keep_vars", "optimizer", "return_sha256")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    KEEP_VARS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    RETURN_SHA256_FIELD_NUMBER: _ClassVar[int]
    model: str
    path: str
    format: CheckpointFormat
    keep_vars: bool
    optimizer: str
    return_sha256: bool
    def __init__(self, model: _Optional[str] = ..., path: _Optional[str] = ..., format: _Optional[_Union[CheckpointFormat, str]] = ..., keep_vars: _Optional[bool] = ..., optimizer: _Optional[str] = ..., return_sha256: _Optional[bool] = ...) -> None: ...

class SaveResponse(_message.Message):
    __slots__ = ("path", "format", "version", "size", "sha256")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    path: str
    format: CheckpointFormat
    version: int
    size: int
    sha256: str
    def __init__(self, path: _Optional[str] = ..., format: _Optional[_Union[CheckpointFormat, str]] = ..., version: _Optional[int] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class LoadRequest(_message.Message):
    __slots__ = ("model", "path", "non_strict", "assign", "map_location", "location_map", "spec_json", "device", "if_version", "optimizer")
    class LocationMapEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    NON_STRICT_FIELD_NUMBER: _ClassVar[int]
    ASSIGN_FIELD_NUMBER: _ClassVar[int]
    MAP_LOCATION_FIELD_NUMBER: _ClassVar[int]
    LOCATION_MAP_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    model: str
    path: str
    non_strict: bool
    assign: bool
    map_location: str
    location_map: _containers.ScalarMap[str, str]
    spec_json: str
    device: str
    if_version: int
    optimizer: str
    def __init__(self, model: _Optional[str] = ..., path: _Optional[str] = ..., non_strict: _Optional[bool] = ..., assign: _Optional[bool] = ..., map_location: _Optional[str] = ..., location_map: _Optional[_Mapping[str, str]] = ..., spec_json: _Optional[str] = ..., device: _Optional[str] = ..., if_version: _Optional[int] = ..., optimizer: _Optional[str] = ...) -> None: ...

class LoadResponse(_message.Message):
    __slots__ = ("version", "missing_keys", "unexpected_keys", "created", "format", "error_text")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MISSING_KEYS_FIELD_NUMBER: _ClassVar[int]
    UNEXPECTED_KEYS_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    ERROR_TEXT_FIELD_NUMBER: _ClassVar[int]
    version: int
    missing_keys: _containers.RepeatedScalarFieldContainer[str]
    unexpected_keys: _containers.RepeatedScalarFieldContainer[str]
    created: bool
    format: CheckpointFormat
    error_text: str
    def __init__(self, version: _Optional[int] = ..., missing_keys: _Optional[_Iterable[str]] = ..., unexpected_keys: _Optional[_Iterable[str]] = ..., created: _Optional[bool] = ..., format: _Optional[_Union[CheckpointFormat, str]] = ..., error_text: _Optional[str] = ...) -> None: ...

class ListCheckpointsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CheckpointFile(_message.Message):
    __slots__ = ("path", "size", "modified_unix", "format")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MODIFIED_UNIX_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    path: str
    size: int
    modified_unix: int
    format: CheckpointFormat
    def __init__(self, path: _Optional[str] = ..., size: _Optional[int] = ..., modified_unix: _Optional[int] = ..., format: _Optional[_Union[CheckpointFormat, str]] = ...) -> None: ...

class ListCheckpointsResponse(_message.Message):
    __slots__ = ("files",)
    FILES_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[CheckpointFile]
    def __init__(self, files: _Optional[_Iterable[_Union[CheckpointFile, _Mapping]]] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("path", "offset", "total_size", "sha256")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    path: str
    offset: int
    total_size: int
    sha256: str
    def __init__(self, path: _Optional[str] = ..., offset: _Optional[int] = ..., total_size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class UploadRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadResponse(_message.Message):
    __slots__ = ("path", "size", "sha256")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    path: str
    size: int
    sha256: str
    def __init__(self, path: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class UploadStatusRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class UploadStatusResponse(_message.Message):
    __slots__ = ("offset",)
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    offset: int
    def __init__(self, offset: _Optional[int] = ...) -> None: ...

class DownloadRequest(_message.Message):
    __slots__ = ("path", "offset")
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    path: str
    offset: int
    def __init__(self, path: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class DownloadHeader(_message.Message):
    __slots__ = ("size", "sha256", "modified_unix")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    MODIFIED_UNIX_FIELD_NUMBER: _ClassVar[int]
    size: int
    sha256: str
    modified_unix: int
    def __init__(self, size: _Optional[int] = ..., sha256: _Optional[str] = ..., modified_unix: _Optional[int] = ...) -> None: ...

class DownloadResponse(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: DownloadHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[DownloadHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, models: _Optional[_Iterable[str]] = ...) -> None: ...

class ModelSnapshot(_message.Message):
    __slots__ = ("model", "version")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model: str
    version: int
    def __init__(self, model: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class SnapshotResponse(_message.Message):
    __slots__ = ("snapshots",)
    SNAPSHOTS_FIELD_NUMBER: _ClassVar[int]
    snapshots: _containers.RepeatedCompositeFieldContainer[ModelSnapshot]
    def __init__(self, snapshots: _Optional[_Iterable[_Union[ModelSnapshot, _Mapping]]] = ...) -> None: ...
