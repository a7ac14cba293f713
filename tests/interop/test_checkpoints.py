"""Checkpoint interop with real PyTorch and safetensors (pytorch-semantics.md §5 to §7, §9):
files torch and safetensors write are read by paramd with the same keys, bytes and sharing;
files paramd writes load in torch.load(weights_only=True) and safetensors the same way; and
hostile files are refused without running anything."""

import hashlib
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

from seed_models import MyModel, TiedLM

ALL_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
              torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool]


# --- the seed's models --------------------------------------------------------------------

class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear1 = nn.Linear(1, 2)
        self.w1 = torch.tensor([1.0], requires_grad=True)
        self.w2 = nn.Parameter(torch.tensor([2.0]))
        self.relu = nn.ReLU()
        self.linear2 = nn.Linear(2, 1)


def shared_sequential():
    shared = nn.Linear(8, 8)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), shared, nn.ReLU(), shared, nn.ReLU(),
                         nn.Linear(8, 1))


SEED_MODELS = {
    "mlp": MLP,
    "sequential": lambda: nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1)),
    "shared": shared_sequential,
    "cnn": MyModel,
    "tied": TiedLM,
    "batchnorm": lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)),
}

SEED_SPECS = {
    "mlp": {"type": "MLP", "attributes": ["w1"],
            "parameters": [{"name": "w2", "shape": [1], "init": {"constant": 2.0}}],
            "children": [
                {"name": "linear1", "type": "Linear", "args": {"in_features": 1, "out_features": 2}},
                {"name": "relu", "type": "ReLU"},
                {"name": "linear2", "type": "Linear", "args": {"in_features": 2, "out_features": 1}}]},
    "sequential": {"type": "Sequential", "children": [
        {"type": "Linear", "args": {"in_features": 1, "out_features": 2}}, {"type": "ReLU"},
        {"type": "Linear", "args": {"in_features": 2, "out_features": 1}}]},
    "shared": {"type": "Sequential", "children": [
        {"type": "Linear", "args": {"in_features": 4, "out_features": 8}}, {"type": "ReLU"},
        {"type": "Linear", "args": {"in_features": 8, "out_features": 8}}, {"type": "ReLU"},
        {"ref": "2"}, {"type": "ReLU"},
        {"type": "Linear", "args": {"in_features": 8, "out_features": 1}}]},
    "cnn": {"type": "MyModel", "children": [
        {"name": "conv1", "type": "Conv2d",
         "args": {"in_channels": 1, "out_channels": 20, "kernel_size": 5}},
        {"name": "pool", "type": "MaxPool2d", "args": {"kernel_size": 2, "stride": 2}},
        {"name": "fc1", "type": "Linear", "args": {"in_features": 2880, "out_features": 10}}]},
    "tied": {"type": "TiedLM", "children": [
        {"name": "embed", "type": "Embedding", "args": {"num_embeddings": 10, "embedding_dim": 4}},
        {"name": "lm_head", "type": "Linear",
         "args": {"in_features": 4, "out_features": 10, "bias": False},
         "parameters": [{"name": "weight", "tie": "embed.weight"}]}]},
    "batchnorm": {"type": "Sequential", "children": [
        {"type": "Linear", "args": {"in_features": 3, "out_features": 4}},
        {"type": "BatchNorm1d", "args": {"num_features": 4}}]},
}


# --- comparing what torch holds with what paramd read ------------------------------------

def tensor_sha256(t):
    t = t.detach().contiguous().reshape(-1)
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return hashlib.sha256(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"").hexdigest()


def storage_groups(tensors):
    """For each tensor, the index of its storage in order of first appearance."""
    seen = {}
    return [seen.setdefault(t.untyped_storage().data_ptr(), len(seen)) for t in tensors]


def torch_dtype_name(dtype):
    return str(dtype).removeprefix("torch.")


def assert_read_matches(described, state_dict, *, check_sharing=True, check_views=True):
    """paramd's reading of a file (ckpt_probe read) against the dict torch saved."""
    entries = described["entries"]
    assert [e["name"] for e in entries] == list(state_dict.keys())
    tensors = list(state_dict.values())
    for entry, t in zip(entries, tensors):
        assert entry["dtype"] == torch_dtype_name(t.dtype), entry["name"]
        assert entry["shape"] == list(t.shape), entry["name"]
        assert entry["sha256"] == tensor_sha256(t), entry["name"]
        assert entry["is_parameter"] == isinstance(t, nn.Parameter), entry["name"]
        if check_views:
            assert entry["stride"] == list(t.stride()), entry["name"]
            assert entry["storage_offset"] == t.storage_offset(), entry["name"]
    if check_sharing:
        assert [e["storage"] for e in entries] == storage_groups(tensors)


def assert_same_state_dict(loaded, expected):
    assert list(loaded.keys()) == list(expected.keys())
    for name, t in expected.items():
        got = loaded[name]
        assert got.dtype == t.dtype, name
        assert got.shape == t.shape, name
        assert torch.equal(got, t), name
    assert storage_groups(list(loaded.values())) == storage_groups(list(expected.values()))


# --- torch.save files read by paramd -------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize("name", sorted(SEED_MODELS))
def test_paramd_reads_torch_save_of_the_seed_models(tmp_path, probe, name, protocol):
    torch.manual_seed(0)
    state_dict = SEED_MODELS[name]().state_dict()
    path = tmp_path / f"{name}.pt"
    torch.save(state_dict, path, pickle_protocol=protocol)
    described = probe("read", path)
    assert described["format"] == "torch"
    assert_read_matches(described, state_dict)
    # _metadata: module prefix -> version, as state_dict() records it.
    expected = [[prefix, meta.get("version")] for prefix, meta in state_dict._metadata.items()]
    assert described["module_versions"] == expected


@pytest.mark.parametrize("protocol", [2, 4])
def test_paramd_reads_every_dtype_and_views(tmp_path, probe, protocol):
    torch.manual_seed(1)
    base = torch.randn(6, 8)
    state_dict = {}
    for dtype in ALL_DTYPES:
        name = torch_dtype_name(dtype)
        if dtype == torch.bool:
            state_dict[name] = torch.randn(3, 5) > 0
        elif dtype.is_floating_point:
            state_dict[name] = torch.randn(3, 5).to(dtype)
        else:
            state_dict[name] = torch.randint(-100 if dtype != torch.uint8 else 0, 100, (3, 5),
                                             dtype=dtype)
    state_dict["scalar"] = torch.tensor(3.5)
    state_dict["empty"] = torch.zeros(0, 4)
    # Views into one storage: a row slice, a column slice (strided), a transpose, the base.
    state_dict["base"] = base
    state_dict["rows"] = base[2:4]
    state_dict["cols"] = base[:, 1:7:2]
    state_dict["transposed"] = base.t()
    path = tmp_path / "dtypes.pt"
    torch.save(state_dict, path, pickle_protocol=protocol)
    assert_read_matches(probe("read", path), state_dict)


def test_paramd_reads_keep_vars_parameters(tmp_path, probe):
    model = MLP()
    state_dict = model.state_dict(keep_vars=True)
    path = tmp_path / "vars.pt"
    torch.save(state_dict, path)
    described = probe("read", path)
    assert_read_matches(described, state_dict)
    assert all(e["requires_grad"] for e in described["entries"] if e["is_parameter"])


def test_paramd_reads_a_file_saved_from_a_cuda_location_tag(tmp_path, probe):
    # Rewrite the location tag torch records (cpu -> cuda:0) without needing a GPU.
    state_dict = {"w": torch.arange(4.0)}
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    src = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    path = tmp_path / "cuda.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            dst.writestr(info, data)
    described = probe("read", path)
    assert described["entries"][0]["location"] == "cuda:0"


# --- files paramd writes, read by torch -----------------------------------------------------

@pytest.mark.parametrize("name", sorted(SEED_MODELS))
def test_torch_loads_what_paramd_writes(tmp_path, probe, name):
    torch.manual_seed(2)
    state_dict = SEED_MODELS[name]().state_dict()
    source = tmp_path / "source.pt"
    torch.save(state_dict, source)
    written = tmp_path / "paramd.pt"
    probe("convert", source, written)
    loaded = torch.load(written, weights_only=True)
    assert_same_state_dict(loaded, state_dict)
    assert dict(loaded._metadata) == dict(state_dict._metadata)
    # And the model takes it, strict.
    model = SEED_MODELS[name]()
    model.load_state_dict(loaded)


def test_torch_loads_every_dtype_and_view_paramd_writes(tmp_path, probe):
    base = torch.arange(48.0).reshape(6, 8)
    state_dict = {torch_dtype_name(d): (torch.arange(15).reshape(3, 5) % 3).to(d)
                  for d in ALL_DTYPES}
    state_dict.update(base=base, rows=base[2:4], cols=base[:, 1:7:2], transposed=base.t(),
                      scalar=torch.tensor(-2.5), empty=torch.zeros(0, 4))
    source = tmp_path / "source.pt"
    torch.save(state_dict, source)
    written = tmp_path / "paramd.pt"
    probe("convert", source, written)
    loaded = torch.load(written, weights_only=True)
    assert_same_state_dict(loaded, state_dict)
    for name in ("rows", "cols", "transposed"):
        assert loaded[name].stride() == state_dict[name].stride()
        assert loaded[name].storage_offset() == state_dict[name].storage_offset()


def test_torch_loads_keep_vars_parameters_paramd_writes(tmp_path, probe):
    state_dict = MLP().state_dict(keep_vars=True)
    source = tmp_path / "source.pt"
    torch.save(state_dict, source)
    written = tmp_path / "paramd.pt"
    probe("convert", source, written, "--keep-vars")
    loaded = torch.load(written, weights_only=True)
    for name, t in state_dict.items():
        assert isinstance(loaded[name], nn.Parameter) == isinstance(t, nn.Parameter), name
        assert torch.equal(loaded[name], t)


# --- safetensors both ways ---------------------------------------------------------------

def test_paramd_reads_safetensors_save_file(tmp_path, probe):
    tensors = {f"t_{torch_dtype_name(d)}": (torch.arange(12).reshape(3, 4) % 5).to(d)
               for d in ALL_DTYPES}
    tensors["scalar"] = torch.tensor(1.5)
    path = tmp_path / "plain.safetensors"
    safetensors.torch.save_file(tensors, path, metadata={"note": "x"})
    described = probe("read", path)
    assert described["format"] == "safetensors"
    expected = dict(sorted(tensors.items()))  # load_file's order
    assert_read_matches(described, expected, check_sharing=False, check_views=False)


def test_safetensors_save_model_aliases_come_back_shared_PytorchSemantics9(tmp_path, probe):
    model = TiedLM()
    path = tmp_path / "tied.safetensors"
    safetensors.torch.save_model(model, path)
    described = probe("read", path)
    by_name = {e["name"]: e for e in described["entries"]}
    assert set(by_name) == {"embed.weight", "lm_head.weight"}
    assert by_name["embed.weight"]["storage"] == by_name["lm_head.weight"]["storage"]
    assert by_name["lm_head.weight"]["sha256"] == tensor_sha256(model.embed.weight)


@pytest.mark.parametrize("name", sorted(SEED_MODELS))
def test_safetensors_loads_what_paramd_writes(tmp_path, probe, name):
    torch.manual_seed(3)
    model = SEED_MODELS[name]()
    source = tmp_path / "source.pt"
    torch.save(model.state_dict(), source)
    written = tmp_path / "paramd.safetensors"
    probe("convert", source, written)
    # load_model follows save_model's aliases, so tied weights come back tied.
    fresh = SEED_MODELS[name]()
    missing, unexpected = safetensors.torch.load_model(fresh, written)
    assert not missing and not unexpected
    for key, t in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], t), key
    plain = safetensors.torch.load_file(written)
    with safetensors.safe_open(written, "pt") as f:
        metadata = f.metadata()
    assert metadata["format"] == "pt"
    if name == "tied":
        assert metadata["lm_head.weight"] == "embed.weight"
        assert set(plain) == {"embed.weight"}


# --- hostile and unsupported files --------------------------------------------------------

class RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_a_pickle_that_calls_os_system_is_refused_and_runs_nothing(tmp_path, probe):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": RunsCommand(f"touch {marker}")}, path)
    result = probe("read", path, check=False)
    assert result.returncode == 1
    # PyTorch's weights_only wording for a global from a blocked module.
    assert "GLOBAL posix.system whose module posix is blocked" in result.stderr
    assert not marker.exists()


def test_a_pickled_module_is_refused_with_advice(tmp_path, probe):
    path = tmp_path / "model.pt"
    torch.save(MLP(), path)
    result = probe("read", path, check=False)
    assert result.returncode == 1
    assert "state_dict" in result.stderr


def test_truncated_and_short_record_files_are_refused(tmp_path, probe):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.arange(64.0)}, good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    result = probe("read", truncated, check=False)
    assert result.returncode == 1 and "zip" in result.stderr.lower()

    src = zipfile.ZipFile(good)
    short = tmp_path / "short.pt"
    with zipfile.ZipFile(short, "w", compression=zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            payload = src.read(info.filename)
            if info.filename.endswith("data/0"):
                payload = payload[:100]
            dst.writestr(info.filename, payload)
    result = probe("read", short, check=False)
    assert result.returncode == 1 and "mismatch" in result.stderr


def test_legacy_format_is_refused_with_advice(tmp_path, probe):
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(2)}, path, _use_new_zipfile_serialization=False)
    result = probe("read", path, check=False)
    assert result.returncode == 1 and "legacy torch.save format" in result.stderr


def test_torchscript_archives_are_refused_with_advice(tmp_path, probe):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), path)
    result = probe("read", path, check=False)
    assert result.returncode == 1 and "torch.jit.load" in result.stderr


# --- through the daemon ------------------------------------------------------------------

def npz_state_dict(daemon, model, tmp_path):
    out = tmp_path / f"{model}.npz"
    daemon.paramctl("state-dict", model, "--out", out)
    return dict(np.load(out))


def test_npz_files_stream_both_ways_as_numpy_writes_and_reads_them(tmp_path, daemon):
    """paramctl writes .npz files chunk by chunk and sends them chunk by chunk: NumPy reads
    what it writes (stored members, CRCs that zipfile checks), and it loads what np.savez
    (stored, ZIP64 local headers) and np.savez_compressed (deflated) write."""
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SEED_SPECS["mlp"]))
    daemon.paramctl("create", "mlp", "--spec", spec, "--seed", 3)
    out = tmp_path / "mlp.npz"
    daemon.paramctl("state-dict", "mlp", "--out", out)
    with zipfile.ZipFile(out) as archive:
        assert archive.testzip() is None
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_STORED}
    values = dict(np.load(out))
    for save, scale in ((np.savez, 2.0), (np.savez_compressed, -3.0)):
        path = tmp_path / f"{save.__name__}.npz"
        save(path, **{key: value * scale for key, value in values.items()})
        daemon.paramctl("load-state-dict", "mlp", path)
        loaded = npz_state_dict(daemon, "mlp", tmp_path)
        for key, value in values.items():
            assert np.array_equal(loaded[key], value * scale), (save.__name__, key)

    # A deflated member cut short: refused, and nothing loaded.
    before = npz_state_dict(daemon, "mlp", tmp_path)
    broken = tmp_path / "broken.npz"
    data = bytearray((tmp_path / "savez_compressed.npz").read_bytes())
    central = data.find(b"PK\x01\x02")
    data[central - 8:central] = bytes(8)
    broken.write_bytes(bytes(data))
    result = daemon.paramctl("load-state-dict", "mlp", broken, check=False)
    assert result.returncode == 1 and "broken.npz: member" in result.stderr
    after = npz_state_dict(daemon, "mlp", tmp_path)
    assert all(np.array_equal(after[key], before[key]) for key in before)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("name", sorted(SEED_SPECS))
def test_the_daemon_saves_files_torch_loads_into_the_seed_models(tmp_path, daemon, name, suffix):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SEED_SPECS[name]))
    daemon.paramctl("create", name, "--spec", spec, "--seed", 5)
    daemon.paramctl("save", name, f"out/{name}{suffix}")
    path = os.path.join(daemon.checkpoint_dir, "out", f"{name}{suffix}")
    model = SEED_MODELS[name]()
    if suffix == ".pt":
        loaded = torch.load(path, weights_only=True)
        assert list(loaded.keys()) == list(model.state_dict().keys())
        model.load_state_dict(loaded)
    else:
        missing, unexpected = safetensors.torch.load_model(model, path)
        assert not missing and not unexpected
    values = npz_state_dict(daemon, name, tmp_path)
    for key, t in model.state_dict().items():
        assert np.array_equal(t.numpy(), values[key]), key


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("name", sorted(SEED_SPECS))
def test_the_daemon_loads_files_torch_saves_into_the_seed_models(tmp_path, daemon, name, suffix):
    torch.manual_seed(7)
    model = SEED_MODELS[name]()
    os.makedirs(daemon.checkpoint_dir, exist_ok=True)
    path = os.path.join(daemon.checkpoint_dir, f"{name}{suffix}")
    if suffix == ".pt":
        torch.save(model.state_dict(), path)
    else:
        safetensors.torch.save_model(model, path)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SEED_SPECS[name]))
    result = daemon.paramctl("load", name, f"{name}{suffix}", "--spec", spec)
    assert "<All keys matched successfully>" in result.stdout
    values = npz_state_dict(daemon, name, tmp_path)
    for key, t in model.state_dict().items():
        assert np.array_equal(t.numpy(), values[key]), key


def test_a_strict_load_of_a_mismatched_file_gives_pytorchs_error(tmp_path, daemon):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SEED_SPECS["mlp"]))
    daemon.paramctl("create", "mlp", "--spec", spec)
    os.makedirs(daemon.checkpoint_dir, exist_ok=True)
    torch.save(SEED_MODELS["sequential"]().state_dict(),
               os.path.join(daemon.checkpoint_dir, "seq.pt"))
    result = daemon.paramctl("load", "mlp", "seq.pt", check=False)
    assert result.returncode != 0
    with pytest.raises(RuntimeError) as expected:
        MLP().load_state_dict(SEED_MODELS["sequential"]().state_dict())
    # PyTorch's message, line for line.
    assert str(expected.value) in result.stderr
