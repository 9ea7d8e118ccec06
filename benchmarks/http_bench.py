"""HTTP throughput and latency of convserve next to its two references (issue 3, "Speed").

For raw `image/jpeg` bodies of a 640x480 photo and for the multipart batch form,
at each concurrency, it measures over loopback from a separate client process:

- convserve (`python -m service`, dynamic batching),
- the plain FastAPI + onnxruntime server (benchmarks/plain_server.py) with 1 and
  2 uvicorn workers,
- on request (`--targets ...,bare`), benchmarks/bare_server.py with a worker per
  CPU: no framework, no middleware, the service's preprocessing and one run per
  request, raw bodies only (what any Python server on uvicorn costs at least),

and, in the same run, the in-process limit (benchmarks/inprocess.py). Each
images/s is printed with its ratio to that limit.

    python -m benchmarks.http_bench --out benchmarks/results/http-digits.json
    python -m benchmarks.http_bench --model benchmarks/.cache/models/heavy/1
    python -m benchmarks.http_bench --quick
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
from pathlib import Path

import httpx

from benchmarks import http_table, inprocess, loadgen, report, servers, wrk
from benchmarks.photo import PHOTO
from service.bundle import read_bundle
from service.decoder import usable_cpus

REPO = Path(__file__).resolve().parent.parent
# convserve: its defaults (workers auto: one per CPU); convserve1 / convserve2: --workers 1 / 2;
# baseline: convserve from --baseline-src (an older checkout) and/or --baseline-env
TARGETS = ("convserve", "convserve1", "convserve2", "baseline", "plain1", "plain2", "bare")
# bare_server.py takes one raw image per request: it is measured on the raw form only
RAW_ONLY = ("bare",)
DEFAULT_TARGETS = ("convserve", "plain1", "plain2")
INPROCESS_MAX_BATCH = 32  # the in-process limit's batch when --max-batch leaves convserve's default


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--model",
        type=Path,
        default=REPO / "models/digits/1",
        help="bundle: version/model/models dir",
    )
    p.add_argument("--photo", type=Path, default=PHOTO)
    p.add_argument("--duration", type=float, default=5.0, help="seconds measured per point")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each point")
    p.add_argument("--concurrency", default="1,8,32,64", help="comma-separated")
    p.add_argument(
        "--batch", type=int, default=8, help="images per multipart request (0: skip that form)"
    )
    p.add_argument(
        "--targets", default=",".join(DEFAULT_TARGETS), help=f"subset of {','.join(TARGETS)}"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="onnxruntime intra-op threads everywhere (0: onnxruntime's default); "
        "unset: convserve chooses (its default), the others use onnxruntime's default",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help=f"convserve's max batch size (and the in-process one; unset: convserve's "
        f"default, {INPROCESS_MAX_BATCH} in process)",
    )
    p.add_argument(
        "--client",
        choices=["python", "wrk", "auto"],
        default="auto",
        help="auto: wrk when installed (leaner), else the Python load generator",
    )
    p.add_argument(
        "--client-processes", type=int, default=1, help="python load-generator processes"
    )
    p.add_argument(
        "--server-env", action="append", default=[], metavar="K=V", help="extra env for convserve"
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny run: 1 s points, concurrency 1,8, batch 4"
    )
    p.add_argument(
        "--repeat", type=int, default=1, help="interleaved repeats; the table shows medians"
    )
    p.add_argument(
        "--convserve-src", type=Path, default=REPO, help="the checkout convserve runs from"
    )
    p.add_argument(
        "--baseline-src",
        type=Path,
        help="the 'baseline' target's checkout, e.g. `git archive COMMIT | tar -x -C DIR`",
    )
    p.add_argument(
        "--baseline-env", action="append", default=[], metavar="K=V",
        help="extra env for the baseline only (after --server-env)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, help="write all numbers as JSON here")
    p.add_argument("--logdir", type=Path, default=REPO / "benchmarks/.cache/logs")
    if p.parse_args(argv).quick:  # quick changes the defaults; flags given explicitly still win
        p.set_defaults(duration=1.0, warmup=0.3, concurrency="1,8", batch=4)
    args = p.parse_args(argv)
    args.model = inprocess.find_bundle(args.model) or p.error(f"--model {args.model}: no bundle")
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    args.targets = [t for t in args.targets.split(",") if t]
    if unknown := set(args.targets) - set(TARGETS):
        p.error(f"unknown targets {sorted(unknown)}")
    if "baseline" in args.targets and args.baseline_src is None:
        p.error("the baseline target needs --baseline-src")
    if args.client == "auto":
        args.client = "wrk" if wrk.available() else "python"
    return args


def forms(photo: bytes, batch: int) -> list[tuple[str, bytes, str, int]]:
    """(form name, body, content type, images per request)."""
    out = [("raw", photo, "image/jpeg", 1)]
    if batch > 0:
        body, ctype = loadgen.multipart_body(
            [(f"{i}.jpg", photo, "image/jpeg") for i in range(batch)]
        )
        out.append((f"multipart x{batch}", body, ctype, batch))
    return out


def drive(
    args: argparse.Namespace,
    url: str,
    body: bytes,
    ctype: str,
    conc: int,
    images: int,
    pid: int | None = None,
) -> dict:
    if args.client == "wrk":
        return wrk.run_wrk(
            url,
            body,
            ctype,
            concurrency=conc,
            duration=args.duration,
            warmup=args.warmup,
            threads=args.client_processes,
            images_per_request=images,
            settle=None if pid is None else lambda: servers.wait_idle(pid),
        )
    return loadgen.run_load(
        url,
        loadgen.build_request(url, body, ctype),
        concurrency=conc,
        duration=args.duration,
        warmup=args.warmup,
        processes=args.client_processes,
        images_per_request=images,
        expect=b'"predictions"',
    )


def measured(target: str, form: str) -> bool:
    return form == "raw" or target not in RAW_ONLY


def check_answer(url: str, body: bytes, ctype: str, images: int) -> None:
    """One request before measuring: a benchmark of error responses would be worthless."""
    r = httpx.post(url, content=body, headers={"Content-Type": ctype}, timeout=60)
    if r.status_code != 200 or len(r.json().get("predictions", [])) != images:
        raise RuntimeError(f"{url}: {r.status_code} {r.text[:500]}")


def measure_inprocess(args: argparse.Namespace, photo: bytes, form_list: list) -> dict[int, dict]:
    """The in-process limit for every number of images in flight the HTTP runs use.

    The best this machine does without HTTP, whatever convserve chose: one image at
    a time with one intra-op thread and with one per CPU (the faster counts); more
    in flight with one intra-op thread per caller (threads >= cores already), both
    without spinning. `--threads` pins one setting everywhere instead.
    """
    cpus = os.cpu_count() or 1
    shapes = [args.threads] if args.threads is not None else list(dict.fromkeys([1, cpus]))
    models = {t: inprocess.load_model(args.model, intra_op_threads=t, spinning=False)
              for t in shapes}  # fmt: skip
    max_batch = args.max_batch or INPROCESS_MAX_BATCH
    inflights = sorted({c * images for c in args.concurrency for *_, images in form_list})
    limits: dict[int, dict] = {}
    cache: dict = {}
    for n in inflights:
        tried = [t for t in shapes if n == 1 or t == shapes[0]]
        best = None
        for t in tried:
            got = inprocess.measure_limit(models[t], photo, inflight=n, max_batch=max_batch,
                                          duration=args.duration, warmup=args.warmup,
                                          cache=cache.setdefault(t, {}))  # fmt: skip
            got["intra_op_threads"] = t
            if best is None or got["images_per_s"] > best["images_per_s"]:
                best = got
        limits[n] = best
        report.log(
            f"in-process, {n} in flight: {best['images_per_s']:.1f} images/s "
            f"(p50 of one decode + batch-1 run with {best['single']['concurrency']} threads, "
            f"{best['intra_op_threads']} intra-op: {best['p50_ms']} ms)"
        )
    del models
    gc.collect()
    return limits


def only_model_root(bundle_dir: Path, scratch: Path) -> Path:
    """A models dir holding just this model (a symlink), so convserve loads nothing else."""
    model_dir = Path(bundle_dir).resolve().parent
    root = scratch / "roots" / model_dir.name
    root.mkdir(parents=True, exist_ok=True)
    link = root / model_dir.name
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(model_dir, target_is_directory=True)
    return root


def start(target: str, args: argparse.Namespace):
    """convserve at its defaults unless flags say otherwise; the plain server as written."""
    if target.startswith("convserve") or target == "baseline":
        env = {"CONVSERVE_PROVIDERS": "cpu"}
        if args.max_batch is not None:
            env["CONVSERVE_MAX_BATCH_SIZE"] = str(args.max_batch)
        if args.threads is not None:
            env["CONVSERVE_INTRA_OP_THREADS"] = str(args.threads)
        if target in ("convserve1", "convserve2"):
            env["CONVSERVE_WORKERS"] = target[-1]
        env.update(kv.split("=", 1) for kv in args.server_env)
        if target == "baseline":
            env.update(kv.split("=", 1) for kv in args.baseline_env)
        src = args.baseline_src if target == "baseline" else args.convserve_src
        return servers.convserve(
            only_model_root(args.model, args.logdir), read_bundle(args.model).name,
            logdir=args.logdir, env=env, name=target, src=src.resolve(),
        )  # fmt: skip
    if target == "bare":  # as many workers as convserve's default: one per CPU
        return servers.bare(args.model, workers=usable_cpus(), logdir=args.logdir)
    workers = int(target.removeprefix("plain"))
    return servers.plain(
        args.model, workers=workers, logdir=args.logdir, intra_op_threads=args.threads or 0
    )


def run(args: argparse.Namespace, command: str) -> dict:
    """Every point for one model; the returned dict is what --out holds."""
    photo = args.photo.read_bytes()
    form_list = forms(photo, args.batch)
    data: dict = {
        "machine": report.machine(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "photo": {"path": str(args.photo), "bytes": len(photo)},
        "command": command,
        "inprocess_runs": [],
        "results": [],
    }
    report.log(f"model {args.model}, client {args.client}, concurrency {args.concurrency}")
    name = read_bundle(args.model, verify_hash=False).name
    with contextlib.ExitStack() as stack:
        urls, pids = {}, {}
        for target in args.targets:  # all up at once, idle when not measured: points interleave
            server = stack.enter_context(start(target, args))
            pids[target] = server.process.pid
            urls[target] = f"{server.url}/predict" + (
                f"?model={name}" if target.startswith(("convserve", "baseline")) else ""
            )
            for form, body, ctype, images in form_list:
                if measured(target, form):
                    check_answer(urls[target], body, ctype, images)
        for rep in range(args.repeat):
            limits = measure_inprocess(args, photo, form_list)
            data["inprocess_runs"].append({str(k): v for k, v in limits.items()})
            report.write_json(args.out, data)
            for form, body, ctype, images in form_list:
                for conc in args.concurrency:
                    for target in (t for t in args.targets if measured(t, form)):
                        r = servers.with_cpu(
                            lambda t=target, b=body, ct=ctype, c=conc, n=images: drive(
                                args, urls[t], b, ct, c, n, pids[t]
                            ),
                            pids[target],
                        )
                        # what the point left in flight must not load the next one
                        r["settle_s"] = servers.wait_idle(pids[target])
                        data["results"].append(r | {"target": target, "form": form, "rep": rep})
                        report.write_json(args.out, data)
                        report.log(
                            f"{target:10} {form:12} c={conc:<3} {r['images_per_s']:9.1f} images/s  "
                            f"p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms  errors {r['errors']}  "
                            f"cores: server {r['server_cores']} client {r['client_cores']}"
                        )
        data["served"] = served_metadata(urls, name)
        report.write_json(args.out, data)
    if hasattr(os, "getloadavg"):
        data["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    limits = http_table.median_limits(data["inprocess_runs"])
    data["inprocess"] = {str(k): v for k, v in limits.items()}
    data["summary"] = http_table.median_results(data["results"])
    text = http_table.print_table(data["summary"], limits)
    if args.repeat > 1:
        text += f"\n(medians of {args.repeat} interleaved repeats)"
    data["table"] = text
    report.write_json(args.out, data)
    return data


def served_metadata(urls: dict[str, str], name: str) -> dict[str, dict]:
    """Each convserve's /models/{name} after the run: the execution shape it chose."""
    out = {}
    for target, url in urls.items():
        if target.startswith("convserve") or target == "baseline":
            base = url.split("/predict", 1)[0]
            with contextlib.suppress(httpx.HTTPError, ValueError):
                out[target] = httpx.get(f"{base}/models/{name}", timeout=10).json()
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data = run(args, " ".join(["python -m benchmarks.http_bench", *(argv or sys.argv[1:])]))
    text = data["table"]
    if args.out is not None:
        m = data["machine"]
        head = (
            f"`{data['command']}`\n\n{m['date']}, {m['cpu_count']} CPUs ({m['cpu']}), "
            f"onnxruntime {m['onnxruntime']}, client {args.client}, load average "
            f"{m.get('loadavg_at_start')} at start, {m.get('loadavg_at_end')} at end\n\n"
        )
        args.out.with_suffix(".md").write_text(head + text + "\n")
    print(text)
    return 1 if any(r["errors"] for r in data["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
