"""A paramd client with no generated code and no paramd package: it learns the services
from the daemon through server reflection (grpc.reflection.v1), builds their message
classes from the FileDescriptorProtos the daemon returns, and calls
grpc.health.v1.Health/Check, paramd.v1.Models/CreateModel and
paramd.v1.Parameters/NamedModules with them (docs/wire.md, "Clients in other languages").
It needs only grpcio, grpcio-reflection and protobuf, and exits non-zero when an answer
differs from PyTorch's.

    python reflect_client.py [--spec FILE] [--model NAME] HOST:PORT
"""

import argparse
import pathlib
import sys

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
# The reflection protocol's own messages. grpcio-reflection ships them under v1alpha only;
# v1 is the same protocol renamed, its messages identical on the wire, so they serve the
# v1 method as they are.
from grpc_reflection.v1alpha import reflection_pb2

REFLECTION_V1 = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
TIMEOUT = 30
SPEC = pathlib.Path(__file__).resolve().parents[1] / "specs" / "tied_sequential.json"


class Reflection:
    """Asks the daemon's reflection service, one request per call."""

    def __init__(self, channel: grpc.Channel):
        self._info = channel.stream_stream(
            REFLECTION_V1,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)

    def _ask(self, **request):
        (response,) = self._info(iter([reflection_pb2.ServerReflectionRequest(**request)]),
                                 timeout=TIMEOUT, wait_for_ready=True)
        if response.HasField("error_response"):
            error = response.error_response
            raise LookupError(f"reflection {request}: {error.error_code} {error.error_message}")
        return response

    def services(self):
        response = self._ask(list_services="")
        return [service.name for service in response.list_services_response.service]

    def files_containing(self, symbol):
        """The file defining `symbol` and the files it imports, as FileDescriptorProtos."""
        response = self._ask(file_containing_symbol=symbol)
        return [descriptor_pb2.FileDescriptorProto.FromString(serialized)
                for serialized in response.file_descriptor_response.file_descriptor_proto]

    def file_by_name(self, name):
        response = self._ask(file_by_filename=name)
        (serialized,) = response.file_descriptor_response.file_descriptor_proto
        return descriptor_pb2.FileDescriptorProto.FromString(serialized)


def build_pool(reflection, services):
    """A descriptor pool holding every service's file, each added after its imports."""
    files = {}
    for service in services:
        for file in reflection.files_containing(service):
            files.setdefault(file.name, file)
    pool = descriptor_pool.DescriptorPool()
    added = set()

    def add(name):
        if name in added:
            return
        if name not in files:
            files[name] = reflection.file_by_name(name)
        for dependency in files[name].dependency:
            add(dependency)
        pool.AddSerializedFile(files[name].SerializeToString())
        added.add(name)

    for name in list(files):
        add(name)
    return pool


def call(channel, pool, path, /, **fields):
    """A call to `path` ("package.Service/Method") with one request of `fields` and its
    answer (a server stream's messages merged into one), the request and response classes
    made from the pool's descriptors."""
    service, method = path.split("/")
    descriptor = pool.FindServiceByName(service).methods_by_name[method]
    if descriptor.client_streaming:
        raise ValueError(f"{service}/{method} takes a stream; this helper sends one request")
    request_class = message_factory.GetMessageClass(descriptor.input_type)
    response_class = message_factory.GetMessageClass(descriptor.output_type)
    if not descriptor.server_streaming:
        stub = channel.unary_unary(f"/{service}/{method}",
                                   request_serializer=request_class.SerializeToString,
                                   response_deserializer=response_class.FromString)
        return stub(request_class(**fields), timeout=TIMEOUT, wait_for_ready=True)
    # A list answer split into messages (docs/wire.md, "Pages and streamed lists"): one
    # message with the lists concatenated.
    stub = channel.unary_stream(f"/{service}/{method}",
                                request_serializer=request_class.SerializeToString,
                                response_deserializer=response_class.FromString)
    merged = response_class()
    for message in stub(request_class(**fields), timeout=TIMEOUT, wait_for_ready=True):
        merged.MergeFrom(message)
    return merged


def enum_name(message, field):
    value = getattr(message, field)
    return message.DESCRIPTOR.fields_by_name[field].enum_type.values_by_number[value].name


def check(condition, what):
    if not condition:
        raise SystemExit(f"reflect_client: {what}")


def run(address, spec, model):
    with grpc.insecure_channel(address) as channel:
        reflection = Reflection(channel)
        services = reflection.services()
        for wanted in ("grpc.health.v1.Health", "paramd.v1.Models", "paramd.v1.Parameters"):
            check(wanted in services, f"reflection lists {services}, not {wanted}")
        pool = build_pool(reflection, services)
        print("services (grpc.reflection.v1):")
        for service in services:
            descriptor = pool.FindServiceByName(service)
            print(f"  {service:40} {descriptor.file.name}: "
                  f"{', '.join(m.name for m in descriptor.methods)}")

        health = call(channel, pool, "grpc.health.v1.Health/Check", service="")
        print("health:", enum_name(health, "status"))
        check(enum_name(health, "status") == "SERVING", "the daemon is not serving")

        info = call(channel, pool, "paramd.v1.Models/CreateModel", name=model,
                    spec_json=pathlib.Path(spec).read_text(), seed=1)
        print(f"created {info.name!r} at version {info.version}:\n{info.repr}")

        # model.named_modules(): shared modules once, under their first name.
        modules = call(channel, pool, "paramd.v1.Parameters/NamedModules", model=model)
        print(f"named_modules at version {modules.version}:")
        for entry in modules.modules:
            shared = f"  also at {', '.join(entry.shared_with)}" if entry.shared_with else ""
            print(f"  {entry.name or '(root)':7} {entry.type:10} {list(entry.parameters)}{shared}")
        names = [entry.name for entry in modules.modules]
        check(names == ["", "0", "1", "2", "3", "5", "6"],
              f"named_modules {names}; PyTorch has ['', '0', '1', '2', '3', '5', '6']")
        check(list(modules.modules[3].shared_with) == ["4"], "net[2] and net[4] are not shared")

    # Nothing of paramd's was imported: everything above came from the daemon.
    ours = [name for name in sys.modules
            if name.split(".")[0] == "paramd"
            or (name.endswith("_pb2") and not name.startswith(("google.", "grpc_reflection.")))]
    check(not ours, f"modules generated from paramd's protos were imported: {ours}")
    print("ok")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", default=str(SPEC), help="the model spec (JSON)")
    parser.add_argument("--model", default="reflection-tied", help="the model's name")
    parser.add_argument("address", help="the daemon, HOST:PORT")
    args = parser.parse_args()
    run(args.address, args.spec, args.model)


if __name__ == "__main__":
    main()
