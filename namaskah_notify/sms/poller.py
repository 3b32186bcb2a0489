"""``SMSPollingService``: polls the provider of every verification this node leases, finds the code and
calls ``Dispatcher.on_sms_received`` — the origin document's "SMSPollingService detects code".

Each round (every ``NOTIFY_SMS_POLL_INTERVAL_S``) expires what is past due, renews and claims leases
(see ``sms/store.py``), then starts one poll task per leased verification that has none in flight. The
round never waits for a poll: a slow provider delays only its own verifications. Polls of one provider
run at most ``NOTIFY_SMS_POLL_CONCURRENCY`` at a time. A provider that fails (error, timeout, garbage)
is paused with exponential backoff, then probed with a single poll before it gets its full share again.

A code is accepted once: the row goes pending → received only while this node holds its lease, then the
dispatcher stores the notification under a key made of the verification and the provider's message id,
so a provider that keeps listing the same message, two nodes, or a crash between the two steps never
make a second notification. A received row whose notification is not stored yet stays leased and is
dispatched again next round.

Logged: INFO a detected code (verification, provider, message id, latency), a message without a code;
WARNING a provider failing and the pause it gets, a round that failed (database down). Never the code
or the SMS text. Imports ``dispatcher``, ``errors``, ``schemas`` and ``sms.*``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import Coroutine
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from ..dispatcher import Dispatcher
from ..errors import Unavailable
from ..schemas import utcnow
from .codes import extract_code
from .providers import Provider, ProviderError
from .schemas import ProviderMessage, Verification
from .stats import SmsStats
from .store import VerificationStore

log = logging.getLogger("namaskah_notify.sms")

# Messages older than the verification by more than this belong to an earlier user of the number.
OLDER_THAN_VERIFICATION = timedelta(seconds=60)


class Backoff:
    """One provider's pause after failures: base × 2^(n-1), capped, with jitter."""

    def __init__(self, base_s: float, max_s: float) -> None:
        self._base, self._max = base_s, max_s
        self.failures = 0
        self.until = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.until

    def failure(self, now: float) -> float | None:
        """Count a failure; the new pause, or None when already paused (polls in flight failing too)."""
        if now < self.until:
            return None
        self.failures += 1
        delay = min(self._max, self._base * 2 ** min(self.failures - 1, 30)) * random.uniform(0.75, 1.0)
        self.until = now + delay
        return delay

    def success(self) -> None:
        self.failures, self.until = 0, 0.0


def message_key(verification_id: str, provider_message_id: str) -> str:
    """The dispatcher's de-duplication id: the provider's message id, scoped to the verification."""
    if len(provider_message_id) > 64:
        provider_message_id = hashlib.sha256(provider_message_id.encode()).hexdigest()[:40]
    return f"{verification_id}:{provider_message_id}"


class SMSPollingService:
    def __init__(
        self, store: VerificationStore, providers: dict[str, Provider], dispatcher: Dispatcher,
        stats: SmsStats, *, node_id: str, interval_s: float, concurrency: int, lease_s: float,
        max_leases: int, fetch_timeout_s: float, backoff_max_s: float, code_pattern: str | None,
    ) -> None:
        self._store = store
        self._providers = providers
        self._dispatcher = dispatcher
        self._stats = stats
        self._node_id = node_id
        self._interval = interval_s
        self._lease_s = lease_s
        self._max_leases = max_leases
        self._timeout = fetch_timeout_s
        self._pattern = code_pattern
        self._limits = {name: asyncio.Semaphore(concurrency) for name in providers}
        self._backoff = {name: Backoff(interval_s, backoff_max_s) for name in providers}
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._seen: dict[str, set[str]] = {}  # verification id → provider message ids already read
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._providers:
            self._task = asyncio.create_task(self._run(), name="sms-poller")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._inflight.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if self._task is not None:
            try:  # hand this node's verifications over now rather than after a lease period
                await asyncio.wait_for(self._store.release(self._node_id), 3)
            except Exception as exc:
                log.warning("could not release SMS leases on shutdown (%s); they lapse in %.0fs",
                            type(exc).__name__, self._lease_s)
        for provider in self._providers.values():
            await provider.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        failing = False
        while True:
            started = loop.time()
            try:
                await self.poll_once()
            except Exception as exc:
                # Once per outage, not once per round: the database is down for everyone (readiness says so).
                (log.debug if failing else log.warning)(
                    "SMS poll round failed: %s", exc if isinstance(exc, Unavailable) else type(exc).__name__)
                failing = True
            else:
                if failing:
                    log.info("SMS poll rounds work again")
                failing = False
            await asyncio.sleep(max(0.0, self._interval - (loop.time() - started)))

    async def poll_once(self) -> None:
        """One round: expire, lease, and start a poll for each leased verification not in flight."""
        await self._store.expire_due()
        leased = await self._store.lease(self._node_id, self._lease_s, self._max_leases, list(self._providers))
        self._stats.counted(await self._store.pending_count(), len(leased))
        here = {v.id for v in leased}
        for gone in self._seen.keys() - here:
            del self._seen[gone]
        now = asyncio.get_running_loop().time()
        probing: set[str] = set()
        for verification in leased:
            if verification.id in self._inflight:
                continue
            if verification.status == "received":  # accepted, but the notification is not stored yet
                self._launch(verification.id, self._notify(verification, verification.received_at))
                continue
            name = verification.provider
            backoff = self._backoff[name]
            if not backoff.ready(now):
                continue
            if backoff.failures:  # recovering: one probe at a time until a poll succeeds
                if name in probing or any(t.get_name() == name for t in self._inflight.values()):
                    continue
                probing.add(name)
            self._launch(verification.id, self._poll(verification, self._providers[name]), name)
        self._stats.backoff = {
            name: {"failures": b.failures, "paused_s": round(max(0.0, b.until - now), 2)}
            for name, b in self._backoff.items()
        }

    def _launch(self, verification_id: str, work: Coroutine[Any, Any, None], name: str = "notify") -> None:
        task = asyncio.create_task(work, name=name)
        self._inflight[verification_id] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self._inflight.get(verification_id) is finished:
                del self._inflight[verification_id]
            if not finished.cancelled() and finished.exception() is not None:
                exc = finished.exception()
                log.warning("SMS work for verification %s failed: %s", verification_id,
                            exc if isinstance(exc, Unavailable) else type(exc).__name__)

        task.add_done_callback(done)

    async def _poll(self, verification: Verification, provider: Provider) -> None:
        name = provider.name
        async with self._limits[name]:
            try:
                messages = await asyncio.wait_for(provider.fetch_messages(verification), self._timeout)
            except ProviderError as exc:
                return self._failed(name, verification, exc.kind, str(exc))
            except TimeoutError:
                return self._failed(name, verification, "timeout", "no answer in time")
            except Unavailable:
                return self._failed(name, verification, "unavailable", "database unavailable")
            except Exception as exc:  # a provider's own bug: its type only, a message might quote the SMS
                return self._failed(name, verification, "error", type(exc).__name__)
        self._stats.polled(name)
        self._backoff[name].success()
        seen = self._seen.setdefault(verification.id, set())
        for message in sorted(messages, key=lambda m: (m.received_at is None, m.received_at or datetime.min)):
            if message.id in seen:
                continue
            seen.add(message.id)
            if message.received_at and message.received_at < verification.created_at - OLDER_THAN_VERIFICATION:
                log.info("sms ignored, older than the verification: verification=%s provider=%s message=%s",
                         verification.id, name, message.id)
                continue
            code = extract_code(message.text, self._pattern)
            if code is None:
                log.info("sms without a code: verification=%s provider=%s message=%s", verification.id, name,
                         message.id)
                continue
            try:
                await self._accept(verification, message, code)
            except BaseException:
                seen.discard(message.id)  # read it again next round
                raise
            return None
        return None

    def _failed(self, name: str, verification: Verification, kind: str, reason: str) -> None:
        self._stats.failed(name, kind)
        pause = self._backoff[name].failure(asyncio.get_running_loop().time())
        if pause is not None:
            log.warning("provider %s failed for verification %s: %s; pausing it %.1fs (failure %d in a row)",
                        name, verification.id, reason, pause, self._backoff[name].failures)

    async def _accept(self, verification: Verification, message: ProviderMessage, code: str) -> None:
        received_at = message.received_at or utcnow()
        key = message_key(verification.id, message.id)
        if not await self._store.mark_received(verification.id, self._node_id, key, code, received_at):
            return  # cancelled, expired, or another node holds it now
        accepted = replace(verification, status="received", message_id=key, code=code, received_at=received_at)
        await self._notify(accepted, message.received_at)

    async def _notify(self, verification: Verification, provider_time: datetime | None) -> None:
        stored = await self._dispatcher.on_sms_received(
            verification.user_id, verification.id, verification.service, verification.code or "",
            message_id=verification.message_id,
        )
        record, created = stored.records[0], stored.created
        await self._store.mark_notified(verification.id, record.id)
        latency = (record.created_at - provider_time).total_seconds() if provider_time else None
        if created:
            self._stats.detected(verification.provider, latency)
        log.info("sms code detected: verification=%s user=%s provider=%s message=%s notification=%s%s",
                 verification.id, verification.user_id, verification.provider, verification.message_id,
                 record.id, f" latency_ms={latency * 1000:.0f}" if latency is not None else "")
