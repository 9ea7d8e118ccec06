"""The CUDA path, checked in one run (issue 6): provider, answers, throughput, a table.

1. Starts convserve with CONVSERVE_PROVIDERS=<providers> serving the digits model
   and, with --heavy, the compute-heavier CNN; checks /models reports the
   expected execution provider for every model.
2. Sends the test images and compares the answers with an onnxruntime CPU
   session in this process (probabilities within --tolerance, same labels);
   also onnxruntime-on-<providers> vs CPU directly, with TF32 on and off.
3. Measures images/s of onnxruntime alone at each batch size and through the
   service at each (images per request, concurrency) point, from separate
   load-generator processes over loopback.
4. Writes gpu_check.json (after every step) and gpu_check.md to --out.

Exit status 0 only if every provider and parity check passed.
Runs on CPU too (`--providers cpu`), which is how the test suite checks it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from benchmarks import gpu_measure, gpu_table, inprocess, loadgen, report, servers
from service.bundle import read_bundle
from service.engine import batch_buckets

REPO = Path(__file__).resolve().parent.parent
EXPECTED = {"cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out", type=Path, required=True, help="directory for gpu_check.json/.md and logs"
    )
    p.add_argument(
        "--providers",
        choices=["cuda", "cpu"],
        default=os.environ.get("CONVSERVE_PROVIDERS", "cuda"),
    )
    p.add_argument(
        "--digits", type=Path, default=REPO / "models/digits/1", help="bundle version directory"
    )
    p.add_argument(
        "--heavy", type=Path, help="compute-heavier bundle: version dir or its models dir"
    )
    p.add_argument("--batches", default="1,8,32,128", help="batch sizes = images per request")
    p.add_argument("--concurrency", default="1,32,128")
    p.add_argument(
        "--workers",
        default="1",
        help="uvicorn worker counts to serve with, e.g. 1,4: the first gets every point, "
        "the others the points with concurrency > 1 (where decoding can outrun one process)",
    )
    p.add_argument(
        "--max-inflight", type=int, default=4096, help="skip points with more images in flight"
    )
    p.add_argument("--duration", type=float, default=2.0, help="seconds measured per point")
    p.add_argument("--warmup", type=float, default=0.5)
    p.add_argument("--tolerance", type=float, default=1e-4)
    p.add_argument(
        "--client-processes", type=int, default=max(1, min(4, (os.cpu_count() or 1) // 4))
    )
    p.add_argument(
        "--server-env", action="append", default=[], metavar="K=V", help="extra env for convserve"
    )
    p.add_argument(
        "--quick", action="store_true", help="seconds-long run: batches 1,4; concurrency 1,4"
    )
    if p.parse_args(argv).quick:  # quick changes the defaults; flags given explicitly still win
        p.set_defaults(batches="1,4", concurrency="1,4", duration=0.5, warmup=0.2)
    args = p.parse_args(argv)
    args.batches = [int(x) for x in args.batches.split(",") if x]
    args.concurrency = [int(x) for x in args.concurrency.split(",") if x]
    args.workers = [int(x) for x in args.workers.split(",") if x] or [1]
    if args.heavy is not None:
        args.heavy = inprocess.find_bundle(args.heavy) or p.error(
            f"--heavy {args.heavy}: no bundle.json"
        )
    return args


def gpu_name() -> str | None:
    """nvidia-smi's name, driver and memory of the GPUs, when there is one."""
    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    try:
        return subprocess.run(
            query, capture_output=True, text=True, timeout=20, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def model_root(bundles: list[Path], root: Path) -> Path:
    """A models dir holding just these bundles (copies: the service scans <name>/<version>/)."""
    for b in bundles:
        bundle = read_bundle(b, verify_hash=False)
        shutil.copytree(b, root / bundle.name / bundle.version)
    return root


def check_providers(base_url: str, names: list[str], expected: str) -> dict:
    """What /models/{name} says is active, for every model; ok only if all are `expected`."""
    seen = {}
    for name in names:
        info = httpx.get(f"{base_url}/models/{name}", timeout=10).json()
        seen[name] = info.get("provider")
    ok = all(expected in str(v) for v in seen.values())
    return {"expected": expected, "reported": seen, "ok": ok}


def service_points(args: argparse.Namespace, first: bool = True) -> list[tuple[int, int]]:
    """(images per request, concurrency); concurrency 1 only in the first workers pass."""
    return [
        (k, c)
        for k in args.batches
        for c in args.concurrency
        if k * c <= args.max_inflight and (first or c > 1)
    ]


def wait_all_workers_ready(base_url: str, timeout: float = 300.0) -> None:
    """/readyz answers from one worker; convserve_ready is the minimum over all of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = httpx.get(f"{base_url}/metrics", timeout=10).text
        if re.search(r"^convserve_ready 1(\.0)?$", text, re.MULTILINE):
            return
        time.sleep(0.2)
    raise TimeoutError(f"not every worker was ready after {timeout:.0f} s")


def run(args: argparse.Namespace) -> dict:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / "gpu_check.json"
    bundles = [args.digits] + ([args.heavy] if args.heavy else [])
    points = service_points(args)
    per_point = args.duration + args.warmup + 1.0
    more = len(service_points(args, first=False)) * (len(args.workers) - 1)
    estimate = len(bundles) * (len(points) + more + len(args.batches)) * per_point
    report.log(
        f"gpu_check: providers={args.providers}, models {[str(b) for b in bundles]}, "
        f"{len(points)} service points per model, about {estimate:.0f} s of measuring"
    )
    data: dict = {
        "machine": report.machine(),
        "providers": args.providers,
        "checks": {},
        "models": {},
    }
    data["machine"]["gpu"] = gpu_name()
    data["settings"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    images = gpu_measure.decodable(inprocess.load_model(args.digits), gpu_measure.test_images())
    data["images"] = [name for name, _ in images]
    max_batch = max(args.batches)
    env = {
        "CONVSERVE_PROVIDERS": args.providers,
        "CONVSERVE_MAX_BATCH_SIZE": str(max_batch),
        "CONVSERVE_MAX_IMAGES_PER_REQUEST": str(max(max_batch, len(images))),
        "CONVSERVE_MAX_QUEUE": str(max(1024, 2 * args.max_inflight)),
        **dict(kv.split("=", 1) for kv in args.server_env),
    }
    data["server_env"] = env
    names = [read_bundle(b, verify_hash=False).name for b in bundles]
    for bundle_dir, name in zip(bundles, names, strict=True):
        bundle = read_bundle(bundle_dir)
        data["models"][name] = {"bundle": str(bundle_dir), "input": bundle.input.model_dump()}
    try:
        with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
            root = model_root(bundles, Path(tmp) / "models")
            for workers in args.workers:
                first = workers == args.workers[0]
                report.log(f"starting convserve with {workers} worker(s) (loads, warms up)...")
                wenv = {**env, "CONVSERVE_WORKERS": str(workers)}
                logdir = out if first else out / f"workers-{workers}"
                logdir.mkdir(exist_ok=True)
                with servers.convserve(root, names[0], logdir=logdir, env=wenv, timeout=300) as srv:
                    wait_all_workers_ready(srv.url)
                    expected = EXPECTED[args.providers]
                    check = check_providers(srv.url, names, expected)
                    if first or not check["ok"]:
                        data["checks"]["provider"] = check
                    report.log(f"provider check ({workers} workers): {check}")
                    save(jpath, data)
                    for bundle_dir, name in zip(bundles, names, strict=True):
                        try:  # one model's failure must not cost the other its numbers
                            measure_model(
                                args, srv, bundle_dir, name, images, data, jpath, workers, first
                            )
                        except Terminated:
                            raise
                        except Exception as exc:
                            data["models"][name]["error"] = f"{type(exc).__name__}: {exc}"[:4000]
                            report.log(f"[{name}] failed: {data['models'][name]['error']}")
                    text = httpx.get(f"{srv.url}/metrics").text
                    (logdir / "metrics.txt").write_text(text)
    except Exception as exc:  # the service part failed (any way): say so, and
        data["error"] = f"{type(exc).__name__}: {exc}"[:8000]  # still time onnxruntime alone
        report.log(f"gpu_check: the service part failed: {data['error']}")
        for bundle_dir, name in zip(bundles, names, strict=True):
            if "onnxruntime" not in data["models"][name] and not isinstance(exc, Terminated):
                try:
                    measure_direct(args, bundle_dir, name, images, data, jpath)
                except Exception as direct_exc:  # report it; keep the first error too
                    data["models"][name]["error"] = f"{type(direct_exc).__name__}: {direct_exc}"
    finish(data, out)
    return data


def finish(data: dict, out: Path) -> None:
    """Verdict, JSON and table: also after a failure or a SIGTERM (the caller's timeout)."""
    data["ok"] = (
        "error" not in data
        and data["checks"].get("provider", {}).get("ok", False)
        and all(
            m.get("parity", {}).get("service_vs_cpu", {}).get("ok") for m in data["models"].values()
        )
    )
    report.write_json(out / "gpu_check.json", data)
    try:
        text = gpu_table.markdown(data)
    except Exception as exc:  # the JSON is the record; a table bug must not lose the run
        text = f"# gpu_check: table failed ({type(exc).__name__}: {exc}); see gpu_check.json\n"
    (out / "gpu_check.md").write_text(text)


def measure_model(
    args, server: servers.Server, bundle_dir: Path, name, images, data, jpath, workers, first
) -> None:
    """First pass: answers through the service vs CPU, onnxruntime alone, every service
    point; later passes (more workers): the service points with concurrency > 1."""
    base_url, server_pid = server.url, server.process.pid
    result = data["models"][name]
    bundle = read_bundle(bundle_dir)
    if first:
        ref = gpu_measure.cpu_reference(bundle_dir, images)
        answers = gpu_measure.service_probabilities(base_url, name, bundle.classes, images)
        parity = gpu_measure.compare(bundle.classes, ref, answers)
        parity["ok"] = parity["max_abs_diff"] <= args.tolerance and not parity["label_mismatches"]
        result.setdefault("parity", {})["service_vs_cpu"] = parity
        report.log(f"[{name}] service vs CPU: {parity}")
        result["service"] = []
        measure_direct(args, bundle_dir, name, images, data, jpath)
    payload, ctype = gpu_measure.native_payload(bundle)
    url = f"{base_url}/predict?model={name}"
    for k, c in service_points(args, first):
        if k == 1:
            body, body_type = payload, ctype
        else:
            parts = [(f"{i}.img", payload, ctype) for i in range(k)]
            body, body_type = loadgen.multipart_body(parts)
        request = loadgen.build_request(url, body, body_type)
        r = servers.with_cpu(
            lambda req=request, c=c, k=k: loadgen.run_load(
                url, req, concurrency=c, duration=args.duration, warmup=args.warmup,
                processes=args.client_processes, images_per_request=k, expect=b'"predictions"',
            ),
            server_pid,
        )  # fmt: skip
        r["workers"] = workers
        result["service"].append(r)
        report.log(
            f"[{name}] service, {workers} worker(s), {k} images/request, c={c}: "
            f"{r['images_per_s']:.1f} images/s, "
            f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, errors {r['errors']}, "
            f"server {r['server_cores']} cores"
        )
        save(jpath, data)


def measure_direct(args, bundle_dir: Path, name: str, images, data, jpath) -> tuple[bytes, str]:
    """onnxruntime on the provider vs CPU, and onnxruntime alone per batch; no HTTP."""
    result = data["models"][name]
    bundle = read_bundle(bundle_dir)
    direct = gpu_measure.direct_parity(bundle_dir, args.providers, images)
    result.setdefault("parity", {})["onnxruntime_vs_cpu"] = direct
    report.log(f"[{name}] onnxruntime-{args.providers} vs CPU: {direct}")
    payload, ctype = gpu_measure.native_payload(bundle)
    result["payload"] = {"content_type": ctype, "bytes": len(payload)}
    result["onnxruntime"] = []
    for r in gpu_measure.ort_alone(
        bundle_dir, args.providers, payload, args.batches, args.duration
    ):
        result["onnxruntime"].append(r)
        report.log(
            f"[{name}] onnxruntime alone batch {r['batch']}: {r['images_per_s']:.1f} images/s, "
            f"p50 {r['p50_ms']} ms"
        )
        save(jpath, data)
    result["onnxruntime_device_input"] = list(
        gpu_measure.ort_alone(bundle_dir, args.providers, payload, args.batches,
                              min(1.0, args.duration), device_input=True)
    )  # fmt: skip
    on_device = [(r["batch"], r["images_per_s"]) for r in result["onnxruntime_device_input"]]
    report.log(f"[{name}] onnxruntime alone, input on the device, (batch, images/s): {on_device}")
    save(jpath, data)
    warmed = batch_buckets(max(args.batches))
    cold = [n for n in (3, 5, 24, 100) if n < max(args.batches) and n not in warmed]
    result["new_batch_size"] = gpu_measure.new_batch_size_cost(
        bundle_dir, args.providers, payload, warmed, cold
    )
    report.log(f"[{name}] first run at a new batch size: {result['new_batch_size']}")
    save(jpath, data)
    result["options"] = []
    for r in gpu_measure.option_sweep(bundle_dir, args.providers, payload, max(args.batches),
                                      min(1.0, args.duration)):  # fmt: skip
        result["options"].append(r)
        report.log(f"[{name}] options: {r}")
        save(jpath, data)
    return payload, ctype


class Terminated(Exception):
    """SIGTERM (e.g. the caller's time limit): stop measuring, stop the server, write up."""


_STOP = threading.Event()


def _terminate(signum: int, frame: object) -> None:
    _STOP.set()  # an event loop may swallow the exception below (uvloop logs it): the flag stays
    raise Terminated(f"stopped by signal {signum}; the numbers so far are kept")


def save(jpath: Path, data: dict) -> None:
    """Write the partial JSON after every step, then stop there if a SIGTERM came meanwhile."""
    report.write_json(jpath, data)
    if _STOP.is_set():
        raise Terminated("stopped by SIGTERM; the numbers so far are kept")


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _terminate)
    args = parse_args(argv)
    data = run(args)
    print((args.out / "gpu_check.md").read_text())
    report.log(
        f"gpu_check: {'OK' if data['ok'] else 'FAILED'}; wrote {args.out}/gpu_check.json and .md"
    )
    return 0 if data["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
