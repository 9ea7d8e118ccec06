"""Make `tests.*` helpers importable however pytest is started (repo root on sys.path),
and fail the session if a process it started is still running at its end."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests import process_guard  # noqa: E402  (needs the path above)

# Set at import, before any fixture starts a process: every child inherits it. A fresh
# one per session, so a pytest run inside a test never counts its caller's processes.
_TOKEN = os.environ[process_guard.MARKER] = f"{os.getpid()}-{os.urandom(6).hex()}"


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_suite() -> Iterator[None]:
    """Torn down last: any process the suite started must be gone by then (a few seconds
    of grace for ones that are shutting down). Those left are killed, and the run fails."""
    yield
    if not process_guard.supported():
        return
    left = process_guard.wait_for_leftovers(_TOKEN, grace_s=15)
    if left:
        process_guard.kill_all(list(left))
        shown = "\n".join(f"  {pid}: {cmd[:200]}" for pid, cmd in sorted(left.items()))
        pytest.fail(f"{len(left)} process(es) started by the tests outlived them:\n{shown}")
