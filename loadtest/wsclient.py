"""A WebSocket tab for Locust: websocket-client (plain sockets, so gevent's monkey patching makes it
cooperative) wrapped so that everything it sees becomes a Locust ``request`` event.

Request types: ``WS`` ``connect`` (handshake until the ``connected`` frame), ``NOTIFY`` ``delivery`` (one
per delivered notification, ``response_time`` = end-to-end latency in ms), and ``FANOUT`` failures named
after the problem (``gap``, ``duplicate``, ``out of order``, ``missed``, ``closed``).
Imports ``fanout``.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

import gevent
import orjson
import websocket

from .fanout import CLOSED, MEANING, TabState

log = logging.getLogger("loadtest.tab")


class FanoutError(Exception):
    """A tab did not get its user's notifications exactly once and in order."""


def sent_at(data: dict[str, Any]) -> float:
    """When the notification started its way: the publisher's clock in ``meta.sent_at`` when it put one
    there (end to end, HTTP and storage included), else the server's ``created_at``."""
    meta = data.get("meta") or {}
    stamp = meta.get("sent_at")
    if isinstance(stamp, int | float):
        return float(stamp)
    return datetime.fromisoformat(data["created_at"]).timestamp()


class NotifyTab:
    """One open tab of one user: connects, then a greenlet reads frames until ``close``."""

    def __init__(self, environment: Any, ws_url: str, token: str, state: TabState) -> None:
        self.environment = environment
        self.ws_url = ws_url
        self.token = token
        self.state = state
        self.socket: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet | None = None
        self.closing = False

    @property
    def open(self) -> bool:
        return self.state.closed_at is None

    def _fire(self, request_type: str, name: str, started: float, response_time: float, length: int = 0,
              exception: Exception | None = None) -> None:
        self.environment.events.request.fire(
            request_type=request_type, name=name, start_time=started, response_time=response_time,
            response_length=length, exception=exception, context={"user_id": self.state.user_id},
        )

    def fanout_failure(self, problem: str, count: int, detail: str) -> None:
        log.warning("fan-out %s: user=%s tab=%d %s", problem, self.state.user_id, self.state.index, detail)
        for _ in range(count):
            self._fire("FANOUT", problem, time.time(), 0, exception=FanoutError(MEANING[problem]))

    def connect(self, timeout: float = 10) -> bool:
        """Open the socket (``Authorization: Bearer``) and wait for ``connected``; reports ``WS connect``."""
        started = time.time()
        t0 = time.perf_counter()
        try:
            self.socket = websocket.create_connection(
                self.ws_url, timeout=timeout, header=[f"Authorization: Bearer {self.token}"],
                enable_multithread=False,
            )
            frame = orjson.loads(self.socket.recv())
            if frame.get("type") != "connected":
                raise ConnectionError(f"first frame was {frame.get('type')!r}, not 'connected'")
        except Exception as exc:
            self._fire("WS", "connect", started, (time.perf_counter() - t0) * 1000, exception=exc)
            self.state.closed_at = time.time()
            return False
        self._fire("WS", "connect", started, (time.perf_counter() - t0) * 1000)
        self.state.begin(int(frame["last_seq"]))
        self.socket.settimeout(None)
        self.reader = gevent.spawn(self._read)
        return True

    def _read(self) -> None:
        assert self.socket is not None
        while True:
            try:
                raw = self.socket.recv()
            except Exception as exc:
                self._gone(exc)
                return
            if not raw:  # close frame
                self._gone(None)
                return
            self.on_frame(raw)

    def on_frame(self, raw: str | bytes) -> None:
        received = time.time()
        if raw == "pong":
            return
        frame = orjson.loads(raw)
        if frame.get("type") != "notification":
            return
        data = frame["data"]
        latency_ms = max(0.0, (received - sent_at(data)) * 1000)
        self._fire("NOTIFY", "delivery", received, latency_ms, len(raw))
        before = self.state.last_seq
        problem = self.state.receive(int(data["seq"]))
        if problem is not None:
            kind, count = problem
            self.fanout_failure(kind, count, f"seq {data['seq']} after {before}")

    def _gone(self, exc: Exception | None) -> None:
        if self.state.closed_at is None:
            self.state.closed_at = time.time()
        if not self.closing:
            self.fanout_failure(CLOSED, 1, f"the server closed the tab: {exc or 'close frame'}")

    def close(self) -> None:
        self.closing = True
        if self.state.closed_at is None:
            self.state.closed_at = time.time()
        if self.socket is not None:
            try:
                self.socket.close(timeout=1)
            except Exception:
                log.debug("close failed", exc_info=True)
        if self.reader is not None:
            self.reader.kill(block=False)
