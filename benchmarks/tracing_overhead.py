"""What OpenTelemetry tracing costs: convserve with tracing off and on, same load, interleaved.

Two servers (`CONVSERVE_TRACING=off`, and `on` exporting every span over
OTLP/HTTP to a sink process on loopback that accepts and drops them) are
started together; each round measures both at one concurrency, in alternating
order, so a change in the machine's load hits both alike. Every request is a
new sampled trace (no traceparent, the default `parentbased_always_on`): the
worst case, five spans per request. The table shows medians over rounds.

    python -m benchmarks.tracing_overhead --rounds 5 --out benchmarks/results/tracing-overhead.json
    python -m benchmarks.tracing_overhead --on-env OTEL_TRACES_SAMPLER=parentbased_traceidratio \
        --on-env OTEL_TRACES_SAMPLER_ARG=0.1 --out benchmarks/results/tracing-overhead-10pct.json
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from benchmarks import report, servers
from benchmarks.loadgen import build_request, run_load

REPO = Path(__file__).resolve().parents[1]


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def _sink(port: int) -> None:
    ThreadingHTTPServer(("127.0.0.1", port), _Sink).serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models", help="models dir")
    parser.add_argument("--default-model", default="digits")
    parser.add_argument("--body", type=Path, default=REPO / "tests" / "data" / "seven.png")
    parser.add_argument("--content-type", default="image/png")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument(
        "--on-env",
        action="append",
        default=[],
        metavar="K=V",
        help="extra env for the traced server, e.g. OTEL_TRACES_SAMPLER=parentbased_traceidratio",
    )
    parser.add_argument("--out", type=Path)
    parser.add_argument("--serve-sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--logdir", type=Path, default=REPO / "benchmarks" / ".cache" / "logs")
    args = parser.parse_args(argv)

    if args.serve_sink:  # the sink's own process (below)
        _sink(args.serve_sink)
        return
    port = servers.free_port()
    cmd = [sys.executable, "-m", "benchmarks.tracing_overhead", "--serve-sink", str(port)]
    sink = subprocess.Popen(cmd, cwd=REPO)
    common = {"CONVSERVE_PROVIDERS": "cpu"}
    traced = {
        "CONVSERVE_TRACING": "on",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_SERVICE_NAME": "convserve-bench",
        **dict(kv.split("=", 1) for kv in args.on_env),
    }
    body = args.body.read_bytes()
    results: dict[str, list[dict]] = {"off": [], "on": []}
    try:
        with (
            servers.convserve(
                args.model,
                args.default_model,
                logdir=args.logdir,
                env={**common, "CONVSERVE_TRACING": "off"},
                name="tracing-off",
            ) as off,
            servers.convserve(
                args.model,
                args.default_model,
                logdir=args.logdir,
                env={**common, **traced},
                name="tracing-on",
            ) as on,
        ):
            targets = {"off": off, "on": on}
            for round_ in range(args.rounds):
                order = ["off", "on"] if round_ % 2 == 0 else ["on", "off"]
                for name in order:
                    url = targets[name].url + "/predict"
                    pid = targets[name].process.pid
                    cpu_before = servers.tree_cpu_seconds(pid)
                    summary = run_load(
                        url,
                        build_request(url, body, args.content_type),
                        concurrency=args.concurrency,
                        duration=args.duration,
                        warmup=args.warmup,
                        processes=args.client_processes,
                    )
                    assert summary["errors"] == 0, summary
                    # the server's CPU per request (warm-up included in both): steadier than
                    # images/s on a machine whose other load changes from round to round
                    requests = summary["responses_total"]
                    cpu = servers.tree_cpu_seconds(pid) - cpu_before
                    summary["server_cpu_us_per_request"] = round(cpu / requests * 1e6, 1)
                    results[name].append(summary)
                    report.log(
                        f"round {round_ + 1} tracing {name}: {summary['images_per_s']:.0f} "
                        f"images/s, p50 {summary['p50_ms']:.2f} ms, "
                        f"p99 {summary['p99_ms']:.2f} ms, "
                        f"server CPU {summary['server_cpu_us_per_request']:.0f} us/request"
                    )
                time.sleep(0.5)
    finally:
        sink.terminate()
        sink.wait(10)

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    rows = []
    for name in ("off", "on"):
        rows.append(
            [
                name,
                median(name, "images_per_s"),
                median(name, "p50_ms"),
                median(name, "p99_ms"),
                median(name, "server_cpu_us_per_request"),
                f"{median(name, 'images_per_s') / median('off', 'images_per_s'):.3f}",
            ]
        )
    print(
        f"\nconcurrency {args.concurrency}, {args.rounds} rounds of {args.duration:.0f} s, "
        f"medians ({args.body.name}, model {args.default_model}):"
    )
    headers = ["tracing", "images/s", "p50 ms", "p99 ms", "server CPU us/request", "vs off"]
    print(report.table(headers, rows))
    report.write_json(
        args.out,
        {
            "machine": report.machine(),
            "args": {k: str(v) for k, v in vars(args).items()},
            "rounds": results,
            "median": {
                name: {
                    k: median(name, k)
                    for k in ("images_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_request")
                }
                for name in results
            },
        },
    )


if __name__ == "__main__":
    main()
