from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateModelRequest(_message.Message):
    __slots__ = ("name", "spec_json", "device", "seed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    name: str
    spec_json: str
    device: str
    seed: int
    def __init__(self, name: _Optional[str] = ..., spec_json: _Optional[str] = ..., device: _Optional[str] = ..., seed: _Optional[int] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "device", "training", "type", "repr", "state_dict_entries", "parameter_count", "parameter_numel", "nbytes", "repr_truncated")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    REPR_FIELD_NUMBER: _ClassVar[int]
    STATE_DICT_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_COUNT_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_NUMEL_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    REPR_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
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
    repr_truncated: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., device: _Optional[str] = ..., training: _Optional[bool] = ..., type: _Optional[str] = ..., repr: _Optional[str] = ..., state_dict_entries: _Optional[int] = ..., parameter_count: _Optional[int] = ..., parameter_numel: _Optional[int] = ..., nbytes: _Optional[int] = ..., repr_truncated: _Optional[bool] = ...) -> None: ...

class DeleteModelRequest(_message.Message):
    __slots__ = ("name", "if_version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    if_version: int
    def __init__(self, name: _Optional[str] = ..., if_version: _Optional[int] = ...) -> None: ...

class DeleteModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models", "next_page_token")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    next_page_token: str
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DescribeModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetReprRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ReprChunk(_message.Message):
    __slots__ = ("version", "text")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    version: int
    text: str
    def __init__(self, version: _Optional[int] = ..., text: _Optional[str] = ...) -> None: ...

class SetModeRequest(_message.Message):
    __slots__ = ("name", "training", "if_version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    training: bool
    if_version: int
    def __init__(self, name: _Optional[str] = ..., training: _Optional[bool] = ..., if_version: _Optional[int] = ...) -> None: ...

class MoveModelRequest(_message.Message):
    __slots__ = ("name", "device", "if_version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    IF_VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    device: str
    if_version: int
    def __init__(self, name: _Optional[str] = ..., device: _Optional[str] = ..., if_version: _Optional[int] = ...) -> None: ...

class GetSpecRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetSpecResponse(_message.Message):
    __slots__ = ("spec_json", "version")
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    spec_json: str
    version: int
    def __init__(self, spec_json: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...
