"""Limits: HTTP bodies over a size (413, before the app reads them), client frames per connection, and
new connections per client address.

A declared ``Content-Length`` over the limit is refused at once; a chunked body is counted as it
arrives and refused as soon as it passes the limit. Imports nothing of ours.
"""

from __future__ import annotations

import functools
import time

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        # No length declared: buffer up to the limit, then hand the app what we read.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, replaying(b"".join(chunks), receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.max_bytes} bytes", "code": "too_large"}, status_code=413
        )
        await response(scope, receive, send)


def replaying(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app a body already read, then goes on with the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class TokenBucket:
    """Client frames allowed per second, with a burst. Below zero, frames are refused; far below, the
    connection is closed."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> int:
        """1: serve the frame; 0: refuse it (``rate_limited``); -1: close the connection (1008)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= 1
        if self.tokens >= 0:
            return 1
        return 0 if self.tokens > -self.burst else -1

    def try_take(self) -> bool:
        """Take a token if there is one. A refusal costs nothing, so a client that stops hammering gets
        through again after ``1 / rate`` seconds."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class HandshakeLimiter:
    """New connections per client address (a token bucket each), so one client opening connections as
    fast as it can cannot starve everyone else's deliveries. ``server.ConnectionGate`` asks it right after
    accept, before anything is parsed; behind a trusted proxy the WebSocket endpoint asks it again with
    the forwarded address."""

    MAX_ADDRESSES = 10_000

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = burst
        self._buckets: dict[str, TokenBucket] = {}
        self.refused = 0

    def allow(self, address: str) -> bool:
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= self.MAX_ADDRESSES:
                self._buckets.clear()  # forget idle addresses wholesale rather than grow without bound
            bucket = self._buckets[address] = TokenBucket(self._rate, self._burst)
        if bucket.try_take():
            return True
        self.refused += 1
        return False


@functools.cache
def handshake_limiter(rate: float, burst: int) -> HandshakeLimiter:
    """The process's one limiter for these settings, shared by the accept path and the app, which
    uvicorn builds separately (and once per worker process)."""
    return HandshakeLimiter(rate, burst)
