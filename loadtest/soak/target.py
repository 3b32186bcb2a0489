"""The server under test in a soak scenario, and what every scenario shares around it: pinning to cores,
scratch folders, progress lines and the ``FIGURE`` report.

:class:`Target` is the harness's :class:`~loadtest.localserver.ServerProcess` with a secret of its own
(tokens are minted without reading the data folder), the naive control server as an alternative, and the
readings the scenarios take over HTTP (``/ws/stats``, each user's ``last_seq``). Imports ``localserver``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import httpx

from namaskah_notify.auth import mint_token
from namaskah_notify.config import Settings

from ..localserver import ROOT, ServerProcess

T = TypeVar("T")


@contextlib.contextmanager
def cores(server: int = 0, clients: int = 1) -> Iterator[None]:
    """Run the clients (this process and its children) on one core and every server started meanwhile on the
    other, so a load generator working flat out does not take the server's CPU time (on the internet the
    clients have machines of their own); nothing is pinned on one core or without ``taskset``."""
    if (os.cpu_count() or 1) < 2 or not shutil.which("taskset") or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {clients})
    Target.server_cpu = server
    try:
        yield
    finally:
        Target.server_cpu = None
        os.sched_setaffinity(0, before)


def pinned(scenario: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """A scenario run under ``cores()``."""
    @functools.wraps(scenario)
    async def run(*args: Any, **kwargs: Any) -> T:
        with cores():
            return await scenario(*args, **kwargs)
    return run


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def workdir(root: Path | None, name: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"soak-{name}-", dir=root))


def figure(item: str, text: str, numbers: dict[str, Any]) -> dict[str, Any]:
    """Print the scenario's one-line figure and its raw numbers as JSON; return the numbers."""
    print(f"FIGURE {item}: {text}", flush=True)
    print(json.dumps(numbers, default=str), flush=True)
    return numbers


class Target(ServerProcess):
    """``notify serve`` (or, with ``naive``, the control in ``naive_server.py``) on a fresh data folder in
    ``workdir``, restartable on the same port and data; pinned to the core ``cores()`` chose."""

    server_cpu: ClassVar[int | None] = None

    def __init__(self, workdir: Path, *, naive: bool = False, env: dict[str, Any] | None = None,
                 log_level: str = "warning") -> None:
        self.naive = naive
        self.secret = secrets.token_urlsafe(48)
        env = {"NOTIFY_JWT_SECRET": self.secret, "NOTIFY_LOG_LEVEL": log_level, **(env or {})}
        super().__init__(workdir / "data", env, cpu=Target.server_cpu,
                         log_path=workdir / ("naive.log" if naive else "server.log"))
        self._settings = Settings(data_dir=self.data_dir, jwt_secret=self.secret)

    def command(self) -> list[str]:
        if self.naive:
            return [sys.executable, str(ROOT / "loadtest" / "naive_server.py"), "--port", str(self.port)]
        return super().command()

    def settings(self) -> Settings:
        return self._settings

    def token(self, user: str, *, admin: bool = False, ttl: float = 6 * 3600, **claims: Any) -> str:
        return mint_token(self._settings, user, admin=admin, ttl_s=ttl, extra=claims or None)

    def params(self, user: str) -> dict[str, str]:
        """Query parameters of a user's socket: the naive server knows users by ``?user=``, not by token."""
        return {"user": user} if self.naive else {}

    def ws_path(self, user: str) -> str:
        return "/ws/notifications" + (f"?user={user}" if self.naive else "")

    def kill_with(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        return super().stop(sig, timeout)

    async def wait_exit(self, timeout: float = 30) -> int | None:
        assert self.process is not None
        return await asyncio.to_thread(self.process.wait, timeout)

    async def stats(self, client: httpx.AsyncClient | None = None) -> dict[str, Any]:
        if client is None:
            async with httpx.AsyncClient(timeout=10) as fresh:
                return (await fresh.get(f"{self.url}/ws/stats")).json()
        return (await client.get(f"{self.url}/ws/stats")).json()

    async def wait_connections(self, want: Callable[[int], bool], timeout: float = 60) -> int:
        """Poll ``/ws/stats`` until ``want(total_connections)``; returns the last count."""
        deadline = time.monotonic() + timeout
        count = -1
        async with httpx.AsyncClient(timeout=5) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    count = (await self.stats(client))["total_connections"]
                    if want(count):
                        return count
                await asyncio.sleep(0.05)
        return count

    async def stored_last_seq(self, users: list[str], concurrency: int = 16) -> dict[str, int]:
        """Each user's ``last_seq`` as the store has it (``GET /api/notifications``): a reading of the
        store for the books, one small request per user, so plain httpx on one pool."""
        gate = asyncio.Semaphore(concurrency)
        result: dict[str, int] = {}
        async with httpx.AsyncClient(timeout=30) as client:
            async def one(user: str) -> None:
                async with gate:
                    response = await client.get(f"{self.url}/api/notifications", params={"limit": 1},
                                                headers={"Authorization": f"Bearer {self.token(user)}"})
                    response.raise_for_status()
                    result[user] = int(response.json()["last_seq"])
            await asyncio.gather(*(one(u) for u in users))
        return result
