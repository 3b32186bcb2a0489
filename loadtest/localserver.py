"""A server process on this machine for the load tools (``bench.py``, ``soak.py``): started on a free port,
pinned to a core when asked, awaited until ``/healthz`` answers, read from ``/proc``, stopped; and the two
small helpers both tools need. Imports nothing of ours.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raise_fd_limit() -> None:
    """Open files up to the hard limit; servers started from here inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def spawn(command: list[str], *, url: str, log_path: Path, env: dict[str, str], cpu: int | None = None,
          timeout: float = 60, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start ``command`` in ``cwd`` (default: this checkout; pinned to ``cpu`` with ``taskset``, when there
    is one), with the caller's ``NOTIFY_*`` variables replaced by ``env`` and its output appended to
    ``log_path``; return once ``url``/healthz answers 200."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
    full_env.update(env)
    full_env["PYTHONUNBUFFERED"] = "1"
    if cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(cpu), *command]
    process = subprocess.Popen(command, cwd=cwd or ROOT, env=full_env, stdout=log_path.open("ab"),
                               stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: see {log_path}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=0.5).status_code == 200:
                return process
        time.sleep(0.05)
    stop(process, signal.SIGKILL)
    raise RuntimeError(f"server did not start in {timeout}s: see {log_path}")


def stop(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
    """Signal the process and wait for it (killed if it outlives ``timeout``); its exit code."""
    if process is None or process.poll() is not None:
        return process.returncode if process else None
    process.send_signal(sig)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def proc_status(pid: int, key: str) -> int:
    """A number from ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM`` in KiB; ``Threads``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def proc_cpu_seconds(pid: int | str = "self") -> float:
    """CPU time of a process so far, user + system, all its threads (``/proc/<pid>/stat``), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def core_times(cpu: int) -> tuple[float, float]:
    """Busy and total seconds of one core since boot (``/proc/stat``), whoever ran on it; idle and iowait
    are not busy."""
    prefix = f"cpu{cpu} "
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(prefix):
            ticks = [int(x) for x in line.split()[1:9]]
            total = sum(ticks)
            return (total - ticks[3] - ticks[4]) / CLK_TCK, total / CLK_TCK
    raise KeyError(prefix)
