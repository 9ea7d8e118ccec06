"""Start the servers under test as subprocesses on 127.0.0.1 and stop them cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    name: str
    url: str  # base URL, no trailing slash
    process: subprocess.Popen
    log: Path


def _env(extra: dict[str, str], src: Path = REPO) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def _wait_ready(server: Server, path: str, timeout: float, in_a_row: int = 1) -> None:
    """`in_a_row` 200s on fresh connections: with several workers each must be ready."""
    deadline = time.monotonic() + timeout
    ok = 0
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode}: {_tail(server.log)}"
            )
        status = None
        with contextlib.suppress(httpx.HTTPError):
            status = httpx.get(server.url + path, timeout=2).status_code
        ok = ok + 1 if status == 200 else 0
        if ok >= in_a_row:
            return
        if not ok:
            time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f}s: {_tail(server.log)}")


def _tail(log: Path, n: int = 3000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else ""


def _stop(server: Server) -> None:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=10)


@contextlib.contextmanager
def _started(
    name: str,
    cmd: list[str],
    env: dict[str, str],
    port: int,
    ready: str,
    logdir: Path,
    timeout: float,
    in_a_row: int = 1,
    src: Path = REPO,
):
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=src, env=_env(env, src), stdout=out, stderr=subprocess.STDOUT
        )
    server = Server(name, f"http://127.0.0.1:{port}", proc, log)
    try:
        _wait_ready(server, ready, timeout, in_a_row)
        yield server
    finally:
        _stop(server)


def convserve(
    model_root: Path,
    model: str,
    *,
    logdir: Path,
    env: dict[str, str] | None = None,
    timeout: float = 180.0,
    name: str = "convserve",
    src: Path = REPO,
) -> contextlib.AbstractContextManager[Server]:
    """`python -m service` serving `model_root` (default `model`); ready when /readyz is 200
    (20 times in a row: with several workers, each of them). `src`: another checkout of
    the service (e.g. `git archive` of an older commit) to compare with."""
    port = free_port()
    settings = {
        "CONVSERVE_MODEL_DIR": str(Path(model_root).resolve()),
        "CONVSERVE_DEFAULT_MODEL": model,
        "CONVSERVE_HOST": "127.0.0.1",
        "CONVSERVE_PORT": str(port),
        "CONVSERVE_LOG_LEVEL": "warning",
        "CONVSERVE_GRPC_PORT": "0",  # off unless `env` asks (benchmarks/grpc_bench.py does)
        **(env or {}),
    }
    cmd = [sys.executable, "-m", "service"]
    return _started(name, cmd, settings, port, "/readyz", logdir, timeout, in_a_row=20, src=src)


def plain(
    bundle_dir: Path,
    *,
    workers: int,
    logdir: Path,
    intra_op_threads: int = 0,
    timeout: float = 120.0,
) -> contextlib.AbstractContextManager[Server]:
    """benchmarks/plain_server.py under uvicorn with `workers` processes, no access log."""
    env = {
        "PLAIN_MODEL": str(Path(bundle_dir).resolve()),
        "PLAIN_INTRA_OP_THREADS": str(intra_op_threads),
    }
    app = "benchmarks.plain_server:app"
    return _uvicorn(app, f"plain-{workers}w", env, workers, logdir, timeout)


def bare(
    bundle_dir: Path, *, workers: int, logdir: Path, timeout: float = 120.0
) -> contextlib.AbstractContextManager[Server]:
    """benchmarks/bare_server.py (no framework: the leanest Python server) under uvicorn."""
    env = {"BARE_MODEL": str(Path(bundle_dir).resolve())}
    return _uvicorn("benchmarks.bare_server:app", f"bare-{workers}w", env, workers, logdir, timeout)


def _uvicorn(
    app: str, name: str, env: dict[str, str], workers: int, logdir: Path, timeout: float
) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--no-access-log", "--log-level", "warning"]  # fmt: skip
    return _started(name, cmd, env, port, "/healthz", logdir, timeout)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # per second, the unit of utime and stime
UTIME, STIME = 11, 12  # in stat_fields(): user and system CPU, clock ticks


def stat_fields(path: Path) -> list[str]:
    """A /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat file's fields after "pid (comm)"
    (state, ppid, ...; UTIME and STIME); OSError once the process or thread is gone."""
    return path.read_text().rsplit(")", 1)[1].split()


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by `pid` and its live descendants (Linux /proc).

    For uvicorn with workers the supervisor is the parent of the worker processes, so the
    whole server is counted. None where /proc is not available.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    stats: dict[int, tuple[int, float]] = {}  # pid -> (ppid, cpu seconds)
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = stat_fields(entry / "stat")
        except OSError:
            continue  # exited meanwhile
        cpu = (int(fields[UTIME]) + int(fields[STIME])) / CLOCK_TICKS
        stats[int(entry.name)] = (int(fields[1]), cpu)
    if pid not in stats:
        return None
    total, frontier = 0.0, [pid]
    while frontier:
        current = frontier.pop()
        total += stats[current][1]
        frontier += [p for p, (ppid, _) in stats.items() if ppid == current]
    return total


def _own_cpu_seconds() -> float:
    """This process and its waited-for children (wrk, load-generator processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def wait_idle(pid: int, *, timeout: float = 60.0, step: float = 0.25, cores: float = 0.1) -> float:
    """Wait until the server (all its processes) uses under `cores` CPUs; seconds waited.

    A load generator that stops leaves requests in flight (up to concurrency x images
    per request) that the server still computes. Measuring the next point, or another
    server, before they are done would charge one point's work to the next.
    """
    start = time.monotonic()
    before = tree_cpu_seconds(pid)
    while before is not None and time.monotonic() - start < timeout:
        time.sleep(step)
        now = tree_cpu_seconds(pid)
        if now is None or now - before < cores * step:
            break
        before = now
    return round(time.monotonic() - start, 2)


def with_cpu(run: Callable[[], dict], server_pid: int) -> dict:
    """Run one load point; add the server's and the client's CPU use over it, in cores.

    Where the CPU goes decides what can be improved: a server at 2.0 cores on a 2-core
    machine is CPU-bound, one at 0.5 waits on something.
    """
    s0, c0, t0 = tree_cpu_seconds(server_pid), _own_cpu_seconds(), time.monotonic()
    result = run()
    s1, c1, wall = tree_cpu_seconds(server_pid), _own_cpu_seconds(), time.monotonic() - t0
    server = round((s1 - s0) / wall, 2) if s0 is not None and s1 is not None else None
    return result | {"server_cores": server, "client_cores": round((c1 - c0) / wall, 2)}
