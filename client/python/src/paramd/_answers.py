"""Answers that arrive in several messages (docs/wire.md, "Pages and streamed lists").

A load's missing and unexpected keys (LoadStateDict, Checkpoints.Load) stream as several
messages whose lists concatenate; a load the daemon refuses sends its whole error text in
``error_text`` pieces before the error status, whose own message is cut at 2 KiB. ListModels
answers a page at a time, and a ModelInfo's repr may be cut (``repr_truncated``), with
GetRepr streaming it whole. NamedModules streams its entries, a module whose lists pass one
message continuing in the next under the same name. This module puts the pieces back
together.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from paramd._errors import ParamdError, from_status
from paramd.v1 import models_pb2, parameters_pb2


class StreamedLoad:
    """A load's answer, gathered message by message: ``version`` (0 for a refused load),
    ``created`` and ``format`` (Checkpoints.Load), and the whole key lists."""

    def __init__(self) -> None:
        self.version = 0
        self.created = False
        self.format = 0
        self.missing_keys: list[str] = []
        self.unexpected_keys: list[str] = []
        self._error_text: list[str] = []

    def add(self, message: Any) -> None:
        self.version = message.version
        self.created = bool(getattr(message, "created", False))
        self.format = int(getattr(message, "format", 0))
        self.missing_keys.extend(message.missing_keys)
        self.unexpected_keys.extend(message.unexpected_keys)
        if message.error_text:
            self._error_text.append(message.error_text)

    @staticmethod
    def gather(messages: Iterable[Any]) -> "StreamedLoad":
        """Reads every message; a refused load raises its error with the whole streamed
        text (so PyTorch's exact ``Error(s) in loading state_dict`` message), carrying the
        whole key lists as ``missing_keys`` and ``unexpected_keys``."""
        answer = StreamedLoad()
        try:
            for message in messages:
                answer.add(message)
        except ParamdError as error:
            if not answer._error_text:
                raise
            whole = from_status(error.code, "".join(answer._error_text))
            whole.missing_keys = answer.missing_keys  # type: ignore[attr-defined]
            whole.unexpected_keys = answer.unexpected_keys  # type: ignore[attr-defined]
            raise whole from None
        return answer


def list_pages(call: Callable[[models_pb2.ListModelsRequest], models_pb2.ListModelsResponse],
               page_size: int = 0) -> Iterator[models_pb2.ModelInfo]:
    """Every model of ListModels, following next_page_token until it comes back empty."""
    request = models_pb2.ListModelsRequest(page_size=page_size)
    while True:
        page = call(request)
        yield from page.models
        if not page.next_page_token:
            return
        request.page_token = page.next_page_token


def join_repr(chunks: Iterable[models_pb2.ReprChunk]) -> str:
    """GetRepr's pieces, concatenated."""
    return "".join(chunk.text for chunk in chunks)


def merged_module_entries(messages: Iterable[parameters_pb2.NamedModulesResponse]
                          ) -> list[parameters_pb2.ModuleEntry]:
    """NamedModules' entries from its messages: consecutive entries of one name are one
    module whose lists continued in the next message (names are unique in one answer)."""
    entries: list[parameters_pb2.ModuleEntry] = []
    for message in messages:
        for entry in message.modules:
            if entries and entries[-1].name == entry.name:
                entries[-1].MergeFrom(entry)  # appends the lists; name and type agree
            else:
                entries.append(entry)
    return entries
