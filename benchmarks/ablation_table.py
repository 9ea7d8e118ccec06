"""Markdown tables from the ablation runs (`http_bench` with a `baseline`) and `where_cpu` JSONs.

python -m benchmarks.ablation_table          # reads benchmarks/results/, prints markdown
"""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import report

RESULTS = Path(__file__).resolve().parent / "results"
# (what changed, ablation JSON, form, concurrency, figure)
ROWS = [
    ("execution shape tuned (vs the old defaults)", "ablate-tuner-heavy224.json", "raw", 1,
     "p50_ms"),
    ("", "ablate-tuner-heavy224.json", "raw", 32, "images_per_s"),
    ("", "ablate-tuner-course256.json", "raw", 1, "p50_ms"),
    ("", "ablate-tuner-course256.json", "raw", 32, "images_per_s"),
    ("lone upload outside the batcher (vs always batched)", "ablate-alone-course256.json", "raw", 1,
     "p50_ms"),
    ("its on-loop part (vs one hop to the pool)", "ablate-onloop-course256.json", "raw", 1,
     "p50_ms"),
    ("multipart parser (vs Starlette's)", "ablate-multipart-digits.json", "multipart x8", 32,
     "images_per_s"),
    ("", "ablate-multipart-digits.json", "raw", 32, "images_per_s"),
]  # fmt: skip
WHERE = [("course256", 1), ("digits", 32)]


def _load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def ablations() -> str:
    rows = []
    for change, name, form, conc, figure in ROWS:
        data = _load(name)
        if data is None:
            continue
        got = {
            r["target"]: r for r in data["summary"] if (r["form"], r["concurrency"]) == (form, conc)
        }
        if "convserve" not in got or "baseline" not in got:
            continue
        model = name.rsplit("-", 1)[1].removesuffix(".json")
        unit = "p50 ms" if figure == "p50_ms" else "images/s"
        off, on = got["baseline"][figure], got["convserve"][figure]
        plain = got.get("plain1", {}).get(figure)
        rows.append([change, f"{model}, {form}, c={conc}, {unit}", off, on,
                     round(on / off, 2) if off else None, plain])  # fmt: skip
    headers = ["change", "figure", "without it", "with it", "ratio", "plain 1w (same run)"]
    return report.table(headers, rows) if rows else "(no ablation results)"


def where() -> str:
    parts = []
    for model, conc in WHERE:
        before = _load(f"where-cpu-{model}-c{conc}-before.json")
        after = _load(f"where-cpu-{model}-c{conc}-after.json")
        if before is None or after is None:
            continue
        b, a = before["cpu_us_per_request"], after["cpu_us_per_request"]
        rows = [[f"thread: {k}", b.get(k), a.get(k)] for k in dict.fromkeys([*a, *b])]
        cat = "event_loop_cpu_us_per_request_by_category"
        keys = list(dict.fromkeys([*after[cat], *before[cat]]))
        rows += [[f"event loop: {k}", before[cat].get(k), after[cat].get(k)] for k in keys]
        rows.append(["p50 ms (while sampled)", before["p50_ms"], after["p50_ms"]])
        rows.append(
            ["requests/s (while sampled)", before["requests_per_s"], after["requests_per_s"]]
        )
        head = f"{model}, raw JPEG, concurrency {conc}: CPU µs per request"
        parts.append(head + "\n\n" + report.table(["", "before (3ae260a)", "after"], rows))
    return "\n\n".join(parts) if parts else "(no where_cpu results)"


def main() -> None:
    print(ablations())
    print()
    print(where())


if __name__ == "__main__":
    main()
