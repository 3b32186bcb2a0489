"""Long fault and load runs of issue 7 (items 4, 7, 9–13), each printing its figure.

Every scenario starts its own server (``notify serve`` on a fresh data folder, or the naive control in
``naive_server.py``), drives it with asyncio clients from this process and prints one ``FIGURE`` line plus
its raw numbers as JSON. Sizes and durations are options; the defaults are the issue's full sizes.
``tests/test_resilience.py`` runs the same functions at small sizes. The load scenarios pin the server to
one core and the clients to the other (``cores``), and the burst client uses its own address (127.0.0.2).

    python loadtest/soak.py flood      [--users 100 --seconds 20 --burst-rate 2000]      # item 7
    python loadtest/soak.py slow       [--clients 500 --rate 100 --seconds 60 --target both] # item 9
    python loadtest/soak.py slow-memory [--nonreaders 200 --queue 64 --pad 5500]          # item 9, RSS
    python loadtest/soak.py restart    [--clients 1000 --rate 100]                          # item 10
    python loadtest/soak.py crash      [--clients 200 --rate 500]                           # item 11
    python loadtest/soak.py frozen     [--ping-interval 2 --ping-timeout 2]                 # item 11
    python loadtest/soak.py storm      [--clients 5000 --rate 50 --backoff jitter|fixed|both] # item 12
    python loadtest/soak.py churn      [--cycles 50000 --concurrency 50]                    # item 13
    python loadtest/soak.py expiry     [--clients 200 --ttl 75]                             # item 4
    python loadtest/soak.py all                                                             # each, in turn

Latency is receive time minus the publisher's scheduled send time (``meta.sent_at``; same machine), so a
publisher held up by the server counts against the server. "Lost" compares what each client received
with every ``seq`` the store holds for its user (``last_seq`` over HTTP) and every ``seq`` a publish was
answered 201 for.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import math
import os
import random
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
from localserver import ROOT, free_port, proc_status, quantile, raise_fd_limit, spawn, stop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from namaskah_notify.auth import mint_token
from namaskah_notify.config import Settings

WRITE_BUFFER = 64 * 1024  # uvloop's default high-water mark: a socket's send() waits above it


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


# -- the server under test ---------------------------------------------------------------------------
class Target:
    """``notify serve`` (or the naive control) in a subprocess on a fixed port, restartable on the same
    data folder; reads its memory and open files from ``/proc``."""

    server_cpu: int | None = None

    def __init__(self, workdir: Path, *, naive: bool = False, env: dict[str, Any] | None = None,
                 log_level: str = "warning") -> None:
        self.workdir = workdir
        self.naive = naive
        self.cpu = Target.server_cpu  # pinned with ``taskset`` to this core (see ``cores``)
        self.data_dir = workdir / "data"
        self.port = free_port()
        self.secret = secrets.token_urlsafe(48)
        self.env = {"NOTIFY_JWT_SECRET": self.secret, "NOTIFY_LOG_LEVEL": log_level,
                    **{k: str(v) for k, v in (env or {}).items()}}
        self.settings = Settings(data_dir=self.data_dir, jwt_secret=self.secret)
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / ("naive.log" if naive else "server.log")
        self._admin: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 60) -> Target:
        if self.naive:
            command = [sys.executable, str(ROOT / "loadtest" / "naive_server.py"), "--port", str(self.port)]
        else:
            command = [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                       "--data-dir", str(self.data_dir)]
        self.process = spawn(command, url=self.url, log_path=self.log_path, env=self.env, cpu=self.cpu,
                             timeout=timeout)
        return self

    def kill_with(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        return stop(self.process, sig, timeout)

    async def wait_exit(self, timeout: float = 30) -> int | None:
        assert self.process is not None
        return await asyncio.to_thread(self.process.wait, timeout)

    def rss_kib(self) -> int:
        return proc_status(self.pid, "VmRSS")

    def peak_rss_kib(self) -> int:
        return proc_status(self.pid, "VmHWM")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def threads(self) -> int:
        return proc_status(self.pid, "Threads")

    def token(self, user: str, *, admin: bool = False, ttl: float = 6 * 3600) -> str:
        return mint_token(self.settings, user, admin=admin, ttl_s=ttl)

    @property
    def admin_headers(self) -> dict[str, str]:
        if self._admin is None:
            self._admin = self.token("soak_admin", admin=True)
        return {"Authorization": f"Bearer {self._admin}"}

    def ws_url(self, user: str, since_seq: int | None = None) -> str:
        query = f"?user={user}" if self.naive else ""
        if since_seq is not None:
            query += ("&" if query else "?") + f"since_seq={since_seq}"
        return f"ws://127.0.0.1:{self.port}/ws/notifications{query}"

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
        """Each user's ``last_seq`` as the store has it (``GET /api/notifications``)."""
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


# -- clients -----------------------------------------------------------------------------------------
@dataclass
class Backoff:
    """Reconnect delays: ``jitter`` is full jitter (uniform 0..min(cap, base·2^attempt)), as the browser
    client does; ``fixed`` waits ``base`` every time (the comparison of item 12)."""

    kind: str = "jitter"
    base: float = 1.0
    cap: float = 16.0

    def delay(self, attempt: int) -> float:
        if self.kind == "fixed":
            return self.base
        return random.uniform(0, min(self.cap, self.base * 2 ** attempt))


@dataclass
class Tab:
    """One WebSocket of one user, read by its own task; keeps every seq it got, and reconnects with
    ``since_seq`` when a ``Backoff`` is given."""

    target: Target
    user: str
    backoff: Backoff | None = None
    base_seq: int | None = None  # last_seq of the first connected frame
    last_seq: int = 0
    received: set[int] = field(default_factory=set)
    duplicates: int = 0
    gaps: int = 0
    resyncs: int = 0
    latencies: list[float] = field(default_factory=list)
    record: bool = True
    close_codes: list[int] = field(default_factory=list)
    closed_at: list[float] = field(default_factory=list)
    opened_at: list[float] = field(default_factory=list)  # time.time() of every connected frame
    handshake_status: Counter = field(default_factory=Counter)
    connect_errors: int = 0
    token_expiring_at: float | None = None
    ws: ClientConnection | None = None
    task: asyncio.Task[None] | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False
    token: str | None = None
    deadline: float = math.inf  # give up reconnecting after this (monotonic)

    async def _open(self) -> None:
        token = self.token or self.target.token(self.user)
        since = self.last_seq if self.base_seq is not None else None
        self.ws = await connect(self.target.ws_url(self.user, since),
                                additional_headers={"Authorization": f"Bearer {token}"},
                                ping_interval=None, compression=None, open_timeout=20, close_timeout=5,
                                max_queue=None)
        first = orjson.loads(await asyncio.wait_for(self.ws.recv(), 20))
        if self.base_seq is None:
            self.base_seq = self.last_seq = int(first["last_seq"])
        self.connected.set()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        attempt = 0
        while not self.stopping:
            try:
                await self._open()
            except InvalidStatus as exc:
                self.handshake_status[exc.response.status_code] += 1
            except (OSError, TimeoutError, WebSocketException, ValueError):
                self.connect_errors += 1
            else:
                self.opened_at.append(time.time())
                attempt = 0
                await self._read()
                if self.stopping or self.backoff is None:
                    return
            if self.backoff is None or time.monotonic() > self.deadline:
                return
            await asyncio.sleep(self.backoff.delay(attempt))
            attempt += 1

    async def _read(self) -> None:
        assert self.ws is not None
        code = 1006
        try:
            async for raw in self.ws:
                now = time.time()
                if raw == "pong":
                    continue
                frame = orjson.loads(raw)
                kind = frame.get("type")
                if kind == "notification":
                    self._got(frame["data"], now)
                elif kind == "resync_required":
                    self.resyncs += 1
                    self.last_seq = int(frame["last_seq"])
                elif kind == "token_expiring":
                    self.token_expiring_at = now
        except ConnectionClosed:
            pass
        finally:
            rcvd = self.ws.protocol.close_rcvd
            code = rcvd.code if rcvd is not None else 1006
            self.connected.clear()
            if not self.stopping:
                self.close_codes.append(code)
                self.closed_at.append(time.time())

    def _got(self, data: dict[str, Any], now: float) -> None:
        seq = int(data["seq"])
        if seq in self.received or seq <= (self.base_seq or 0):
            self.duplicates += 1
            return
        if seq != self.last_seq + 1:
            self.gaps += 1
        self.received.add(seq)
        self.last_seq = max(self.last_seq, seq)
        meta = data.get("meta") or {}
        if self.record and "sent_at" in meta:
            self.latencies.append((now - float(meta["sent_at"])) * 1000)

    def missing(self, upto: int) -> int:
        """Stored seqs after the first connect that this tab never got."""
        base = self.base_seq or 0
        return sum(1 for s in range(base + 1, upto + 1) if s not in self.received)

    async def close(self) -> None:
        self.stopping = True
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 5)
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


async def open_tabs(tabs: list[Tab], concurrency: int = 100, timeout: float = 120) -> int:
    """Start every tab and wait until each has its ``connected`` frame; returns how many did."""
    gate = asyncio.Semaphore(concurrency)

    async def one(tab: Tab) -> None:
        async with gate:
            tab.start()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tab.connected.wait(), timeout)

    await asyncio.gather(*(one(t) for t in tabs))
    return sum(t.connected.is_set() for t in tabs)


async def close_tabs(tabs: list[Tab]) -> None:
    await asyncio.gather(*(t.close() for t in tabs))


# A bare WebSocket client on asyncio streams, for clients that must not read (a slow consumer), that
# handshake as fast as one process can (a burst) or that vanish without a close frame (churn).
def handshake_request(target: Target, user: str, token: str | None = None) -> bytes:
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    path = target.ws_url(user).split(str(target.port), 1)[1]
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{target.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n").encode()


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    head = await reader.readexactly(2)
    length = head[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", await reader.readexactly(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", await reader.readexactly(8))[0]
    return head[0] & 0x0F, await reader.readexactly(length)


def close_frame(code: int = 1000) -> bytes:
    mask = secrets.token_bytes(4)
    payload = struct.pack("!H", code)
    return bytes([0x88, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def raw_handshake(target: Target, user: str, token: str | None, *, rcvbuf: int | None = None,
                        read_connected: bool = True, timeout: float = 20, source: str | None = None,
                        ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, tuple[int, bytes] | None]:
    """Open a socket (from address ``source``, e.g. 127.0.0.2, to be another client than the rest) and
    upgrade it; returns the streams, the HTTP status (101 when accepted) and, with ``read_connected``,
    the first frame (``connected``, or a close frame when refused)."""
    sock = socket.socket()
    sock.setblocking(False)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        if source is not None:
            sock.bind((source, 0))
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", target.port)), timeout)
        reader, writer = await asyncio.open_connection(sock=sock, limit=2 ** 20)
    except BaseException:
        sock.close()
        raise
    writer.write(handshake_request(target, user, token))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    status = int(head.split(b" ", 2)[1])
    first = None
    if status == 101 and read_connected:
        first = await asyncio.wait_for(read_frame(reader), timeout)
    return reader, writer, status, first


# -- publishing --------------------------------------------------------------------------------------
@dataclass
class Publisher:
    """Posts ``POST /api/notifications`` on a fixed schedule with bounded concurrency (like an app's HTTP
    pool); remembers every seq answered 201, per user."""

    target: Target
    concurrency: int = 8
    acked: dict[str, set[int]] = field(default_factory=dict)
    statuses: Counter = field(default_factory=Counter)
    requests: int = 0
    late_s: float = 0.0
    timeout: float = 30.0  # per request, and for the requests still in flight at the end

    async def run(self, batches: Callable[[int], list[tuple[list[str], dict[str, Any]]]], rate: float,
                  seconds: float, stop: asyncio.Event | None = None) -> None:
        """``rate`` ticks per second for ``seconds``; tick i posts each (users, fields) of ``batches(i)``."""
        gate = asyncio.Semaphore(self.concurrency)
        pending: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(timeout=httpx.Timeout(self.timeout, connect=5), headers=self.target.admin_headers,
                                     limits=httpx.Limits(max_connections=self.concurrency)) as client:
            async def post(users: list[str], fields: dict[str, Any], due: float) -> None:
                try:
                    async with gate:
                        self.late_s = max(self.late_s, time.time() - due)
                        body = {"user_ids": users, "title": "soak", "message": "", "type": "soak", **fields}
                        body["meta"] = {**body.get("meta", {}), "sent_at": due}
                        response = await client.post(f"{self.target.url}/api/notifications", json=body)
                    self.statuses[response.status_code] += 1
                    if response.status_code == 201:
                        for item in response.json().get("items", []):
                            self.acked.setdefault(item["user_id"], set()).add(int(item["seq"]))
                except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: still queued when the run ended
                    self.statuses[type(exc).__name__] += 1

            started = time.time()
            total = max(1, round(rate * seconds))
            for i in range(total):
                if stop is not None and stop.is_set():
                    break
                due = started + i / rate
                await asyncio.sleep(max(0.0, due - time.time()))
                for users, fields in batches(i):
                    self.requests += 1
                    task = asyncio.create_task(post(users, fields, due))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
            if pending:
                await asyncio.wait(pending, timeout=self.timeout)
            for task in list(pending):
                task.cancel()

    def lost(self, tabs: list[Tab]) -> int:
        """(tab, seq) pairs answered 201 that the tab never received."""
        return sum(len(self.acked.get(t.user, set()) - t.received - set(range((t.base_seq or 0) + 1)))
                   for t in tabs)


def padding(size: int) -> dict[str, Any]:
    """Fields that make a notification about ``size`` bytes bigger (the message takes at most 2,000
    characters and ``meta`` 4 KiB, so about 5,500 is the most)."""
    message = "x" * min(size, 2000)
    fields: dict[str, Any] = {"message": message}
    if size > 2000:
        fields["meta"] = {"pad": "y" * min(size - 2000, 3500)}
    return fields


def round_robin(users: list[str], per_tick: int) -> Callable[[int], list[str]]:
    def pick(i: int) -> list[str]:
        start = (i * per_tick) % len(users)
        return [users[(start + k) % len(users)] for k in range(min(per_tick, len(users)))]
    return pick


async def stored_losses(target: Target, tabs: list[Tab]) -> tuple[int, int]:
    """(missing, stored): stored notifications of each tab's user after its first connect that it lacks."""
    last = await target.stored_last_seq(sorted({t.user for t in tabs}))
    missing = sum(t.missing(last[t.user]) for t in tabs)
    stored = sum(last[t.user] - (t.base_seq or 0) for t in tabs)
    return missing, stored


def workdir(root: Path | None, name: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=f"soak-{name}-", dir=root))
    return path


def figure(item: str, text: str, numbers: dict[str, Any]) -> dict[str, Any]:
    print(f"FIGURE {item}: {text}", flush=True)
    print(json.dumps(numbers, default=str), flush=True)
    return numbers


# -- item 7: rate and connection limits ------------------------------------------------------------------
@pinned
async def flood(root: Path | None = None, *, users: int = 100, seconds: float = 20, rate: float = 100,
                burst_rate: float = 2000, cap: int = 20, frames_per_s: float = 1000,
                handshake_limit: float = 50, handshake_limit_burst: int = 20) -> dict[str, Any]:
    """A frame flood closes 1008; the per-user cap holds; a handshake burst leaves others' p99 ≤ 2× quiet.
    The server runs with ``NOTIFY_HANDSHAKE_RATE_PER_IP=handshake_limit`` (0: none), the protection a
    deployment turns on (or leaves to its proxy) against one address opening connections flat out."""
    env: dict[str, Any] = {"NOTIFY_MAX_CONNECTIONS_PER_USER": cap}
    if handshake_limit:
        env["NOTIFY_HANDSHAKE_RATE_PER_IP"] = handshake_limit
        env["NOTIFY_HANDSHAKE_BURST_PER_IP"] = handshake_limit_burst
    target = Target(workdir(root, "flood"), env=env).start()
    try:
        # 1. one connection sending frames_per_s frames per second until it is closed.
        flooder = await connect(target.ws_url("flooder"), additional_headers={
            "Authorization": f"Bearer {target.token('flooder')}"}, ping_interval=None)
        await flooder.recv()
        sent, code, started = 0, None, time.monotonic()

        async def drain() -> int | None:
            with contextlib.suppress(ConnectionClosed):
                async for _ in flooder:
                    pass
            return flooder.protocol.close_rcvd.code if flooder.protocol.close_rcvd else 1006

        reader = asyncio.create_task(drain())
        with contextlib.suppress(ConnectionClosed):
            while not reader.done() and time.monotonic() - started < 30:
                await flooder.send('{"type":"ping"}')
                sent += 1
                await asyncio.sleep(max(0.0, started + sent / frames_per_s - time.monotonic()))
        code = await asyncio.wait_for(reader, 10)
        flood_s = time.monotonic() - started

        # 2. the per-user cap: cap + 10 connections of one user at once.
        results = await asyncio.gather(*(raw_handshake(target, "capped", target.token("capped"))
                                         for _ in range(cap + 10)))
        codes = []
        for _reader, _writer, _status, (opcode, payload) in results:
            if opcode == 8:
                codes.append(struct.unpack("!H", payload[:2])[0])
            else:
                codes.append(0)
        stats = await target.stats()
        capped_open = int(stats["total_connections"])
        for _r, writer, _s, _f in results:
            writer.close()
        await target.wait_connections(lambda n: n == 0, 20)

        # 3. delivery p99 of other users, quiet and during a handshake burst from one client.
        names = [f"u{i}" for i in range(users)]
        tabs = [Tab(target, u) for u in names]
        await open_tabs(tabs)
        pick = round_robin(names, 1)
        quiet = Publisher(target)
        await quiet.run(lambda i: [(pick(i), {})], rate, seconds)
        await asyncio.sleep(1)
        quiet_lat = [x for t in tabs for x in t.latencies]
        for tab in tabs:
            tab.latencies.clear()
        burst = await handshake_burst(target, burst_rate, seconds, Publisher(target), pick, rate)
        await asyncio.sleep(1)
        busy_lat = [x for t in tabs for x in t.latencies]
        await close_tabs(tabs)
        quiet_p99, busy_p99 = quantile(quiet_lat, 0.99), quantile(busy_lat, 0.99)
        numbers = {
            "flood_frames_sent": sent, "flood_close_code": code, "flood_closed_after_s": round(flood_s, 3),
            "cap": cap, "cap_accepted": codes.count(0), "cap_refused_4429": codes.count(4429),
            "cap_open_on_server": capped_open, "quiet_p99_ms": round(quiet_p99, 1),
            "burst_p99_ms": round(busy_p99, 1), "p99_ratio": round(busy_p99 / quiet_p99, 2),
            "quiet_samples": len(quiet_lat), "burst_samples": len(busy_lat), **burst,
        }
        return figure("7", f"flood of {frames_per_s:g} frames/s closed {code} after {sent} frames "
                      f"({flood_s:.2f} s); cap {cap}: {codes.count(0)} accepted, {codes.count(4429)} × 4429; "
                      f"handshake burst {burst_rate:g}/s ({burst['handshakes_per_s']:.0f}/s accepted, "
                      f"{burst['handshake_outcomes'].get('429', 0)} refused 429 at {handshake_limit:g}/s per address): "
                      f"others' p99 "
                      f"{quiet_p99:.1f} → {busy_p99:.1f} ms ({busy_p99 / quiet_p99:.2f}×, criterion ≤ 2×)", numbers)
    finally:
        target.stop()


BURST_ADDRESS = "127.0.0.2"


async def handshake_burst(target: Target, burst_rate: float, seconds: float, publisher: Publisher,
                          pick: Callable[[int], list[str]], rate: float) -> dict[str, Any]:
    """Handshakes at ``burst_rate``/s from one other client process (``burst_main``; each reads
    ``connected`` then hangs up) while ``publisher`` keeps publishing to the measured users."""
    # nice 19: the burst shares the client core with the measuring clients, which must see the server's
    # delays, not their own wait for that core (on the internet the attacker has its own machine).
    child = await asyncio.create_subprocess_exec(
        "nice", "-n", "19", sys.executable, __file__, "handshake-burst", "--port", str(target.port),
        "--secret", target.secret, "--burst-rate", str(burst_rate), "--seconds", str(seconds), stdout=subprocess.PIPE)
    out, _ = await asyncio.gather(child.communicate(), publisher.run(lambda i: [(pick(i), {})], rate, seconds))
    return json.loads(out[0].decode().strip().splitlines()[-1])


async def burst_main(port: int, secret: str, burst_rate: float, seconds: float) -> None:
    """The burst client: its own process, so its work does not slow the measuring one, and its own
    address (127.0.0.2), as one client on the internet would be; the measured users are on 127.0.0.1."""
    target = Target.__new__(Target)
    target.port, target.naive, target.secret = port, False, secret
    target.settings = Settings(jwt_secret=secret)
    tokens = [target.token(f"burst{i}") for i in range(200)]
    gate = asyncio.Semaphore(500)
    done: Counter = Counter()

    async def one(i: int) -> None:
        async with gate:
            try:
                _reader, writer, status, _first = await raw_handshake(target, f"burst{i % 200}", tokens[i % 200],
                                                                      source=BURST_ADDRESS)
                done[status] += 1
                writer.write(close_frame())
                writer.close()
            except Exception as exc:  # counted by kind; the burst goes on
                done[type(exc).__name__] += 1

    started = time.monotonic()
    tasks = []
    for i in range(int(burst_rate * seconds)):
        await asyncio.sleep(max(0.0, started + i / burst_rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    took = time.monotonic() - started
    accepted = done.get(101, 0)
    print(json.dumps({"handshakes": accepted, "handshakes_per_s": accepted / took,
                      "handshake_outcomes": {str(k): v for k, v in done.items()}, "burst_s": round(took, 2)}))


# -- item 9: slow consumers
# A client that never reads never answers a ping either, so with the default pings (20 s + 20 s) both servers
# would drop it after 40 s, before the measured phase: the ping timeout would stand in for the queue bound,
# and the naive loop would pass. Pings every hour leave the send path alone to deal with it.
NO_PING_DROP = {"NOTIFY_WS_PING_INTERVAL_S": 3600}


async def slow_phase(target: Target, tabs: list[Tab], names: list[str], *, rate: float, seconds: float,
                     fanout: int, slow_users: list[str], slow_pad: int, timeout: float = 30) -> dict[str, Any]:
    """Publish ``rate``/s, each to ``fanout`` normal users (and every slow user), plus one padded notification
    per tick to the slow users only; returns the normal clients' latency figures."""
    for tab in tabs:
        tab.latencies.clear()
    pick = round_robin(names, fanout)
    pad = padding(slow_pad)

    # Without slow clients, their share goes to users who are not connected: both runs make the server
    # store and publish the same, and only the presence of a client that does not read differs.
    receivers = slow_users or [f"absent{i}" for i in range(max(1, len(slow_users)))]

    def batches(i: int) -> list[tuple[list[str], dict[str, Any]]]:
        return [(pick(i) + receivers, {}), (receivers, pad)]

    publisher = Publisher(target, timeout=timeout)
    started = time.monotonic()
    await publisher.run(batches, rate, seconds)
    await asyncio.sleep(1)  # late frames still count, as latency
    # Every scheduled (tab, notification) pair is expected, whether or not its publish was answered 201.
    expected = int(rate * seconds) * fanout * len(tabs) // len(names)
    latencies = [x for t in tabs for x in t.latencies]
    undelivered = max(0, expected - len(latencies))
    # An undelivered notification is an infinitely late one.
    padded = latencies + [math.inf] * undelivered
    return {"p50_ms": quantile(padded, 0.5), "p99_ms": quantile(padded, 0.99), "delivered": len(latencies),
            "expected": expected, "undelivered": undelivered, "statuses": dict(publisher.statuses),
            "publisher_late_s": round(publisher.late_s, 2), "took_s": round(time.monotonic() - started, 1)}


@pinned
async def slow_consumer(root: Path | None = None, *, naive: bool = False, clients: int = 500, rate: float = 100,
                        seconds: float = 60, fanout: int = 50, slow: int = 1, slow_pad: int = 5500,
                        queue: int = 1024, timeout: float = 30, prefill: int = 0) -> dict[str, Any]:
    """Normal clients' p99 without and with ``slow`` clients that never read; the slow ones' fate.
    ``timeout`` bounds each publish request (the naive server holds them for ever); ``prefill`` padded
    notifications are sent to the slow clients, as fast as the server takes them, before the measured run
    (a short run would otherwise end before the kernel's socket buffers, about 5 MB, are full)."""
    target = Target(workdir(root, "naive" if naive else "slow"), naive=naive,
                    env={"NOTIFY_SEND_QUEUE_SIZE": queue, **NO_PING_DROP}).start()
    try:
        # The slow clients connect first: in the naive loop they then come before everyone else, as an
        # early tab does. Until the second run nothing is published to them, so the first run is the
        # run without a slow consumer.
        slow_users = [f"slow{i}" for i in range(slow)]
        sockets = [await raw_handshake(target, u, target.token(u), rcvbuf=4096, read_connected=False)
                   for u in slow_users]
        names = [f"n{i}" for i in range(clients)]
        tabs = [Tab(target, u) for u in names]
        await open_tabs(tabs)
        log(f"slow ({'naive' if naive else 'ours'}): {clients} clients, quiet run {seconds:g} s")
        await slow_phase(target, tabs, names, rate=rate, seconds=min(1.0, seconds), fanout=fanout, slow_users=[],
                         slow_pad=slow_pad, timeout=timeout)  # warm-up, not measured
        quiet = await slow_phase(target, tabs, names, rate=rate, seconds=seconds, fanout=fanout, slow_users=[],
                                 slow_pad=slow_pad, timeout=timeout)
        rss_before = target.rss_kib()
        if prefill:
            # Our server answers every one (it only queues); the naive one answers until the slow socket is
            # full (~5 MB), then holds the rest for ever: 10 s is enough to get there, then give up.
            filler = Publisher(target, concurrency=8, timeout=10 if naive else 120)
            await filler.run(lambda i: [(slow_users, padding(slow_pad))], 2000, prefill / 2000)
            await asyncio.sleep(2)  # let the store's write-ahead log checkpoint the prefill before measuring
        log(f"slow ({'naive' if naive else 'ours'}): {slow} non-reading client(s) added, run {seconds:g} s")
        loaded = await slow_phase(target, tabs, names, rate=rate, seconds=seconds, fanout=fanout,
                                  slow_users=slow_users, slow_pad=slow_pad, timeout=timeout)
        stats = await target.stats()
        rss_after, peak = target.rss_kib(), target.peak_rss_kib()
        for _r, writer, _s, _f in sockets:
            writer.transport.abort()
        await close_tabs(tabs)
        ratio = loaded["p99_ms"] / quiet["p99_ms"] if quiet["p99_ms"] else math.inf
        numbers = {
            "server": "naive" if naive else "ours", "clients": clients, "rate": rate, "seconds": seconds,
            "fanout": fanout, "slow": slow, "queue": queue, "quiet": quiet, "with_slow": loaded,
            "p99_ratio": ratio, "send_queue_overflows": stats.get("send_queue_overflows"),
            "rss_kib_before_slow": rss_before, "rss_kib_after": rss_after, "peak_rss_kib": peak,
            "passes": ratio <= 1.5,
        }
        return figure("9", f"{'naive loop' if naive else 'namaskah-notify'}: {clients} clients at {rate:g}/s "
                      f"× {seconds:g} s: p99 {quiet['p99_ms']:.1f} ms quiet → {loaded['p99_ms']:.1f} ms with "
                      f"{slow} non-reading ({ratio:.2f}×, criterion ≤ 1.5×: {'pass' if ratio <= 1.5 else 'FAIL'}); "
                      f"undelivered {loaded['undelivered']}/{loaded['expected']}; overflows "
                      f"{stats.get('send_queue_overflows', 'n/a')}; RSS {rss_before / 1024:.0f} → "
                      f"{rss_after / 1024:.0f} MiB", numbers)
    finally:
        target.stop(signal.SIGKILL if naive else signal.SIGTERM)


@pinned
async def slow_memory(root: Path | None = None, *, nonreaders: int = 200, queue: int = 64, pad: int = 5500,
                      per_request: int = 50, rate: float = 200, max_seconds: float = 300) -> dict[str, Any]:
    """``nonreaders`` clients that never read get padded notifications until every one overflowed its queue;
    peak RSS must stay ≤ baseline + nonreaders × (queue × frame + write buffer)."""
    target = Target(workdir(root, "slowmem"), env={"NOTIFY_SEND_QUEUE_SIZE": queue, **NO_PING_DROP}).start()
    try:
        users = [f"stuck{i}" for i in range(nonreaders)]
        sockets = []
        for user in users:
            sockets.append(await raw_handshake(target, user, target.token(user), rcvbuf=4096, read_connected=False))
        await target.wait_connections(lambda n: n == nonreaders, 30)
        padded = padding(pad)
        # The baseline: the peak RSS while the same traffic goes to as many clients that do read (building,
        # queueing and writing their frames is the publishing path's own working set), less what those
        # readers' connections cost idle; the non-reading clients are connected throughout, so what they add
        # by not reading is all that is left between the baseline and the peak with them.
        before_readers = target.rss_kib()
        readers = [Tab(target, f"reader{i}") for i in range(nonreaders)]
        await open_tabs(readers)
        await asyncio.sleep(1)
        readers_idle = target.rss_kib() - before_readers
        pick_readers = round_robin([tab.user for tab in readers], per_request)
        await Publisher(target).run(lambda i: [(pick_readers(i), padded)], rate, min(10.0, max_seconds / 4))
        await asyncio.sleep(1)
        warmup_overflows = (await target.stats())["send_queue_overflows"]
        await close_tabs(readers)
        idle = target.rss_kib()
        baseline = target.peak_rss_kib() - readers_idle
        stop = asyncio.Event()
        publisher = Publisher(target)
        pick = round_robin(users, per_request)

        async def watch() -> None:
            deadline = time.monotonic() + max_seconds
            while time.monotonic() < deadline:
                if (await target.stats())["send_queue_overflows"] - warmup_overflows >= nonreaders:
                    break
                await asyncio.sleep(0.5)
            stop.set()

        started = time.monotonic()
        await asyncio.gather(watch(), publisher.run(lambda i: [(pick(i), padded)], rate,
                                                    max_seconds, stop))
        took = time.monotonic() - started
        stats = await target.stats()
        peak = target.peak_rss_kib()
        frame = pad + 400  # the notification's JSON around the message
        bound = baseline + nonreaders * (queue * frame + WRITE_BUFFER) / 1024
        for _r, writer, _s, _f in sockets:
            writer.transport.abort()
        numbers = {"nonreaders": nonreaders, "queue": queue, "frame_bytes": frame, "baseline_kib": baseline,
                   "idle_after_warmup_kib": idle, "readers_idle_kib": readers_idle,
                   "warmup_overflows": warmup_overflows,
                   "peak_kib": peak, "bound_kib": round(bound),
                   "overflows": stats["send_queue_overflows"] - warmup_overflows,
                   "published": publisher.requests * per_request, "seconds": round(took, 1)}
        numbers["passes"] = peak <= bound and numbers["overflows"] >= nonreaders
        return figure("9", f"{nonreaders} non-reading clients, queue {queue} × {frame} B: "
                      f"{numbers['overflows']} closed for a full queue after {took:.0f} s; peak RSS "
                      f"{peak / 1024:.0f} MiB vs bound {bound / 1024:.0f} MiB (baseline: peak "
                      f"{baseline / 1024:.0f} MiB of the same traffic to clients that read, "
                      f"+ {nonreaders} × (queue + {WRITE_BUFFER // 1024} KiB write buffer))", numbers)
    finally:
        target.stop()


# -- items 10, 11, 12: restarts, crashes, storms -----------------------------------------------------
@pinned
async def restart_run(root: Path | None = None, *, clients: int = 1000, tabs_per_user: int = 1, rate: float = 100,
                      before_s: float = 5, after_s: float = 10, sig: int = signal.SIGTERM,
                      backoff: Backoff | None = None, batch: int = 1, grace_s: float = 60,
                      name: str = "restart") -> dict[str, Any]:
    """Clients receiving while publishing runs; the server gets ``sig`` and is started again on the same
    port and data; clients reconnect with ``since_seq``. Returns close codes, reconnect times and losses."""
    target = Target(workdir(root, name)).start()
    backoff = backoff or Backoff("jitter", 0.5, 8)
    users = [f"u{i}" for i in range(max(1, clients // tabs_per_user))]
    tabs = [Tab(target, u, backoff=backoff) for u in users for _ in range(tabs_per_user)]
    try:
        opened = await open_tabs(tabs, concurrency=200)
        log(f"{name}: {opened}/{len(tabs)} connected; publishing {rate:g}/s")
        pick = round_robin(users, batch)
        publisher = Publisher(target, concurrency=16)
        publishing = asyncio.create_task(
            publisher.run(lambda i: [(pick(i), {})], rate / batch, before_s + after_s + 30))
        await asyncio.sleep(before_s)
        signalled = time.time()
        target.kill_with(sig)
        exit_code = await target.wait_exit(60)
        down_s = time.time() - signalled
        await asyncio.to_thread(target.start)
        restarted = time.time() - signalled
        log(f"{name}: exit {exit_code} after {down_s:.1f} s, listening again after {restarted:.1f} s")
        await asyncio.sleep(after_s)
        publishing.cancel()
        with contextlib.suppress(BaseException):
            await publishing
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and not all(t.connected.is_set() for t in tabs):
            await asyncio.sleep(0.2)
        last = await target.stored_last_seq(users)
        # Let every tab catch up to what is stored.
        while time.monotonic() < deadline and any(t.missing(last[t.user]) for t in tabs):
            await asyncio.sleep(0.2)
        missing = sum(t.missing(last[t.user]) for t in tabs)
        stored = sum(last[t.user] - (t.base_seq or 0) for t in tabs)
        codes = Counter(c for t in tabs for c in t.close_codes[:1])
        # From the first close to the last connection (a tab let in by the stopping server and closed again
        # counts until it is on the new one).
        reconnect = sorted(t.opened_at[-1] - t.closed_at[0] for t in tabs if t.closed_at and len(t.opened_at) > 1)
        statuses: Counter = Counter()
        for tab in tabs:
            statuses.update(tab.handshake_status)
        numbers = {
            "clients": len(tabs), "connected_before": opened, "signal": signal.Signals(sig).name,
            "exit_code": exit_code, "down_s": round(down_s, 2), "listening_again_s": round(restarted, 2),
            "close_codes": dict(codes), "reconnected": len(reconnect),
            "reconnect_p50_s": round(quantile(reconnect, 0.5), 2),
            "reconnect_p95_s": round(quantile(reconnect, 0.95), 2),
            "reconnect_max_s": round(reconnect[-1], 2) if reconnect else None,
            "within_15s": sum(r <= 15 for r in reconnect), "within_30s": sum(r <= 30 for r in reconnect),
            "stored_after_connect": stored, "lost_stored": missing, "lost_acked": publisher.lost(tabs),
            "acked": sum(len(v) for v in publisher.acked.values()), "publish_statuses": dict(publisher.statuses),
            "handshake_statuses": dict(statuses), "handshake_5xx": sum(v for k, v in statuses.items() if k >= 500),
            "duplicates": sum(t.duplicates for t in tabs), "gaps": sum(t.gaps for t in tabs),
            "resyncs": sum(t.resyncs for t in tabs), "backoff": backoff.kind,
        }
        return numbers
    finally:
        await close_tabs(tabs)
        target.stop()


async def graceful_restart(root: Path | None = None, **options: Any) -> dict[str, Any]:
    """Item 10: SIGTERM while publishing; every client sees 1001/1012, reconnects, loses nothing stored."""
    n = await restart_run(root, name="restart", **options)
    clean = n["close_codes"].get(1001, 0) + n["close_codes"].get(1012, 0)
    return figure("10", f"{n['clients']} clients, SIGTERM while publishing: {clean}/{n['clients']} saw 1001/1012 "
                  f"(codes {n['close_codes']}); {n['reconnected']}/{n['clients']} reconnected (p95 "
                  f"{n['reconnect_p95_s']} s, max {n['reconnect_max_s']} s); lost {n['lost_stored']} of "
                  f"{n['stored_after_connect']} stored, {n['lost_acked']} of {n['acked']} acknowledged", n)


async def crash(root: Path | None = None, **options: Any) -> dict[str, Any]:
    """Item 11: SIGKILL while publishing; every publish answered 201 is delivered after restart + resume."""
    options.setdefault("batch", 5)
    n = await restart_run(root, name="crash", sig=signal.SIGKILL, **options)
    return figure("11", f"SIGKILL at {options.get('rate', 100):g} notifications/s to {n['clients']} clients: "
                  f"{n['acked']} acknowledged, lost {n['lost_acked']}; stored {n['stored_after_connect']}, lost "
                  f"{n['lost_stored']}; {n['reconnected']}/{n['clients']} resumed (max {n['reconnect_max_s']} s); "
                  f"publishes {n['publish_statuses']}", n)


async def storm(root: Path | None = None, *, kinds: tuple[str, ...] = ("jitter", "fixed"), base: float = 1.0,
                cap: float = 16.0, **options: Any) -> dict[str, Any]:
    """Item 12: a restart under many clients, reconnecting with full jitter, and with a fixed delay."""
    results = {}
    for kind in kinds:
        backoff = Backoff(kind, base, cap)
        n = await restart_run(root, name=f"storm-{kind}", backoff=backoff, **options)
        share15 = n["within_15s"] / n["clients"]
        share30 = n["within_30s"] / n["clients"]
        results[kind] = n
        figure("12", f"{n['clients']} clients, restart at {options.get('rate', 50):g}/s, {kind} backoff "
               f"(base {base:g} s, cap {cap:g} s): {share15:.1%} reconnected ≤ 15 s, {share30:.1%} ≤ 30 s "
               f"(p50 {n['reconnect_p50_s']} s, p95 {n['reconnect_p95_s']} s, max {n['reconnect_max_s']} s); "
               f"lost {n['lost_stored']}; handshake 5xx {n['handshake_5xx']} (statuses {n['handshake_statuses']})", n)
    return results


async def frozen_client(root: Path | None = None, *, ping_interval: float = 2, ping_timeout: float = 2
                        ) -> dict[str, Any]:
    """Item 11: a client process stopped with SIGSTOP is dropped within ping interval + timeout."""
    target = Target(workdir(root, "frozen"), env={"NOTIFY_WS_PING_INTERVAL_S": ping_interval,
                                                  "NOTIFY_WS_PING_TIMEOUT_S": ping_timeout}).start()
    script = ("import asyncio, sys\nfrom websockets.asyncio.client import connect\n"
              "async def main():\n"
              "    async with connect(sys.argv[1], additional_headers={'Authorization': 'Bearer ' + sys.argv[2]},"
              " ping_interval=None) as ws:\n"
              "        await ws.recv()\n        print('connected', flush=True)\n"
              "        async for _ in ws:\n            pass\n"
              "asyncio.run(main())\n")
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", script, target.ws_url("frozen"),
                                                 target.token("frozen"), stdout=subprocess.PIPE,
                                                 stderr=subprocess.DEVNULL)
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line.strip() == b"connected", line
        await target.wait_connections(lambda n: n == 1, 10)
        await asyncio.sleep(ping_interval * 1.5)  # a few pings answered while it runs
        still = (await target.stats())["total_connections"]
        child.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        left = await target.wait_connections(lambda n: n == 0, (ping_interval + ping_timeout) * 3 + 10)
        dropped_s = time.monotonic() - stopped
        numbers = {"ping_interval_s": ping_interval, "ping_timeout_s": ping_timeout, "open_while_running": still,
                   "open_after": left, "dropped_after_s": round(dropped_s, 2),
                   "bound_s": ping_interval + ping_timeout}
        return figure("11", f"frozen client (SIGSTOP) dropped after {dropped_s:.2f} s (bound: ping interval "
                      f"{ping_interval:g} + timeout {ping_timeout:g} = {ping_interval + ping_timeout:g} s)", numbers)
    finally:
        child.kill()  # SIGKILL ends a stopped process too
        await child.wait()
        target.stop()


# -- item 13: churn --------------------------------------------------------------------------------------
async def churn(root: Path | None = None, *, cycles: int = 50000, concurrency: int = 50, warmup: int = 2000,
                users: int = 500) -> dict[str, Any]:
    """Connect/disconnect cycles, every other one without a close frame; afterwards fds, hub size and
    stats are back to baseline and RSS grew < 10 MB after warm-up."""
    target = Target(workdir(root, "churn")).start()
    try:
        tokens = [target.token(f"c{i}") for i in range(users)]
        outcomes: Counter = Counter()

        async def cycle(i: int) -> None:
            user = i % users
            try:
                reader, writer, status, _first = await raw_handshake(target, f"c{user}", tokens[user])
                outcomes[status] += 1
                if i % 2:  # abrupt: the TCP socket goes, no close frame
                    writer.transport.abort()
                    outcomes["abrupt"] += 1
                    return
                writer.write(close_frame(1000))
                while True:  # wait for the server's close frame
                    opcode, _ = await asyncio.wait_for(read_frame(reader), 10)
                    if opcode == 8:
                        break
                writer.close()
                outcomes["clean"] += 1
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                outcomes[type(exc).__name__] += 1

        async def run(first: int, count: int) -> float:
            gate = asyncio.Semaphore(concurrency)

            async def one(i: int) -> None:
                async with gate:
                    await cycle(i)

            started = time.monotonic()
            for chunk in range(first, first + count, 5000):
                await asyncio.gather(*(one(i) for i in range(chunk, min(first + count, chunk + 5000))))
            return time.monotonic() - started

        async def settle(fds: int | None = None) -> dict[str, Any]:
            await target.wait_connections(lambda n: n == 0, 60)
            await asyncio.sleep(2)
            deadline = time.monotonic() + 15  # sockets still closing on a busy machine
            while fds is not None and target.fds() > fds and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
            stats = await target.stats()
            return {"rss_kib": target.rss_kib(), "fds": target.fds(), "threads": target.threads(),
                    "total_connections": stats["total_connections"], "connected_users": stats["connected_users"],
                    "tasks": stats["asyncio_tasks"]}

        cold = await settle()
        await run(0, warmup)
        base = await settle()
        log(f"churn: after {warmup} warm-up cycles {base}; running {cycles}")
        took = await run(warmup, cycles)
        after = await settle(base["fds"])
        stats = await target.stats()
        growth_mb = (after["rss_kib"] - base["rss_kib"]) / 1024
        numbers = {"cycles": cycles, "warmup": warmup, "seconds": round(took, 1), "cycles_per_s": round(cycles / took),
                   "cold": cold, "baseline": base, "after": after, "rss_growth_mb": round(growth_mb, 2),
                   "outcomes": dict(outcomes), "connections_opened": stats["connections_opened"]}
        return figure("13", f"{cycles} cycles ({outcomes['abrupt']} abrupt) in {took:.0f} s: fds {base['fds']} → "
                      f"{after['fds']}, hub {base['total_connections']} → {after['total_connections']} connections / "
                      f"{after['connected_users']} users, threads {base['threads']} → {after['threads']}, RSS "
                      f"{base['rss_kib'] / 1024:.1f} → {after['rss_kib'] / 1024:.1f} MiB ({growth_mb:+.1f} MB, "
                      f"criterion < 10 MB); asyncio tasks {base['tasks']} → {after['tasks']}", numbers)
    finally:
        target.stop()


# -- item 4: token expiry on live connections ------------------------------------------------------------
async def expiry(root: Path | None = None, *, clients: int = 200, ttl: float = 75, warning: float | None = None,
                 leeway: float | None = None, refresh_share: float = 0.5, rate: float = 20) -> dict[str, Any]:
    """Connections whose tokens expire at once, under publishing: those that refresh stay; the others get
    ``token_expiring`` and are closed 4401 within 30 s after ``exp``."""
    env = {}
    if warning is not None:
        env["NOTIFY_TOKEN_EXPIRY_WARNING_S"] = warning
    if leeway is not None:
        env["NOTIFY_JWT_LEEWAY_S"] = leeway
    target = Target(workdir(root, "expiry"), env=env).start()
    settings = target.settings.model_copy(update={"token_expiry_warning_s": warning or 60.0})
    try:
        users = [f"e{i}" for i in range(clients)]
        expires_at = time.time() + ttl
        tabs = [Tab(target, u, token=target.token(u, ttl=ttl)) for u in users]
        await open_tabs(tabs)
        refreshers = tabs[: int(clients * refresh_share)]
        for tab in refreshers:
            assert tab.ws is not None
            await tab.ws.send(json.dumps({"type": "refresh_token", "token": target.token(tab.user, ttl=3600)}))
        publisher = Publisher(target)
        pick = round_robin(users, 1)
        grace = leeway if leeway is not None else settings.jwt_leeway_s
        expired = tabs[len(refreshers):]
        stop = asyncio.Event()

        async def watch() -> None:
            # Publish until every expiring connection is closed and the refreshed ones have lived a few
            # seconds past the first token's exp plus leeway; at most 30 s after that.
            while time.time() < expires_at + grace + 30:
                if time.time() > expires_at + grace + 3 and all(t.closed_at for t in expired):
                    break
                await asyncio.sleep(0.2)
            stop.set()

        await asyncio.gather(watch(), publisher.run(lambda i: [(pick(i), {})], rate, ttl + grace + 40, stop))
        await asyncio.sleep(1)
        close_after = [t.closed_at[0] - expires_at for t in expired if t.closed_at]
        after_warning = [t.closed_at[0] - t.token_expiring_at for t in expired if t.closed_at and t.token_expiring_at]
        codes = Counter(t.close_codes[0] for t in expired if t.close_codes)
        still_open = sum(t.connected.is_set() for t in refreshers)
        warned = sum(t.token_expiring_at is not None for t in expired)
        numbers = {"clients": clients, "ttl_s": ttl, "refreshed": len(refreshers), "refreshed_still_open": still_open,
                   "expired": len(expired), "warned": warned, "close_codes": dict(codes),
                   "close_after_exp_max_s": round(max(close_after), 2) if close_after else None,
                   "close_after_exp_min_s": round(min(close_after), 2) if close_after else None,
                   "close_after_warning_max_s": round(max(after_warning), 2) if after_warning else None,
                   "lost_acked_refreshed": publisher.lost(refreshers)}
        return figure("4", f"{len(expired)} expiring connections: {warned} warned, codes {dict(codes)}, closed "
                      f"{numbers['close_after_exp_min_s']}–{numbers['close_after_exp_max_s']} s after exp "
                      f"(≤ {numbers['close_after_warning_max_s']} s after token_expiring; criterion ≤ 30 s after "
                      f"exp); {still_open}/{len(refreshers)} refreshed ones still open, lost "
                      f"{numbers['lost_acked_refreshed']}", numbers)
    finally:
        await close_tabs(tabs)
        target.stop()


# -- command line ------------------------------------------------------------------------------------
def pick_default(value: Any, default: Any) -> Any:
    return default if value is None else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("scenario", choices=["flood", "slow", "slow-memory", "restart", "crash", "frozen", "storm",
                                             "churn", "expiry", "all", "handshake-burst"])
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)  # handshake-burst: the flood's child
    parser.add_argument("--secret", help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, help="connections (default: the issue's size per scenario)")
    parser.add_argument("--users", type=int, default=100, help="flood: users receiving during the burst")
    parser.add_argument("--seconds", type=float, help="length of each measured phase")
    parser.add_argument("--rate", type=float, help="notifications (or publish ticks) per second")
    parser.add_argument("--burst-rate", type=float, default=2000, help="flood: handshakes per second")
    parser.add_argument("--handshake-limit", type=float, default=50,
                        help="flood: the server's NOTIFY_HANDSHAKE_RATE_PER_IP (0: no limit, the unprotected case)")
    parser.add_argument("--handshake-burst", type=int, default=20,
                        help="flood: the server's NOTIFY_HANDSHAKE_BURST_PER_IP")
    parser.add_argument("--fanout", type=int, default=50, help="slow: normal users per notification")
    parser.add_argument("--slow", type=int, default=1, help="slow: non-reading clients")
    parser.add_argument("--slow-pad", type=int, default=5500, help="slow: bytes of each slow-only notification")
    parser.add_argument("--prefill", type=int, default=0, help="slow: notifications to the slow ones first")
    parser.add_argument("--target", choices=["ours", "naive", "both"], default="both", help="slow: which server")
    parser.add_argument("--nonreaders", type=int, default=200)
    parser.add_argument("--queue", type=int, help="NOTIFY_SEND_QUEUE_SIZE (slow: 1024, slow-memory: 64)")
    parser.add_argument("--pad", type=int, default=5500, help="slow-memory: message bytes")
    parser.add_argument("--backoff", choices=["jitter", "fixed", "both"], default="both", help="storm")
    parser.add_argument("--before", type=float, default=5, help="restart/crash/storm: seconds before the signal")
    parser.add_argument("--after", type=float, default=10, help="restart/crash/storm: seconds of publishing after")
    parser.add_argument("--ping-interval", type=float, default=2)
    parser.add_argument("--ping-timeout", type=float, default=2)
    parser.add_argument("--cycles", type=int, default=50000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--ttl", type=float, default=75, help="expiry: token lifetime in seconds")
    parser.add_argument("--workdir", type=Path, help="where data folders and server logs go (default: a temp dir)")
    args = parser.parse_args()
    raise_fd_limit()
    if args.scenario == "handshake-burst":
        import uvloop  # the burst is the client's speed limit: a faster event loop reaches 2,000/s

        uvloop.run(burst_main(args.port, args.secret, args.burst_rate, pick_default(args.seconds, 10)))
        return
    root = args.workdir
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    runs: dict[str, Callable[[], Awaitable[Any]]] = {
        "flood": lambda: flood(root, users=args.users, seconds=pick(args.seconds, 20), rate=pick(args.rate, 100),
                               burst_rate=args.burst_rate, handshake_limit=args.handshake_limit,
                               handshake_limit_burst=args.handshake_burst),
        "slow": lambda: _slow_both(root, args, pick),
        "slow-memory": lambda: slow_memory(root, nonreaders=args.nonreaders, queue=pick(args.queue, 64),
                                           pad=args.pad),
        "restart": lambda: graceful_restart(root, clients=pick(args.clients, 1000), rate=pick(args.rate, 100),
                                            before_s=args.before, after_s=args.after),
        "crash": lambda: crash(root, clients=pick(args.clients, 200), rate=pick(args.rate, 500),
                               before_s=args.before, after_s=args.after),
        "frozen": lambda: frozen_client(root, ping_interval=args.ping_interval, ping_timeout=args.ping_timeout),
        "storm": lambda: storm(root, kinds=("jitter", "fixed") if args.backoff == "both" else (args.backoff,),
                               clients=pick(args.clients, 5000), rate=pick(args.rate, 50), before_s=args.before,
                               after_s=args.after),
        "churn": lambda: churn(root, cycles=args.cycles, concurrency=args.concurrency, warmup=args.warmup),
        "expiry": lambda: expiry(root, clients=pick(args.clients, 200), ttl=args.ttl),
    }
    chosen = [r for r in runs if r != "handshake-burst"] if args.scenario == "all" else [args.scenario]
    try:
        import uvloop  # the load generator is the first thing to run out of CPU here: the faster loop

        run: Callable[[Awaitable[Any]], Any] = uvloop.run
    except ImportError:
        run = asyncio.run
    for name in chosen:
        run(runs[name]())


async def _slow_both(root: Path | None, args: argparse.Namespace, pick: Callable[[Any, Any], Any]) -> None:
    for naive in {"ours": (False,), "naive": (True,), "both": (False, True)}[args.target]:
        await slow_consumer(root, naive=naive, clients=pick(args.clients, 500), rate=pick(args.rate, 100),
                            seconds=pick(args.seconds, 60), fanout=args.fanout, slow=args.slow,
                            slow_pad=args.slow_pad, queue=pick(args.queue, 1024), prefill=args.prefill)


if __name__ == "__main__":
    main()
