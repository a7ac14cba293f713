#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets, one folder per target, under OUT_DIR.

    make-seeds.py OUT_DIR

Runs with real PyTorch and safetensors (the interop environment, tests/interop/setup-venv):
the seeds are the files paramd must read, so they come from the libraries that write them.
Tensors stay tiny: libFuzzer cuts every input to -max_len, and a cut zip or safetensors file
has lost the part that says what it holds.
"""

import collections
import io
import json
import os
import pickle
import sys
import zipfile

import torch
from safetensors.torch import save as safetensors_save
from safetensors.torch import save_model

TARGETS = ("safetensors", "zip", "pickle", "torch_checkpoint", "spec")


class TiedLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(5, 3)
        self.lm_head = torch.nn.Linear(3, 5, bias=False)
        self.lm_head.weight = self.embed.weight


def models():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    norm = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 2), torch.nn.BatchNorm2d(2),
                               torch.nn.LayerNorm(2))
    return {"mlp": mlp, "tied": TiedLM(), "norm": norm}


def state_dicts():
    out = {name: model.state_dict() for name, model in models().items()}
    out["mlp_keep_vars"] = models()["mlp"].state_dict(keep_vars=True)
    dtypes = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
              torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool]
    out["dtypes"] = collections.OrderedDict(
        (str(dtype).replace("torch.", ""), torch.arange(4).reshape(2, 2).to(dtype))
        for dtype in dtypes)
    base = torch.arange(12, dtype=torch.float32)
    out["views"] = collections.OrderedDict([
        ("base", base),
        ("slice", base[2:8].view(2, 3)),
        ("transposed", base.view(3, 4).t()),
        ("expanded", torch.ones(1).expand(4)),  # stride 0
        ("scalar", torch.tensor(1.5)),
        ("empty", torch.zeros(0, 3)),
    ])
    return out


def torch_files(dicts):
    files = {}
    for name, state in dicts.items():
        for protocol in (2, 4):
            buffer = io.BytesIO()
            torch.save(state, buffer, pickle_protocol=protocol)
            files[f"{name}_p{protocol}.pt"] = buffer.getvalue()
    legacy = io.BytesIO()
    torch.save(dicts["mlp"], legacy, _use_new_zipfile_serialization=False)
    files["mlp_legacy.pt"] = legacy.getvalue()
    return files


def rezip(data, change=None, force_zip64=False, compression=zipfile.ZIP_STORED):
    """The archive rewritten by Python's zipfile: no alignment, optionally ZIP64 everywhere,
    deflated, or with some records changed."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, \
            zipfile.ZipFile(out, "w", compression=compression) as target:
        for info in source.infolist():
            content = source.read(info)
            if change:
                content = change(info.filename, content)
            with target.open(info.filename, "w", force_zip64=force_zip64) as entry:
                entry.write(content)
    return out.getvalue()


class Unseekable(io.RawIOBase):
    """A write-only stream: zipfile then writes data descriptors after each entry."""

    def __init__(self):
        self.data = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.data += b
        return len(b)


def zip_with_data_descriptors(data, compression=zipfile.ZIP_STORED):
    stream = Unseekable()
    with zipfile.ZipFile(io.BytesIO(data)) as source, \
            zipfile.ZipFile(stream, "w", compression=compression) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
    return bytes(stream.data)


def big_endian(name, content):
    if name.endswith("/byteorder"):
        return b"big"
    if "/data/" in name:
        # Tensors of 4-byte elements read back as their byte-swapped selves.
        return b"".join(content[i:i + 4][::-1] for i in range(0, len(content) - 3, 4))
    return content


def data_pkl(data):
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return next(archive.read(n) for n in archive.namelist() if n.endswith("/data.pkl"))


def plain_pickles():
    value = collections.OrderedDict([
        ("int", [0, 1, 255, 256, 65535, 65536, -1, 2**31, -2**31 - 1, 2**63 - 1, -2**63]),
        ("float", (0.5, float("inf"), float("nan"))),
        ("text", ("", "ascii", "ünïcödé", "x" * 300)),
        ("bytes", b"\x00\xffbytes"),
        ("nested", {"a": (1, (2, (3, ()))), "b": [[], {}], 3: None, True: False}),
        ("set", {1, 2}),
    ])
    shared = ("shared", 1)
    out = {}
    for protocol in (2, 3, 4, 5):
        out[f"values_p{protocol}.pkl"] = pickle.dumps(value, protocol=protocol)
        out[f"shared_p{protocol}.pkl"] = pickle.dumps([shared, shared], protocol=protocol)
    return out


def safetensors_files(dicts):
    files = {}
    for name, state in dicts.items():
        # save_file refuses shared and strided tensors; give it contiguous copies.
        tensors = {key: value.detach().contiguous().clone() for key, value in state.items()}
        files[f"{name}.safetensors"] = safetensors_save(tensors)
        files[f"{name}_metadata.safetensors"] = safetensors_save(
            tensors, metadata={"format": "pt", "source": name})
    for name, model in models().items():
        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"paramd-seed-{os.getpid()}.st")
        try:
            save_model(model, path)  # drops the tied copy, as Hugging Face does
            with open(path, "rb") as f:
                files[f"{name}_save_model.safetensors"] = f.read()
        finally:
            if os.path.exists(path):
                os.remove(path)
    files["empty.safetensors"] = safetensors_save({})
    return files


def specs():
    # The seed models of tests/integration/specs.h and a tree that uses every spec field.
    return {
        "mlp.json": {"type": "MLP", "attributes": ["w1"],
                     "parameters": [{"name": "w2", "shape": [1], "init": {"constant": 2.0}}],
                     "children": [
                         {"name": "linear1", "type": "Linear",
                          "args": {"in_features": 1, "out_features": 2}},
                         {"name": "relu", "type": "ReLU"},
                         {"name": "linear2", "type": "Linear",
                          "args": {"in_features": 2, "out_features": 1}}],
                     "forward": ["linear1", "relu", "linear2"]},
        "shared.json": {"type": "Sequential", "children": [
            {"type": "Linear", "args": {"in_features": 4, "out_features": 8}}, {"type": "ReLU"},
            {"type": "Linear", "args": {"in_features": 8, "out_features": 8}}, {"type": "ReLU"},
            {"ref": "2"}, {"type": "ReLU"},
            {"type": "Linear", "args": {"in_features": 8, "out_features": 1}}]},
        "tied.json": {"type": "TiedLM", "children": [
            {"name": "embed", "type": "Embedding",
             "args": {"num_embeddings": 10, "embedding_dim": 4}},
            {"name": "lm_head", "type": "Linear",
             "args": {"in_features": 4, "out_features": 10, "bias": False},
             "parameters": [{"name": "weight", "tie": "embed.weight"}]}]},
        "fields.json": {"type": "Net", "attributes": ["scale"],
                        "parameters": [
                            {"name": "w", "shape": [2, 2], "dtype": "float64", "init": "randn"},
                            {"name": "u", "shape": [3], "init": {"uniform": {"low": -1, "high": 1}}},
                            {"name": "n", "shape": [2], "init": {"normal": {"mean": 0, "std": 2}}},
                            {"name": "v", "shape": [2, 2], "init": {"values": [[1, 2], [3, 4]]}},
                            {"name": "i", "shape": [2], "dtype": "int64", "requires_grad": False,
                             "init": "ones"},
                            {"name": "bias", "none": True}],
                        "buffers": [
                            {"name": "steps", "shape": [], "dtype": "int64", "persistent": False},
                            {"name": "mask", "shape": [2], "dtype": "bool", "init": "rand"},
                            {"name": "gone", "none": True}],
                        "children": [
                            {"name": "conv", "type": "Conv2d",
                             "args": {"in_channels": 1, "out_channels": 2, "kernel_size": 3,
                                      "padding": 1}},
                            {"name": "bn", "type": "BatchNorm2d", "args": {"num_features": 2}},
                            {"name": "pool", "type": "MaxPool2d", "args": {"kernel_size": 2}},
                            {"name": "flat", "type": "Flatten"},
                            {"name": "fc", "type": "Linear", "custom": True,
                             "parameters": [{"name": "weight", "shape": [2, 2]}]},
                            {"name": "seq", "type": "Sequential", "children": [
                                {"type": "LayerNorm", "args": {"normalized_shape": [2]}},
                                {"type": "Dropout", "args": {"p": 0.5}},
                                {"type": "GELU"}, {"type": "Softmax", "args": {"dim": -1}}]},
                            {"name": "again", "ref": "seq.0"},
                            {"name": "nothing", "none": True}],
                        "forward": ["conv", {"call": "bn", "in": "input", "out": "h"},
                                    {"op": "relu", "in": "h"}, "pool", "flat",
                                    {"op": "view", "args": {"shape": [-1, 2]}},
                                    {"op": "add", "in": ["h", "h"]}]},
    }


def write(folder, files):
    os.makedirs(folder, exist_ok=True)
    for name, data in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


def main():
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT_DIR")
    out = sys.argv[1]
    dicts = state_dicts()
    checkpoints = torch_files(dicts)
    archives = {name: data for name, data in checkpoints.items() if not name.endswith("legacy.pt")}
    mlp = archives["mlp_p2.pt"]
    checkpoints["mlp_big_endian.pt"] = rezip(mlp, change=big_endian)
    checkpoints["mlp_zip64.pt"] = rezip(mlp, force_zip64=True)
    checkpoints["mlp_data_descriptors.pt"] = zip_with_data_descriptors(mlp)

    write(os.path.join(out, "torch_checkpoint"), checkpoints)
    zips = {name.replace(".pt", ".zip"): data for name, data in checkpoints.items()
            if not name.endswith("legacy.pt")}
    # Deflated archives (as np.savez_compressed writes them), which only the zip reader takes.
    zips["mlp_deflated.zip"] = rezip(mlp, compression=zipfile.ZIP_DEFLATED)
    zips["mlp_deflated_zip64.zip"] = rezip(mlp, force_zip64=True, compression=zipfile.ZIP_DEFLATED)
    zips["mlp_deflated_data_descriptors.zip"] = zip_with_data_descriptors(
        mlp, compression=zipfile.ZIP_DEFLATED)
    write(os.path.join(out, "zip"), zips)
    pickles = {name.replace(".pt", ".pkl"): data_pkl(data) for name, data in archives.items()}
    pickles.update(plain_pickles())
    write(os.path.join(out, "pickle"), pickles)
    write(os.path.join(out, "safetensors"), safetensors_files(dicts))
    write(os.path.join(out, "spec"),
          {name: json.dumps(spec, indent=1).encode() for name, spec in specs().items()})

    for target in TARGETS:
        folder = os.path.join(out, target)
        sizes = [os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder)]
        print(f"{target}: {len(sizes)} seeds, largest {max(sizes)} bytes")


if __name__ == "__main__":
    main()
