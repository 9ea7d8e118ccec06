"""The suite's own guard (tests/conftest.py) sees a process that would outlive the suite."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests import process_guard

pytestmark = pytest.mark.skipif(not process_guard.supported(), reason="needs Linux /proc")
SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def _detached(env: dict[str, str]) -> int:
    """A process that is no child of ours: started through a shell that exits at once."""
    script = f"'{sys.executable}' -c 'import time; time.sleep(60)' >/dev/null 2>&1 & echo $!"
    out = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout)


def test_an_orphan_carrying_the_token_is_found() -> None:
    token = os.environ[process_guard.MARKER]
    pid = _detached(dict(os.environ))
    try:
        assert pid in process_guard.leftovers(token)
    finally:
        process_guard.kill_all([pid])
    assert pid not in process_guard.wait_for_leftovers(token, grace_s=5)


def test_a_child_without_the_token_is_found_and_others_are_not() -> None:
    token = os.environ[process_guard.MARKER]
    clean = {k: v for k, v in os.environ.items() if k != process_guard.MARKER}
    child = subprocess.Popen(SLEEP, env=clean)
    stranger = _detached(clean)  # not ours by either test: another session's process
    try:
        found = process_guard.leftovers(token)
        assert child.pid in found
        assert stranger not in found
        assert os.getpid() not in found
    finally:
        child.kill()
        child.wait(10)
        process_guard.kill_all([stranger])
    assert child.pid not in process_guard.leftovers(token)
