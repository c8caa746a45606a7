"""The part of grpcurl the README uses, on gRPC server reflection.

grpcurl is not packaged for the machines we test on, so the README's grpcurl
commands run through this instead: it parses the same command line and
learns every type from the server's reflection service, as grpcurl does, so
a README command only passes if it would work with grpcurl against the same
server (plaintext, `list`, `describe`, `-d JSON addr Service/Method`).
"""

from __future__ import annotations

import shlex
from typing import List

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc


class Reflection:
    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        self.pool = descriptor_pool.DescriptorPool()
        self._added: set[str] = set()

    def _ask(self, request: reflection_pb2.ServerReflectionRequest):
        [reply] = list(self._stub.ServerReflectionInfo(iter([request]), timeout=10))
        if reply.HasField("error_response"):
            raise LookupError(reply.error_response.error_message)
        return reply

    def services(self) -> List[str]:
        reply = self._ask(reflection_pb2.ServerReflectionRequest(list_services=""))
        return sorted(s.name for s in reply.list_services_response.service)

    def _add_files(self, raw_files) -> None:
        """Adds files to the pool, asking the server for missing imports by
        file name, as grpcurl does (reflection need not send them at once)."""
        files = {}
        queue = list(raw_files)
        while queue:
            proto = descriptor_pb2.FileDescriptorProto.FromString(queue.pop())
            if proto.name in self._added or proto.name in files:
                continue
            files[proto.name] = proto
            for dependency in proto.dependency:
                if dependency not in self._added and dependency not in files:
                    reply = self._ask(reflection_pb2.ServerReflectionRequest(file_by_filename=dependency))
                    queue.extend(reply.file_descriptor_response.file_descriptor_proto)
        # Dependencies first.
        pending = list(files.values())
        while pending:
            ready = [f for f in pending if all(d in self._added for d in f.dependency)]
            if not ready:
                missing = {d for f in pending for d in f.dependency} - self._added
                raise LookupError(f"reflection did not provide {sorted(missing)}")
            for f in ready:
                self.pool.Add(f)
                self._added.add(f.name)
                pending.remove(f)

    def load_symbol(self, symbol: str) -> None:
        reply = self._ask(reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol))
        self._add_files(reply.file_descriptor_response.file_descriptor_proto)


def grpcurl(command: str) -> str:
    """Runs one README grpcurl command line; returns what grpcurl prints."""
    args = shlex.split(command)
    assert args[0] == "grpcurl", command
    args = args[1:]
    data = None
    plaintext = False
    while args and args[0].startswith("-"):
        flag = args.pop(0)
        if flag == "-plaintext":
            plaintext = True
        elif flag == "-d":
            data = args.pop(0)
        else:
            raise ValueError(f"flag {flag} is not emulated")
    assert plaintext, "the README talks plaintext to a local server"
    address, rest = args[0], args[1:]
    with grpc.insecure_channel(address) as channel:
        reflection = Reflection(channel)
        if not rest or rest[0] == "list":
            if len(rest) > 1:
                reflection.load_symbol(rest[1])
                service = reflection.pool.FindServiceByName(rest[1])
                return "\n".join(m.full_name for m in service.methods) + "\n"
            return "\n".join(reflection.services()) + "\n"
        if rest[0] == "describe":
            symbol = rest[1]
            reflection.load_symbol(symbol)
            service = reflection.pool.FindServiceByName(symbol)
            lines = [f"{symbol} is a service:", f"service {service.name} {{"]
            for m in service.methods:
                lines.append(
                    f"  rpc {m.name} ( .{m.input_type.full_name} ) returns ( .{m.output_type.full_name} );"
                )
            lines.append("}")
            return "\n".join(lines) + "\n"
        service_name, method_name = rest[0].rsplit("/", 1)
        reflection.load_symbol(service_name)
        method = reflection.pool.FindServiceByName(service_name).FindMethodByName(method_name)
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        request = json_format.Parse(data or "{}", request_class())
        call = channel.unary_unary(
            f"/{service_name}/{method_name}",
            request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        response = call(request, timeout=60)
        return json_format.MessageToJson(response, indent=2) + "\n"
