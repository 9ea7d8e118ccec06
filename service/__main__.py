"""`python -m service` / `convserve`: parse settings (env + CLI flags), run uvicorn.

Every flag mirrors a `Settings` field (`--max-batch-size` is
`CONVSERVE_MAX_BATCH_SIZE`); pydantic-settings builds the parser. With
`--workers` > 1 uvicorn needs an import string, so the parsed settings are
handed to the worker processes through the environment and each builds its
app with the `service.app:create_app` factory; the workers then share their
metrics through PROMETHEUS_MULTIPROC_DIR (a fresh temporary directory unless
it is set), so `/metrics` counts every worker's requests.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import uvicorn
from pydantic import ValidationError

from service.settings import Settings


def parse(argv: Sequence[str] | None = None) -> Settings:
    args = list(sys.argv[1:] if argv is None else argv)
    return Settings(
        _cli_parse_args=args,
        _cli_prog_name="convserve",
        _cli_kebab_case=True,
        _cli_implicit_flags=False,
    )


def _export(settings: Settings) -> None:
    """Write the effective settings to CONVSERVE_* so worker processes see the same."""
    for name, value in settings.model_dump().items():
        if value is None:
            os.environ.pop(f"CONVSERVE_{name.upper()}", None)
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        os.environ[f"CONVSERVE_{name.upper()}"] = str(value)


@contextmanager
def _shared_metrics_dir() -> Iterator[None]:
    """PROMETHEUS_MULTIPROC_DIR for the worker processes: the caller's, or a fresh one.

    Set before any worker imports prometheus_client, which reads it at import.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
        yield
        return
    path = tempfile.mkdtemp(prefix="convserve-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    try:
        yield
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = parse(argv)
    except ValidationError as exc:  # a bad flag or CONVSERVE_* value: say which, no traceback
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']} (got {e.get('input')!r})"
            for e in exc.errors()
        )
        print(f"convserve: invalid settings: {problems}", file=sys.stderr)
        raise SystemExit(2) from None
    common = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,  # service.logging configures the loggers
        "access_log": False,  # the middleware writes one line per request
        "timeout_graceful_shutdown": max(1, int(settings.drain_timeout_s)),
        "log_level": settings.log_level,
        "server_header": False,
    }
    if settings.workers == 1:
        from service.app import create_app

        uvicorn.run(create_app(settings), **common)
    else:
        from service.logging import configure_logging

        configure_logging(settings.log_format, settings.log_level)  # uvicorn's own lines too
        _export(settings)
        with _shared_metrics_dir():
            uvicorn.run("service.app:create_app", factory=True, workers=settings.workers, **common)


if __name__ == "__main__":
    main()
