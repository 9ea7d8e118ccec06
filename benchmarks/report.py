"""Plain-text/markdown tables and machine facts shared by the benchmark scripts."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path


def machine() -> dict:
    """What the numbers depend on, recorded next to them."""
    import numpy
    import onnxruntime
    import PIL

    info = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": sys.version.split()[0],
        "onnxruntime": onnxruntime.__version__,
        "onnxruntime_providers": onnxruntime.get_available_providers(),
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
    }
    if hasattr(os, "getloadavg"):
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _digits(value: object) -> int:
    """Three significant-ish digits: 0.123, 12.35, 1234.5."""
    if not isinstance(value, float):
        return 0
    return 3 if abs(value) < 1 else 2 if abs(value) < 100 else 1


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A markdown table that also reads well in a terminal."""
    cells = [[fmt(c, _digits(c)) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    left = [isinstance(c, str) for c in rows[0]] if rows else [False] * len(headers)
    body = [
        "| "
        + " | ".join(
            c.ljust(w) if lj else c.rjust(w) for c, w, lj in zip(r, widths, left, strict=True)
        )
        + " |"
        for r in cells
    ]
    return "\n".join([line, sep, *body])


def write_json(path: Path | None, data: dict) -> None:
    """Written after every measurement, so a run cut short still leaves its numbers."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


_T0 = time.monotonic()


def log(message: str) -> None:
    """Progress on stderr with seconds since start, so a cut-off log still shows the pace."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", file=sys.stderr, flush=True)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
