"""When to try again: full-jitter backoff, ``Retry-After``, and which failures are worth a retry.

Pure functions and values, shared by the HTTP clients and the Subscriber. Imports nothing of ours but
``errors``; ``httpx`` only for its exception classes.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import httpx

RETRY_STATUSES = frozenset({429, 503})
# Failures of the connection itself. ``ConnectError`` never reached the server; the others may have, which is
# why a publish carries an ``Idempotency-Key``: a server that honours it stores a retried publish once.
RETRYABLE_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Full jitter: a delay drawn uniformly from [0, min(cap, base · 2^attempt)], so that clients dropped
    together (a server restart) do not come back together. Subclass and override :meth:`delay` for
    another schedule."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0.0, min(self.cap, self.base * 2 ** min(attempt, 30)))


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """HTTP retries: up to ``attempts`` tries in all, on 429, 503 and connection failures. A
    ``Retry-After`` is waited for as given (up to ``max_wait``; longer ones are not retried)."""

    attempts: int = 5
    backoff: Backoff = field(default_factory=lambda: Backoff(0.25, 8.0))
    max_wait: float = 60.0

    def delay(self, attempt: int, status: int | None = None, retry_after: str | None = None) -> float | None:
        """Seconds to wait before try ``attempt + 2``, or None to give up: ``status`` None is a connection
        failure, else the answer's status and its ``Retry-After`` header."""
        if attempt + 1 >= self.attempts:
            return None
        if status is not None and status not in RETRY_STATUSES:
            return None
        asked = parse_retry_after(retry_after)
        if asked is None:
            return self.backoff.delay(attempt)
        return asked if asked <= self.max_wait else None


NO_RETRY = RetryPolicy(attempts=1)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))
