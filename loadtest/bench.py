"""The benchmark of namaskah-notify against the naive server (``naive_server.py``), both measured in the
same run, on the same machine, by the same load generator; prints one table with the ratio of each figure.

The headline is what a backend does: one notification per HTTP request (``POST /api/notifications`` with
``user_id``). Each server gets a fresh process for each of its turns (``notify serve`` on a fresh data
folder, or ``naive_server.py``), pinned with ``taskset`` to ``--server-cpu``; this process pins itself to
``--client-cpu``. The key scenario (single-event saturation, with the p99 at ``--latency-rate`` and the CPU
per event at ``--cpu-rate``) is repeated ``--repeat`` times, alternating ours / naive, and the table shows
the median and every run.

The load generator is lean so that it is not what saturates: uvloop, an asyncio ``Protocol`` HTTP/1.1
keep-alive publisher (``--http-connections`` connections, one request in flight on each, pre-rendered
requests, only the status line, ``Content-Length`` and the body parsed) and an asyncio ``Protocol``
WebSocket reader per tab (frames parsed by hand, JSON with orjson). Its own CPU use and its core's are
measured in every step; a step where that core was 90 % busy or more is marked "client-bound".

Latency is receive time minus the notification's ``created_at`` (the server's clock, milliseconds,
truncated; same machine).

    python -m loadtest.bench                                   # the full run (see loadtest/README.md)
    python -m loadtest.bench --scenarios saturation --repeat 5
    python -m loadtest.bench --users 20 --repeat 1 --step-seconds 1 --measure-seconds 1 \\
        --latency-rate 100 --cpu-rate 100 --search-start 200 --search-max 400 --batched-start 200 \\
        --connections 100 --broadcast 50 --broadcast-repeats 1 --settle 0.2 --pause 0.2   # a toy run
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import calendar
import contextlib
import importlib.metadata
import math
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvloop
from rich.console import Console
from rich.table import Table

from namaskah_notify.auth import SECRET_FILE, mint_token, signing_secret
from namaskah_notify.config import Settings

from .localserver import (
    ROOT,
    core_times,
    free_port,
    proc_cpu_seconds,
    proc_status,
    quantile,
    raise_fd_limit,
    spawn,
    stop,
)

console = Console(highlight=False, width=max(200, shutil.get_terminal_size().columns))
progress = Console(stderr=True, highlight=False)  # one line per step, so a long run shows where it is

CLIENT_BOUND = 0.90  # a step whose generator was this busy may have measured the client, not the server
CLEAN_P99_MS = 100.0
TARGETS = ("ours", "naive")
SCENARIOS = ("saturation", "latency", "cpu", "batched", "connections", "broadcast")


# -- the servers -----------------------------------------------------------------------------------
class Server:
    """One server process under test: ours (``notify serve``) or the naive one, started fresh for a turn,
    or ours already running (``--url``)."""

    def __init__(self, name: str, url: str, pid: int | None, *, settings: Settings | None = None,
                 process: subprocess.Popen[bytes] | None = None) -> None:
        self.name = name
        self.url = url.rstrip("/")
        host_port = self.url.split("://", 1)[1]
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        self.pid = pid
        self.process = process
        self.settings = None if settings is None else Settings(data_dir=settings.data_dir,
                                                                   jwt_secret=signing_secret(settings))
        self.tokens: dict[str, str] = {}

    @property
    def naive(self) -> bool:
        return self.settings is None

    def token(self, user: str, admin: bool = False) -> str:
        assert self.settings is not None
        key = ("admin:" if admin else "") + user
        if key not in self.tokens:
            self.tokens[key] = mint_token(self.settings, user, admin=admin, ttl_s=6 * 3600)
        return self.tokens[key]

    def handshake(self, user: str) -> bytes:
        """The upgrade request of one tab (the naive server takes ``?user=``, ours a Bearer token)."""
        key = base64.b64encode(os.urandom(16)).decode()
        path = f"/ws/notifications?user={user}" if self.naive else "/ws/notifications"
        auth = "" if self.naive else f"Authorization: Bearer {self.token(user)}\r\n"
        return (f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n").encode()

    def post(self, body: dict[str, Any]) -> bytes:
        """A pre-rendered ``POST /api/notifications`` (the naive server ignores the admin token)."""
        payload = orjson.dumps(body)
        auth = "" if self.naive else f"Authorization: Bearer {self.token('bench_admin', admin=True)}\r\n"
        return (f"POST /api/notifications HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{auth}"
                f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n").encode() + payload

    def cpu_seconds(self) -> float:
        return math.nan if self.pid is None else proc_cpu_seconds(self.pid)

    def rss_kib(self) -> float:
        return math.nan if self.pid is None else proc_status(self.pid, "VmRSS")

    def stop(self) -> None:
        stop(self.process)


class Launcher:
    """Starts each turn's server: ours from ``--server-root`` (or uses ``--url``), the naive one from here."""

    def __init__(self, args: argparse.Namespace, scratch: Path, pinned: bool) -> None:
        self.args = args
        self.scratch = scratch
        self.cpu = args.server_cpu if pinned else None
        self.turns = 0

    def start(self, target: str, env: dict[str, str] | None = None) -> Server:
        args = self.args
        if target == "ours" and args.url:
            settings = Settings(data_dir=args.data_dir) if args.data_dir else Settings()
            return Server("ours", args.url, args.pid, settings=settings)
        self.turns += 1
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cwd, extra = None, {}
        if target == "naive":
            command = [sys.executable, str(ROOT / "loadtest" / "naive_server.py"), "--port", str(port),
                       *(["--by-user"] if args.naive_by_user else [])]
            log = self.scratch / "naive.log"
            data_dir = None
        else:
            data_dir = self.scratch / f"turn-{self.turns}" / "data"
            data_dir.mkdir(parents=True)
            python = sys.executable
            if args.server_root:
                cwd = args.server_root
                venv = args.server_root / ".venv" / "bin" / "python"
                if venv.exists():
                    python = str(venv)
                else:
                    extra["PYTHONPATH"] = str(args.server_root)
            command = [python, "-m", "cli", "serve", "--port", str(port), "--data-dir", str(data_dir)]
            log = self.scratch / "server.log"
        try:
            process = spawn(command, url=url, log_path=log, cpu=self.cpu, timeout=60, cwd=cwd,
                            env={"NOTIFY_LOG_LEVEL": "warning", **extra, **(env or {})})
        except RuntimeError as exc:
            raise SystemExit(f"{target}: {exc}") from None
        settings = None if data_dir is None else Settings(data_dir=data_dir)
        return Server(target, url, process.pid, settings=settings, process=process)


# -- the load generator: WebSocket tabs ------------------------------------------------------------
# Not the Python client (namaskah_notify.client), on purpose: at the rates measured here one core has about
# 60 µs per event for a request and two frames, and the client's general machinery (httpx's request
# building, a websockets connection and a task per tab, JSON with the standard library) costs several times
# that, so the bench would measure itself; and the same generator must drive the naive server, which speaks
# only a sliver of the protocol. Publishing, reading and the seq books are therefore hand-written below.
_SECONDS: dict[str, float] = {}
loads = orjson.loads


def created_ms(text: str) -> float:
    """``created_at`` (``2025-01-31T12:34:56.789Z``) as epoch milliseconds; each second parsed once."""
    if len(text) == 24 and text[19] == "." and text[23] == "Z":
        base = _SECONDS.get(text[:19])
        if base is None:
            if len(_SECONDS) > 4096:
                _SECONDS.clear()
            base = _SECONDS[text[:19]] = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S")) * 1000.0
        return base + int(text[20:23])
    return datetime.fromisoformat(text).timestamp() * 1000


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (control frames only: under 126 bytes)."""
    key = os.urandom(4)
    n = len(payload)
    if n:
        mask = int.from_bytes((key * (n // 4 + 1))[:n], "big")
        payload = (int.from_bytes(payload, "big") ^ mask).to_bytes(n, "big")
    return bytes((0x80 | opcode, 0x80 | n)) + key + payload


class Step:
    """What the tabs saw during one measured step."""

    __slots__ = ("delivered", "duplicates", "last_arrival", "latencies", "out_of_order")

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.delivered = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.last_arrival = 0.0


class Tab(asyncio.Protocol):
    """One WebSocket of one user: an upgrade request, then server frames parsed by hand as they arrive."""

    def __init__(self, session: Session, user: str) -> None:
        self.session = session
        self.user = user
        self.transport: asyncio.Transport | None = None
        self.got: set[int] = set()
        self.last_seq = 0
        self.closed = True
        self.closing = False
        self.upgraded = False
        self.buf = b""
        self.fragments: list[bytes] | None = None
        self.ready: asyncio.Future[None] | None = None
        self.lost: asyncio.Future[None] | None = None

    async def open(self, timeout: float = 60) -> None:
        loop = asyncio.get_running_loop()
        self.ready, self.lost = loop.create_future(), loop.create_future()
        self.closed, self.closing, self.upgraded, self.buf, self.fragments = False, False, False, b"", None
        server = self.session.server
        try:
            await asyncio.wait_for(loop.create_connection(lambda: self, server.host, server.port), timeout)
            await asyncio.wait_for(asyncio.shield(self.ready), timeout)
        except BaseException:
            self.closed = True
            self.ready.cancel()  # nobody waits for it any more
            if self.transport is not None:
                self.transport.abort()
            raise

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses
        transport.write(self.session.server.handshake(self.user))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before the connected frame"))
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.upgraded and not self.buf:  # the usual case: exactly one whole text frame
            size = len(data)
            if size > 4 and data[0] == 0x81:
                length = data[1]
                if length == 126:
                    if size == ((data[2] << 8) | data[3]) + 4:
                        self.text(data[4:], time.time())
                        return
                elif length == size - 2:
                    self.text(data[2:], time.time())
                    return
        elif not self.upgraded:
            data = self.buf + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            if data[9:12] != b"101":
                if self.ready is not None and not self.ready.done():
                    self.ready.set_exception(ConnectionError(data[:end].split(b"\r\n", 1)[0].decode(errors="replace")))
                assert self.transport is not None
                self.transport.close()
                return
            self.upgraded = True
            data, self.buf = data[end + 4:], b""
        buf = self.buf + data if self.buf else data
        now = time.time()
        pos, size = 0, len(buf)
        while size - pos >= 2:
            first, length = buf[pos], buf[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            end = pos + head + length
            if end > size:
                break
            payload = buf[pos + head:end]
            pos = end
            opcode = first & 0x0F
            if opcode == 1 and first & 0x80:
                self.text(payload, now)
            elif opcode in (0, 1):  # a fragmented message
                self.fragments = (self.fragments or []) + [payload] if opcode == 0 else [payload]
                if first & 0x80:
                    whole, self.fragments = b"".join(self.fragments), None
                    self.text(whole, now)
            elif opcode == 9:
                assert self.transport is not None
                self.transport.write(client_frame(0xA, payload))
            elif opcode == 8:
                self.closed = True
                if not self.closing and self.transport is not None:
                    self.closing = True
                    self.transport.write(client_frame(0x8, payload[:2]))
        self.buf = buf[pos:] if pos < size else b""

    def text(self, payload: bytes, now: float) -> None:
        frame = loads(payload)
        kind = frame.get("type")
        if kind == "notification":
            data = frame["data"]
            seq = data["seq"]
            step = self.session.step
            got = self.got
            if seq in got:
                step.duplicates += 1
                return
            last = self.last_seq
            if seq != last + 1:
                step.out_of_order += 1
            if seq > last:
                self.last_seq = seq
            got.add(seq)
            step.delivered += 1
            step.latencies.append(now * 1000 - created_ms(data["created_at"]))
            step.last_arrival = now
        elif kind == "connected" and self.ready is not None and not self.ready.done():
            self.last_seq = int(frame.get("last_seq") or 0)
            self.ready.set_result(None)

    async def close(self) -> None:
        if self.transport is None or self.lost is None or self.lost.done():
            return
        if not self.closing:
            self.closing = True
            self.transport.write(client_frame(0x8, (1000).to_bytes(2, "big")))
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), 3)
        except TimeoutError:
            self.transport.abort()


# -- the load generator: the publisher -------------------------------------------------------------
class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with one request in flight; reads status, Content-Length, body."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.need = -1
        self.body_at = 0
        self.status = 0
        self.sent_at = 0.0
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self.publisher.on_lost(self)

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        while True:
            if self.need < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                self.status = int(buf[9:12])
                at = buf.find(b"\r\ncontent-length: ", 0, end)  # uvicorn writes header names in lower case
                if at < 0:
                    at = buf[:end].lower().find(b"\r\ncontent-length:")
                length = 0
                if at >= 0:
                    stop_at = buf.find(b"\r\n", at + 2, end)
                    length = int(buf[at + 17:stop_at if stop_at >= 0 else end])
                self.body_at, self.need = end + 4, end + 4 + length
            if len(buf) < self.need:
                break
            body, buf, self.need = buf[self.body_at:self.need], buf[self.need:], -1
            self.publisher.on_response(self, self.status, body)
        self.buf = buf


class Publisher:
    """``--http-connections`` keep-alive connections; paces pre-rendered requests at a rate (open loop:
    what is due while every connection is busy waits in a queue, and is dropped when the step ends)."""

    def __init__(self, server: Server, connections: int) -> None:
        self.server = server
        self.size = connections
        self.connections: list[HttpConnection] = []
        self.idle: list[HttpConnection] = []
        self.pending: deque[tuple[bytes, float]] = deque()
        self.accept: Callable[[bytes], None] = lambda body: None
        self.reset()

    def reset(self) -> None:
        self.pending.clear()
        self.ok = 0
        self.errors = 0
        self.statuses: Counter[int] = Counter()
        self.in_flight = 0
        self.http_ms: list[float] = []
        self.lag = 0.0
        self.last_ok = 0.0
        self.broken = 0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.size - len(self.connections)):
            _, conn = await loop.create_connection(lambda: HttpConnection(self), self.server.host, self.server.port)
            self.connections.append(conn)
            self.idle.append(conn)

    async def close(self) -> None:
        for conn in self.connections:
            if conn.transport is not None:
                conn.transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(c.lost for c in self.connections)), 3)
        self.connections, self.idle = [], []

    def on_lost(self, conn: HttpConnection) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        elif conn.waiter is not None and not conn.waiter.done():
            conn.waiter.set_exception(ConnectionError("publish connection closed"))
        else:
            self.broken += 1
            self.in_flight = max(0, self.in_flight - 1)

    def on_response(self, conn: HttpConnection, status: int, body: bytes) -> None:
        now = time.perf_counter()
        if conn.waiter is not None:
            waiter, conn.waiter = conn.waiter, None
            self.idle.append(conn)
            if not waiter.done():
                waiter.set_result((status, body))
            return
        self.in_flight -= 1
        self.http_ms.append((now - conn.sent_at) * 1000)
        if status in (200, 201):
            self.ok += 1
            self.last_ok = now
            self.accept(body)
        else:
            self.errors += 1
            self.statuses[status] += 1
        if self.pending:
            request, due = self.pending.popleft()
            self._send(conn, request, due)
        else:
            self.idle.append(conn)

    def _send(self, conn: HttpConnection, request: bytes, due: float) -> None:
        self.in_flight += 1
        lag = time.perf_counter() - due
        if lag > self.lag:
            self.lag = lag
        conn.send(request)

    async def call(self, request: bytes, timeout: float = 60) -> tuple[int, bytes]:
        """One request on an idle connection, outside any paced run."""
        await self.open()
        conn = self.idle.pop()
        conn.waiter = asyncio.get_running_loop().create_future()
        conn.send(request)
        return await asyncio.wait_for(conn.waiter, timeout)

    async def run(self, requests: list[bytes], rate: float, seconds: float) -> dict[str, Any]:
        """Issue ``rate × seconds`` requests at ``rate`` per second, cycling through ``requests``."""
        await self.open()
        self.reset()
        total = max(1, round(rate * seconds))
        n = len(requests)
        t0 = time.perf_counter()
        issued = 0
        while issued < total:
            due_now = min(total, int((time.perf_counter() - t0) * rate) + 1)
            while issued < due_now:
                due = t0 + issued / rate
                if self.idle:
                    self._send(self.idle.pop(), requests[issued % n], due)
                else:
                    self.pending.append((requests[issued % n], due))
                issued += 1
            if issued < total:  # at least 1 ms: uvloop's timers round shorter delays down to a busy loop
                await asyncio.sleep(max(0.001, t0 + issued / rate - time.perf_counter()))
        # What has not gone out well after the window is dropped; what is in flight is waited for.
        cutoff = t0 + seconds * 1.5 + 1
        while self.pending and time.perf_counter() < cutoff:
            await asyncio.sleep(0.002)
        dropped = len(self.pending)
        self.pending.clear()
        deadline = time.perf_counter() + 15
        while self.in_flight > 0 and time.perf_counter() < deadline:
            await asyncio.sleep(0.002)
        stuck = self.in_flight
        if stuck:  # a server that stopped answering: start the next step on fresh connections
            for conn in list(self.connections):
                if conn not in self.idle and conn.transport is not None:
                    conn.transport.abort()
            self.in_flight = 0
        end = time.perf_counter()
        return {"requests": total, "ok": self.ok, "errors": self.errors + stuck + self.broken,
                "statuses": dict(self.statuses), "dropped": dropped, "t0": t0, "end": end,
                "elapsed": max(seconds, (self.last_ok or end) - t0), "lag_ms": self.lag * 1000,
                "http_p50": quantile(self.http_ms, 0.5), "http_p99": quantile(self.http_ms, 0.99)}


# -- one server's turn -----------------------------------------------------------------------------
class Session:
    """One turn: a fresh server, its tabs and its publisher; every step it measures goes to the bench."""

    def __init__(self, bench: Bench, server: Server, label: str) -> None:
        self.bench = bench
        self.args = bench.args
        self.server = server
        self.label = label
        self.step = Step()
        self.tabs: list[Tab] = []
        self.publisher = Publisher(server, self.args.http_connections)
        self.prefix = f"b{bench.run_id}t{bench.turn}"

    async def open_tabs(self, tabs: list[Tab]) -> int:
        """Open tabs with ``--connect-concurrency`` handshakes in flight; returns how many failed."""
        gate = asyncio.Semaphore(self.args.connect_concurrency)
        failed = 0

        async def one(tab: Tab) -> None:
            nonlocal failed
            async with gate:
                try:
                    await tab.open()
                except Exception:
                    failed += 1

        await asyncio.gather(*(one(t) for t in tabs))
        return failed

    async def close_tabs(self, tabs: list[Tab]) -> None:
        await asyncio.gather(*(t.close() for t in tabs))

    async def wait_connections(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=5) as client:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    if (await client.get(self.server.url + "/ws/stats")).json()["total_connections"] == n:
                        return
                await asyncio.sleep(0.1)

    async def close(self) -> None:
        await self.close_tabs(self.tabs)
        await self.publisher.close()

    # -- the event pool: users × tabs ----------------------------------------------------------------
    async def event_pool(self) -> None:
        self.users = [f"{self.prefix}u{i}" for i in range(self.args.users)]
        if not self.server.naive:
            for user in self.users:
                self.server.token(user)
        self.tabs = [Tab(self, u) for u in self.users for _ in range(self.args.tabs)]
        failed = await self.open_tabs(self.tabs)
        if failed:
            progress.log(f"{self.label}: {failed} of {len(self.tabs)} tabs did not open")
        await self.wait_connections(sum(not t.closed for t in self.tabs))
        size = self.args.batch_size
        self.requests = {
            "single": [self.server.post({"user_id": u, "title": "bench", "message": "single", "type": "bench"})
                       for u in self.users],
            "batched": [self.server.post({"user_ids": self.users[i:i + size], "title": "bench", "message": "batched",
                                          "type": "bench"})
                        for i in range(0, len(self.users) - size + 1, size)]
                       or [self.server.post({"user_ids": self.users, "title": "bench", "type": "bench"})],
        }
        self.per_request = {"single": 1, "batched": min(size, len(self.users))}

    async def reopen(self) -> int:
        dead = [t for t in self.tabs if t.closed]
        for tab in dead:
            tab.got.clear()
        if dead:
            await self.open_tabs(dead)
        return len(dead)

    async def measure(self, scenario: str, kind: str, rate: float, seconds: float) -> dict[str, Any]:
        """Publish ``kind`` events at ``rate`` notifications/s for ``seconds``; check every tab."""
        args, server, publisher = self.args, self.server, self.publisher
        reopened = await self.reopen()
        for tab in self.tabs:
            tab.got.clear()
        self.step = step = Step()
        pairs: list[tuple[str, int]] = []
        if kind == "single":
            def accept(body: bytes) -> None:
                item = orjson.loads(body)
                pairs.append((item["user_id"], item["seq"]))
        else:
            def accept(body: bytes) -> None:
                pairs.extend((item["user_id"], item["seq"]) for item in orjson.loads(body)["items"])
        publisher.accept = accept
        per_request = self.per_request[kind]
        client0, client_core0 = proc_cpu_seconds(), core_times(args.client_cpu)
        server0, server_core0 = server.cpu_seconds(), core_times(args.server_cpu)
        wall0 = time.perf_counter()
        sent = await publisher.run(self.requests[kind], rate / per_request, seconds)
        wall1 = time.perf_counter()
        client1, client_core1 = proc_cpu_seconds(), core_times(args.client_cpu)
        expected: dict[str, set[int]] = {}
        for user, seq in pairs:
            expected.setdefault(user, set()).add(seq)
        want = sum(len(expected.get(t.user, ())) for t in self.tabs)
        deadline = time.monotonic() + args.drain_timeout
        while step.delivered < want and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        wall2 = time.perf_counter()
        server1, server_core1 = server.cpu_seconds(), core_times(args.server_cpu)
        lost = sum(len(expected.get(t.user, set()) - t.got) for t in self.tabs)
        while lost and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            lost = sum(len(expected.get(t.user, set()) - t.got) for t in self.tabs)
        published = len(pairs)
        server_cpu = server1 - server0
        client_busy = busy(client_core0, client_core1)
        r = {
            "server": server.name, "turn": self.label, "scenario": scenario, "kind": kind, "rate": rate,
            "per_request": per_request, "seconds": seconds, "published": published,
            "achieved": published / sent["elapsed"], "requests": sent["requests"], "errors": sent["errors"],
            "statuses": sent["statuses"], "dropped": sent["dropped"], "lag_ms": sent["lag_ms"],
            "http_p50": sent["http_p50"], "http_p99": sent["http_p99"],
            "expected": want, "deliveries": step.delivered, "lost": lost,
            "closed": sum(t.closed for t in self.tabs), "reopened": reopened, "duplicates": step.duplicates,
            "out_of_order": step.out_of_order, "p50": quantile(step.latencies, 0.5),
            "p99": quantile(step.latencies, 0.99), "max": max(step.latencies, default=math.nan),
            "server_cpu_s": server_cpu, "server_window_s": wall2 - wall0,
            "server_ms_per_event": server_cpu * 1000 / published if published else math.nan,
            "server_core_pct": 100 * server_cpu / (wall2 - wall0),
            "server_cpu_busy_pct": 100 * busy(server_core0, server_core1),
            "client_cpu_pct": 100 * (client1 - client0) / (wall1 - wall0),
            "client_core_busy_pct": 100 * client_busy,
        }
        r["client_bound"] = client_bound(r["client_cpu_pct"] / 100, client_busy)
        r["clean"] = (r["p99"] < CLEAN_P99_MS and not lost and not r["closed"] and not r["duplicates"]
                      and not r["errors"] and r["achieved"] >= 0.95 * rate)
        self.bench.steps.append(r)
        progress.log(f"{self.label} {scenario} {rate:,.0f}/s: {'clean' if r['clean'] else 'NOT clean'}"
                     f"{' (client-bound)' if r['client_bound'] else ''} · p99 {r['p99']:.1f} ms · achieved "
                     f"{r['achieved']:,.0f}/s · lost {lost}/{want} · closed {r['closed']} · errors {r['errors']} · "
                     f"server {r['server_ms_per_event']:.3f} ms/event, {r['server_core_pct']:.0f} % of CPU "
                     f"{args.server_cpu} (core {r['server_cpu_busy_pct']:.0f} % busy) · generator "
                     f"{r['client_cpu_pct']:.0f} % (core {r['client_core_busy_pct']:.0f} % busy)")
        await asyncio.sleep(args.pause)
        return r

    async def search(self, scenario: str, kind: str, start: float) -> dict[str, Any]:
        """Double from ``start`` until a step is not clean, then bisect."""
        args = self.args
        tried: list[dict[str, Any]] = []
        good, bad = 0.0, None
        rate = start
        while rate <= args.search_max:
            r = await self.measure(scenario, kind, rate, args.step_seconds)
            tried.append(r)
            if not r["clean"]:
                bad = rate
                break
            good = rate
            rate *= 2
        for _ in range(args.search_steps if bad is not None else 0):
            assert bad is not None
            if bad - good <= max(100, 0.05 * bad):
                break
            rate = round((good + bad) / 2 / 100) * 100 if bad - good > 400 else round((good + bad) / 2 / 10) * 10
            if rate in (good, bad):
                break
            r = await self.measure(scenario, kind, rate, args.step_seconds)
            tried.append(r)
            if r["clean"]:
                good = rate
            else:
                bad = rate
        failing = next((r for r in tried if r["rate"] == bad), None)
        return {"highest_clean": good, "first_failing": bad, "capped": bad is None,
                "client_bound": bool(failing and failing["client_bound"]),
                "steps": [{k: r[k] for k in ("rate", "clean", "p99", "achieved", "lost", "client_bound")}
                          for r in tried]}

    # -- connections and broadcast -------------------------------------------------------------------
    async def connections(self, scenarios: set[str]) -> dict[str, Any]:
        args, server = self.args, self.server
        result: dict[str, Any] = {}
        n = max(args.connections, args.broadcast) if "connections" in scenarios else args.broadcast
        users = [f"{self.prefix}c{i}" for i in range(n)]
        if not server.naive:
            for user in users + [f"{self.prefix}w{i}" for i in range(100)]:
                server.token(user)
        warm = [Tab(self, f"{self.prefix}w{i}") for i in range(min(100, n))]
        await self.open_tabs(warm)
        await self.close_tabs(warm)
        await self.wait_connections(0)
        await asyncio.sleep(1)
        base = server.rss_kib()
        self.tabs = [Tab(self, u) for u in users]
        client0, client_core0 = proc_cpu_seconds(), core_times(args.client_cpu)
        server0 = server.cpu_seconds()
        started = time.perf_counter()
        failed = await self.open_tabs(self.tabs)
        seconds = time.perf_counter() - started
        client1, client_core1 = proc_cpu_seconds(), core_times(args.client_cpu)
        server1 = server.cpu_seconds()
        opened = n - failed
        await self.wait_connections(opened)
        await asyncio.sleep(args.settle)
        rss = server.rss_kib()
        client_busy = busy(client_core0, client_core1)
        result["connect"] = {
            "connections": n, "opened": opened, "refused": failed, "seconds": seconds,
            "connects_per_s": opened / seconds, "rss_base_kib": base, "rss_kib": rss,
            "kib_per_connection": (rss - base) / opened if opened else math.nan,
            "server_core_pct": 100 * (server1 - server0) / seconds,
            "client_cpu_pct": 100 * (client1 - client0) / seconds, "client_core_busy_pct": 100 * client_busy,
            "client_bound": client_bound((client1 - client0) / seconds, client_busy),
        }
        c = result["connect"]
        progress.log(f"{self.label} open {n:,}: {seconds:.2f} s ({c['connects_per_s']:,.0f}/s), {failed} refused · "
                     f"{c['kib_per_connection']:.1f} KiB/connection · generator {c['client_cpu_pct']:.0f} % "
                     f"(core {c['client_core_busy_pct']:.0f} % busy)")
        if "broadcast" in scenarios:
            keep, extra = self.tabs[:args.broadcast], self.tabs[args.broadcast:]
            await self.close_tabs(extra)
            self.tabs = keep
            result["broadcast"] = await self.broadcast()
        return result

    async def broadcast(self) -> dict[str, Any]:
        args = self.args
        open_tabs = [t for t in self.tabs if not t.closed]
        await self.wait_connections(len(open_tabs))
        await asyncio.sleep(args.settle)
        lasts, missing, counts = [], [], []
        for i in range(args.broadcast_repeats):
            for tab in open_tabs:
                tab.got.clear()
            self.step = step = Step()
            request = self.server.post({"broadcast": True, "title": f"bench broadcast {i}"})
            await self.publisher.open()
            sent = time.time()
            status, body = await self.publisher.call(request)
            if status != 201:
                raise SystemExit(f"{self.label}: broadcast answered {status}: {body[:200]!r}")
            counts.append(orjson.loads(body).get("count"))
            deadline = time.monotonic() + 30
            while step.delivered < len(open_tabs) and time.monotonic() < deadline:
                await asyncio.sleep(0.002)
            lasts.append((step.last_arrival - sent) * 1000 if step.delivered else math.nan)
            missing.append(len(open_tabs) - step.delivered)
            progress.log(f"{self.label} broadcast {len(open_tabs):,}: last delivery {lasts[-1]:.0f} ms after the POST, "
                         f"{missing[-1]} missing")
            await asyncio.sleep(args.pause)
        return {"connections": len(open_tabs), "last_after_post_ms": lasts, "median_ms": statistics.median(lasts),
                "missing": missing, "count": counts}


def client_bound(generator: float, core: float) -> bool:
    """Whether a step may have measured the load generator: it used 90 % of its core or more, or its core
    was 90 % busy or more (other jobs on the machine) while the generator needed at least half of it."""
    return generator >= CLIENT_BOUND or (core >= CLIENT_BOUND and generator >= 0.5)


def busy(before: tuple[float, float], after: tuple[float, float]) -> float:
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else math.nan


# -- the run ---------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, launcher: Launcher) -> None:
        self.args = args
        self.launcher = launcher
        self.run_id = os.urandom(3).hex()
        self.turn = 0
        self.steps: list[dict[str, Any]] = []
        self.results: dict[str, dict[str, Any]] = {t: {} for t in args.targets}

    async def turn_of(self, target: str, label: str, work: Callable[[Session], Any],
                      env: dict[str, str] | None = None) -> Any:
        """Start ``target`` fresh, run ``work`` against it, stop it."""
        self.turn += 1
        progress.log(f"— {label}: starting the {target} server")
        server = self.launcher.start(target, env)
        session = Session(self, server, label)
        try:
            return await work(session)
        finally:
            await session.close()
            server.stop()

    async def run(self) -> None:
        args = self.args
        chosen = args.scenario_set
        event_scenarios = [s for s in ("latency", "cpu", "saturation") if s in chosen]
        if event_scenarios:
            for round_ in range(args.repeat):
                for target in args.targets:
                    async def events(session: Session, target: str = target) -> None:
                        await session.event_pool()
                        out = self.results[target]
                        if "latency" in chosen:
                            out.setdefault("latency", []).append(
                                await session.measure("latency", "single", args.latency_rate, args.measure_seconds))
                        if "cpu" in chosen:
                            out.setdefault("cpu", []).append(
                                await session.measure("cpu", "single", args.cpu_rate, args.measure_seconds))
                        if "saturation" in chosen:
                            out.setdefault("saturation", []).append(
                                await session.search("saturation", "single", args.search_start))
                    await self.turn_of(target, f"{target} round {round_ + 1}", events)
        if "batched" in chosen:
            for target in args.targets:
                async def batched(session: Session, target: str = target) -> None:
                    await session.event_pool()
                    self.results[target]["batched"] = await session.search("batched", "batched", args.batched_start)
                await self.turn_of(target, f"{target} batched", batched)
        if chosen & {"connections", "broadcast"}:
            for target in args.targets:
                async def conns(session: Session, target: str = target) -> None:
                    self.results[target].update(await session.connections(chosen))
                await self.turn_of(target, f"{target} connections", conns)
        if args.cluster_database and "ours" in args.targets and not args.url:
            async def cluster(session: Session) -> None:
                await session.event_pool()
                self.results["cluster"] = {"saturation": await session.search("cluster", "single", args.search_start)}
            await self.turn_of("ours", "ours cluster", cluster, env={
                "NOTIFY_DATABASE_URL": args.cluster_database, "NOTIFY_BROKER_URL": args.cluster_broker})


# -- the table -------------------------------------------------------------------------------------
def fmt_runs(values: list[float], fmt: str, unit: str = "") -> str:
    """The median, and every run when there are several."""
    if not values:
        return "—"
    median = f"{statistics.median(values):{fmt}}{unit}"
    if len(values) == 1:
        return median
    return f"{median} (runs {' · '.join(f'{v:{fmt}}' for v in values)})"


def median_of(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return statistics.median(values) if values else math.nan


def ratio(ours: float, naive: float) -> str:
    if math.isnan(ours) or math.isnan(naive) or naive == 0:
        return "—"
    return f"{ours / naive:.2f}×"


def verdict(ok: bool | None) -> str:
    return "" if ok is None else (" ✓ met" if ok else " ✗ not met")


def rows(bench: Bench) -> list[tuple[str, str, str, str, str, str]]:
    args, res = bench.args, bench.results
    ours, naive = res.get("ours", {}), res.get("naive", {})
    out: list[tuple[str, str, str, str, str, str]] = []
    pool = f"{args.users:,} users × {args.tabs} tabs"

    def saturation_cell(runs: list[dict[str, Any]]) -> tuple[str, float]:
        if not runs:
            return "—", math.nan
        values = [r["highest_clean"] for r in runs]
        text = fmt_runs(values, ",.0f", "/s")
        if any(r["capped"] for r in runs):
            text += f" · search capped at {args.search_max:,.0f}/s"
        if any(r["client_bound"] for r in runs):
            text += f" · client-bound in {sum(r['client_bound'] for r in runs)} run(s): a floor, not the server's limit"
        return text, median_of(values)

    if "saturation" in args.scenario_set:
        o, om = saturation_cell(ours.get("saturation", []))
        n, nm = saturation_cell(naive.get("saturation", []))
        met = None if math.isnan(om) or math.isnan(nm) else om >= 1.5 * nm
        out.append(("single-event saturation (headline)",
                    f"{pool}; one user_id per POST; highest rate with p99 < {CLEAN_P99_MS:.0f} ms, nothing lost, "
                    f"no tab closed, no duplicate, ≥ 95 % achieved; {args.step_seconds:g} s steps; "
                    f"×{args.repeat} alternating", o, n, ratio(om, nm), "≥ 1.5× naive" + verdict(met)))
    if "latency" in args.scenario_set:
        def latency_cell(runs: list[dict[str, Any]]) -> tuple[str, float]:
            text = fmt_runs([r["p99"] for r in runs], ".1f", " ms")
            short = [r for r in runs if r["achieved"] < 0.95 * r["rate"]]
            if short:  # p99 of what got through: the rate itself was not reached
                text += f" · only {fmt_runs([r['achieved'] for r in short], ',.0f', '/s')} achieved"
            if any(r["client_bound"] for r in runs):
                text += " · client-bound"
            return text, median_of([r["p99"] for r in runs])
        o, om = latency_cell(ours.get("latency", []))
        n, nm = latency_cell(naive.get("latency", []))
        out.append((f"p99 delivery at {args.latency_rate:,.0f} single events/s",
                    f"{pool}; {args.measure_seconds:g} s; ×{args.repeat}", o, n, ratio(om, nm),
                    "≤ 5 ms" + verdict(None if math.isnan(om) else om <= 5)))
    if "cpu" in args.scenario_set:
        def cpu_cell(runs: list[dict[str, Any]]) -> tuple[str, float]:
            if not runs:
                return "—", math.nan
            per = [r["server_ms_per_event"] for r in runs]
            core = median_of([r["server_core_pct"] for r in runs])
            return f"{fmt_runs(per, '.3f', ' ms/event')}; {core:.0f} % of a core", median_of(per)
        o, om = cpu_cell(ours.get("cpu", []))
        n, nm = cpu_cell(naive.get("cpu", []))
        met = None if math.isnan(om) or math.isnan(nm) else om <= 2 * nm
        out.append((f"server CPU per event at {args.cpu_rate:,.0f} single events/s",
                    f"{pool}; {args.measure_seconds:g} s; utime+stime of the server process (all threads) from "
                    f"publish start to last delivery ÷ events", o, n, ratio(om, nm), "≤ 2× naive" + verdict(met)))
    if "broadcast" in args.scenario_set:
        def bc(t: dict[str, Any]) -> tuple[str, float]:
            b = t.get("broadcast")
            if not b:
                return "—", math.nan
            text = fmt_runs(b["last_after_post_ms"], ".0f", " ms")
            if any(b["missing"]):
                text += f"; missing {', '.join(map(str, b['missing']))}"
            return text, b["median_ms"]
        o, om = bc(ours)
        n, nm = bc(naive)
        out.append((f"broadcast to {args.broadcast:,} connections",
                    f"one user each; POST sent → last tab has it; median of {args.broadcast_repeats}",
                    o, n, ratio(om, nm), "≤ 100 ms" + verdict(None if math.isnan(om) else om <= 100)))
    if "connections" in args.scenario_set:
        def conn(t: dict[str, Any]) -> tuple[str, float, str, float]:
            c = t.get("connect")
            if not c:
                return "—", math.nan, "—", math.nan
            text = f"{c['seconds']:.2f} s ({c['connects_per_s']:,.0f} connects/s); {c['refused']} refused"
            if c["client_bound"]:
                text += " · client-bound"
            return text, c["seconds"], f"{c['kib_per_connection']:.1f} KiB", c["kib_per_connection"]
        o_t, o_s, o_m, o_k = conn(ours)
        n_t, n_s, n_m, n_k = conn(naive)
        count = next((t["connect"]["connections"] for t in (ours, naive) if "connect" in t), args.connections)
        out.append((f"open {count:,} connections",
                    f"{args.connect_concurrency} handshakes in flight; until each has its connected frame",
                    o_t, n_t, ratio(o_s, n_s), "≤ 4 s" + verdict(None if math.isnan(o_s) else o_s <= 4)))
        out.append((f"idle memory per connection at {count:,}",
                    f"VmRSS delta ÷ n, after {args.settle:g} s", o_m, n_m, ratio(o_k, n_k),
                    "≤ 15 KiB" + verdict(None if math.isnan(o_k) else o_k <= 15)))
    if "cluster" in res:
        runs = [res["cluster"]["saturation"]]
        o, om = saturation_cell(runs)
        embedded = median_of([r["highest_clean"] for r in ours.get("saturation", [])])
        out.append(("single-event saturation, PostgreSQL + Redis",
                    f"{pool}; our server with NOTIFY_DATABASE_URL and NOTIFY_BROKER_URL; ratio to the embedded "
                    f"(SQLite) median above", o, "—", ratio(om, embedded) + " of embedded",
                    "≥ 0.8× embedded" + verdict(None if math.isnan(om) or math.isnan(embedded)
                                                 else om >= 0.8 * embedded)))
    if "batched" in args.scenario_set:
        o, om = saturation_cell([ours["batched"]] if "batched" in ours else [])
        n, nm = saturation_cell([naive["batched"]] if "batched" in naive else [])
        out.append((f"batched ({args.batch_size} users per request) — not the headline",
                    f"{pool}; user_ids lists; notifications/s, same search", o, n, ratio(om, nm), "—"))
    return out


def render(bench: Bench, caption: str) -> Table:
    table = Table(title="namaskah-notify against the naive server, same run", caption=caption, show_lines=True)
    naive = "naive (by user)" if bench.args.naive_by_user else "naive"
    for column in ("scenario", "load", "ours", naive, "ratio", "target"):
        table.add_column(column, overflow="fold", no_wrap=column in ("scenario", "ratio", "target"))
    for row in rows(bench):
        table.add_row(*row)
    return table


def render_steps(bench: Bench) -> Table:
    table = Table(title="every measured step (generator = this process; core = whoever ran on that CPU)",
                  show_lines=False)
    for column in ("turn", "scenario", "offered/s", "achieved/s", "p50 ms", "p99 ms", "lost", "closed", "err",
                   "server ms/event", "server % (core busy)", "generator % (core busy)", "verdict"):
        table.add_column(column, overflow="fold")
    for r in bench.steps:
        table.add_row(
            r["turn"], r["scenario"], f"{r['rate']:,.0f}", f"{r['achieved']:,.0f}", f"{r['p50']:.1f}",
            f"{r['p99']:.1f}", f"{r['lost']}/{r['expected']}", str(r["closed"]), str(r["errors"] + r["duplicates"]),
            f"{r['server_ms_per_event']:.3f}", f"{r['server_core_pct']:.0f} ({r['server_cpu_busy_pct']:.0f})",
            f"{r['client_cpu_pct']:.0f} ({r['client_core_busy_pct']:.0f})",
            ("clean" if r["clean"] else "not clean") + (" · client-bound" if r["client_bound"] else ""),
        )
    return table


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")), 0)
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}"
                         for name in ("uvicorn", "uvloop", "websockets", "fastapi", "starlette", "sqlalchemy",
                                      "orjson"))
    return (f"{os.cpu_count()} CPUs ({model}), {mem / 1024 / 1024:.1f} GiB RAM · Python "
            f"{platform.python_version()} · {versions} · load average {os.getloadavg()[0]:.2f} at the start")


def revision(root: Path) -> str:
    """The commit of a checkout, and whether the server's code differs from it."""
    def git(*words: str) -> str:
        result = subprocess.run(["git", "-C", str(root), *words], capture_output=True, text=True, timeout=10)
        return result.stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "no git revision"
    dirty = git("status", "--porcelain", "--", "namaskah_notify", "cli")
    return commit + (" + uncommitted changes" if dirty else "")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def floats(text: str) -> list[float]:
        return [float(x) for x in text.split(",") if x.strip()]

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--targets", default="ours,naive", help="Comma list of ours, naive")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"Comma list of {', '.join(SCENARIOS)}")
    parser.add_argument("--naive-scan-all", dest="naive_by_user", action="store_false",
                        help="Start the naive server without --by-user: a scan of every open socket per publish "
                             "(the slow-consumer control), not the dict of sockets by user the origin design has")
    parser.add_argument("--server-root", type=Path,
                        help="Run our server from this checkout (its .venv if it has one; default: this checkout)")
    parser.add_argument("--url", help="Use this running server as ours instead of starting one for each turn")
    parser.add_argument("--pid", type=int, help="With --url: the server's pid (CPU and memory)")
    parser.add_argument("--data-dir", type=Path, help="With --url: the server's data folder (its JWT secret)")
    parser.add_argument("--server-cpu", type=int, default=0, help="Core for the servers we start")
    parser.add_argument("--client-cpu", type=int, default=1, help="Core for this load generator")
    parser.add_argument("--users", type=int, default=1000, help="Users of the event scenarios")
    parser.add_argument("--tabs", type=int, default=2, help="Tabs (WebSockets) per user")
    parser.add_argument("--repeat", type=int, default=3,
                        help="Rounds of saturation, latency and cpu, alternating the servers")
    parser.add_argument("--step-seconds", type=float, default=5.0, help="Publishing time of a search step")
    parser.add_argument("--measure-seconds", type=float, default=10.0, help="Publishing time of latency and cpu")
    parser.add_argument("--latency-rate", type=float, default=1000.0, help="Single events/s of the p99 row")
    parser.add_argument("--cpu-rate", type=float, default=500.0, help="Single events/s of the CPU row")
    parser.add_argument("--search-start", type=float, default=1000.0, help="First rate of the searches")
    parser.add_argument("--search-max", type=float, default=32000.0, help="Highest rate a search tries")
    parser.add_argument("--search-steps", type=int, default=4, help="Bisection steps after the first failure")
    parser.add_argument("--batch-size", type=int, default=20, help="Distinct users per batched request")
    parser.add_argument("--batched-start", type=float, default=2000.0, help="First rate of the batched search")
    parser.add_argument("--connections", type=int, default=10000, help="Connections opened at once")
    parser.add_argument("--connect-concurrency", type=int, default=200, help="Handshakes in flight")
    parser.add_argument("--broadcast", type=int, default=5000, help="Broadcast audience (connections)")
    parser.add_argument("--broadcast-repeats", type=int, default=5)
    parser.add_argument("--settle", type=float, default=2.0, help="Seconds before reading RSS")
    parser.add_argument("--http-connections", type=int, default=128,
                        help="Publish connections, one request in flight on each (a durable publish waits for "
                             "its group commit, so few connections would measure their round trips, not the server)")
    parser.add_argument("--drain-timeout", type=float, default=5.0, help="Seconds to wait for stragglers")
    parser.add_argument("--pause", type=float, default=1.0, help="Seconds between steps")
    parser.add_argument("--cluster-database", help="Also measure ours on this database URL (with --cluster-broker)")
    parser.add_argument("--cluster-broker", help="The broker URL of the cluster row, e.g. redis://127.0.0.1:6379/0")
    parser.add_argument("--json", type=Path, help="Also write the raw numbers here")
    args = parser.parse_args(argv)
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not args.targets or set(args.targets) - set(TARGETS):
        parser.error(f"--targets: a comma list of {', '.join(TARGETS)}")
    args.scenario_set = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    if args.scenario_set - set(SCENARIOS):
        parser.error(f"--scenarios: a comma list of {', '.join(SCENARIOS)}")
    if bool(args.cluster_database) != bool(args.cluster_broker):
        parser.error("--cluster-database and --cluster-broker go together")
    if args.url and not args.data_dir and not os.environ.get("NOTIFY_JWT_SECRET"):
        parser.error("--url needs --data-dir (the server's JWT secret) or NOTIFY_JWT_SECRET")
    if args.data_dir and not (args.data_dir / SECRET_FILE).exists() and not os.environ.get("NOTIFY_JWT_SECRET"):
        parser.error(f"no JWT secret in {args.data_dir / SECRET_FILE}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()  # our sockets, and the servers we start inherit it
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    pinned = (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity")
    if pinned:
        os.sched_setaffinity(0, {args.client_cpu})
    root = args.server_root or ROOT
    caption = (f"{machine()} · fd limit {hard} · "
               + (f"servers pinned to CPU {args.server_cpu}, load generator to CPU {args.client_cpu}" if pinned
                  else "unpinned")
               + f" · ours: {'running server ' + args.url if args.url else str(root)} at {revision(root)}"
               + " · naive: " + ("sockets in a dict by user" if args.naive_by_user
                                 else "a scan of every socket per publish"))
    scratch = Path(tempfile.mkdtemp(prefix="notify-bench-"))
    bench = Bench(args, Launcher(args, scratch, pinned))
    started = time.monotonic()
    try:
        uvloop.run(bench.run())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    caption += f" · run took {time.monotonic() - started:.0f} s"
    console.print(render(bench, caption))
    console.print(render_steps(bench))
    if args.json:
        args.json.write_text(orjson.dumps(
            {"machine": caption, "args": {k: v for k, v in vars(args).items() if k != "scenario_set"},
             "results": bench.results, "rows": rows(bench), "steps": bench.steps},
            option=orjson.OPT_INDENT_2, default=str).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
