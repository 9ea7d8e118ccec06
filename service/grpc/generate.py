"""Regenerate the committed gRPC stubs from grpc_predict_v2.proto: `make grpc-stubs`.

Runs grpcio-tools' protoc (dev extra), then moves the messages into a private
descriptor pool: tritonclient and KServe's own stubs register the same
`inference.*` names in protobuf's default pool, and two registrations of one
name in one process fail at import. The wire format does not depend on the pool.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO = "service/grpc/grpc_predict_v2.proto"
DEFAULT_POOL = "_descriptor_pool.Default().AddSerializedFile("
PRIVATE_POOL = "_descriptor_pool.DescriptorPool().AddSerializedFile("


def generate(out: Path = ROOT) -> None:
    """Write grpc_predict_v2_pb2.py, .pyi and _pb2_grpc.py under `out`/service/grpc."""
    from grpc_tools import protoc  # dev-only dependency

    args = ["protoc", f"-I{ROOT}", f"--python_out={out}", f"--pyi_out={out}"]
    args += [f"--grpc_python_out={out}", str(ROOT / PROTO)]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed on {PROTO}")
    messages = out / "service" / "grpc" / "grpc_predict_v2_pb2.py"
    text = messages.read_text()
    if text.count(DEFAULT_POOL) != 1:
        raise SystemExit(f"unexpected protoc output in {messages}: no single {DEFAULT_POOL!r}")
    messages.write_text(text.replace(DEFAULT_POOL, PRIVATE_POOL))


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
