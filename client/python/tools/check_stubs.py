"""Fails when the committed message classes in paramd/v1 differ from proto/paramd/v1.

Compares descriptors, not text: each .proto is compiled with grpcio-tools' protoc into a
FileDescriptorProto and compared with the one the committed module carries, so the check
does not depend on which grpcio-tools version generated the files.

    python tools/check_stubs.py
"""

from __future__ import annotations

import importlib
import pathlib
import sys
import tempfile

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

REPO = pathlib.Path(__file__).resolve().parents[3]
PROTO_DIR = REPO / "proto"


def _without_json_names(file: descriptor_pb2.FileDescriptorProto) -> None:
    """protoc's descriptor sets carry json_name; the Python generator leaves it out."""

    def clear(message: descriptor_pb2.DescriptorProto) -> None:
        for field in list(message.field) + list(message.extension):
            field.ClearField("json_name")
        for nested in message.nested_type:
            clear(nested)

    for message in file.message_type:
        clear(message)
    for field in file.extension:
        field.ClearField("json_name")


def main() -> int:
    protos = sorted((PROTO_DIR / "paramd" / "v1").glob("*.proto"))
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "set.pb"
        include = pathlib.Path(protoc.__file__).parent / "_proto"
        args = ["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--descriptor_set_out={out}",
                *map(str, protos)]
        if protoc.main(args) != 0:
            print("protoc failed on proto/paramd/v1", file=sys.stderr)
            return 1
        fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    for file in fresh.file:
        module_name = file.name.removesuffix(".proto").replace("/", ".") + "_pb2"
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            stale.append(f"{file.name}: no committed {module_name}")
            continue
        committed = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        _without_json_names(committed)
        _without_json_names(file)
        if committed != file:
            stale.append(f"{file.name}: {module_name} differs from the .proto")
    committed_files = {p.stem.removesuffix("_pb2")
                       for p in (REPO / "client/python/src/paramd/v1").glob("*_pb2.py")}
    for extra in committed_files - {p.stem for p in protos}:
        stale.append(f"paramd/v1/{extra}_pb2.py has no .proto")
    if stale:
        print("the committed stubs are stale; run client/python/tools/gen_stubs:\n  "
              + "\n  ".join(stale), file=sys.stderr)
        return 1
    print(f"paramd/v1 stubs match {len(protos)} protos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
