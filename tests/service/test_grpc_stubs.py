"""The committed gRPC stubs match grpc_predict_v2.proto and speak Triton's wire format."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FieldDescriptor

from service.grpc import generate
from service.grpc import grpc_predict_v2_pb2 as ours

tritonclient_pb = pytest.importorskip("tritonclient.grpc.service_pb2")


def _file_proto(module) -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto()
    module.DESCRIPTOR.CopyToProto(proto)
    return proto


def test_committed_stubs_are_what_the_proto_generates(tmp_path: Path) -> None:
    # protoc in a child process: grpcio-tools' in-process protoc once crashed pytest (SIGSEGV)
    # after the grpc C core had been loaded by the servers of other tests
    subprocess.run(
        [sys.executable, "-m", "service.grpc.generate", str(tmp_path)],
        cwd=Path(generate.__file__).parents[2],
        check=True,
        timeout=120,
    )
    fresh = (tmp_path / "service" / "grpc" / "grpc_predict_v2_pb2.py").read_text()
    assert generate.PRIVATE_POOL in fresh
    committed = Path(generate.__file__).with_name("grpc_predict_v2_pb2.py").read_text()
    # the serialized descriptor (one line) is the part that matters; the rest varies
    # with the grpcio-tools version
    line = next(text for text in fresh.splitlines() if generate.PRIVATE_POOL in text)
    assert line in committed.splitlines(), "stale stubs: run `make grpc-stubs` and commit"


def _fields(message) -> dict[str, tuple[int, int, int]]:
    return {f.name: (f.number, f.type, f.is_repeated) for f in message.fields}


def test_every_message_is_wire_compatible_with_tritonclient() -> None:
    """Same names, numbers and types as Triton's grpc_service.proto (KServe's superset)."""
    theirs = tritonclient_pb.DESCRIPTOR
    checked = 0

    def walk(message, other) -> None:
        nonlocal checked
        mine = _fields(message)
        assert mine.items() <= _fields(other).items(), message.full_name
        for nested in message.nested_types:
            walk(nested, other.nested_types_by_name[nested.name])
        checked += 1

    for name, message in ours.DESCRIPTOR.message_types_by_name.items():
        walk(message, theirs.message_types_by_name[name])
    assert checked >= 15
    service = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"
    other = theirs.services_by_name["GRPCInferenceService"]
    for method in service.methods:
        twin = other.methods_by_name[method.name]
        assert method.input_type.full_name == twin.input_type.full_name
        assert method.output_type.full_name == twin.output_type.full_name
    assert {m.name for m in service.methods} == {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "RepositoryIndex",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
    }


def test_raw_contents_are_bytes_fields() -> None:
    fields = ours.ModelInferRequest.DESCRIPTOR.fields_by_name
    assert fields["raw_input_contents"].type == FieldDescriptor.TYPE_BYTES
    assert _file_proto(ours).package == "inference"
