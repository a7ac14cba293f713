"""The paramd package against a real daemon: models, state_dict, iterators, regions,
writes, versions, errors. Runs with or without torch (values compared as NumPy)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import Any, Iterator

import numpy as np
import pytest

import paramd
from conftest import SPECS, Daemon
from paramd.v1 import checkpoints_pb2


def arr(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        return value.detach().numpy()
    return np.asarray(value)


def f32(*values: Any) -> np.ndarray:
    return np.array(values, dtype=np.float32)


SEED_KEYS = {
    "mlp": ["w2", "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"],
    "sequential": ["0.weight", "0.bias", "2.weight", "2.bias"],
    "cnn": ["conv1.weight", "conv1.bias", "fc1.weight", "fc1.bias"],
    "tied_embedding": ["embed.weight", "lm_head.weight"],
    "tied_sequential": ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias",
                        "6.weight", "6.bias"],
    "custom_linear": ["attr.w", "attr.b", "registered.weight", "registered.bias",
                      "no_bias.weight"],
}


def test_connect_health_list_create_delete(client: paramd.Client, name: str) -> None:
    assert client.health() == "SERVING"
    model = client.create(name, SPECS / "mlp.json")
    assert name in [m.name for m in client.models()]
    info = model.describe()
    assert (info.type, info.version, info.device, info.training) == ("MLP", 1, "cpu", True)
    with pytest.raises(paramd.AlreadyExists):
        client.create(name, json.loads((SPECS / "mlp.json").read_text()))
    client.delete(name)
    with pytest.raises(paramd.NotFound) as caught:
        client.delete(name)
    assert isinstance(caught.value, KeyError) and caught.value.code.name == "NOT_FOUND"
    assert name in str(caught.value)


@pytest.mark.parametrize("spec", sorted(SEED_KEYS))
def test_seed_state_dict_keys_and_order(client: paramd.Client, name: str, spec: str) -> None:
    model = client.create(name, SPECS / f"{spec}.json")
    sd = model.state_dict(as_numpy=True)
    assert list(sd) == SEED_KEYS[spec]
    assert sd.version == 1
    assert all(isinstance(v, np.ndarray) for v in sd.values())


def test_mlp_metadata_and_prefix(client: paramd.Client, name: str) -> None:
    model = client.create(name, SPECS / "mlp.json")
    sd = model.state_dict()
    assert list(sd._metadata) == ["", "linear1", "relu", "linear2"]
    assert sd._metadata["linear1"] == {"version": 1}
    assert arr(sd["w2"]).tolist() == [2.0]
    prefixed = model.state_dict(prefix="model.")
    assert list(prefixed) == ["model." + k for k in SEED_KEYS["mlp"]]
    assert list(prefixed._metadata) == ["model", "model.linear1", "model.relu", "model.linear2"]


def test_tied_entries_share_one_storage(client: paramd.Client, name: str) -> None:
    model = client.create(name, SPECS / "tied_embedding.json")
    sd = model.state_dict(as_numpy=True)
    assert np.shares_memory(sd["embed.weight"], sd["lm_head.weight"])
    assert sd["embed.weight"] is not sd["lm_head.weight"]
    assert [n for n, _ in model.named_parameters()] == ["embed.weight"]
    assert [n for n, _ in model.named_parameters(remove_duplicate=False)] == \
        ["embed.weight", "lm_head.weight"]


def test_shared_module_iterators_and_write_through(client: paramd.Client, name: str) -> None:
    net = client.create(name, SPECS / "tied_sequential.json")
    assert [n for n, _ in net.named_parameters()] == \
        ["0.weight", "0.bias", "2.weight", "2.bias", "6.weight", "6.bias"]
    assert [n for n, _ in net.named_modules()] == ["", "0", "1", "2", "3", "5", "6"]
    assert [n for n, _ in net.named_modules(remove_duplicate=False)] == \
        ["", "0", "1", "2", "3", "4", "5", "6"]
    assert [n for n, _ in net.named_children()] == ["0", "1", "2", "3", "5", "6"]
    modules = dict(net.named_modules(remove_duplicate=False))
    assert modules["2"] == modules["4"] and modules["2"] != modules["0"]
    assert [m.type for m in net.children()] == ["Linear", "ReLU", "Linear", "ReLU", "ReLU",
                                                "Linear"]
    sd = net.state_dict(as_numpy=True)
    assert np.shares_memory(sd["2.weight"], sd["4.weight"])
    version = net.set("2.weight", np.full((8, 8), 3.0, np.float32))
    assert version == 2
    assert (arr(net.get("4.weight")) == 3.0).all()
    assert (net.state_dict(as_numpy=True)["4.weight"] == 3.0).all()


def test_register_parameter_none_and_buffers(client: paramd.Client, name: str) -> None:
    model = client.create(name, SPECS / "mlp.json")
    model.register_parameter("w3", None)
    assert list(model.state_dict()) == SEED_KEYS["mlp"]
    keys = model.load_state_dict({**model.state_dict(), "w3": f32(1)}, strict=False)
    assert keys.unexpected_keys == ["w3"] and keys.missing_keys == []
    enc = model.submodule("linear1")
    enc.register_buffer("steps", np.array(7, np.int64), persistent=False)
    enc.register_buffer("scale", f32(0.5))
    assert list(model.state_dict()) == ["w2", "linear1.weight", "linear1.bias", "linear1.scale",
                                        "linear2.weight", "linear2.bias"]
    assert [n for n, _ in model.named_buffers()] == ["linear1.steps", "linear1.scale"]
    assert arr(enc.get("steps")).item() == 7
    enc.register_parameter("extra", f32(1, 2))
    assert "linear1.extra" in model.state_dict()
    with pytest.raises(KeyError, match=r"parameter name can't contain \"\.\""):
        model.register_parameter("a.b", None)
    with pytest.raises(KeyError, match="attribute 'w2' already exists"):
        model.register_buffer("w2", f32(1))
    with pytest.raises(KeyError, match="has no attribute `nope`"):
        model.submodule("nope")


def test_get_set_regions(client: paramd.Client, name: str) -> None:
    spec = {"type": "Net", "parameters": [
        {"name": "w", "shape": [4, 3, 2], "init": {"values": list(range(24))}}]}
    model = client.create(name, spec)
    full = np.arange(24, dtype=np.float32).reshape(4, 3, 2)
    assert (arr(model.get("w")) == full).all()
    assert arr(model.get("w", 1)).shape == (3, 2)
    assert (arr(model.get("w", 1)) == full[1]).all()
    assert (arr(model.get("w", (0, slice(0, 2)))) == full[0, 0:2]).all()
    assert (arr(model.get("w", (slice(1, None), -1))) == full[1:, -1]).all()
    assert (arr(model.get("w", slice(-2, None))) == full[-2:]).all()
    model.set("w", np.zeros((3, 2), np.float32), 2)
    full[2] = 0
    model.set("w", 9.0, (0, slice(1, 3)))
    full[0, 1:3] = 9
    model.set("w", f32(5, 6), (3, 0))
    full[3, 0] = [5, 6]
    assert (arr(model.get("w")) == full).all()
    model.set("w", 1.5)
    assert (arr(model.get("w")) == 1.5).all()
    with pytest.raises(ValueError, match="step-1"):
        model.get("w", slice(0, 4, 2))


def test_update_is_one_atomic_version(client: paramd.Client, name: str) -> None:
    model = client.create(name, SPECS / "mlp.json")
    before = model.state_dict(as_numpy=True)
    version = model.update({"w2": f32(7), "linear1.bias": f32(1, 2)})
    assert version == before.version + 1
    assert arr(model.get("w2")).tolist() == [7.0]
    with pytest.raises(paramd.InvalidArgument):
        model.update({"w2": f32(8), "linear1.bias": f32(1, 2, 3)})
    with pytest.raises(paramd.NotFound):
        model.update({"w2": f32(8), "nosuch": f32(1)})
    assert model.version == version
    assert arr(model.get("w2")).tolist() == [7.0]


def test_out_fills_in_place(client: paramd.Client, name: str) -> None:
    model = client.create(name, SPECS / "tied_embedding.json")
    first = model.state_dict(as_numpy=True)
    ids = {k: id(v) for k, v in first.items()}
    model.set("embed.weight", np.ones((10, 4), np.float32))
    again = model.state_dict(out=first)
    assert {k: id(v) for k, v in again.items()} == ids
    assert (first["lm_head.weight"] == 1).all() and again.version == 2
    # An entry of another shape is not filled: that name gets a new array.
    small = np.zeros((2, 2), np.float32)
    third = model.state_dict(out={"embed.weight": small})
    assert third["embed.weight"].shape == (10, 4) and (small == 0).all()
    with pytest.raises(ValueError, match="out\\['embed.weight'\\]"):
        model.state_dict(out={"embed.weight": np.zeros((10, 8), np.float32)[:, ::2]})


def test_tied_bytes_travel_once_and_share_memory(client: paramd.Client, name: str) -> None:
    model = client.create(name, SPECS / "tied_embedding.json")
    seen: list[tuple[int, int]] = []
    sd = model.state_dict(as_numpy=True, progress=lambda done, total: seen.append((done, total)))
    assert list(sd) == ["embed.weight", "lm_head.weight"]
    nbytes = sd["embed.weight"].nbytes
    assert seen[-1] == (nbytes, nbytes)  # lm_head.weight's bytes did not travel again
    assert np.shares_memory(sd["embed.weight"], sd["lm_head.weight"])
    # out= with two separate buffers: the second is filled from the first.
    model.set("embed.weight", np.arange(40, dtype=np.float32).reshape(10, 4))
    out = {key: np.zeros_like(value) for key, value in sd.items()}
    again = model.state_dict(as_numpy=True, out=out)
    assert again["lm_head.weight"] is out["lm_head.weight"]
    assert out["lm_head.weight"].tolist() == np.arange(40).reshape(10, 4).tolist()
    # Sharing buffers (the previous result) stay shared.
    third = model.state_dict(as_numpy=True, out=sd)
    assert np.shares_memory(third["embed.weight"], third["lm_head.weight"])
    assert third["lm_head.weight"].tolist() == np.arange(40).reshape(10, 4).tolist()


def test_versions_and_conflicts(client: paramd.Client, name: str) -> None:
    model = client.create(name, SPECS / "mlp.json")
    assert model.set("w2", f32(3), if_version=1) == 2
    with pytest.raises(paramd.VersionConflict) as caught:
        model.set("w2", f32(4), if_version=1)
    assert caught.value.code.name == "ABORTED"
    assert arr(model.get("w2")).tolist() == [3.0]


def test_version_conflicts_report_the_current_version(client: paramd.Client, name: str) -> None:
    # The server's paramd-current-version trailer: a stream write, a unary write, a delete.
    model = client.create(name, SPECS / "mlp.json")
    assert model.set("w2", f32(3)) == 2
    for stale in (lambda: model.set("w2", f32(4), if_version=1),
                  lambda: model.train(False, if_version=1),
                  lambda: model.delete(if_version=1)):
        with pytest.raises(paramd.VersionConflict) as caught:
            stale()
        assert caught.value.current_version == 2
    assert arr(model.get("w2")).tolist() == [3.0] and model.version == 2


def test_bad_input_leaves_model_unchanged(client: paramd.Client, name: str,
                                          daemon: Daemon) -> None:
    model = client.create(name, SPECS / "mlp.json")
    before = model.state_dict(as_numpy=True)
    with pytest.raises(TypeError, match="complex"):
        model.set("w2", np.array([1j]))
    with pytest.raises(TypeError, match="str"):
        model.set("w2", "two")
    with pytest.raises(paramd.InvalidArgument, match="shape"):
        model.set("linear1.weight", np.zeros((3, 3), np.float32))
    with pytest.raises(KeyError):
        model.get("linear3.weight")
    with pytest.raises(KeyError):
        model.set("linear3.weight", f32(1))
    with pytest.raises(paramd.NotFound):
        client.model("no-such-model").state_dict()
    after = model.state_dict(as_numpy=True)
    assert after.version == before.version
    assert all((after[k] == before[k]).all() for k in before)
    other = paramd.connect(daemon.address)
    other.close()
    with pytest.raises(paramd.ConnectionClosed):
        other.model(name).state_dict()
    with pytest.raises(ConnectionError):
        other.models()


def test_unreachable_server_is_unavailable() -> None:
    with paramd.connect("127.0.0.1:1", timeout=5) as c:
        with pytest.raises(paramd.Unavailable):
            c.models()


def test_load_state_dict_strict_errors(client: paramd.Client, name: str) -> None:
    model = client.create(name, SPECS / "mlp.json")
    sd = model.state_dict(as_numpy=True)
    bad = {"w2": sd["w2"], "linear1.weight": np.zeros((3, 1), np.float32),
           "linear1.bias": sd["linear1.bias"], "extra": f32(1)}
    with pytest.raises(RuntimeError) as caught:
        model.load_state_dict(bad)
    assert str(caught.value) == (
        "Error(s) in loading state_dict for MLP:\n"
        '\tMissing key(s) in state_dict: "linear2.weight", "linear2.bias". \n'
        '\tUnexpected key(s) in state_dict: "extra". \n'
        "\tsize mismatch for linear1.weight: copying a param with shape torch.Size([3, 1]) "
        "from checkpoint, the shape in current model is torch.Size([2, 1]).")
    assert model.version == sd.version
    with pytest.raises(TypeError, match="Expected state_dict to be dict-like, got <class 'list'>."):
        model.load_state_dict([])  # type: ignore[arg-type]
    result = model.load_state_dict({"w2": f32(5)}, strict=False)
    assert result.missing_keys == SEED_KEYS["mlp"][1:] and result.unexpected_keys == []
    assert repr(model.load_state_dict(sd)) == "<All keys matched successfully>"


def test_train_eval_to_repr_forward(client: paramd.Client, name: str) -> None:
    model = client.create(name, SPECS / "mlp.json")
    assert model.eval() is model and model.training is False
    assert model.train().training is True
    assert model.to("cpu") is model
    with pytest.raises(paramd.InvalidArgument):
        model.to("tpu")
    assert repr(model).startswith("MLP(\n  (linear1): Linear(in_features=1, out_features=2")
    sd = model.state_dict(as_numpy=True)
    x = np.array([[0.5], [-1.0]], np.float32)
    h = np.maximum(x @ sd["linear1.weight"].T + sd["linear1.bias"], 0)
    expected = h @ sd["linear2.weight"].T + sd["linear2.bias"]
    np.testing.assert_allclose(arr(model(x)), expected, rtol=1e-5)
    result = model.run(x, mode="eval")
    assert result.version == sd.version and result.training is False
    with pytest.raises(paramd.InvalidArgument, match="linear1"):
        model(np.zeros((2, 3), np.float32))


def test_save_load_upload_download(client: paramd.Client, name: str, tmp_path: Any) -> None:
    model = client.create(name, SPECS / "tied_embedding.json")
    saved = model.save(f"{name}.pt")
    assert saved.format == "torch" and saved.version == 1 and saved.sha256 == ""
    hashed = model.save(f"{name}-hashed.pt", sha256=True)
    assert hashed.format == "torch" and len(hashed.sha256) == 64
    original = model.state_dict(as_numpy=True)
    model.set("embed.weight", 0.0)
    assert repr(model.load(f"{name}.pt")) == "<All keys matched successfully>"
    assert (model.state_dict(as_numpy=True)["embed.weight"] == original["embed.weight"]).all()
    local = tmp_path / "net.safetensors"
    seen: list[tuple[int, int]] = []
    model.download(local, progress=lambda done, total: seen.append((done, total)))
    assert os.path.getsize(local) == seen[-1][1] == seen[-1][0]
    model.set("embed.weight", 0.0)
    assert repr(model.upload(local, progress=True)) == "<All keys matched successfully>"
    assert (model.state_dict(as_numpy=True)["embed.weight"] == original["embed.weight"]).all()
    with pytest.raises(paramd.InvalidArgument):
        model.save("../outside.pt")


def test_a_broken_off_upload_resumes_where_it_stopped(client: paramd.Client, name: str,
                                                      tmp_path: Any) -> None:
    local = tmp_path / "blob.bin"
    data = os.urandom(3 << 20)
    local.write_bytes(data)
    remote = f"{name}/blob.bin"

    # An upload that ends after its first MiB: the daemon keeps it and says so.
    def frames() -> Iterator[bytes]:
        header = checkpoints_pb2.UploadHeader(path=remote, total_size=len(data),
                                              sha256=hashlib.sha256(data).hexdigest())
        yield checkpoints_pb2.UploadRequest(header=header).SerializeToString()
        yield checkpoints_pb2.UploadRequest(chunk=data[:1 << 20]).SerializeToString()

    with pytest.raises(paramd.FailedPrecondition, match="resume from offset 1048576"):
        client._client_stream("/paramd.v1.Checkpoints/Upload", frames(),
                              checkpoints_pb2.UploadResponse)
    resumed = client.upload(local, remote)
    assert (resumed.resumed_from, resumed.size) == (1 << 20, 3 << 20)
    back = tmp_path / "back.bin"
    client.download(remote, back)
    assert back.read_bytes() == data


def test_reader_sees_only_whole_versions(client: paramd.Client, name: str) -> None:
    spec = {"type": "Net", "parameters": [
        {"name": f"p{i}", "shape": [256, 1024]} for i in range(4)]}  # 4 MiB, 4 tensors
    model = client.create(name, spec)
    stop = threading.Event()
    problems: list[str] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        out = None
        while not stop.is_set():
            sd = model.state_dict(out=out, as_numpy=True)
            out = sd
            values = {float(v.flat[0]) for v in sd.values()}
            whole = all((v == v.flat[0]).all() for v in sd.values())
            # The writer's n-th write makes version n + 1 with every entry equal to n.
            if len(values) != 1 or not whole or values.pop() != sd.version - 1:
                problems.append(f"version {sd.version}: mixed values")
            reads += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(1, 40):
            model.update({f"p{i}": float(n) for i in range(4)})
    finally:
        stop.set()
        thread.join()
    assert reads > 0 and not problems


def test_forward_with_named_inputs(client: paramd.Client, name: str) -> None:
    spec = {"type": "Net", "children": [
        {"name": "fc", "type": "Linear", "args": {"in_features": 2, "out_features": 2}}],
        "forward": [{"call": "fc", "out": "h"}, {"op": "add", "in": ["h", "mode"]}]}
    model = client.create(name, spec)
    x = np.ones((1, 2), np.float32)
    plain = arr(model(x, mode=np.zeros((1, 2), np.float32)))
    shifted = arr(model(x, mode=np.full((1, 2), 10, np.float32)))
    np.testing.assert_allclose(shifted - plain, 10, rtol=1e-5)
    result = model.run(x, {"mode": np.zeros((1, 2), np.float32)}, mode="eval")
    np.testing.assert_allclose(arr(result.output), plain)
