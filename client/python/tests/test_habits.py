"""What a PyTorch user does without thinking twice, against a real daemon: forked workers,
NumPy-style regions, torch.save of a remote state_dict, 0-dim values, nn.Parameter's
requires_grad, exceptions from their own callbacks, repr in a log line. Each case is one a
careless caller met and the client got wrong before."""

from __future__ import annotations

import collections
import hashlib
import os
import pickle
from typing import Any

import numpy as np
import pytest

import paramd
from conftest import SPECS

torch = pytest.importorskip("torch")


def grid(name: str, client: paramd.Client) -> paramd.RemoteModel:
    """A model with one [4, 3] parameter ``w`` holding 0..11, and a 0-dim ``s``."""
    model = client.create(name, {"type": "Net", "parameters": [
        {"name": "w", "shape": [4, 3]}, {"name": "s", "shape": []}]})
    model.set("w", np.arange(12, dtype=np.float32).reshape(4, 3))
    return model


def test_a_forked_child_pulls_after_its_parent_did(client: paramd.Client, name: str,
                                                   daemon: Any) -> None:
    model = client.create(name, {"type": "Linear",
                                 "args": {"in_features": 1024, "out_features": 1024}})
    model.state_dict()  # 4 MiB: its chunks were copied by the package's helper thread
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only with the right bytes, within the parent's wait
        code = 1
        try:
            import signal
            signal.alarm(20)
            with paramd.connect(daemon.address, timeout=10) as child:
                pulled = child.model(name).state_dict()
                code = 0 if tuple(pulled["weight"].shape) == (1024, 1024) else 2
        except BaseException as error:  # said on stderr, which the parent's report shows
            os.write(2, f"child: {error!r}\n".encode())
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_regions_resolve_as_python_indexing_does(client: paramd.Client, name: str) -> None:
    model = grid(name, client)
    local = torch.arange(12, dtype=torch.float32).reshape(4, 3)
    for index in [slice(0, 100), slice(-100, None), slice(5, 7), slice(3, 1), -1, (1, -1),
                  (slice(None), slice(1, 100)), (-4, slice(-2, None))]:
        got = model.get("w", index)
        assert torch.equal(got, local[index]), index
    with pytest.raises(IndexError, match="index 4 is out of bounds for dimension 0 with size 4"):
        model.get("w", 4)
    with pytest.raises(IndexError, match="index -5 is out of bounds for dimension 0"):
        model.set("w", 0.0, -5)
    with pytest.raises(IndexError, match="too many indices for tensor of dimension 2"):
        model.get("w", (0, 0, 0))
    # A list is advanced indexing in NumPy and torch (rows 1 and 2), never the element [1, 2].
    with pytest.raises(TypeError, match="not a list"):
        model.get("w", [1, 2])
    with pytest.raises(TypeError, match="not a list"):
        model.set("w", 0.0, [1, 2])
    # A value of the wrong shape is named as the caller wrote it, not with the dimension an
    # int dropped put back.
    with pytest.raises(ValueError, match=r"shape \[2\] into the region of 'w' of shape \[3\]"):
        model.set("w", np.ones(2, np.float32), 1)
    assert model.version == 2
    model.set("w", np.full(3, 7, np.float32), -1)
    local[-1] = 7
    assert torch.equal(model.get("w"), local)


def test_numbers_are_0_dim_values(client: paramd.Client, name: str) -> None:
    model = grid(name, client)
    for value in (3.0, np.float32(2), np.array(4.0), 9):
        model.set("s", value)
        assert model.get("s").shape == () and float(model.get("s")) == float(value)
    model.update({"s": np.float64(1.5)})
    assert float(model.get("s")) == 1.5
    model.register_buffer("b", 7)
    model.register_buffer("c", np.array(5))
    assert model.get("b").shape == torch.tensor(7).shape == ()
    assert model.get("c").shape == ()
    seq = client.create(f"{name}-bn", {"type": "Sequential", "children": [
        {"type": "Linear", "args": {"in_features": 2, "out_features": 2}},
        {"type": "BatchNorm1d", "args": {"num_features": 2}}]})
    seq.set("1.num_batches_tracked", 9)
    assert int(seq.get("1.num_batches_tracked")) == 9


def test_a_plain_tensor_registers_as_nn_parameter_would(client: paramd.Client,
                                                        name: str) -> None:
    model = client.create(name, {"type": "Net"})
    model.register_parameter("a", torch.zeros(2))
    model.register_parameter("b", torch.nn.Parameter(torch.zeros(2), requires_grad=False))
    model.register_parameter("c", np.zeros(2, np.float32))
    model.register_parameter("d", torch.zeros(2), requires_grad=False)
    got = {key: value.requires_grad for key, value in model.named_parameters()}
    local = torch.nn.Module()
    local.register_parameter("a", torch.nn.Parameter(torch.zeros(2)))
    assert got == {"a": local.a.requires_grad, "b": False, "c": True, "d": False}


def test_torch_save_of_a_remote_state_dict_loads_with_weights_only(
        client: paramd.Client, name: str, tmp_path: Any) -> None:
    model = client.create(name, SPECS / "sequential.json")
    sd = model.state_dict()
    path = tmp_path / "sd.pt"
    torch.save(sd, path)
    loaded = torch.load(path)  # weights_only=True, torch's default
    assert type(loaded) is collections.OrderedDict
    assert list(loaded) == list(sd)
    assert loaded._metadata == sd._metadata
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)
    # pickle and copies are plain state_dicts too, with their _metadata.
    assert pickle.loads(pickle.dumps(sd))._metadata == sd._metadata
    # And it loads back into a local module as torch's own would.
    local = torch.nn.Sequential(torch.nn.Linear(1, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1))
    assert repr(local.load_state_dict(loaded)) == "<All keys matched successfully>"


def test_out_entries_that_no_longer_fit_get_new_tensors(client: paramd.Client,
                                                        name: str) -> None:
    model = client.create(name, {"type": "Net", "parameters": [
        {"name": "a", "shape": [4]}, {"name": "b", "shape": [4]}]})
    model.set("a", 1.0)
    out = {"a": torch.zeros(4), "b": torch.zeros(4, dtype=torch.float64)}
    pulled = model.state_dict(out=out)
    # 'a' was filled in place; 'b' (float64 where the model holds float32) was not touched.
    assert pulled["a"] is out["a"] and out["a"].tolist() == [1.0] * 4
    assert pulled["b"] is not out["b"] and pulled["b"].dtype == torch.float32
    assert out["b"].tolist() == [0.0] * 4
    # What nothing can be written into is refused before anything is pulled or filled.
    out = {"a": torch.full((4,), 5.0), "b": torch.zeros(8)[::2]}
    with pytest.raises(ValueError, match=r"out\['b'\] must be a contiguous CPU tensor"):
        model.state_dict(out=out)
    assert out["a"].tolist() == [5.0] * 4
    with pytest.raises(TypeError, match="mapping"):
        model.state_dict(out=[torch.zeros(4)])  # type: ignore[arg-type]


def test_a_progress_callback_s_exception_reaches_the_caller(client: paramd.Client,
                                                            name: str, tmp_path: Any) -> None:
    model = grid(name, client)

    class Stop(Exception):
        pass

    def stop(done: int, total: int) -> None:
        raise Stop(f"{done} of {total}")

    with pytest.raises(Stop):
        model.set("w", np.zeros((4, 3), np.float32), progress=stop)
    with pytest.raises(Stop):
        model.load_state_dict({"w": torch.zeros(4, 3), "s": torch.tensor(0.0)}, progress=stop)
    assert model.version == 2  # nothing was written
    local = tmp_path / "blob.bin"
    local.write_bytes(os.urandom(3 << 20))
    with pytest.raises(Stop):
        client.upload(local, f"{name}/blob.bin", progress=stop)


def test_a_stale_part_does_not_block_a_download(client: paramd.Client, name: str,
                                                tmp_path: Any) -> None:
    model = grid(name, client)
    saved = model.save(f"{name}.pt", sha256=True)
    local = tmp_path / "got.pt"
    part = tmp_path / "got.pt.part"
    # Longer than the file (the server answers OUT_OF_RANGE), then other bytes.
    for stale in (os.urandom(1 << 20), b"x" * 100):
        part.write_bytes(stale)
        got = client.download(f"{name}.pt", local)
        assert got.resumed_from == 0 and not part.exists()
        assert got.sha256 == saved.sha256 == hashlib.sha256(local.read_bytes()).hexdigest()
    # A download that fails leaves no empty part behind.
    with pytest.raises(paramd.NotFound):
        client.download(f"{name}-missing.pt", local)
    assert not part.exists()


def test_forward_errors_are_runtime_errors_as_torch_s(client: paramd.Client,
                                                      name: str) -> None:
    model = client.create(name, SPECS / "sequential.json")
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied"):
        model(torch.zeros(2, 3))
    with pytest.raises(paramd.ForwardError):
        model(torch.zeros(2, 3))


def test_handles_say_what_torch_says(client: paramd.Client, name: str) -> None:
    model = client.create(name, SPECS / "sequential.json")
    with pytest.raises(ValueError, match="training mode is expected to be boolean"):
        model.train("yes")  # type: ignore[arg-type]
    with pytest.raises(paramd.NotFound, match="`weight` is not an nn.Module"):
        model.submodule("0.weight")
    sd = model.state_dict()
    sd._metadata["0"] = {"version": None}
    assert repr(model.load_state_dict(sd)) == "<All keys matched successfully>"
    model.delete()
    assert repr(model).startswith(f"<RemoteModel '{name}': NotFound: ")


def test_careless_arguments_get_clear_errors(client: paramd.Client, name: str,
                                             daemon: Any) -> None:
    model = client.create(name, {"type": "Net", "parameters": [
        {"name": "d", "shape": [2], "dtype": "float64"}]})
    model.set("d", 0.1)  # as p[:] = 0.1: exact in float64
    assert model.get("d").tolist() == [0.1, 0.1]
    with pytest.raises(TypeError, match="triples"):
        model.update("d")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="triples"):
        model.update({1: 0.0})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="seed must be an int"):
        client.create(f"{name}-f", SPECS / "sequential.json").run(torch.zeros(1, 1), seed=-1)
    with pytest.raises(ValueError, match="printable ASCII"):
        paramd.connect(daemon.address, token="s3cret\n")
    with pytest.raises(TypeError, match="timeout must be a positive number"):
        paramd.connect(daemon.address, timeout="5")  # type: ignore[arg-type]
    assert model.version == 2
