"""Issue 11's benchmark in one run: three models x two forms x five concurrencies.

For digits (32x32 grayscale, tiny), course256 (the course's 256x256 grayscale
CNN, decode-bound) and heavy224 (224x224x3, five conv blocks, compute-bound),
each built by a script here and exported with the project's own `export`, it
runs `http_bench` (convserve at its defaults and with 1 worker, the plain
server with 1 and 2 workers, the bare ASGI server on raw bodies, and the
in-process limit) with raw JPEG bodies and
multipart bodies of 8 photos at concurrency 1, 2, 8, 32, 64 (2 on two cores is
where oversubscribed threads show); writes everything to one JSON and regenerates
the tables (results .md, README.md and benchmarks/README.md between their
`speed-table` markers) from it.

    python -m benchmarks.suite --out benchmarks/results/suite-2core.json   # ~45 min, 2 cores
    python -m benchmarks.suite --render benchmarks/results/suite-2core.json  # tables only
    python -m benchmarks.suite --quick --out /tmp/suite.json                 # ~2 min smoke run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import http_bench, report, suite_table

REPO = Path(__file__).resolve().parent.parent
MODELS = ("digits", "course256", "heavy224")
# seconds measured / warm-up per point: a heavy multipart request at c=64 takes ~3 s
TIMING = {"digits": (3, 1), "course256": (3, 1), "heavy224": (8, 2)}


def bundle(model: str) -> Path:
    """The bundle, built and exported on first use (course256, heavy224 need TensorFlow)."""
    if model == "digits":
        return REPO / "models/digits/1"
    if model == "course256":
        from benchmarks import course_model

        return course_model.ensure()
    from benchmarks import heavy_model

    return heavy_model.ensure()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", default=",".join(MODELS), help=f"subset of {','.join(MODELS)}")
    p.add_argument("--out", type=Path, help="JSON with every model's run (also .md)")
    p.add_argument("--render", type=Path, help="only regenerate the tables from this JSON")
    p.add_argument("--repeat", type=int, default=1, help="interleaved repeats (medians)")
    p.add_argument("--quick", action="store_true", help="1 s points, concurrency 1,8")
    p.add_argument("--no-readme", action="store_true", help="leave the READMEs alone")
    p.add_argument(
        "--bench-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="passed on to every http_bench run (e.g. --bench-arg=--targets=convserve,plain1)",
    )
    args = p.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    if unknown := set(args.models) - set(MODELS):
        p.error(f"unknown models {sorted(unknown)}")
    return args


def bench_argv(model: str, args: argparse.Namespace) -> list[str]:
    duration, warmup = TIMING[model]
    argv = ["--model", str(bundle(model)), "--batch", "8", "--concurrency", "1,2,8,32,64",
            "--targets", "convserve,convserve1,plain1,plain2,bare", "--repeat", str(args.repeat),
            "--duration", str(duration), "--warmup", str(warmup),
            "--server-env", "CONVSERVE_LOG_LEVEL=info"]  # fmt: skip
    if args.quick:
        argv += ["--duration", "1", "--warmup", "1", "--concurrency", "1,8"]
    return argv + args.bench_arg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        data = report.read_json(args.render)
    else:
        command = " ".join(["python -m benchmarks.suite", *(argv or sys.argv[1:])])
        data = {"command": command, "machine": report.machine(), "models": {}}
        for model in args.models:
            bargv = bench_argv(model, args)
            report.log(f"=== {model}: http_bench {' '.join(bargv)}")
            run = http_bench.run(http_bench.parse_args(bargv), "python -m benchmarks.http_bench "
                                 + " ".join(bargv))  # fmt: skip
            data["models"][model] = run
            report.write_json(args.out, data)
        data["machine"]["loadavg_at_end"] = report.machine().get("loadavg_at_start")
        report.write_json(args.out, data)
    text = suite_table.full(data)
    target = args.out or args.render
    if target is not None:
        target.with_suffix(".md").write_text(text + "\n")
        if not args.no_readme:
            suite_table.update_readmes(data, target)
    print(text)
    errors = [r for run in data["models"].values() for r in run["results"] if r["errors"]]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
