"""Answers in several messages (docs/wire.md, "Pages and streamed lists"): a load's key
lists streamed in pieces, a refused load's whole text, ListModels' pages, a cut repr. First the
client's gathering on its own, then against the real daemon."""

from __future__ import annotations

from typing import Iterator

import grpc
import numpy as np
import pytest

import paramd
from conftest import SPECS
from paramd._answers import StreamedLoad, list_pages
from paramd._errors import InvalidArgument, ParamdError
from paramd.v1 import checkpoints_pb2, models_pb2, parameters_pb2

MLP_MISSING = ["linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"]


def torch_load_error(missing: list[str], unexpected: list[str]) -> str:
    def quoted(keys: list[str]) -> str:
        return ", ".join(f'"{k}"' for k in keys)

    return (f"Error(s) in loading state_dict for MLP:\n\tMissing key(s) in state_dict: "
            f"{quoted(missing)}. \n\tUnexpected key(s) in state_dict: {quoted(unexpected)}. ")


def test_streamed_load_concatenates_every_message() -> None:
    messages = [checkpoints_pb2.LoadResponse(version=3, created=True, format=1,
                                             missing_keys=["a"], unexpected_keys=["x"]),
                checkpoints_pb2.LoadResponse(version=3, created=True, format=1,
                                             unexpected_keys=["y", "z"])]
    answer = StreamedLoad.gather(messages)
    assert (answer.version, answer.created, answer.format) == (3, True, 1)
    assert answer.missing_keys == ["a"] and answer.unexpected_keys == ["x", "y", "z"]


def test_refused_load_raises_the_whole_streamed_text() -> None:
    whole = torch_load_error(["a"], ["x", "y"])

    def stream() -> Iterator[parameters_pb2.LoadStateDictResponse]:
        yield parameters_pb2.LoadStateDictResponse(missing_keys=["a"], unexpected_keys=["x"],
                                                   error_text=whole[:30])
        yield parameters_pb2.LoadStateDictResponse(unexpected_keys=["y"], error_text=whole[30:])
        raise InvalidArgument(whole[:20] + "... (cut)", grpc.StatusCode.INVALID_ARGUMENT)

    with pytest.raises(paramd.LoadStateDictError) as caught:
        StreamedLoad.gather(stream())
    assert str(caught.value) == whole and isinstance(caught.value, RuntimeError)
    assert caught.value.missing_keys == ["a"]  # type: ignore[attr-defined]
    assert caught.value.unexpected_keys == ["x", "y"]  # type: ignore[attr-defined]

    def failing() -> Iterator[parameters_pb2.LoadStateDictResponse]:
        raise paramd.NotFound("model 'm' not found", grpc.StatusCode.NOT_FOUND)
        yield parameters_pb2.LoadStateDictResponse()

    with pytest.raises(paramd.NotFound):
        StreamedLoad.gather(failing())


def test_list_pages_follows_the_token_to_the_end() -> None:
    pages = {"": models_pb2.ListModelsResponse(models=[models_pb2.ModelInfo(name="a")],
                                               next_page_token="t1"),
             "t1": models_pb2.ListModelsResponse(models=[models_pb2.ModelInfo(name="b"),
                                                         models_pb2.ModelInfo(name="c")])}
    seen: list[str] = []

    def call(request: models_pb2.ListModelsRequest) -> models_pb2.ListModelsResponse:
        seen.append(request.page_token)
        return pages[request.page_token]

    assert [m.name for m in list_pages(call)] == ["a", "b", "c"]
    assert seen == ["", "t1"]


def long_keys(count: int) -> list[str]:
    return [f"unexpected_{'k' * 182}_{i:05d}" for i in range(count)]


def test_load_state_dict_with_keys_past_one_message(client: paramd.Client, name: str) -> None:
    model = client.create(name, SPECS / "mlp.json")
    keys = long_keys(8000)  # 1.6 MB of names: two messages or more
    state = {"w2": np.array([7], np.float32)}
    state.update({k: np.ones(1, np.float32) for k in keys})
    before = model.version
    with pytest.raises(RuntimeError) as caught:
        model.load_state_dict(state)
    assert str(caught.value) == torch_load_error(MLP_MISSING, keys)
    assert model.version == before
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == MLP_MISSING and result.unexpected_keys == keys
    assert model.version == before + 1
    assert model.get("w2", as_numpy=True).tolist() == [7.0]
    client.delete(name)


def test_models_pages_and_a_long_repr(client: paramd.Client, name: str) -> None:
    names = [f"{name}-{i:03d}" for i in range(105)]  # past the default page of 100
    for n in names:
        client.create(n, {"type": "Identity"})
    listed = [m.name for m in client.models()]
    assert [n for n in listed if n.startswith(name + "-")] == names
    assert listed == sorted(listed)
    for n in names:
        client.delete(n)

    body = {"name": "body", "type": "Sequential", "children": [{"type": "Identity"}] * 1000}
    refs = [{"name": f"copy{i}", "ref": "body"} for i in range(60)]
    model = client.create(name, {"type": "Wide", "children": [body] + refs})
    cut = next(m for m in client.models() if m.name == name)
    assert cut.repr_truncated and len(cut.repr) <= 1 << 20
    whole = repr(model)
    assert len(whole) > 1 << 20 and whole.startswith(cut.repr) and whole.endswith(")")
    assert model.describe().repr == whole and not model.describe().repr_truncated
    with pytest.raises(ParamdError) as caught:
        client._unary("/paramd.v1.Models/ListModels",
                      models_pb2.ListModelsRequest(page_token="edited"),
                      models_pb2.ListModelsResponse)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    client.delete(name)
