"""The one harness for a server process on this machine, for the tests and the load tools alike.

:class:`ServerProcess` is ``notify serve`` as a user runs it: a subprocess on a free (or given) port with
its own data folder, output appended to a file, awaited until ``/healthz`` answers, restartable on the
same port and data, stopped with a signal, its memory and open files read from ``/proc``, tokens minted
with its secret. :func:`spawn` and :func:`stop` are the same for any command (the bench's naive server);
the rest are the small helpers the load tools share. Imports ``namaskah_notify.auth`` and ``config``
(to mint tokens), ``httpx`` and ``websockets``.
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
import sys
import time
from pathlib import Path
from typing import Any, Self

import httpx
from websockets.asyncio.client import connect

from namaskah_notify.auth import mint_token
from namaskah_notify.config import Settings

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
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, cwd=cwd or ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
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


class ServerProcess:
    """``notify serve`` in a subprocess, with ``NOTIFY_*`` overrides in ``env`` and extra ``args``;
    ``cpu`` pins it to one core. Its output goes to ``log_path`` (default: next to the data folder)."""

    def __init__(self, data_dir: Path, env: dict[str, Any] | None = None, port: int | None = None,
                 args: tuple[str, ...] = (), *, cpu: int | None = None, log_path: Path | None = None) -> None:
        self.data_dir = data_dir
        self.env = {k: str(v) for k, v in (env or {}).items()}
        self.args = args
        self.cpu = cpu
        self.port = port or free_port()
        self.log_path = log_path or data_dir.parent / f"{data_dir.name}-server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/notifications"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def command(self) -> list[str]:
        return [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                "--data-dir", str(self.data_dir), *self.args]

    def settings(self) -> Settings:
        values: dict[str, Any] = {k.removeprefix("NOTIFY_").lower(): v for k, v in self.env.items()
                                  if k.startswith("NOTIFY_")}
        values["data_dir"] = self.data_dir
        return Settings(**values)

    def start(self, timeout: float = 60) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.process = spawn(self.command(), url=self.url, log_path=self.log_path, env=self.env, cpu=self.cpu,
                                 timeout=timeout)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{self.output()}") from None
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        return stop(self.process, sig, timeout)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- tokens and requests ---------------------------------------------------------------------------
    def token(self, user: str, *, admin: bool = False, ttl: float = 3600, **claims: Any) -> str:
        return mint_token(self.settings(), user, admin=admin, ttl_s=ttl, extra=claims or None)

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token('ops', admin=True)}"}

    def user_headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

    def publish(self, user: str | list[str], title: str = "Hello", **fields: Any) -> httpx.Response:
        """``POST /api/notifications`` as it answers, for tests of the answer itself."""
        body: dict[str, Any] = {"title": title, **fields}
        if isinstance(user, list):
            body["user_ids"] = user
        else:
            body["user_id"] = user
        return httpx.post(f"{self.url}/api/notifications", json=body, headers=self.admin_headers(), timeout=10)

    def ws(self, token: str | None = None, *, query: str = "", **kwargs: Any) -> connect:
        """A bare WebSocket, for tests of the wire itself; pass ``token`` for ``?token=``, or headers or
        no token for the other ways."""
        params = [p for p in ((f"token={token}" if token else ""), query) if p]
        url = self.ws_url + ("?" + "&".join(params) if params else "")
        kwargs.setdefault("open_timeout", 10)
        return connect(url, **kwargs)

    # -- /proc -------------------------------------------------------------------------------------------
    def rss_kib(self) -> int:
        return proc_status(self.pid, "VmRSS")

    def peak_rss_kib(self) -> int:
        return proc_status(self.pid, "VmHWM")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def threads(self) -> int:
        return proc_status(self.pid, "Threads")
