"""What RemoteModel's calls return: torch's ``_IncompatibleKeys`` (or a stand-in with its
fields and repr), :class:`StateDict`, :class:`SaveResult` and :class:`ForwardResult`."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

from paramd import _tensors

Tensor = _tensors.Tensor


class _IncompatibleKeysFallback(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]

    def __repr__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return (f"_IncompatibleKeys(missing_keys={self.missing_keys!r}, "
                f"unexpected_keys={self.unexpected_keys!r})")

    def __str__(self) -> str:
        return self.__repr__()


_IncompatibleKeysFallback.__name__ = "_IncompatibleKeys"
_IncompatibleKeysFallback.__qualname__ = "_IncompatibleKeys"


def incompatible_keys(missing: Sequence[str], unexpected: Sequence[str]) -> Any:
    """torch's own ``_IncompatibleKeys`` when torch is installed, else a namedtuple with
    the same fields and repr."""
    torch = _tensors.torch_module()
    if torch is not None:
        from torch.nn.modules.module import _IncompatibleKeys

        return _IncompatibleKeys(list(missing), list(unexpected))
    return _IncompatibleKeysFallback(list(missing), list(unexpected))


class StateDict(collections.OrderedDict):  # type: ignore[type-arg]
    """What :meth:`RemoteModel.state_dict` returns: an OrderedDict of name to tensor in
    PyTorch's order, with ``_metadata`` as torch's carries it and ``version``, the model
    version every entry belongs to."""

    version: int
    _metadata: "collections.OrderedDict[str, dict[str, int]]"

    def __reduce__(self) -> Any:
        # Pickled (torch.save, pickle, copy) as the OrderedDict with `_metadata` that torch's
        # own state_dict is: torch.load's default weights_only=True refuses any other class,
        # and the file must load where paramd is not installed. `version` is not kept.
        state = {"_metadata": self._metadata} if "_metadata" in vars(self) else None
        return (collections.OrderedDict, (), state, None, iter(self.items()))


@dataclass(frozen=True)
class SaveResult:
    """A checkpoint the daemon wrote: its path, format ("safetensors" or "torch"), the model
    version it holds, its size and hex SHA-256 (empty unless the save asked for it)."""

    path: str
    format: str
    version: int
    size: int
    sha256: str


@dataclass(frozen=True)
class ForwardResult:
    """A forward pass: the output, the model version that computed it, the version a
    training-mode pass committed its BatchNorm statistics as (0: none) and the mode."""

    output: Tensor
    version: int
    updated_version: int
    training: bool
