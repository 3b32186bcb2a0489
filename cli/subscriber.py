"""The terminal subscriber's network side: one WebSocket session after another, resuming with ``since_seq``.

:class:`Subscriber` connects to ``/ws/notifications`` with ``Authorization: Bearer``, hands each new
notification and each connection status to callbacks (rendering is the caller's), acknowledges what was
shown, sends the text ``ping`` every 30 s as the browser does, and after a drop reconnects with
exponential backoff and full jitter, resuming from the last ``seq`` it saw so nothing is missed. It stops
with :class:`AuthRejected` (exit 2) on close 4401 and :class:`Unreachable` (exit 1) when the retries run
out. All use of ``websockets`` for the CLI lives here. Imports ``common``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from .common import CliError, http_base

# Close codes after which retrying cannot help (contract section 2.4).
_FINAL = {1000: "the server closed the connection", 1009: "a frame was too large for the server",
          4403: "the server refused this client's Origin"}
_SLOW_DOWN = {1008, 4429}  # policy closes: do not retry at once


class AuthRejected(CliError):
    """Close 4401 (or HTTP 401/403 at the handshake): a new token is needed."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"token expired / invalid: {reason or 'rejected by the server'} "
                         "(mint a new one with `notify token USER`)", exit_code=2)


class Unreachable(CliError):
    """Every retry failed."""


@dataclass(frozen=True, slots=True)
class Retry:
    """Reconnect policy: ``retries`` failed attempts in a row before giving up (negative: never)."""

    retries: int = 10
    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, attempt: int, rand: Callable[[float, float], float] = random.uniform) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2**attempt)] so reconnecting clients spread out."""
        return rand(0.0, min(self.cap_s, self.base_s * 2 ** min(attempt, 30)))


class Outbox:
    """Client frames paced well under the server's per-connection rate limit (20/s, burst 40)."""

    def __init__(self, ws: ClientConnection, rate: float = 10.0, burst: int = 20) -> None:
        self._ws = ws
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    async def send_or_drop(self, frame: dict[str, Any]) -> None:
        """For acks: latency samples, so under a flood some are skipped rather than risk a 1008."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            await self._ws.send(json.dumps(frame))

    async def send(self, frame: dict[str, Any]) -> None:
        """For frames that must go out (mark_read): wait for room."""
        self._refill()
        while self._tokens < 1:
            await asyncio.sleep((1 - self._tokens) / self._rate)
            self._refill()
        self._tokens -= 1
        await self._ws.send(json.dumps(frame))


OnNotification = Callable[[dict[str, Any], bool], None]  # (data, replayed)
OnStatus = Callable[[str, str], None]  # (kind, text)


class Subscriber:
    """Listen until ``count`` notifications were shown (``None``: forever)."""

    def __init__(
        self,
        url: str,
        token: Callable[[], str],
        *,
        on_notification: OnNotification,
        on_status: OnStatus,
        since_seq: int | None = None,
        count: int | None = None,
        mark_read: bool = False,
        refreshable: bool = False,
        retry: Retry = Retry(),
        ping_interval_s: float = 30.0,
        open_timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.base = http_base(url)
        self._token = token
        self._on_notification = on_notification
        self._on_status = on_status
        self.cursor = since_seq  # highest seq shown; None until the server tells us where "now" is
        self.remaining = count
        self._mark_read = mark_read
        self._refreshable = refreshable
        self._retry = retry
        self._ping_interval_s = ping_interval_s
        self._open_timeout_s = open_timeout_s
        self._current_token = ""
        self._connected_once = False

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self._session()
                return
            except ConnectionClosed as exc:
                code, reason = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "")
                if code == 4401:
                    raise AuthRejected(reason) from None
                if code in _FINAL:
                    if code == 1000:
                        self._on_status("closed", f"{_FINAL[code]} (1000)")
                        return
                    raise CliError(f"{_FINAL[code]} ({code} {reason})".strip()) from None
                problem = f"closed {code} {reason}".strip()
                if self._connected_once:
                    failures = 0
                if code in _SLOW_DOWN:
                    failures = max(failures, 3)
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    raise AuthRejected(f"HTTP {status} at the handshake") from None
                if 400 <= status < 500:
                    raise CliError(f"{self.url} answered HTTP {status}: is this a namaskah-notify server?") from None
                problem = f"HTTP {status}"
            except InvalidURI as exc:
                raise CliError(f"bad URL {self.url}: {exc}") from None
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code in (401, 403):
                    raise AuthRejected(f"HTTP {exc.response.status_code} on {exc.request.url.path}") from None
                problem = f"HTTP {exc.response.status_code} on {exc.request.url.path}"
            except (OSError, TimeoutError, InvalidHandshake, httpx.HTTPError) as exc:
                problem = _describe(exc)
            if 0 <= self._retry.retries <= failures:
                raise Unreachable(f"cannot reach {self.url} after {failures + 1} attempts: {problem}")
            delay = self._retry.delay(failures)
            failures += 1
            limit = "∞" if self._retry.retries < 0 else str(self._retry.retries)
            self._on_status("reconnecting", f"reconnecting in {delay:.1f}s (retry {failures}/{limit}): {problem}")
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        """One connection; returns when ``count`` notifications were shown, else ends in an exception."""
        self._connected_once = False
        self._current_token = self._token()
        url = self.url if self.cursor is None else f"{self.url}?since_seq={self.cursor}"
        async with connect(url, additional_headers={"Authorization": f"Bearer {self._current_token}"},
                           open_timeout=self._open_timeout_s, user_agent_header="notify-cli") as ws:
            outbox = Outbox(ws)
            pinger = asyncio.create_task(self._ping(ws))
            try:
                replaying = self.cursor is not None
                while True:
                    # recv() rather than ``async for``: a 1000/1001 close must reach run() as an exception.
                    raw = await ws.recv()
                    if raw == "pong" or not isinstance(raw, str):
                        continue
                    try:
                        frame = json.loads(raw)
                        kind = frame.get("type")
                    except (ValueError, AttributeError):
                        continue
                    if kind == "notification":
                        if await self._show(outbox, frame["data"], replaying):
                            return
                    elif kind == "connected":
                        self._connected_once = True
                        if self.cursor is None:
                            self.cursor = int(frame.get("last_seq", 0))
                        self._on_status("connected", f"connected as {frame.get('user_id')} "
                                        f"(unread {frame.get('unread_count')}, last seq {frame.get('last_seq')})")
                    elif kind == "resumed":
                        replaying = False
                        self._on_status("resumed", f"resumed: {frame.get('replayed', 0)} missed")
                    elif kind == "resync_required":
                        replaying = False
                        if await self._catch_up(outbox):
                            return
                    elif kind == "token_expiring":
                        await self._expiring(ws, frame)
                    elif kind == "error":
                        self._on_status("error", f"server: {frame.get('code')}: {frame.get('message')}")
            finally:
                pinger.cancel()
                with contextlib.suppress(BaseException):
                    await pinger

    async def _show(self, outbox: Outbox, data: dict[str, Any], replayed: bool) -> bool:
        seq = int(data.get("seq", 0))
        if self.cursor is not None and seq <= self.cursor:
            return False  # already shown (a replay overlapping a catch-up)
        self._on_notification(data, replayed)
        self.cursor = seq
        if not replayed:
            await outbox.send_or_drop({"type": "ack", "seq": seq})
        if self._mark_read and not data.get("is_read"):
            await outbox.send({"type": "mark_read", "notification_id": data["id"]})
        if self.remaining is not None:
            self.remaining -= 1
            return self.remaining <= 0
        return False

    async def _catch_up(self, outbox: Outbox) -> bool:
        """Too much was missed to replay: page through ``GET /api/notifications?since_seq=`` instead."""
        fetched = 0
        done = False
        headers = {"Authorization": f"Bearer {self._current_token}"}
        async with httpx.AsyncClient(base_url=self.base, headers=headers, timeout=10) as client:
            while not done:
                response = await client.get("/api/notifications", params={"since_seq": self.cursor, "limit": 200})
                response.raise_for_status()
                page = response.json()
                for item in page["items"]:
                    fetched += 1
                    if await self._show(outbox, item, True):
                        done = True
                        break
                done = done or not page.get("has_more") or not page["items"]
        self._on_status("resumed", f"resynced over HTTP: {fetched} missed")
        return self.remaining is not None and self.remaining <= 0

    async def _expiring(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        if self._refreshable:
            self._current_token = self._token()
            await ws.send(json.dumps({"type": "refresh_token", "token": self._current_token}))
            self._on_status("refreshed", "token refreshed")
        else:
            self._on_status("expiring", f"token expires in {frame.get('expires_in')}s; "
                            "the server will then close the connection (4401)")

    async def _ping(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self._ping_interval_s)
            await ws.send("ping")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__
