"""The soak scenarios' clients: :class:`Tab`, a user's tab on the Python client's ``Subscriber`` that keeps
the books a scenario reads (every ``seq``, latencies, close codes, reconnect times), and
:class:`Publisher`, publishing on a fixed schedule through ``AsyncNotifyClient``. Imports ``target``;
``namaskah_notify.client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from namaskah_notify.client import (
    NO_RETRY,
    AsyncNotifyClient,
    Backoff,
    Connected,
    ConnectionFailed,
    Disconnected,
    NotificationReceived,
    NotifyClientError,
    Resyncing,
    SequenceError,
    Subscriber,
    TokenExpiring,
)

from .target import Target


class FixedDelay(Backoff):
    """The same delay before every reconnect: what full jitter is compared with in the storm scenario."""

    def delay(self, attempt: int) -> float:
        return self.base


def backoff(kind: str, base: float, cap: float) -> Backoff:
    """``jitter`` (full jitter, as every client of ours does) or ``fixed``."""
    return FixedDelay(base, cap) if kind == "fixed" else Backoff(base, cap)


@dataclass
class Tab:
    """One WebSocket of one user, read by its own task; keeps every seq it got. With a ``backoff`` it
    reconnects and resumes with ``since_seq``, as the client does; without one a drop ends it."""

    target: Target
    user: str
    backoff: Backoff | None = None
    token: str | None = None
    base_seq: int | None = None  # last_seq of the first connected frame
    last_seq: int = 0
    received: set[int] = field(default_factory=set)
    gaps: int = 0  # a gap the client could not fill ends the tab, so this is 0 or 1
    resyncs: int = 0
    latencies: list[float] = field(default_factory=list)
    close_codes: list[int] = field(default_factory=list)
    closed_at: list[float] = field(default_factory=list)
    opened_at: list[float] = field(default_factory=list)  # time.time() of every connected frame
    handshake_status: Counter = field(default_factory=Counter)
    connect_errors: int = 0
    token_expiring_at: float | None = None
    subscriber: Subscriber | None = None
    task: asyncio.Task[None] | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False

    @property
    def duplicates(self) -> int:
        """Notifications the server sent this tab again (the client drops them and counts them)."""
        return self.subscriber.duplicates if self.subscriber is not None else 0

    def start(self) -> None:
        # No acks (the scenarios' figures predate them and the naive control ignores them), no client pings
        # (the server's own pings are what some scenarios measure), an unbounded receive queue (a tab that
        # falls behind must show as latency, not push back on the server).
        self.subscriber = Subscriber(
            self.target.url, self.token or self.target.token(self.user), backoff=self.backoff,
            max_retries=None if self.backoff is not None else 0, ack=False, ping_interval=None, open_timeout=20,
            params=self.target.params(self.user), user_agent="soak", max_queue=None, close_timeout=5)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self.subscriber is not None
        try:
            async for event in self.subscriber.events():
                now = time.time()
                if isinstance(event, NotificationReceived):
                    self._got(event.data, now)
                elif isinstance(event, Connected):
                    if self.base_seq is None:
                        self.base_seq = self.last_seq = event.last_seq
                    self.opened_at.append(now)
                    self.connected.set()
                elif isinstance(event, Disconnected):
                    self._lost(event.code, event.status, now)
                elif isinstance(event, Resyncing):
                    self.resyncs += 1
                elif isinstance(event, TokenExpiring):
                    self.token_expiring_at = now
        except SequenceError:
            self.gaps += 1
        except NotifyClientError as exc:  # a final close (4401, ...) or the end of retrying
            self._lost(exc.close_code, exc.status or None, time.time())
        finally:
            self.connected.clear()

    def _lost(self, code: int | None, status: int | None, now: float) -> None:
        self.connected.clear()
        if self.stopping:
            return
        if code is not None:
            self.close_codes.append(code)
            self.closed_at.append(now)
        elif status is not None:
            self.handshake_status[status] += 1
        else:
            self.connect_errors += 1

    def _got(self, data: dict[str, Any], now: float) -> None:
        seq = int(data["seq"])
        self.received.add(seq)
        self.last_seq = max(self.last_seq, seq)
        meta = data.get("meta") or {}
        if "sent_at" in meta:
            self.latencies.append((now - float(meta["sent_at"])) * 1000)

    def missing(self, upto: int) -> int:
        """Stored seqs after the first connect that this tab never got."""
        base = self.base_seq or 0
        return sum(1 for s in range(base + 1, upto + 1) if s not in self.received)

    async def close(self) -> None:
        self.stopping = True
        if self.subscriber is not None:
            await self.subscriber.aclose()
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


@dataclass
class Publisher:
    """Publishes (``publish_many``) on a fixed schedule with bounded concurrency (like an app's HTTP pool);
    remembers every seq answered 201, per user, and counts every answer by status (or error)."""

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
        # No retries: the run offers a fixed load and counts every answer; a retry would add load and hide one.
        async with AsyncNotifyClient(self.target.url, self.target.token("soak_admin", admin=True),
                                     timeout=self.timeout, retry=NO_RETRY) as api:
            async def post(users: list[str], fields: dict[str, Any], due: float) -> None:
                try:
                    async with gate:
                        self.late_s = max(self.late_s, time.time() - due)
                        extra = dict(fields)
                        meta = {**extra.pop("meta", {}), "sent_at": due}
                        message = extra.pop("message", "")
                        stored = await api.publish_many(users, "soak", message, type="soak", meta=meta, **extra)
                    self.statuses[201] += 1
                    for item in stored:
                        self.acked.setdefault(item["user_id"], set()).add(int(item["seq"]))
                except ConnectionFailed as exc:
                    self.statuses[type(exc.__cause__).__name__] += 1
                except NotifyClientError as exc:
                    self.statuses[exc.status] += 1
                except RuntimeError as exc:  # still queued when the run ended
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

