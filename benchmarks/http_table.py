"""The HTTP benchmark's table: medians over repeats, ratios to the in-process limit, targets."""

from __future__ import annotations

import statistics

from benchmarks import report

HEADERS = ["server", "form", "conc", "req/s", "images/s", "p50 ms", "p99 ms", "limit img/s",
           "ratio", "srv cores", "cli cores", "errors"]  # fmt: skip


def ratio(r: dict, limits: dict[int, dict]) -> float | None:
    """images/s over the in-process limit with as many images in flight."""
    limit = limits[r["concurrency"] * r["images_per_request"]]["images_per_s"]
    return r["images_per_s"] / limit if limit and r["requests"] else None


def print_table(results: list[dict], limits: dict[int, dict]) -> str:
    rows = []
    for r in results:
        limit = limits[r["concurrency"] * r["images_per_request"]]["images_per_s"]
        rows.append([r["target"], r["form"], r["concurrency"], r["requests_per_s"],
                     r["images_per_s"], r["p50_ms"], r["p99_ms"], limit, ratio(r, limits),
                     r.get("server_cores"), r.get("client_cores"), r["errors"]])  # fmt: skip
    return report.table(HEADERS, rows) + "\n\n" + targets(results, limits)


def targets(results: list[dict], limits: dict[int, dict]) -> str:
    """Issue 3's targets, read off this run: c=32 throughput ratios and the c=1 p50 overhead."""
    lines = []
    single = limits.get(1, {}).get("p50_ms")
    if single is not None:
        lines.append(f"in-process single-image time (decode + resize + run), p50: {single} ms")
    for form in dict.fromkeys(r["form"] for r in results):
        rows = [r for r in results if r["form"] == form]
        ours = {r["concurrency"]: r for r in rows if r["target"] == "convserve"}
        plain = [r for r in rows if r["target"].startswith("plain") and r["concurrency"] == 32]
        if 32 in ours:
            best = max(plain, key=lambda r: r["images_per_s"], default=None)
            line = f"{form}, c=32: convserve {report.fmt(ratio(ours[32], limits), 2)} of the limit"
            if best is not None:
                line += f"; best plain ({best['target']}) {report.fmt(ratio(best, limits), 2)}"
            lines.append(line)
        if 1 in ours and single is not None and form == "raw" and ours[1]["p50_ms"] is not None:
            extra = ours[1]["p50_ms"] - single
            lines.append(f"{form}, c=1: convserve p50 {ours[1]['p50_ms']} ms = single-image time "
                         f"{extra:+.2f} ms")  # fmt: skip
    return "\n".join(lines)


def _median(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def median_limits(runs: list[dict[str, dict]]) -> dict[int, dict]:
    """Per images-in-flight: the median in-process images/s and single-image p50 over repeats."""
    return {
        int(n): {
            "images_per_s": _median([run[n]["images_per_s"] for run in runs]),
            "p50_ms": _median([run[n]["p50_ms"] for run in runs]),
        }
        for n in runs[0]
    }


def median_results(results: list[dict]) -> list[dict]:
    """One row per (server, form, concurrency): medians over repeats, errors summed."""
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["target"], r["form"], r["concurrency"]), []).append(r)
    rows = []
    for (target, form, conc), rs in groups.items():
        row = {
            "target": target,
            "form": form,
            "concurrency": conc,
            "repeats": len(rs),
            "images_per_request": rs[0]["images_per_request"],
            "requests": sum(r["requests"] for r in rs),
            "errors": sum(r["errors"] for r in rs),
        }
        for key in ("requests_per_s", "images_per_s", "p50_ms", "p99_ms", "server_cores",
                    "client_cores"):  # fmt: skip
            row[key] = _median([r.get(key) for r in rs])
        rows.append(row)
    return rows
