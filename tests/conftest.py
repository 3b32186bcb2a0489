"""Test fixtures: the real server in a subprocess on a free port (``loadtest.localserver``, the harness the
load tools use too), real WebSocket and HTTP clients.

``server`` is one shared server (default settings, its own data folder) for tests that use their own
user ids; ``make_server(**env)`` starts a dedicated one with ``NOTIFY_*`` overrides, stopped after the test.
Every server's output file and every token minted here go to ``leakcheck.RECORD``, searched after the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import pytest
from websockets.asyncio.client import ClientConnection

from loadtest import localserver
from loadtest.localserver import free_port

from . import leakcheck
from .leakcheck import RECORD

ROOT = localserver.ROOT


class ServerProcess(localserver.ServerProcess):
    """The harness's server process, with its output file and every token it mints recorded for the leak
    check."""

    def start(self, timeout: float = 30) -> Self:
        RECORD.server(self.log_path, self.data_dir)
        return super().start(timeout)

    def token(self, user: str, *, admin: bool = False, ttl: float = 3600, **claims: Any) -> str:
        return RECORD.token(super().token(user, admin=admin, ttl=ttl, **claims))


async def recv_json(ws: ClientConnection, timeout: float = 5) -> dict[str, Any]:
    """The next frame as JSON (fails the test on timeout)."""
    raw = await asyncio.wait_for(ws.recv(), timeout)
    return json.loads(raw)


async def recv_until(ws: ClientConnection, kind: str, timeout: float = 5) -> dict[str, Any]:
    """Skip frames until one of type ``kind``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        frame = await recv_json(ws, max(0.01, left))
        if frame.get("type") == kind:
            return frame


async def eventually(check: Callable[[], Any], timeout: float = 15, interval: float = 0.1) -> Any:
    """Run the blocking ``check`` (in a thread) until it returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(check)
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last value {value!r}")


def new_user(prefix: str = "user") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(leakcheck, "leakcheck")


@pytest.fixture(scope="session", autouse=True)
def leak_record(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The leak check also scans the logs of servers ``loadtest.soak`` starts under this session's folder."""
    RECORD.basetemp = tmp_path_factory.getbasetemp()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One shared server on the embedded defaults."""
    process = ServerProcess(tmp_path_factory.mktemp("shared") / "data").start()
    yield process
    process.stop()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start dedicated servers with ``NOTIFY_*`` overrides; each is stopped after the test."""
    started: list[ServerProcess] = []

    def factory(data_dir: Path | None = None, port: int | None = None, args: tuple[str, ...] = (),
                **env: Any) -> ServerProcess:
        folder = data_dir or tmp_path / f"data{len(started)}"
        process = ServerProcess(folder, {k: str(v) for k, v in env.items()}, port=port, args=args).start()
        started.append(process)
        return process

    yield factory
    for process in started:
        process.stop()


# -- real PostgreSQL and Redis ----------------------------------------------------------------------
POSTGRES = os.environ.get("NOTIFY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _psql(sql: str) -> None:
    result = subprocess.run(["psql", POSTGRES, "-v", "ON_ERROR_STOP=1", "-qc", sql],
                            capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"PostgreSQL at {POSTGRES} is needed for this test: {result.stderr.strip()}")


class PostgresDatabase:
    """A fresh database on the machine's PostgreSQL, dropped after the test."""

    def __init__(self) -> None:
        self.name = f"notify_{uuid.uuid4().hex[:12]}"
        _psql(f"CREATE DATABASE {self.name}")
        base = POSTGRES.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        self.url = f"{base}/{self.name}"

    def cut(self) -> None:
        """PostgreSQL refuses this database: new connections are refused and open ones are ended."""
        _psql(f"ALTER DATABASE {self.name} ALLOW_CONNECTIONS false")
        _psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.name}'")

    def restore(self) -> None:
        _psql(f"ALTER DATABASE {self.name} ALLOW_CONNECTIONS true")

    def drop(self) -> None:
        self.restore()
        _psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")


class RedisServer:
    """A private redis-server on a free loopback port, so a test can stop and restart it."""

    def __init__(self) -> None:
        if not shutil.which("redis-server"):
            raise RuntimeError("redis-server is needed for this test (Debian package redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@pytest.fixture
def postgres() -> Iterator[PostgresDatabase]:
    database = PostgresDatabase()
    yield database
    database.drop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()
