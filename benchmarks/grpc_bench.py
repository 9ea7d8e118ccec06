"""gRPC vs binary REST throughput on one convserve server (a script, not a test).

The same encoded image per call (benchmarks/data's 640x480 photo by default)
through three doors of one server, `concurrency` calls in flight each, several
alternating rounds, medians reported:

- `grpc`: OIP ModelInfer, `image_bytes` as raw_input_contents (what
  tritonclient.grpc sends), pre-serialized, over one HTTP/2 channel per
  client process;
- `rest-binary`: OIP REST infer with the binary tensor data extension (what
  tritonclient.http sends);
- `rest-raw`: `POST /predict` with the raw image body (the fastest REST form).

    python -m benchmarks.grpc_bench --model-root models --model digits \
        --concurrency 32 --duration 5 --rounds 3 --out benchmarks/results/grpc-digits-2core.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from benchmarks import loadgen, servers
from benchmarks.photo import PHOTO
from service.grpc import grpc_predict_v2_pb2 as pb

REPO = Path(__file__).resolve().parent.parent
METHOD = "/inference.GRPCInferenceService/ModelInfer"


def grpc_request(model: str, image: bytes) -> bytes:
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="image_bytes", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(len(image).to_bytes(4, "little") + image)
    return request.SerializeToString()


def rest_binary_request(url: str, model: str, image: bytes) -> bytes:
    tensor = len(image).to_bytes(4, "little") + image
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image_bytes",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(tensor)},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return loadgen.build_request(
        f"{url}/v2/models/{model}/infer",
        header + tensor,
        "application/octet-stream",
        {"Inference-Header-Content-Length": str(len(header))},
    )


async def _grpc_load(target: str, body: bytes, concurrency: int, duration: float) -> dict:
    """`concurrency` callers on one channel; bytes in, bytes out (no client-side protobuf)."""
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD)  # no serializers: raw bytes both ways
        for _ in range(20):  # warm the connection
            await call(body)
        latencies: list[float] = []
        stop = time.monotonic() + duration

        async def caller() -> None:
            while (now := time.monotonic()) < stop:
                await call(body)
                latencies.append((time.monotonic() - now) * 1000)

        start = time.monotonic()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return loadgen.summarize(latencies, time.monotonic() - start, 1)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model-root", type=Path, default=REPO / "models")
    p.add_argument("--model", default="digits")
    p.add_argument("--image", type=Path, default=PHOTO)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    image = args.image.read_bytes()
    grpc_port = servers.free_port()
    rounds: dict[str, list[dict]] = {"grpc": [], "rest-binary": [], "rest-raw": []}
    with (
        tempfile.TemporaryDirectory() as logdir,
        servers.convserve(
            args.model_root,
            args.model,
            logdir=Path(logdir),
            env={"CONVSERVE_GRPC_PORT": str(grpc_port)},
        ) as server,
    ):
        rest = {
            "rest-binary": rest_binary_request(server.url, args.model, image),
            "rest-raw": loadgen.build_request(f"{server.url}/predict", image, "image/jpeg"),
        }
        body = grpc_request(args.model, image)
        for _ in range(args.rounds):  # alternate, so drift hits every door alike
            rounds["grpc"].append(
                servers.with_cpu(
                    lambda: asyncio.run(
                        _grpc_load(f"127.0.0.1:{grpc_port}", body, args.concurrency, args.duration)
                    ),
                    server.process.pid,
                )
            )
            for name, request in rest.items():
                rounds[name].append(
                    servers.with_cpu(
                        lambda request=request: loadgen.run_load(
                            server.url,
                            request,
                            concurrency=args.concurrency,
                            duration=args.duration,
                        ),
                        server.process.pid,
                    )
                )
    summary = {
        name: {
            "images_per_s_median": statistics.median(r["images_per_s"] for r in results),
            "p50_ms_median": statistics.median(r["p50_ms"] for r in results),
            "p99_ms_median": statistics.median(r["p99_ms"] for r in results),
            "server_cores_median": statistics.median(r["server_cores"] or 0 for r in results),
            "errors": sum(r.get("errors", 0) for r in results),
            "rounds": results,
        }
        for name, results in rounds.items()
    }
    doc = {
        "model": args.model,
        "image_bytes": len(image),
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "results": summary,
    }
    for name, s in summary.items():
        print(
            f"{name:12s} {s['images_per_s_median']:8.1f} images/s  p50 {s['p50_ms_median']:6.2f} ms"
            f"  p99 {s['p99_ms_median']:6.2f} ms  server {s['server_cores_median']:.2f} cores"
        )
    if args.out:
        args.out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
