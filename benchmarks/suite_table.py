"""Tables from a suite JSON (benchmarks/suite.py): the full one, the README one, the targets."""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks import report

REPO = Path(__file__).resolve().parent.parent
READMES = (REPO / "README.md", REPO / "benchmarks" / "README.md")
START, END = "<!-- speed-table:start -->", "<!-- speed-table:end -->"
SERVERS = ("convserve", "convserve1", "plain1", "plain2", "bare")
HEADERS = ["model", "form", "conc", "convserve img/s", "÷ limit", "1 worker", "plain 1w",
           "plain 2w", "bare", "limit", "p50 ms: convserve", "plain 1w", "bare",
           "in-process"]  # fmt: skip


def _points(run: dict) -> dict[tuple[str, str, int], dict]:
    return {(r["target"], r["form"], r["concurrency"]): r for r in run["summary"]}


def _limit(run: dict, conc: int, images: int) -> dict:
    return run["inprocess"].get(str(conc * images), {})


def _img(r: dict | None) -> float | None:
    return r["images_per_s"] if r and r.get("requests") else None


def _div(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def rows(data: dict) -> list[list[object]]:
    out = []
    for model, run in data["models"].items():
        pts = _points(run)
        single = _limit(run, 1, 1).get("p50_ms")
        for form, conc in dict.fromkeys((r["form"], r["concurrency"]) for r in run["summary"]):
            got = {s: pts.get((s, form, conc)) for s in SERVERS}
            ours = got["convserve"]
            limit = _limit(run, conc, ours["images_per_request"] if ours else 1)
            lim = limit.get("images_per_s")
            p50 = [got[s]["p50_ms"] if got[s] else None for s in ("convserve", "plain1", "bare")]
            out.append([model, form, conc, _img(ours), _div(_img(ours), lim),
                        *(_img(got[s]) for s in SERVERS[1:]), lim, *p50,
                        single if form == "raw" and conc == 1 else None])  # fmt: skip
    return out


def targets(data: dict) -> list[str]:
    """Issue 11's targets, read off the run, one line each with met / missed."""
    lines = []
    for model, run in data["models"].items():
        pts = _points(run)
        forms = list(dict.fromkeys(r["form"] for r in run["summary"]))
        single = _limit(run, 1, 1).get("p50_ms")
        for form in forms:
            ours = pts.get(("convserve", form, 32))
            if not ours:
                continue
            n = ours["images_per_request"]
            limit = _limit(run, 32, n).get("images_per_s")
            ratio = _div(_img(ours), limit)
            plain = [_img(pts.get((s, form, 32))) or 0 for s in ("plain1", "plain2")]
            vs_plain = _div(_img(ours), max(plain))
            line = (f"{model}, {form}, c=32: {_fmt(ratio)} of the limit {_mark(ratio, 0.9)}; "
                    f"{_fmt(vs_plain)}x the best plain {_mark(vs_plain, 1.0)}")  # fmt: skip
            if bare := _img(pts.get(("bare", form, 32))):
                line += (f"; the bare server {_fmt(_div(bare, limit))} of the limit, "
                         f"convserve {_fmt(_div(_img(ours), bare))}x it")  # fmt: skip
            lines.append(line)
        ours, plain = pts.get(("convserve", "raw", 1)), pts.get(("plain1", "raw", 1))
        if ours and plain and single is not None and ours["p50_ms"] is not None:
            extra = ours["p50_ms"] - single
            ok = "met" if ours["p50_ms"] <= plain["p50_ms"] and extra <= 0.5 else "MISSED"
            bare = pts.get(("bare", "raw", 1))
            lines.append(f"{model}, raw, c=1: p50 {ours['p50_ms']:.2f} ms; plain 1w "
                         f"{plain['p50_ms']:.2f} ms; in-process single image {single:.2f} ms "
                         f"({extra:+.2f}) ({ok})"
                         + (f"; the bare server {bare['p50_ms']:.2f} ms "
                            f"({bare['p50_ms'] - single:+.2f})" if bare else ""))  # fmt: skip
    return lines


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _mark(x: float | None, goal: float) -> str:
    return "(met)" if x is not None and x >= goal else f"(MISSED, goal {goal})"


def execution(data: dict) -> list[str]:
    """What convserve chose per model (/models/{name} -> execution), when it says."""
    lines = []
    for model, run in data["models"].items():
        meta = run.get("served", {}).get("convserve", {})
        if "execution" in meta:
            chosen = meta["execution"]
            shape = ", ".join(f"{k} {v}" for k, v in chosen.get("chosen", chosen).items())
            lines.append(f"{model}: {shape} ({chosen.get('source', '?')})")
    return lines


def compact(data: dict, source: str) -> str:
    m = data["machine"]
    head = (f"`{data['command']}` ({source}; {m['date']}, {m['cpu_count']} CPUs {m['cpu']}, "
            f"onnxruntime {m['onnxruntime']}, load average {m.get('loadavg_at_start')} at start, "
            f"{m.get('loadavg_at_end')} at end). Images/s; `÷ limit` is convserve over the "
            "in-process limit with as many images in flight.")  # fmt: skip
    parts = [head, "", report.table(HEADERS, rows(data)), "", "Targets (issue 11):", ""]
    parts += [f"- {line}" for line in targets(data)]
    if shapes := execution(data):
        parts += ["", "Execution shape convserve chose at warm-up:", ""]
        parts += [f"- {line}" for line in shapes]
    return "\n".join(parts)


def full(data: dict) -> str:
    parts = [compact(data, "this file")]
    for model, run in data["models"].items():
        parts += ["", f"## {model}", "", f"`{run['command']}`", "", run["table"]]
    return "\n".join(parts)


def update_readmes(data: dict, result: Path, readmes: tuple[Path, ...] = READMES) -> None:
    """Rewrite the text between the speed-table markers, where a README has them."""
    for readme in readmes:
        text = readme.read_text()
        if START not in text or END not in text:
            continue
        rel = Path(result).resolve().relative_to(REPO).with_suffix(".json")
        block = f"{START}\n{compact(data, f'`{rel}`')}\n{END}"
        pattern = re.escape(START) + r".*?" + re.escape(END)
        new = re.sub(pattern, lambda _, b=block: b, text, count=1, flags=re.S)
        readme.write_text(new)
