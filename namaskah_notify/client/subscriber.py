"""``Subscriber``: a user's notifications as an async iterator that survives reconnects, in ``seq`` order,
each once, or an exception that says what was lost.

Usage::

    async with Subscriber("http://127.0.0.1:8000", token) as sub:   # connected on entry
        async for notification in sub:                                # dicts, as the server sends them
            print(notification["seq"], notification["title"])

``async for event in sub.events()`` yields everything instead, as the typed events of ``events``:
``NotificationReceived``, ``Read``, ``Deleted``, ``PreferencesChanged``, ``Connected``, ``Disconnected``
and the rest. Use one of the two iterators, not both.

What it does for the caller:

- authenticates with ``Authorization: Bearer`` (``auth="header"``), a first ``auth`` frame (``"frame"``)
  or ``?token=`` (``"query"``); ``token`` may be a function, called for each connection and to answer
  ``token_expiring`` with ``refresh_token``;
- after a drop, reconnects with full-jitter backoff and resumes with ``since_seq``; the server replays
  what was missed. Close codes that retrying cannot fix raise (4401 :class:`Unauthorized`, 4403
  :class:`Forbidden`, 1009 :class:`TooLarge`); 1000 ends the iteration; 1008 and 4429 wait longer first;
- when the server cannot replay (``resync_required``) or a live ``seq`` is skipped, fetches the missed
  ones over HTTP (``catch_up=True``; a ``seq`` the server no longer stores, deleted or expired, is passed
  over) or raises :class:`SequenceError` / :class:`ResyncRequired` (``catch_up=False``): a loss is never
  silent;
- acks each live notification (the server's delivery-latency figures), paced under the server's frame
  rate limit; keeps the connection alive with protocol pings;
- stops with ``aclose()`` or at the end of ``async with``; ``aclose()`` from another task ends an
  iteration that is waiting.

Entering ``async with`` opens the first connection, so nothing published after entry is missed even
without ``since_seq``; iterating without it connects on the first step (and reports those attempts as
``Disconnected`` events as they happen). Imports ``errors``, ``events``, ``stream``, ``_retry`` and ``http``;
``websockets``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any, Literal
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException

from ._retry import RETRY_STATUSES, Backoff, parse_retry_after
from .errors import BadRequest, ConnectionFailed, ResyncRequired, SequenceError, from_answer, from_close
from .events import Connected, Disconnected, Event, NotificationReceived, Resynced, Resyncing, TokenExpiring
from .http import AsyncNotifyClient
from .http import base_url as http_base
from .stream import Resync, Stream

Token = str | Callable[[], str] | None
SLOW_DOWN = frozenset({1008, 4429})  # policy closes: the contract asks for no retry at once


class _Pace:
    """Client frames well under the server's per-connection limit (20/s, burst 40), which closes 1008."""

    def __init__(self, rate: float = 10.0, burst: float = 20.0) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def wait_s(self) -> float:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate


class Subscriber:
    """One user's notifications from ``base_url`` (``http(s)://host:port``), from ``since_seq`` on (None:
    from the moment of connecting). ``max_retries`` failed attempts in a row raise
    :class:`ConnectionFailed` (None: retry for ever; 0: never reconnect); ``params`` adds query parameters;
    ``connect_options`` go to ``websockets``' ``connect`` (``max_queue``, ``ssl``, ``local_addr``, ...)."""

    def __init__(self, base_url: str, token: Token, since_seq: int | None = None, *,
                 auth: Literal["header", "frame", "query"] = "header", catch_up: bool = True, ack: bool = True,
                 backoff: Backoff | None = None, max_retries: int | None = 10, ping_interval: float | None = 20.0,
                 open_timeout: float = 10.0, params: Mapping[str, str] | None = None,
                 user_agent: str = "namaskah-notify-client", **connect_options: Any) -> None:
        self.base_url = http_base(base_url)
        scheme, rest = self.base_url.split("://", 1) if "://" in self.base_url else ("http", self.base_url)
        self.ws_url = f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws/notifications"
        self._token = token
        self._auth = auth
        self._catch_up = catch_up
        self._ack = ack
        self._backoff = backoff or Backoff(0.5, 30.0)
        self._max_retries = max_retries
        self._ping_interval = ping_interval
        self._open_timeout = open_timeout
        self._params = dict(params or {})
        self._user_agent = user_agent
        self._connect_options = connect_options
        self._stream = Stream(since_seq)
        self._ws: ClientConnection | None = None
        self._pending: deque[Event] = deque()
        self._failures = 0
        self._closing = False
        self._wake = asyncio.Event()
        self._iterating = False
        self._pace = _Pace()

    @property
    def cursor(self) -> int | None:
        """The highest ``seq`` handed on: where a new Subscriber would resume (``since_seq``)."""
        return self._stream.cursor

    @property
    def duplicates(self) -> int:
        """Notifications the server sent again and this subscriber dropped (a replay overlapping a catch-up)."""
        return self._stream.duplicates

    @property
    def connected(self) -> bool:
        return self._ws is not None

    # -- lifetime ----------------------------------------------------------------------------------------
    async def __aenter__(self) -> Subscriber:
        while self._ws is None:
            if self._closing:
                raise ConnectionFailed(f"{self.ws_url}: closed before it connected")
            try:
                await self._open()
            except Exception as exc:
                delay = self._failed(exc)
                if delay is None:
                    raise ConnectionFailed(f"{self.ws_url}: the server closed the connection (1000)") from None
                await self._sleep(delay)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop: close the connection and end any iteration (also one waiting in another task)."""
        self._closing = True
        self._wake.set()
        await self._drop()

    # -- iteration ---------------------------------------------------------------------------------------
    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._notifications()

    async def _notifications(self) -> AsyncIterator[dict[str, Any]]:
        async with contextlib.aclosing(self.events()) as events:
            async for event in events:
                if isinstance(event, NotificationReceived):
                    yield event.data

    async def events(self) -> AsyncGenerator[Event, None]:
        """Every event, in the order the server sent them; ends on close 1000 or ``aclose()``."""
        if self._iterating:
            raise RuntimeError("this Subscriber is being iterated already")
        self._iterating = True
        try:
            while True:
                while self._pending:
                    yield self._pending.popleft()
                if self._closing:
                    return
                if self._ws is None:
                    try:
                        await self._open()
                        continue
                    except Exception as exc:
                        delay = self._failed(exc)
                else:
                    try:
                        text = await self._ws.recv()
                    except ConnectionClosed as exc:
                        await self._drop()
                        if self._closing:
                            return
                        delay = self._failed(exc)
                    else:
                        if isinstance(text, str):
                            async for event in self._handle(text):
                                yield event
                        continue
                if delay is None:
                    return
                while self._pending:
                    yield self._pending.popleft()  # the Disconnected event, before the wait
                await self._sleep(delay)
        finally:
            self._iterating = False
            await self._drop()

    async def _handle(self, text: str) -> AsyncIterator[Event]:
        event: Event | Resync | None
        try:
            event = self._stream.feed(text)
        except SequenceError:
            if not self._catch_up:
                raise
            async for filled in self._fill():
                yield filled
            event = self._stream.feed(text, stored=True)  # what the store does not have was deleted or expired
        if isinstance(event, Resync):
            async for caught_up in self._resync(event.last_seq):
                yield caught_up
            return
        if event is None:
            return
        if isinstance(event, NotificationReceived) and self._ack and not event.replayed:
            await self._send({"type": "ack", "seq": event.seq}, drop=True)  # a latency sample: skipped under a flood
        elif isinstance(event, TokenExpiring) and callable(self._token):
            await self.refresh_token()
        yield event

    async def _resync(self, last_seq: int) -> AsyncIterator[Event]:
        cursor = self._stream.cursor or 0
        if not self._catch_up or last_seq < cursor:
            why = "catching up over HTTP is off" if self._catch_up is False else \
                f"the server's last seq {last_seq} is behind this client's {cursor}"
            raise ResyncRequired(f"the server could not replay after seq {cursor}: {why}",
                                 expected=cursor + 1, got=last_seq)
        yield Resyncing(last_seq)
        fetched = 0
        async for event in self._fill():
            fetched += 1
            yield event
        # Listed to the end: every seq up to last_seq that is not there was deleted or expired.
        now = self._stream.cursor = max(self._stream.cursor or 0, last_seq)
        yield Resynced(fetched, now)

    async def _fill(self) -> AsyncIterator[NotificationReceived]:
        """Everything after the cursor, oldest first, over HTTP (``GET /api/notifications?since_seq=``)."""
        async with AsyncNotifyClient(self.base_url, self._current_token()) as http:
            while True:
                page = await http.list(limit=200, since_seq=self._stream.cursor or 0)
                for item in page["items"]:
                    event = self._stream.accept(item, replayed=True, stored=True)
                    if event is not None:
                        yield event
                if not page.get("has_more") or not page["items"]:
                    return

    # -- frames to the server ----------------------------------------------------------------------------
    async def mark_read(self, notification_id: str) -> None:
        """Mark one read over the socket; every tab (this one too) then gets a ``Read`` event."""
        await self._send({"type": "mark_read", "notification_id": notification_id})

    async def mark_all_read(self) -> None:
        await self._send({"type": "mark_all_read"})

    async def refresh_token(self, token: str | None = None) -> None:
        """Extend this connection's life with a fresh token (default: the token function's next one)."""
        fresh = token or self._current_token()
        if fresh:
            await self._send({"type": "refresh_token", "token": fresh})

    async def _send(self, frame: dict[str, Any], drop: bool = False) -> None:
        if self._ws is None:
            if drop:
                return
            raise ConnectionFailed("not connected")
        wait = self._pace.wait_s()
        if wait and drop:
            return
        while wait:
            await asyncio.sleep(wait)
            wait = self._pace.wait_s()
        self._pace.tokens -= 1
        with contextlib.suppress(ConnectionClosed):  # the reader sees the close and reconnects
            await self._ws.send(json.dumps(frame))

    # -- connections -------------------------------------------------------------------------------------
    def _current_token(self) -> str | None:
        return self._token() if callable(self._token) else self._token

    async def _open(self) -> None:
        """One connection, up to its ``connected`` frame (queued as an event)."""
        since = self._stream.opening()
        token = self._current_token()
        query = dict(self._params)
        if since is not None:
            query["since_seq"] = str(since)
        if token and self._auth == "query":
            query["token"] = token
        headers = {"Authorization": f"Bearer {token}"} if token and self._auth == "header" else None
        url = self.ws_url + ("?" + urlencode(query) if query else "")
        # No compression offer: the service never compresses (its frames are small and many).
        ws = await connect(url, additional_headers=headers, open_timeout=self._open_timeout,
                           ping_interval=self._ping_interval, ping_timeout=self._ping_interval,
                           user_agent_header=self._user_agent, compression=None, **self._connect_options)
        try:
            if token and self._auth == "frame":
                await ws.send(json.dumps({"type": "auth", "token": token}))
            while True:
                text = await asyncio.wait_for(ws.recv(), self._open_timeout)
                event = self._stream.feed(text) if isinstance(text, str) else None
                if isinstance(event, Connected):
                    break
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 2)
            raise
        self._ws = ws
        self._failures = 0
        self._pending.append(event)
        if self._closing:
            await self._drop()

    def _failed(self, exc: Exception) -> float | None:
        """After a failed attempt or a drop: raise when retrying cannot help, None when the server closed
        normally, else queue a ``Disconnected`` event and return the delay before the next attempt."""
        code: int | None = None
        status: int | None = None
        asked: float | None = None
        if isinstance(exc, ConnectionClosed):
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            reason = exc.rcvd.reason if exc.rcvd is not None else "connection lost"
            if code == 1000:
                return None
            final = from_close(code, reason)
            if final is not None:
                raise final from None
            if code in SLOW_DOWN:
                self._failures = max(self._failures, 3)
            reason = f"closed {code} {reason}".strip()
        elif isinstance(exc, InvalidStatus):
            status = exc.response.status_code
            if status not in RETRY_STATUSES and status < 500:
                try:
                    body = json.loads(exc.response.body or b"")
                except ValueError:
                    body = None
                raise from_answer(status, body) from None
            asked = parse_retry_after(exc.response.headers.get("Retry-After"))
            reason = f"HTTP {status}"
        elif isinstance(exc, InvalidURI):
            raise BadRequest(f"not a WebSocket URL: {self.ws_url}: {exc}") from None
        elif isinstance(exc, OSError | TimeoutError | WebSocketException):
            reason = _describe(exc)
        else:
            raise exc
        if self._max_retries is not None and self._failures >= self._max_retries:
            what = "cannot reach" if code is None else "lost the connection to"
            raise ConnectionFailed(f"{what} {self.ws_url} after {self._failures + 1} attempts: {reason}",
                                   status=status, close_code=code)
        delay = asked if asked is not None else self._backoff.delay(self._failures)
        self._failures += 1
        self._pending.append(Disconnected(code, reason, delay, self._failures, status))
        return delay

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    async def _drop(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
