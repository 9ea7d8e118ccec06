"""`python -m service` / `convserve`: parse settings (env + CLI flags), run uvicorn.

Every flag mirrors a `Settings` field (`--max-batch-size` is
`CONVSERVE_MAX_BATCH_SIZE`); pydantic-settings builds the parser. With
`--workers` > 1 uvicorn needs an import string, so the parsed settings are
handed to the worker processes through the environment and each builds its
app with the `service.app:create_app` factory; the workers then share their
metrics through PROMETHEUS_MULTIPROC_DIR (a fresh temporary directory unless
it is set), so `/metrics` counts every worker's requests. A worker dies with
its parent (SIGTERM, then its own drain): a SIGKILLed parent leaves no
orphans still listening on the port.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from service.connection import uvicorn_options
from service.memory import return_memory_to_the_os
from service.settings import Settings
from service.worker_count import resolve_workers

log = logging.getLogger("convserve.main")
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


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
    for name, value in settings.model_dump(exclude_unset=True).items():  # defaults: tuned
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
    workers, why = resolve_workers(settings)
    settings = settings.model_copy(update={"workers": workers})  # exported to the workers
    common = uvicorn_options(settings)
    return_memory_to_the_os()
    if settings.workers == 1:
        from service.app import create_app

        app = create_app(settings)  # configures the loggers
        _announce(settings, why)
        uvicorn.run(app, **common)
    else:
        from service.logging import configure_logging

        configure_logging(settings.log_format, settings.log_level)  # uvicorn's own lines too
        _announce(settings, why)
        _export(settings)
        with _shared_metrics_dir():
            uvicorn.run(
                "service.__main__:worker_app", factory=True, workers=settings.workers, **common
            )


def _announce(settings: Settings, workers_why: str) -> None:
    log.info("%d worker process(es) (%s)", settings.workers, workers_why)
    if settings.api_key is None:
        log.warning(
            "no API key is set (CONVSERVE_API_KEY): every endpoint is open to anyone who can "
            "reach %s:%d",
            settings.host,
            settings.port,
        )


def worker_app() -> FastAPI:
    """The app of one `--workers` process, which first ties its life to the parent's."""
    from service.app import create_app

    _die_with_parent()
    return_memory_to_the_os()
    return create_app()


def _die_with_parent() -> None:
    """SIGTERM this process when its parent exits, however the parent ends (SIGKILL too).

    Linux: the kernel's parent-death signal. Elsewhere: a thread that watches the
    parent pid. Either way a parent already gone when this runs is caught too.
    """
    parent = multiprocessing.parent_process()
    parent_pid = parent.pid if parent is not None else os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0:
            if os.getppid() != parent_pid:  # the parent died before prctl
                os.kill(os.getpid(), signal.SIGTERM)
            return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="convserve-parent-watch", daemon=True).start()


if __name__ == "__main__":
    main()
