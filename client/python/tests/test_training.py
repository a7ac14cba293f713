"""RemoteOptimizer against the real daemon: the calls' error codes, and that a failed call
changes nothing (no gradient added, no version made, no state touched)."""

from __future__ import annotations

import concurrent.futures
import time
from typing import Any, Iterator

import numpy as np
import pytest

import paramd
from paramd import _training, _wire
from paramd.v1 import training_pb2

SPEC = {"type": "Net", "parameters": [{"name": "w", "shape": [2, 3]},
                                      {"name": "b", "shape": [3]}]}
TIED = {"type": "TiedLM", "children": [
    {"name": "embed", "type": "Embedding", "args": {"num_embeddings": 4, "embedding_dim": 2}},
    {"name": "head", "type": "Linear", "args": {"in_features": 2, "out_features": 4,
                                                "bias": False},
     "parameters": [{"name": "weight", "tie": "embed.weight"}]}]}


def ones(*shape: int) -> Any:
    return np.ones(shape, dtype=np.float32)


def test_a_step_is_one_new_version_and_none_gradients_are_skipped(client: paramd.Client,
                                                                  name: str) -> None:
    model = client.create(name, SPEC)
    opt = client.create_optimizer(name, name, "SGD", lr=0.5)
    before = model.state_dict(as_numpy=True)
    assert opt.push({"b": ones(3)}).with_gradient == 1
    version = opt.step()
    assert version == before.version + 1
    after = model.state_dict(as_numpy=True)
    np.testing.assert_array_equal(after["w"], before["w"])  # no gradient: skipped
    np.testing.assert_allclose(after["b"], before["b"] - 0.5)
    opt.zero_grad()
    assert opt.step() == version  # nothing to step: no new version
    assert opt.info().steps == 1


def test_tied_names_share_one_gradient(client: paramd.Client, name: str) -> None:
    client.create(name, TIED)
    opt = client.create_optimizer(name, name, "SGD", lr=1.0)
    assert opt.push({"embed.weight": ones(4, 2), "head.weight": ones(4, 2)}).with_gradient == 1
    with pytest.raises(paramd.InvalidArgument,
                       match="some parameters appear in more than one parameter group"):
        client.create_optimizer(name + "-2", name, "SGD", ["embed.weight", "head.weight"])


def test_bad_calls_get_their_codes_and_change_nothing(client: paramd.Client, name: str) -> None:
    model = client.create(name, SPEC)
    with pytest.raises(paramd.NotFound):
        client.create_optimizer(name, "no-such-model", "SGD")
    with pytest.raises(paramd.InvalidArgument, match="unknown optimizer kind 'RMSprop'"):
        client.create_optimizer(name, name, "RMSprop")
    with pytest.raises(paramd.InvalidArgument, match="SGD has no hyperparameter 'betas'"):
        client.create_optimizer(name, name, "SGD", betas=(0.9, 0.99))
    opt = client.create_optimizer(name, name, "Adam", lr=0.1)
    with pytest.raises(paramd.AlreadyExists):
        client.create_optimizer(name, name, "Adam")
    with pytest.raises(paramd.NotFound):
        client.optimizer("no-such-optimizer").step()
    # A push with one bad tensor adds none of them.
    with pytest.raises(paramd.InvalidArgument, match="has shape"):
        opt.push({"b": ones(3), "w": ones(3, 2)})
    with pytest.raises(paramd.NotFound):
        opt.push({"b": ones(3), "nope": ones(1)})
    assert opt.info().with_gradient == 0
    opt.push({"b": ones(3)})
    version = model.state_dict().version
    with pytest.raises(paramd.VersionConflict):
        opt.step(if_version=version + 5)
    assert model.state_dict().version == version
    assert opt.state_dict()["state"] == {}
    # torch checks values only in its constructor, but a value of the wrong type has no place.
    with pytest.raises(paramd.InvalidArgument, match="Adam's betas must be a tuple of two numbers"):
        opt.set_hyperparameters(betas=0.9)
    # Only -1 (group=None) is every group; other negatives are no group, not Python's index
    # from the end.
    for group in (-2, 1):
        with pytest.raises(paramd.InvalidArgument, match=f"group {group} does not exist"):
            opt.set_hyperparameters(group=group, lr=0.5)
    assert opt.state_dict()["param_groups"][0]["lr"] == 0.1
    with pytest.raises(paramd.InvalidArgument,
                       match="different number of parameter groups"):
        opt.load_state_dict({"state": {}, "param_groups": []})


def test_a_push_that_breaks_off_adds_nothing(client: paramd.Client, name: str) -> None:
    client.create(name, SPEC)
    opt = client.create_optimizer(name, name, "SGD")

    def frames() -> Iterator[bytes]:
        yield training_pb2.GradientFrame(options=training_pb2.GradientOptions(
            optimizer=name)).SerializeToString()
        out = _training._tensors.to_wire(ones(3), name="b")
        yield training_pb2.GradientFrame(header=_wire.header_of("b", out)).SerializeToString()
        raise RuntimeError("the worker died")

    with pytest.raises(RuntimeError, match="the worker died"):  # the frames' own error
        client._client_stream("/paramd.v1.Training/PushGradients", frames(),
                              training_pb2.PushGradientsResponse)
    assert opt.info().with_gradient == 0


def test_deleting_a_model_deletes_its_optimizers(client: paramd.Client, name: str) -> None:
    client.create(name, SPEC)
    opt = client.create_optimizer(name, name, "SGD")
    client.delete(name)
    client.create(name, SPEC)  # a new model of the same name has none
    assert client.optimizers(name) == []
    with pytest.raises(paramd.NotFound, match=f"optimizer '{name}' not found"):
        opt.push({"b": ones(3)})
    with pytest.raises(paramd.NotFound):
        opt.delete()


def test_asynchronous_pushes_step_within_the_staleness_bound(client: paramd.Client,
                                                             name: str) -> None:
    model = client.create(name, SPEC)
    opt = client.create_optimizer(name, name, "SGD", mode="asynchronous", max_staleness=1,
                                  lr=1.0)
    start = model.state_dict().version
    answer = opt.push({"b": ones(3)}, round=0)
    assert (answer.model_version, answer.round) == (start + 1, 1)
    assert opt.push({"b": ones(3)}, round=0).round == 2
    with pytest.raises(paramd.VersionConflict, match="more than max_staleness 1") as stale:
        opt.push({"b": ones(3)}, round=0)
    assert stale.value.current_version == 2
    with pytest.raises(paramd.FailedPrecondition, match="asynchronous"):
        opt.step()
    info = opt.info()
    assert (info.mode, info.max_staleness, info.steps, info.with_gradient) == \
        ("asynchronous", 1, 2, 0)
    assert model.state_dict().version == start + 2


def test_synchronous_pushes_wait_for_their_round_and_step_on_the_average(
        client: paramd.Client, name: str) -> None:
    model = client.create(name, SPEC)
    opt = client.create_optimizer(name, name, "SGD", mode="synchronous", workers=2, lr=1.0)
    before = model.state_dict(as_numpy=True)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        first = pool.submit(opt.push, {"b": np.array([1, 2, 3], np.float32)}, worker="a",
                            round=0)
        deadline = time.monotonic() + 20
        while opt.info().waiting != 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not first.done()  # waits for the round's second worker
        with pytest.raises(paramd.AlreadyExists, match="already pushed for round 0"):
            opt.push({"b": ones(3)}, worker="a", round=0)
        second = opt.push({"b": np.array([3, 2, 1], np.float32)}, worker="b", round=0)
        answer = first.result(timeout=20)
    assert (answer.round, answer.model_version) == (second.round, second.model_version) == \
        (1, before.version + 1)
    after = model.state_dict(as_numpy=True)
    np.testing.assert_array_equal(after["b"], before["b"] - 2)  # the mean, (1+3)/2 = 2
    np.testing.assert_array_equal(after["w"], before["w"])  # no worker pushed it: skipped
    with pytest.raises(paramd.VersionConflict, match="is at round 1") as old:
        opt.push({"b": ones(3)}, worker="a", round=0)
    assert old.value.current_version == 1
    with pytest.raises(paramd.FailedPrecondition, match="synchronous"):
        opt.step()
    info = opt.info()
    assert (info.mode, info.workers, info.steps, info.waiting) == ("synchronous", 2, 1, 0)


def test_optimizer_state_counts_against_max_memory(tmp_path: Any) -> None:
    from conftest import Daemon

    daemon = Daemon(str(tmp_path), ("--max-memory", "50M"))
    try:
        with paramd.connect(daemon.address, timeout=30) as client:
            # 16 MiB of weights and 16 MiB of gradient fit (with the 16 MiB pushed while it
            # is added in, and the model's structure); Adam's first step (the new weights and
            # two moments, 48 MiB more) does not.
            model = client.create("big", {"type": "Net", "parameters": [
                {"name": "w", "shape": [2048, 2048]}]})
            opt = client.create_optimizer("big", "big", "Adam")
            opt.push({"w": np.full((2048, 2048), 0.5, dtype=np.float32)})
            version = model.state_dict().version
            with pytest.raises(paramd.ResourceExhausted, match="memory limit"):
                opt.step()
            assert model.state_dict().version == version
            info = opt.info()
            assert (info.steps, info.state_bytes, info.with_gradient) == (0, 0, 1)
    finally:
        daemon.stop()


def test_a_worker_pulls_in_place_pushes_its_grads_and_steps(client: paramd.Client,
                                                            name: str) -> None:
    torch = pytest.importorskip("torch")
    spec = {"type": "Sequential", "children": [
        {"type": "Linear", "args": {"in_features": 3, "out_features": 2}}]}
    model = client.create(name, spec)
    client.create_optimizer(name, name, "SGD", lr=0.1, momentum=0.9)
    module = torch.nn.Sequential(torch.nn.Linear(3, 2))
    reference = torch.nn.Sequential(torch.nn.Linear(3, 2))
    reference.load_state_dict(model.state_dict())
    local = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, foreach=False)
    worker = paramd.Worker(client, name, name, module)
    weight = module[0].weight
    for _ in range(3):
        worker.pull()
        assert module[0].weight is weight  # in place
        x = torch.ones(4, 3)
        for m in (module, reference):
            m.zero_grad()
            m(x).pow(2).sum().backward()
        worker.push()
        version = worker.step()
        local.step()
    assert version == model.state_dict().version
    worker.pull()
    torch.testing.assert_close(module[0].weight, reference[0].weight, rtol=0, atol=0)
