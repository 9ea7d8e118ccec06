"""Find processes a test session started that are still running (Linux /proc).

A session marks itself with a token in an environment variable that every
process it starts inherits (subprocess, multiprocessing, uvicorn workers); a
process that carries the token, or is still a descendant of the session's
process, outlives the session if it runs at the end. Other sessions on the
same machine (other helpers, CI jobs) have other tokens and are not counted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

MARKER = "CONVSERVE_TEST_SESSION_TOKEN"
PROC = Path("/proc")


def supported() -> bool:
    return PROC.joinpath("self", "environ").exists()


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) from /proc/PID/stat, or None if the process is gone."""
    try:
        text = PROC.joinpath(str(pid), "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name may contain spaces
    return fields[0], int(fields[1])


def _has_token(pid: int, token: bytes) -> bool:
    try:
        return token in PROC.joinpath(str(pid), "environ").read_bytes().split(b"\0")
    except OSError:  # gone, or another user's process
        return False


def cmdline(pid: int) -> str:
    try:
        raw = PROC.joinpath(str(pid), "cmdline").read_bytes()
    except OSError:
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def leftovers(token: str, root: int | None = None) -> dict[int, str]:
    """Running processes (not zombies) that carry `token` or descend from `root`, but are
    not `root` itself or its ancestors: pid -> command line."""
    root = os.getpid() if root is None else root
    mark = f"{MARKER}={token}".encode()
    stats: dict[int, tuple[str, int]] = {}
    for entry in PROC.iterdir():
        if entry.name.isdigit() and (found := _stat(int(entry.name))) is not None:
            stats[int(entry.name)] = found
    ancestors, pid = set(), root
    while pid in stats and pid not in ancestors:
        ancestors.add(pid)
        pid = stats[pid][1]

    def descends(pid: int) -> bool:
        seen = set()
        while pid in stats and pid not in seen:
            seen.add(pid)
            pid = stats[pid][1]
            if pid == root:
                return True
        return False

    return {
        pid: cmdline(pid)
        for pid, (state, _) in stats.items()
        if pid not in ancestors and state != "Z" and (descends(pid) or _has_token(pid, mark))
    }


def wait_for_leftovers(token: str, grace_s: float) -> dict[int, str]:
    """`leftovers`, after giving them up to `grace_s` to exit on their own."""
    deadline = time.monotonic() + grace_s
    while (found := leftovers(token)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return found


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
